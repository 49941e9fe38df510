-- Audit on the PostgreSQL store with a real server: the tip in the runs
-- table is HMAC'd with the run's audit key, so someone who can delete
-- events and rewrite the runs table cannot cut a run's end off unseen; and
-- schema version 1 (no tip HMAC) is upgraded by the tool, or refused with
-- both versions named when the user may not alter the tables.
local rb = require "rbtest"
local pgserver = require "pgserver"
local crypto = require "runbook._crypto"
local json = require "runbook._json"

local srv
-- a fresh database and its URL (no password: it goes through PGPASSWORD)
local function fresh_db() return srv:store_db("audit") end

local AUDIT_KEY = "team-audit-key-8c41f0e2d9"

local env_with = pgserver.password_env

setup(function() srv = pgserver.start() end)
teardown(function() if srv then srv:stop() end end)

local BOOK = 'runbook "a" {}\nstep "A" { run = function() end }\nstep "B" { run = function() end }\nstep "C" { run = function() end }\n'

describe("audit on the PostgreSQL store", function()
  it("says, for a run without HMACs, that whoever can write the events table can recompute its chain", function()
    local url = fresh_db()
    local dir = rb.tmpdir("pgnohmac")
    rb.write(dir .. "/a.lua", BOOK)
    assert.are.equal(0, rb.exec({ "a.lua" }, { state = url, cwd = dir, env = env_with() }).code)
    local r = rb.run({ "audit", "verify", "last", "--state", url }, { cwd = dir, env = env_with() })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("hash chain intact (no HMAC: anyone who can write the events table can recompute the chain;", 1, true), r.stdout)
  end)

  it("HMACs the tip with the run's key, so cutting events off and moving the tip back is caught", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgtiphmac")
    rb.write(dir .. "/a.lua", BOOK)
    local env = env_with { RUNBOOK_AUDIT_KEY = AUDIT_KEY }
    local function verify(ref) return rb.run({ "audit", "verify", ref, "--state", url }, { cwd = dir, env = env }) end
    assert.are.equal(0, rb.exec({ "a.lua" }, { state = url, cwd = dir, env = env }).code)
    assert.are.equal(0, rb.exec({ "a.lua" }, { state = url, cwd = dir, env = env, new = true }).code)
    local ids = {}
    for id in srv:psql("SELECT id FROM runbook_runs ORDER BY created_at", db):gmatch("%S+") do ids[#ids + 1] = id end
    -- the tip's HMAC is the file store's tip MAC over the same text
    local tip = srv:psql(string.format("SELECT last_seq || ' ' || last_hash || ' ' || last_hmac FROM runbook_runs WHERE id = '%s'", ids[1]), db)
    local seq, hash, mac = tip:match("^(%d+) (%x+) (%x+)$")
    assert.are.equal(crypto.hmac_sha256(AUDIT_KEY, string.format("runbook-tip 1 %s %s %s", ids[1], seq, hash)), mac)
    local r = verify(ids[1])
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("HMACs verified", 1, true), r.stdout)
    -- a clean cut: the last two events deleted, the tip moved back to the
    -- event now last, whose hash is right there in its row
    for n, id in ipairs(ids) do
      srv:psql(string.format("DELETE FROM runbook_events WHERE run = '%s' AND seq > 6", id), db)
      srv:psql(string.format([[UPDATE runbook_runs SET last_seq = 6, last_type = 'step.started',
        last_hash = (SELECT hash FROM runbook_events WHERE run = '%s' AND seq = 6)%s WHERE id = '%s']], id,
        n == 2 and ", last_hmac = NULL" or "", id), db)
    end
    r = verify(ids[1])
    assert.are.equal(1, r.code, r.stdout)
    assert.truthy(r.stderr:find("run " .. ids[1] .. ": audit FAILED at seq 6", 1, true), r.stderr)
    assert.truthy(r.stderr:find("has a wrong HMAC: it was rewritten without the run's key", 1, true), r.stderr)
    r = verify(ids[2])
    assert.are.equal(1, r.code, r.stdout)
    assert.truthy(r.stderr:find("run " .. ids[2] .. ": audit FAILED at seq 6", 1, true), r.stderr)
    assert.truthy(r.stderr:find("has no HMAC", 1, true), r.stderr)
    -- and such a run is not continued
    r = rb.run({ "reset", ids[1], "C", "--state", url }, { cwd = dir, env = env })
    assert.are.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("the journal is damaged at seq 6", 1, true), r.stderr)
    rb.rmtree(dir)
  end)

  it("names run and seq for a row deleted in the middle and for a row inserted past the tip", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgmiddle")
    rb.write(dir .. "/a.lua", BOOK)
    local env = env_with()
    assert.are.equal(0, rb.exec({ "a.lua" }, { state = url, cwd = dir, env = env }).code)
    assert.are.equal(0, rb.exec({ "a.lua" }, { state = url, cwd = dir, env = env, new = true }).code)
    local ids = {}
    for id in srv:psql("SELECT id FROM runbook_runs ORDER BY created_at", db):gmatch("%S+") do ids[#ids + 1] = id end
    srv:psql(string.format("DELETE FROM runbook_events WHERE run = '%s' AND seq = 3", ids[1]), db)
    -- a copy of the last event one seq on, hash and all, added by hand
    srv:psql(string.format([[INSERT INTO runbook_events (run, seq, type, step, body, prev, hash, hmac)
      SELECT run, seq + 1, type, step, body, prev, hash, hmac FROM runbook_events WHERE run = '%s' AND seq = 8]], ids[2]), db)
    local r = rb.run({ "audit", "verify", "--all", "--state", url }, { cwd = dir, env = env })
    assert.are.equal(1, r.code, r.stdout)
    assert.truthy(r.stderr:find("run " .. ids[1] .. ": audit FAILED at seq 3", 1, true), r.stderr)
    assert.truthy(r.stderr:find("expected seq 3, found seq 4", 1, true), r.stderr)
    assert.truthy(r.stderr:find("run " .. ids[2] .. ": audit FAILED at seq 9", 1, true), r.stderr)
    -- neither is continued
    for _, id in ipairs(ids) do
      r = rb.run({ "reset", id, "A", "--state", url }, { cwd = dir, env = env })
      assert.are.equal(2, r.code, r.stderr)
      assert.truthy(r.stderr:find("run " .. id .. ": the journal is damaged at seq", 1, true), r.stderr)
    end
    rb.rmtree(dir)
  end)

  it("resumes a waiting run whose runs row was marked finished by hand: the events say what a run is", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pglasttype")
    rb.write(dir .. "/w.lua", 'runbook "w" {}\nstep "A" { run = function() end }\nmanual "M" { instructions = "look" }\nstep "C" { run = function() end }\n')
    local env = env_with()
    assert.are.equal(3, rb.exec({ "w.lua" }, { state = url, cwd = dir, env = env, yes = true }).code)
    -- last_type is one of the columns operators may update
    srv:psql("UPDATE runbook_runs SET last_type = 'run.finished'", db)
    local r = rb.exec({ "w.lua" }, { state = url, cwd = dir, env = env, yes = true })
    assert.are.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find("Resuming w-", 1, true), r.stderr)
    assert.are.equal("1", srv:psql("SELECT count(*) FROM runbook_runs", db), "no second run was started")
    rb.rmtree(dir)
  end)

  it("keeps the tip's HMAC right when a parallel group's steps append from their own connections", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgparhmac")
    local lines = { 'runbook "par" {}', 'parallel "g" {' }
    for i = 1, 6 do
      lines[#lines + 1] = string.format('  step "P%d" { run = function(ctx) for j = 1, 10 do ctx:checkpoint("j", j) end end },', i)
    end
    lines[#lines + 1] = "}"
    lines[#lines + 1] = 'step "Z" { needs = { "P1", "P2", "P3", "P4", "P5", "P6" }, run = function() end }'
    rb.write(dir .. "/par.lua", table.concat(lines, "\n") .. "\n")
    local env = env_with { RUNBOOK_AUDIT_KEY = AUDIT_KEY }
    local r = rb.exec({ "par.lua", "--jobs", "6" }, { state = url, cwd = dir, env = env })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("60", srv:psql("SELECT count(*) FROM runbook_events WHERE type = 'step.checkpoint'", db))
    local tip = srv:psql("SELECT id || ' ' || last_seq || ' ' || last_hash || ' ' || last_hmac FROM runbook_runs", db)
    local id, seq, hash, mac = tip:match("^(%S+) (%d+) (%x+) (%x+)$")
    assert.are.equal(srv:psql(string.format("SELECT max(seq) FROM runbook_events WHERE run = '%s'", id), db), seq)
    assert.are.equal(crypto.hmac_sha256(AUDIT_KEY, string.format("runbook-tip 1 %s %s %s", id, seq, hash)), mac)
    r = rb.run({ "audit", "verify", "--all", "--state", url }, { cwd = dir, env = env })
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("HMACs verified", 1, true), r.stdout)
    rb.rmtree(dir)
  end)

  it("gives a pushed HMAC-protected run an HMAC'd tip", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgpushhmac")
    rb.write(dir .. "/a.lua", BOOK)
    local env = env_with { RUNBOOK_AUDIT_KEY = AUDIT_KEY, HOME = dir }
    assert.are.equal(0, rb.exec({ "a.lua" }, { cwd = dir, env = env }).code)
    local r = rb.run({ "push", "last", "--state", url }, { cwd = dir, env = env })
    assert.are.equal(0, r.code, r.stderr)
    local tip = srv:psql("SELECT id || ' ' || last_seq || ' ' || last_hash || ' ' || last_hmac FROM runbook_runs", db)
    local id, seq, hash, mac = tip:match("^(%S+) (%d+) (%x+) (%x+)$")
    assert.are.equal(crypto.hmac_sha256(AUDIT_KEY, string.format("runbook-tip 1 %s %s %s", id, seq, hash)), mac)
    assert.are.equal(0, rb.run({ "audit", "verify", id, "--state", url }, { cwd = dir, env = env }).code)
    rb.rmtree(dir)
  end)

  it("exports lines a SIEM can check by the documented rules, the same bytes from both stores, the version in seq 1", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgsiem")
    rb.write(dir .. "/s.lua", 'runbook "siem" {}\nstep "migrate" { run = function(ctx) ctx:log("applied 3") return { n = 3 } end }\nstep "smoke" { run = function() end }\n')
    local env = env_with { RUNBOOK_AUDIT_KEY = AUDIT_KEY, HOME = dir }
    -- the same run on the file store, then pushed: one export from each
    assert.are.equal(0, rb.exec({ "s.lua" }, { cwd = dir, env = env }).code)
    local id = json.decode((rb.run({ "runs", "--output", "json" }, { cwd = dir, env = env }).stdout:match("^[^\n]+"))).run
    local local_export = rb.run({ "log", id, "--output", "json" }, { cwd = dir, env = env })
    assert.are.equal(0, local_export.code, local_export.stderr)
    assert.are.equal(0, rb.run({ "push", id, "--state", url }, { cwd = dir, env = env }).code)
    local shared = rb.run({ "log", id, "--output", "json", "--state", url }, { cwd = dir, env = env })
    assert.are.equal(0, shared.code, shared.stderr)
    assert.are.equal(local_export.stdout, shared.stdout, "the same bytes from both stores")
    -- as a consumer: each line on its own, by docs/teams.md and docs/journal.md
    local prev, n = string.rep("0", 64), 0
    for line in shared.stdout:gmatch("[^\n]+") do
      n = n + 1
      local ev = json.decode(line)
      assert.are.equal(n, ev.seq)
      assert.are.equal(id, ev.run)
      assert.truthy(ev.ts:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"), ev.ts)
      assert.are.equal("string", type(ev.type))
      if ev.type:match("^step%.") then assert.are.equal("string", type(ev.step), line) end
      assert.are.equal(prev, ev.prev)
      local covered = line:match("^(.-),\"hash\":") .. "}"
      assert.are.equal(crypto.sha256(covered), ev.hash, "hash of seq " .. n)
      assert.are.equal(crypto.hmac_sha256(AUDIT_KEY, covered), ev.hmac, "hmac of seq " .. n)
      assert.truthy(line:find('"hash":"' .. ev.hash .. '","hmac":"' .. ev.hmac .. '"}$'), "hash and hmac come last")
      if n == 1 then
        assert.are.equal("run.started", ev.type)
        assert.are.equal(1, ev.log_format, "the export's version")
      end
      prev = ev.hash
    end
    assert.are.equal(6, n) -- run.started, two steps' started and finished, run.finished
    assert.are.equal(tostring(n), srv:psql(string.format("SELECT count(*) FROM runbook_events WHERE run = '%s'", id), db))
    rb.rmtree(dir)
  end)

  it("upgrades a schema version 1 store in place, and names both versions when the user may not", function()
    local url, db = fresh_db()
    local dir = rb.tmpdir("pgupgrade")
    rb.write(dir .. "/a.lua", BOOK)
    local env = env_with()
    assert.are.equal(0, rb.exec({ "a.lua" }, { state = url, cwd = dir, env = env }).code)
    -- back to what a version 1 binary made
    local function downgrade()
      srv:psql("ALTER TABLE runbook_runs DROP COLUMN last_hmac; UPDATE runbook_schema SET version = 1", db)
    end
    downgrade()
    assert.are.equal("1", srv:psql("SELECT max(version) FROM runbook_schema", db))
    -- an operator who may not alter the tables is told what to do
    srv:psql("CREATE ROLE op2 LOGIN PASSWORD 'op2-pw-7'", db)
    srv:psql(table.concat({
      "GRANT SELECT ON runbook_schema TO op2",
      "GRANT SELECT, INSERT ON runbook_events, runbook_log TO op2",
      "GRANT SELECT, INSERT, UPDATE (last_seq, last_hash, last_type, updated_at) ON runbook_runs TO op2",
      "GRANT SELECT, INSERT, UPDATE ON runbook_locks TO op2",
    }, "; "), db)
    local op = url:gsub("^postgres://rbtest@", "postgres://op2@")
    local r = rb.run({ "runs", "--state", op }, { cwd = dir, env = { PGPASSWORD = "op2-pw-7" } })
    assert.are.equal(2, r.code, r.stderr)
    assert.truthy(r.stderr:find("has schema version 1 and this runbook (", 1, true), r.stderr)
    assert.truthy(r.stderr:find(") needs version 2, but cannot upgrade it as this user", 1, true), r.stderr)
    assert.truthy(r.stderr:find("as the owner of its tables", 1, true), r.stderr)
    assert.are.equal("1", srv:psql("SELECT max(version) FROM runbook_schema", db), "nothing changed")
    -- the owner's next command upgrades it; the old run still verifies and resumes
    r = rb.run({ "audit", "verify", "--all", "--state", url }, { cwd = dir, env = env })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("2", srv:psql("SELECT max(version) FROM runbook_schema", db))
    assert.are.equal("1", srv:psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'runbook_runs' AND column_name = 'last_hmac'", db))
    assert.are.equal(0, rb.exec({ "a.lua" }, { state = url, cwd = dir, env = env, new = true }).code)
    assert.are.equal(0, rb.run({ "audit", "verify", "--all", "--state", url }, { cwd = dir, env = env }).code)
    rb.rmtree(dir)
  end)
end)
