-- Step library: endpoint smoke checks, as the Janua rollout (J1, J3), the
-- Tessera bootstrap (T6) and Tezca's first deploy (M10) run them.
--
--   local smoke = require "lib.smoke"
--   smoke.step "J3" { title = ..., needs = "J2", ready = "/ready",
--     checks = { { name = "liveness /health", path = "/health", status = 200 } } }
--   -- inside a step of one's own:
--   smoke.check(ctx, base_url, rows, { timeout = 10 })
--
-- A row is what http.check takes, with `path` (joined to the base URL) in
-- place of `url` if wanted. The base URL is the `api_url` param unless
-- `base` (a function of ctx) says otherwise; `ca_file` is the param of that
-- name. Every check run is one `http-check` action in the journal.
local http = require "runbook.http"
local wait = require "runbook.wait"

local M = {}

--- Runs http.check over `rows` against `base`; returns its results.
function M.check(ctx, base, rows, opts)
  opts = opts or {}
  local list = {}
  for i, r in ipairs(rows) do
    local row = {}
    for k, v in pairs(r) do row[k] = v end
    if row.path then row.url, row.path = base .. row.path, nil end
    list[i] = row
  end
  return http.check(list, { ca_file = ctx.params.ca_file, timeout = opts.timeout })
end

local STEP_FIELDS = { "title", "owner", "doc", "needs", "timeout", "retry", "undo" }

--- Declares step `id`: waits for `ready` (a path) to answer 2xx within
--- `ready_timeout` seconds (120) if given, then runs `checks` (rows, or a
--- function of ctx and what `prepare(ctx)` returned). `check_timeout`:
--- seconds per request. Returns {checks = <rows checked>}.
function M.step(id)
  return function(opts)
    local s = {}
    for _, f in ipairs(STEP_FIELDS) do s[f] = opts[f] end
    s.run = function(ctx)
      local base = opts.base and opts.base(ctx) or ctx.params.api_url
      if opts.ready then
        wait.http(base .. opts.ready, { timeout = opts.ready_timeout or 120, interval = 2, ca_file = ctx.params.ca_file,
          what = opts.ready_what })
      end
      local prepared = opts.prepare and opts.prepare(ctx)
      local rows = type(opts.checks) == "function" and opts.checks(ctx, prepared) or opts.checks
      local results = M.check(ctx, base, rows, { timeout = opts.check_timeout })
      return { checks = #results }
    end
    step(id)(s)
  end
end

return M
