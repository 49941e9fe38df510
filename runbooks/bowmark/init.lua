-- What bowmark-first-deploy.lua does that is more than one call: the
-- guide's `kubectl port-forward statefulset/postgres 5432:5432` with a
-- connection through it, dbmate's ledger against the pg-migrations
-- ConfigMap, `kubectl rollout undo`, and the row counts inside a pg_dump.
local pg = require "runbook.pg"
local sh = require "runbook.sh"
local secret = require "runbook.secret"
local errors = require "runbook.errors"

local M = {}

--- The `postgres` Secret's password, read now (a rotation may have
--- changed it since the step began). Read through cluster:secret with the
--- plain keys declared, as B2 wrote them: a plain read would register the
--- user name and port with the redactor, and every later "bowmark" or
--- "5432" in the log would print as [REDACTED].
function M.password(c, plain)
  local s = c:secret { name = "postgres", data = plain, if_exists = "keep" }
  if not s.data.password then
    errors.raise { kind = "verify", code = "no-password", message = "the postgres Secret has no password key (B2)" }
  end
  return s.data.password
end

--- The URL of database `db` through a forwarded local port.
function M.url(port, user, password, db)
  return secret.wrap(string.format("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable&connect_timeout=15",
    secret.reveal(user), secret.reveal(password), port, db))
end

--- Calls fn(port) with the postgres Service's 5432 forwarded to a local
--- port (the Service selects postgres-0), as the guide's port-forward.
function M.forward(c, fn)
  return c:port_forward({ service = "postgres", port = 5432 }, fn)
end

--- Versions of the pg-migrations ConfigMap (dbmate's files: the leading
--- digits of VERSION_name.sql), sorted.
function M.migration_versions(cm)
  local out = {}
  for file in pairs(cm and cm.data or {}) do
    local v = file:match("^(%d+)_.*%.sql$")
    if v then out[#out + 1] = v end
  end
  table.sort(out)
  return out
end

--- dbmate's status of `db` through the forward: the ConfigMap's versions
--- each applied in schema_migrations, or the step fails naming the pending.
function M.migration_status(port, user, password, db, versions)
  local conn <close> = pg.connect(M.url(port, user, password, db))
  local ledger = conn:value("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
  local applied = {}
  if ledger then
    for _, r in ipairs(conn:query("SELECT version FROM schema_migrations ORDER BY version")) do applied[r.version] = true end
  end
  local pending = {}
  for _, v in ipairs(versions) do if not applied[v] then pending[#pending + 1] = v end end
  local n = 0
  for _ in pairs(applied) do n = n + 1 end
  return { applied = n, pending = pending, ledger = ledger and true or false }
end

--- Exact row counts of the public tables of `db` (the same connection kind).
function M.row_counts(port, user, password, db)
  local conn <close> = pg.connect(M.url(port, user, password, db), { statement_timeout = 600 })
  local out = {}
  for _, t in ipairs(conn:query([[SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public' ORDER BY 1]])) do
    out[t.name] = conn:value("SELECT count(*) FROM public." .. conn:ident(t.name))
  end
  return out
end

--- The rows each table's data holds in the pg_dump -Fc file at `path`:
--- pg_restore writes the data as COPY blocks, one line per row.
function M.dump_row_counts(path)
  local r = sh.run({ "sh", "-c", [[pg_restore --data-only --schema=public -f - "$1" | awk '
      /^COPY / { t = $2; sub(/^public\./, "", t); n = 0; next }
      /^\\\.$/ { if (t != "") print t, n; t = ""; next }
      t != "" { n++ }']], "dump-row-counts", path }, { read_only = true, log = false })
  local out = {}
  for name, n in r.stdout:gmatch("(%S+) (%d+)") do out[name:gsub('^"(.*)"$', "%1")] = math.tointeger(tonumber(n)) end
  return out
end

local function revision(obj)
  return math.tointeger(tonumber(((obj.metadata or {}).annotations or {})["deployment.kubernetes.io/revision"] or "")) or 0
end

local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

--- kubectl rollout undo deployment/NAME against the API: the ReplicaSet of
--- the revision before the current one (those the Deployment controls,
--- found through its selector and owner references) gives its pod template,
--- without the pod-template-hash label, back to the Deployment. Returns
--- {from=, to=, result = "rolled back" | "skipped"}.
function M.rollout_undo(c, name, opts)
  opts = opts or {}
  local d = c:get { api_version = "apps/v1", kind = "Deployment", name = name }
  if not d then errors.raise { kind = "k8s", code = "NotFound", message = 'deployments.apps "' .. name .. '" not found' } end
  local current = revision(d)
  local best
  for _, rs in ipairs(c:list { api_version = "apps/v1", kind = "ReplicaSet", label_selector = d.spec.selector.matchLabels }) do
    local owned = false
    for _, ref in ipairs(rs.metadata.ownerReferences or {}) do
      if ref.controller and ref.uid == d.metadata.uid then owned = true end
    end
    local rev = revision(rs)
    if owned and rev < current and (not best or rev > revision(best)) then best = rs end
  end
  if not best then
    errors.raise { kind = "k8s", code = "NoRevision", message = "no rollout history found for deployment \"" .. name
      .. "\" before revision " .. current .. ": nothing to roll back to" }
  end
  local template = best.spec.template
  template.metadata = template.metadata or {}
  if template.metadata.labels then template.metadata.labels["pod-template-hash"] = nil end
  if same(template, d.spec.template) then
    return { from = current, to = revision(best), result = "skipped" }
  end
  c:patch({ api_version = "apps/v1", kind = "Deployment", name = name },
    { { op = "replace", path = "/spec/template", value = template } }, { type = "json" })
  if opts.wait ~= false then c:rollout_status { kind = "Deployment", name = name, timeout = opts.timeout or 600 } end
  return { from = current, to = revision(best), result = "rolled back" }
end

return M
