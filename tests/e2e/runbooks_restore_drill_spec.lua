-- runbooks/pg-restore-drill.lua with the real binary in the rehearsal
-- sandbox (tests/harness/sandbox.lua): a real PostgreSQL and moto, seeded
-- by the sandbox with a live database and two dumps of it in the bucket;
-- the drill takes the newest, restores it into a scratch database, compares
-- row counts (within the tolerance for writes since the backup) and drops
-- the scratch database. With no tolerance the comparison fails, the scratch
-- database is kept, and `runbook rollback` removes it.
local rb = require "rbtest"
local sandbox = require "sandbox"
local fs = require "runbook._fs"
local json = require "runbook._json"
local sh = require "runbook.sh"
local s3 = require "runbook.s3"
local secret = require "runbook.secret"

local RUNBOOK = rb.source_dir .. "/runbooks/pg-restore-drill.lua"
-- no "/" in the prefix: moto checks signatures of query values holding "/"
-- against a re-quoted URL and refuses them (docs/api/s3.md); Spaces and R2 do not
local PREFIX = sandbox.DRILL.prefix

local function of_type(evs, t, step)
  local out = {}
  for _, e in ipairs(evs) do
    if e.type == t and (step == nil or e.step == step) then out[#out + 1] = e end
  end
  return out
end

local function journal_with(dir, pred)
  for _, id in ipairs(fs.listdir(dir .. "/state/runs") or {}) do
    local evs = {}
    for line in io.lines(dir .. "/state/runs/" .. id .. "/journal.jsonl") do evs[#evs + 1] = json.decode(line) end
    if pred(evs) then return evs, id end
  end
  error("no such run")
end

describe("runbooks/pg-restore-drill.lua", function()
  local sb, dir

  setup(function()
    dir = rb.tmpdir("drill")
    -- the sandbox seeds its live database: yesterday's dump (100
    -- shipments) and today's (1000) in bowmark-backups, then 2% more rows
    sb = sandbox.up(dir, { services = { "pg", "s3" }, quiet = true })
  end)
  teardown(function()
    if dir then
      sandbox.down(dir, { quiet = true })
      rb.rmtree(dir)
    end
  end)

  local function exec(extra)
    local a = { "--new" }
    for _, x in ipairs(extra or {}) do a[#a + 1] = x end
    return sb:exec(RUNBOOK, a, { timeout = 120 })
  end
  local function scratch_dbs()
    return sb:psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'restore_drill_%'")
  end

  it("checks and renders", function()
    local r = rb.run { "check", RUNBOOK }
    assert.are.equal(2, r.code)
    assert.truthy(r.stderr:find("runbook: " .. RUNBOOK .. ": 6 problems", 1, true), r.stderr)
    -- with the sandbox's values file and environment, as exec runs it
    r = sb:runbook { "check", RUNBOOK, "--values", sb:values_file("pg-restore-drill") }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("runbook pg-restore-drill, 6 steps (0 manual), 0 parallel group(s)", 1, true), r.stdout)
    local d = rb.run { "doc", RUNBOOK }
    assert.truthy(d.stdout:find("- [ ] **R5** Compare row counts with the source", 1, true), d.stdout)
  end)

  it("runs dry: finds the backup and writes nothing", function()
    local r = exec { "--dry-run" }
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stderr:find("R1       newest backup: s3://bowmark-backups/" .. PREFIX .. "20260302T080000Z.pgdump", 1, true), r.stderr)
    assert.truthy(r.stderr:find("R3       dry run: would create the database restore_drill_dry_run", 1, true), r.stderr)
    assert.truthy(r.stderr:find("dry run complete: 6 step(s) would run; nothing was written", 1, true), r.stderr)
    assert.are.equal("", scratch_dbs())
    assert.is_false(rb.exists(dir .. "/restore-drill"))
    assert.is_false(rb.exists(dir .. "/state/runs"))
  end)

  it("restores the newest backup, finds it matches the source, and cleans up", function()
    local r = exec()
    assert.are.equal(0, r.code, r.stderr)
    local evs, id = journal_with(dir, function(e) return #of_type(e, "run.finished") == 1 end)
    assert.are.equal(PREFIX .. "20260302T080000Z.pgdump", of_type(evs, "step.finished", "R1")[1].outputs.key)
    local r2 = of_type(evs, "step.finished", "R2")[1].outputs
    assert.are.same({ 3, "custom" }, { r2.tables, r2.format })
    assert.are.equal("custom", of_type(evs, "step.finished", "R4")[1].outputs.format)
    assert.are.equal(require("runbook._crypto").sha256(rb.read(dir .. "/seed/20260302T080000Z.dump")), r2.sha256)
    assert.are.same({
      { table = "audit.sync_log", live = 1, restored = 1 },
      { table = "public.dim_jobsite", live = 50, restored = 50 },
      { table = "public.fact_material_shipment", live = 1020, restored = 1000 },
    }, of_type(evs, "step.finished", "R5")[1].outputs.tables)
    local kinds = {}
    for _, a in ipairs(of_type(evs, "action")) do kinds[#kinds + 1] = a.step .. ":" .. a.kind .. ":" .. (a.verb or "") end
    assert.are.same({ "R2:backup:verify", "R3:pg:exec", "R4:backup:restore", "R6:pg:exec" }, kinds)
    local restore = of_type(evs, "action", "R4")[1]
    assert.are.same({ "custom", "pg_restore" }, { restore.format, restore.tool })
    -- nothing left behind
    assert.are.equal("", scratch_dbs())
    assert.are.same({}, fs.listdir(dir .. "/restore-drill") or {})
    assert.are.equal(0, rb.run({ "audit", "verify", id, "--state", dir .. "/state" }, { cwd = dir }).code)
  end)

  it("fails the comparison beyond the tolerance, keeps the scratch database, and rollback removes it", function()
    local r = exec { "--param", "tolerance_pct=0" }
    assert.are.equal(1, r.code, r.stderr)
    local evs, id = journal_with(dir, function(e) return #of_type(e, "run.failed") == 1 end)
    local name = of_type(evs, "step.finished", "R3")[1].outputs.database
    assert.truthy(r.stderr:find("R5       FAILED: the restore does not match the source: public.fact_material_shipment: "
      .. "1000 rows restored, 1020 live (more than 0% fewer) (scratch database " .. name .. " kept for a look; runbook rollback drops it)", 1, true), r.stderr)
    assert.are.equal(name, scratch_dbs())
    local rr = sb:runbook({ "rollback", id }, { timeout = 120 })
    assert.are.equal(0, rr.code, rr.stderr)
    assert.are.equal("", scratch_dbs())
    assert.are.same({}, fs.listdir(dir .. "/restore-drill") or {})
  end)

  it("restores a plain SQL dump (pg_dump > backup.sql) and refuses one cut short", function()
    -- as Tessera's guide makes them: plain SQL, with the superuser's OWNER TO statements
    local plain = dir .. "/backup.sql"
    local pgs = sb.services.pg
    sh.run({ "pg_dump", "-h", pgs.sock, "-p", tostring(pgs.port), "-U", "postgres",
      "-d", sandbox.DRILL.db, "-f", plain }, { log = false })
    local text = rb.read(plain)
    assert.truthy(text:find("OWNER TO postgres;", 1, true))
    local m = sb.services.s3
    local client <close> = s3.connect { endpoint = m.endpoint, access_key = m.access_key, secret_key = secret.wrap(m.secret_key) }
    client:put { bucket = sandbox.DRILL.bucket, key = "plain_db-20260304T080000Z.sql", file = plain }
    client:put { bucket = sandbox.DRILL.bucket, key = "cut_db-20260304T080000Z.sql", body = text:sub(1, math.floor(#text * 0.8)) }

    local r = exec { "--param", "prefix=plain_db-" }
    assert.are.equal(0, r.code, r.stderr)
    local evs, id = journal_with(dir, function(e)
      local f = of_type(e, "step.finished", "R1")[1]
      return f and f.outputs.key == "plain_db-20260304T080000Z.sql" and #of_type(e, "run.finished") == 1
    end)
    local r2 = of_type(evs, "step.finished", "R2")[1].outputs
    assert.are.same({ "plain", 3 }, { r2.format, r2.tables })
    assert.are.equal("plain", of_type(evs, "step.finished", "R4")[1].outputs.format)
    assert.are.same({
      { table = "audit.sync_log", live = 1, restored = 1 },
      { table = "public.dim_jobsite", live = 50, restored = 50 },
      { table = "public.fact_material_shipment", live = 1020, restored = 1020 },
    }, of_type(evs, "step.finished", "R5")[1].outputs.tables)
    -- pg.restore told the formats apart: psql ran it, without the OWNER TO statements
    local kinds, restore = {}, nil
    for _, a in ipairs(of_type(evs, "action")) do
      kinds[#kinds + 1] = a.step .. ":" .. a.kind .. ":" .. (a.verb or "")
      if a.verb == "restore" then restore = a end
    end
    assert.are.same({ "R2:backup:verify", "R3:pg:exec", "R4:backup:restore", "R6:pg:exec" }, kinds)
    assert.are.same({ "plain", "psql" }, { restore.format, restore.tool })
    assert.truthy(restore.owner_statements_skipped > 0)
    assert.are.equal("PLAIN", of_type(evs, "action", "R2")[1].format)
    -- psql got the password through its environment: it is nowhere in the run's record
    local journal = rb.read(dir .. "/state/runs/" .. id .. "/journal.jsonl")
    assert.is_nil(journal:find(sb.secrets.pg_password, 1, true))
    assert.are.equal("", scratch_dbs())
    assert.are.same({}, fs.listdir(dir .. "/restore-drill") or {})
    assert.are.equal(0, sb:runbook({ "audit", "verify", id }).code)

    r = exec { "--param", "prefix=cut_db-" }
    assert.are.equal(1, r.code, r.stderr)
    assert.truthy(r.stderr:find('/restore-drill/cut_db-20260304T080000Z.sql is cut short: a plain pg_dump ends with "-- PostgreSQL database dump complete"', 1, true), r.stderr)
    assert.are.equal("", scratch_dbs())
  end)
end)
