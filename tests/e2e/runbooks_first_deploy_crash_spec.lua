-- runbooks/first-deploy.lua killed with SIGKILL at every step boundary and
-- inside M3 (the generated secrets), M7 (the migration Job) and M14 (the
-- R2 migration), then resumed, ends in the state an uninterrupted run ends
-- in: the same secret values as at the kill, one migration Job, one
-- bucket, the tezca role logging in to its database with the Secret's
-- password, every object created once, no CLI command that changes
-- something called twice (questions such as `gh secret list` may be asked
-- again by a resume), each step finished once, the chain intact.
--
-- Each trial starts from the world `scripts/sandbox.sh up` leaves
-- (Sandbox:reset_world) with a store of its own, and is driven by the
-- sandbox's rehearsal, which plays the guide's people at the manual steps.
-- The kill is exact: RUNBOOK_FAILPOINT=after:N stops the process (SIGSTOP)
-- right after journal event N is durable, and the test SIGKILLs it there.
local rb = require "rbtest"
local sandbox = require "sandbox"
local pg = require "runbook.pg"

local RUNBOOK = rb.source_dir .. "/runbooks/first-deploy.lua"
local NS = "tezca"
local KINDS = {
  { api_version = "v1", kind = "Secret" }, { api_version = "v1", kind = "ConfigMap" },
  { api_version = "batch/v1", kind = "Job" }, { api_version = "apps/v1", kind = "Deployment" },
}
-- the steps the issue names for kills inside them (and M3-db, between its
-- CREATE ROLE and CREATE DATABASE), besides every boundary
local INSIDE = { M3 = true, ["M3-db"] = true, M7 = true, M14 = true }
-- CLI calls that only ask: a resume may ask again
local QUESTIONS = { "^gh secret list ", "^gh run list ", "^gh api " }

local function question(line)
  for _, pat in ipairs(QUESTIONS) do if line:match(pat) then return true end end
  return false
end

local function sorted(t)
  table.sort(t)
  return t
end

-- A Job the runbook creates is named PREFIX-<HHMMSS-hex of the run id>: the same
-- Job in two runs has two names
local function normal_name(kind, name)
  if kind == "Job" then return (name:gsub("%-%d%d%d%d%d%d%-%x+$", "-*")) end
  return name
end

