-- CPU time (os.clock) of what runbook serve does for a run, in process:
-- the first read of its journal, the page, the API. Run by
-- bench/serve_bench.sh as `BENCH_STATE=DIR runbook test bench/serve_cpu.lua`.
local rs = require "runbook._engine.runsource"
local serve = require "runbook._engine.serve"
local src = rs.open(assert(os.getenv("BENCH_STATE"), "BENCH_STATE names the store"))
local id = src:list()[1]
local h = serve.handler(src)
local function cpu(name, f, n)
  n = n or 5
  local ts = {}
  for i = 1, n do local a = os.clock(); f(); ts[i] = (os.clock() - a) * 1000 end
  table.sort(ts)
  print(string.format("%-36s cpu median %.1f ms (min %.1f, n=%d)", name, ts[(n + 1) // 2], ts[1], n))
end
local function req(p, q) return function() local s = h { method = "GET", path = p, query = q or {}, headers = {}, cookies = {} }; assert(s == 200) end end
cpu("first read of the journal (scan+verify)", function() src.cache = {}; src:events(id) end)
src:events(id)
cpu("GET /runs/ID (page, events cached)", req("/runs/" .. id))
cpu("GET /api/runs/ID (view, cached)", req("/api/runs/" .. id))
cpu("GET /api/runs/ID/events?after=9990", req("/api/runs/" .. id .. "/events", { after = "9990" }))
cpu("GET /api/runs/ID/events?after=0", req("/api/runs/" .. id .. "/events", { after = "0" }))
cpu("GET /api/runs", req("/api/runs"))
cpu("GET /runs/ID/verify (reads again)", req("/runs/" .. id .. "/verify"))
