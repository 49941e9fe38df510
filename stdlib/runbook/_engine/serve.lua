-- `runbook report` and `runbook serve`: a run as one HTML file, and a
-- read-only web view of the store with the JSON API behind it
-- (docs/serve.md). The store is read through runbook._engine.runsource
-- only; the HTTP server is runbook._httpd, whose handler runs here on the
-- main thread. Pages are HTML built by runbook._engine.report and
-- runbook._engine.serve_pages, every value escaped; the one script is
-- /app.js, served from here, and the Content-Security-Policy allows no
-- other.
local host = require "runbook._host"
local json = require "runbook._json"
local fs = require "runbook._fs"
local crypto = require "runbook._crypto"
local errors = require "runbook.errors"
local report = require "runbook._engine.report"
local runsource = require "runbook._engine.runsource"
local pages = require "runbook._engine.serve_pages"

local M = {}


function M.report(pos, opts)
  local src = runsource.open(opts.state)
  local id = src:resolve(pos[1])
  local events = src:events(id)
  local html = report.render { events = events, run = id, verify = src:verify(id, true), log = src:log(id) }
  if opts.output then
    local ok, err = fs.write_file(opts.output, html, 384) -- 0600, as the store's own files
    if not ok then errors.raise { kind = "io", message = string.format("report: cannot write %s: %s", opts.output, err) } end
    host.write(2, string.format("report of run %s (%d events) written to %s\n", id, #events, opts.output))
  else
    host.write(1, html)
  end
  return 0
end

-- ---------------------------------------------------------------------------
-- the API

local APP_JS = require "runbook._engine.serve_app"

local function api_event(ev)
  return { seq = ev.seq, ts = ev.ts, type = ev.type, step = ev.step, summary = host.scrub(report.summary(ev)) }
end

-- JSON for the API, scrubbed as the console is (the journal is redacted
-- when written; this catches anything the serving process knows)
local function encode(v)
  return host.scrub(json.encode(v, { secrets = "redact" }))
end

-- ---------------------------------------------------------------------------
-- the server

local SECURITY = {
  ["X-Content-Type-Options"] = "nosniff",
  ["Referrer-Policy"] = "no-referrer",
  ["X-Frame-Options"] = "DENY",
  ["Cache-Control"] = "no-store",
  ["Cross-Origin-Opener-Policy"] = "same-origin",
  ["Cross-Origin-Resource-Policy"] = "same-origin",
}

local function respond(status, ctype, body, extra)
  local h = {}
  for k, v in pairs(SECURITY) do h[k] = v end
  h["Content-Type"] = ctype
  for k, v in pairs(extra or {}) do h[k] = v end
  return status, h, body
end

local function api_error(status, code, msg)
  return respond(status, "application/json", encode { error = { code = code, message = msg } } .. "\n",
    { ["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'" })
end

local function html_page(status, html, csp)
  return respond(status, "text/html; charset=utf-8", html, { ["Content-Security-Policy"] = csp })
end

-- the token check: Authorization: Bearer T, or the cookie set from ?token=T
local function authorized(token, req)
  if not token then return true end
  local auth = req.headers.authorization
  local given = auth and auth:match("^[Bb]earer%s+(%S+)%s*$") or req.cookies.token
  return given ~= nil and crypto.equal(given, token)
end

local function int_param(s)
  local n = s and math.tointeger(tonumber(s))
  return n
end

--- The request handler: (req) -> status, headers, body. Exposed for specs.
function M.handler(src, opts)
  opts = opts or {}
  local token = opts.token
  local routes

  local function run_id(raw)
    if not src:has(raw) then return nil end
    return raw
  end

  routes = {
    { "^/$", function(req) return html_page(200, pages.runs(src, req.query), pages.csp()) end },
    { "^/waiting$", function() return html_page(200, pages.waiting(src), pages.csp()) end },
    { "^/app%.js$", function()
      return respond(200, "text/javascript; charset=utf-8", APP_JS, { ["Content-Security-Policy"] = "default-src 'none'" })
    end },
    { "^/runs/([^/]+)$", function(_, raw)
      local id = run_id(raw)
      if not id then return html_page(404, pages.not_found(raw), pages.csp()) end
      local events = src:events(id)
      local html = report.render {
        events = events, run = id, verify = src:verify(id), log = src:log(id), nav = pages.nav(),
        live = { script_src = "'self'", connect_src = "'self'", script = '<script src="/app.js"></script>' },
      }
      return html_page(200, html, report.csp { script_src = "'self'", connect_src = "'self'", frame_ancestors = "'none'" })
    end },
    { "^/runs/([^/]+)/verify$", function(_, raw)
      local id = run_id(raw)
      if not id then return html_page(404, pages.not_found(raw), pages.csp()) end
      return html_page(200, pages.verify(id, src:verify(id, true)), pages.csp())
    end },
    { "^/api/runs$", function(req)
      return respond(200, "application/json", encode { runs = pages.rows(src, req.query) } .. "\n")
    end },
    { "^/api/runs/([^/]+)$", function(_, raw)
      local id = run_id(raw)
      if not id then return api_error(404, "not-found", "no run " .. raw) end
      local body = src:derived(id, "api.view", function(events, info)
        local v = report.view(events)
        v.run = id
        v.journal = { events = info.count, bad_seq = info.bad_seq, torn_seq = info.torn_bytes and info.torn_seq or nil }
        return encode(v) .. "\n"
      end)
      return respond(200, "application/json", body)
    end },
    { "^/api/runs/([^/]+)/events$", function(req, raw)
      local id = run_id(raw)
      if not id then return api_error(404, "not-found", "no run " .. raw) end
      local after = 0
      if req.query.after ~= nil then
        after = int_param(req.query.after)
        if not after or after < 0 then return api_error(400, "bad-request", "after must be a seq (a whole number >= 0)") end
      end
      local evs = src:events(id, after)
      local out = {}
      for i, ev in ipairs(evs) do out[i] = api_event(ev) end
      local all = src:events(id)
      return respond(200, "application/json", encode {
        run = id, after = after, events = json.array(out),
        last_seq = all[#all] and all[#all].seq or 0,
      } .. "\n")
    end },
    { "^/api/runs/([^/]+)/verify$", function(_, raw)
      local id = run_id(raw)
      if not id then return api_error(404, "not-found", "no run " .. raw) end
      return respond(200, "application/json", encode(src:verify(id, true)) .. "\n")
    end },
  }

  local function route(req)
    if req.method ~= "GET" and req.method ~= "HEAD" then
      return respond(405, "text/plain; charset=utf-8", "read-only: only GET and HEAD\n", { Allow = "GET, HEAD" })
    end
    local path = req.path
    if token and req.query.token ~= nil then
      -- a link with ?token= sets the cookie once and drops the token from the address bar
      if not crypto.equal(req.query.token, token) then return api_error(401, "unauthorized", "wrong token") end
      return respond(303, "text/plain; charset=utf-8", "see " .. path .. "\n", {
        Location = path,
        ["Set-Cookie"] = "token=" .. token .. "; Path=/; HttpOnly; SameSite=Strict",
      })
    end
    if not authorized(token, req) then
      return respond(401, "text/plain; charset=utf-8",
        "401: this server needs its token (Authorization: Bearer TOKEN, or open /?token=TOKEN once)\n",
        { ["WWW-Authenticate"] = 'Bearer realm="runbook"' })
    end
    for _, r in ipairs(routes) do
      local caps = { path:match(r[1]) }
      if caps[1] ~= nil then
        if caps[1] == path and not r[1]:find("%(") then caps = {} end
        return r[2](req, table.unpack(caps))
      end
    end
    return respond(404, "text/plain; charset=utf-8", "404: no such page\n")
  end

  return function(req)
    local ok, status, h, body = xpcall(route, function(e) return host.error_of(e, "internal") end, req)
    if ok then return status, h, body end
    local err = status
    host.write(2, host.scrub(string.format("runbook serve: %s %s: %s\n", req.method, req.path, errors.message(err))))
    if os.getenv("RUNBOOK_DEBUG") and err.traceback then host.write(2, host.scrub(err.traceback) .. "\n") end
    if err.kind == "store" and err.code == "not-found" then return api_error(404, "not-found", errors.message(err)) end
    return api_error(500, "internal", "internal error (see the server's output)")
  end
end

function M.serve(_, opts)
  local httpd = require "runbook._httpd"
  local listen = opts.listen or "127.0.0.1:8080"
  local spec = listen:gsub("^localhost:", "127.0.0.1:")
  local addr, perr = httpd.parse_address(spec)
  if not addr then errors.raisef("usage", nil, "serve: --listen %s", perr) end
  local token = os.getenv("RUNBOOK_SERVE_TOKEN")
  if token == "" then token = nil end
  if token and #token < 16 then errors.raisef("usage", nil, "serve: RUNBOOK_SERVE_TOKEN is too short (%d characters); use at least 16, such as `openssl rand -hex 16`", #token) end
  if not addr.loopback and not token then
    errors.raisef("usage", nil, "serve: refusing to listen on %s without a token: anything but loopback is reachable from other machines; set RUNBOOK_SERVE_TOKEN (at least 16 characters) or listen on 127.0.0.1", listen)
  end
  local src = runsource.open(opts.state)
  host.trap_signals()
  local srv, err = httpd.listen { host = addr.host, port = addr.port, handler = M.handler(src, { token = token }) }
  if not srv then errors.raise { kind = "usage", message = "serve: " .. errors.message(err) } end
  local shown = addr.family == "ipv6" and ("[" .. addr.host .. "]") or addr.host
  host.write(2, string.format("runbook serve: read-only view of %s on http://%s:%d/\n", src.root, shown, srv:port()))
  if token then
    host.write(2, string.format("runbook serve: %s: every request needs RUNBOOK_SERVE_TOKEN (Authorization: Bearer, or open http://%s:%d/?token=... once)\n",
      addr.loopback and "token set" or "not loopback", shown, srv:port()))
  end
  while not host.interrupted() do srv:run(0.5) end
  srv:close()
  host.write(2, "runbook serve: stopped\n")
  return 0
end

return M