describe("runbooks/first-deploy.lua killed with SIGKILL and resumed", function()
  local sb, dir, cluster
  local baseline -- the world after an uninterrupted run, and its journal

  setup(function()
    dir = rb.tmpdir("fdcrash")
    sb = sandbox.up(dir, { quiet = true })
    cluster = sb:cluster(NS)
  end)
  teardown(function()
    if cluster then cluster:close() end
    if dir then
      sandbox.down(dir, { quiet = true })
      rb.rmtree(dir)
    end
  end)

  -- tezca-secrets' values in clear (the client hands them out wrapped)
  local function secret_data()
    local s = cluster:get { kind = "Secret", name = "tezca-secrets" }
    if not s then return nil end
    local out = {}
    for k, v in pairs(s.data or {}) do out[k] = type(v) == "string" and v or v:reveal() end
    return out
  end

  -- what a run leaves behind, in a form two runs can be compared in
  local function world()
    local w = { objects = {}, created = {}, cli = {}, questions = 0 }
    for _, line in ipairs(sb:cli_log()) do
      if question(line) then w.questions = w.questions + 1 else w.cli[#w.cli + 1] = line end
    end
    sorted(w.cli)
    for _, k in ipairs(KINDS) do
      for _, obj in ipairs(cluster:list { api_version = k.api_version, kind = k.kind }) do
        w.objects[#w.objects + 1] = k.kind .. " " .. normal_name(k.kind, obj.metadata.name)
      end
    end
    sorted(w.objects)
    -- every create the API accepted (a second create of one object would
    -- be a second 201; a create refused with 409 changes nothing)
    local counts = {}
    for _, req in ipairs(sb.fake:requests()) do
      if req.method == "POST" and req.status and req.status >= 200 and req.status < 300
          and not req.path:find("/_fake/", 1, true) then
        counts[req.path] = (counts[req.path] or 0) + 1
      end
    end
    for path, n in pairs(counts) do w.created[#w.created + 1] = path .. " x" .. n end
    sorted(w.created)
    w.secret_keys = {}
    for k in pairs(secret_data() or {}) do w.secret_keys[#w.secret_keys + 1] = k end
    sorted(w.secret_keys)
    local s3 = require "runbook.s3"
    local secret = require "runbook.secret"
    local s = sb.services.s3
    local client <close> = s3.connect { endpoint = s.endpoint, region = s.region, access_key = s.access_key,
      secret_key = secret.wrap(s.secret_key) }
    w.bucket = client:bucket_exists(sandbox.R2_BUCKET)
    -- M3-db: tezca logs in to its database with the Secret's password and owns it
    local pw = secret_data() and secret_data().DB_PASSWORD
    local db = pw and pg.try_connect(pg.conninfo(sb:pg_url(sandbox.TEZCA_DB), { user = "tezca", password = pw }))
    w.tezca_db = db and db:value("SELECT current_user || ' owns ' || (SELECT pg_get_userbyid(datdba) FROM pg_database "
      .. "WHERE datname = current_database()) ") or false
    if db then db:close() end
    return w
  end

  -- each step's step.finished (or its end as a confirmed manual step) once
  local function finished_once(events, label)
    local done = {}
    for _, e in ipairs(events) do
      if e.type == "step.finished" then
        assert.is_nil(done[e.step], label .. ": step " .. tostring(e.step) .. " finished twice")
        done[e.step] = true
      end
    end
    return done
  end

  local function trial(label, kill_after)
    sb:reset_world()
    local state = dir .. "/state-" .. label
    local at_kill
    local r = sb:rehearse(RUNBOOK, { quiet = true, env = { RUNBOOK_STATE = state }, kill_after = kill_after,
      on_kill = function() at_kill = secret_data() end })
    local events = rb.journal(state)
    return r, events, world(), at_kill
  end

  it("runs uninterrupted, recording the world it leaves", function()
    local r, events, w = trial("baseline")
    assert.is_nil(r.killed)
    assert.are.equal("run.started", events[1].type)
    assert.are.equal("run.finished", events[#events].type)
    finished_once(events, "baseline")
    -- the facts the trials compare against are real ones
    assert.is_true(w.bucket)
    assert.truthy(#w.secret_keys >= 7, table.concat(w.secret_keys, " "))
    local migrate = 0
    for _, o in ipairs(w.objects) do if o == "Job tezca-migrate-*" then migrate = migrate + 1 end end
    assert.are.equal(1, migrate, table.concat(w.objects, "\n"))
    assert.truthy(#w.cli >= 4, table.concat(w.cli, "\n"))
    assert.truthy(w.questions >= 5, "gh was asked " .. w.questions .. " question(s)")
    assert.are.equal("tezca owns tezca", w.tezca_db)
    baseline = { events = events, world = w }
  end)

  it("ends in the same state after a SIGKILL at every step boundary and inside M3, M7 and M14", function()
    assert.truthy(baseline, "the uninterrupted run failed")
    local events = baseline.events
    local points, inside = {}, 0
    for k = 1, #events - 1 do
      local e, nxt = events[k], events[k + 1]
      local boundary = e.type == "step.finished" or (nxt.type == "step.started" and e.type ~= "step.started")
      local within = e.step and INSIDE[e.step] and e.type ~= "step.finished"
      if within then inside = inside + 1 end
      if boundary or within then points[#points + 1] = k end
    end
    -- M3 generates and creates, M7 creates and watches its Job, M14 too
    assert.truthy(inside >= 6, "only " .. inside .. " events inside M3, M7 and M14")
    assert.truthy(#points >= 20, #points .. " kill points")
    for _, k in ipairs(points) do
      local label = string.format("kill after event %d (%s %s)", k, events[k].type, tostring(events[k].step))
      local r, evs, w, at_kill = trial("k" .. k, k)
      assert.truthy(r.killed, label .. ": the process never stopped there")
      assert.are.equal("run.finished", evs[#evs].type, label)
      finished_once(evs, label)
      -- the same world as the uninterrupted run
      assert.are.same(baseline.world.objects, w.objects, label .. ": objects")
      assert.are.same(baseline.world.created, w.created, label .. ": creates")
      assert.are.same(baseline.world.cli, w.cli, label .. ": CLI calls")
      assert.are.same(baseline.world.secret_keys, w.secret_keys, label .. ": secret keys")
      assert.are.equal("tezca owns tezca", w.tezca_db, label .. ": the tezca role and database")
      assert.is_true(w.bucket, label .. ": bucket")
      -- the values generated before the kill are the values after the resume
      local now = secret_data()
      for key, value in pairs(at_kill or {}) do
        assert.are.equal(value, now[key], label .. ": " .. key .. " changed across the kill")
      end
    end
  end)
end)
