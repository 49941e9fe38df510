-- Step library: application secrets generated once and kept in a Kubernetes
-- Secret, as the Tezca (M3), Bow-Mark (B1) and Ticolops (T1) runbooks do.
--
--   local secrets = require "lib.secrets"
--   secrets.generate "B1" { title = ..., values = { postgres_password = { once = "postgres-password", bytes = 32 } } }
--   secrets.app_secret "T1" { title = ..., name = "ticolops-secrets", create_namespace = true,
--     generate = { secret_key = { once = "secret-key", bytes = 32 } },
--     data = function(ctx) return { database_url = ctx.params.database_url } end }
--
-- A generated value is made once per run with ctx:once under its `once`
-- name (default: the key), with runbook.secret.random{bytes=, encoding=}
-- (default 32 bytes, hex): a resumed run writes the very same value, and it
-- is sealed in the journal. The cluster is the runbook's `kubeconfig`,
-- `context` and `namespace` params.
local k8s = require "runbook.k8s"
local secret = require "runbook.secret"

local M = {}

local STEP_FIELDS = { "title", "owner", "doc", "needs", "timeout", "retry" }

local function generated(ctx, spec)
  local out = {}
  for key, g in pairs(spec or {}) do
    out[key] = ctx:once(g.once or key, function()
      return secret.random { bytes = g.bytes or 32, encoding = g.encoding or "hex" }
    end)
  end
  return out
end
M.generated = generated

local function step_opts(opts, run)
  local s = { run = run }
  for _, f in ipairs(STEP_FIELDS) do s[f] = opts[f] end
  return s
end

--- Declares step `id` returning the generated values (`values`: key ->
--- {once=, bytes=, encoding=}) as its outputs, for later steps to use.
function M.generate(id)
  return function(opts)
    step(id)(step_opts(opts, function(ctx) return generated(ctx, opts.values) end))
  end
end

--- Declares step `id` ensuring the Secret `name` (a string or a function of
--- ctx) holds `data(ctx)` and the `generate`d values. `create_namespace`:
--- apply the namespace first. `if_exists`: "keep" (default) or "merge", as
--- cluster:secret takes it. In a dry run before the namespace exists it says
--- what it would create. Returns {secret=, result=}.
function M.app_secret(id)
  return function(opts)
    step(id)(step_opts(opts, function(ctx)
      local p = ctx.params
      local c = k8s.connect { kubeconfig = p.kubeconfig, context = p.context, namespace = p.namespace }
      if opts.create_namespace then
        c:apply { apiVersion = "v1", kind = "Namespace", metadata = { name = p.namespace } }
      end
      local name = type(opts.name) == "function" and opts.name(ctx) or opts.name
      local data = opts.data and opts.data(ctx) or {}
      for k, v in pairs(generated(ctx, opts.generate)) do data[k] = v end
      if ctx.dry_run and not c:get { kind = "Namespace", name = p.namespace } then
        ctx:log("dry run: Secret %s would be created in the new namespace %s", name, p.namespace)
        return { secret = name, result = "created" }
      end
      local _, result = c:secret { name = name, data = data, if_exists = opts.if_exists or "keep" }
      return { secret = name, result = result }
    end))
  end
end

return M
