-- client:ensure_lifecycle against moto with signature checking: rules are
-- created, found unchanged, changed, kept beside other ids' rules, refused
-- when malformed, and only reported in a dry run. The Content-MD5 the PUT
-- carries is checked against a known digest (RFC 1321's test suite).
local s3server = require "s3server"
local s3 = require "runbook.s3"
local secret = require "runbook.secret"
local audit = require "runbook._engine.audit"
local md5 = require "runbook.s3._md5"

describe("runbook.s3 lifecycle rules", function()
  local srv, client

  setup(function()
    srv = s3server.start()
    client = s3.connect { endpoint = srv.endpoint, region = srv.region, access_key = srv.access_key,
      secret_key = secret.wrap(srv.secret_key) }
    client:ensure_bucket("lifecycle-a")
    client:ensure_bucket("lifecycle-b")
  end)
  teardown(function()
    if client then client:close() end
    if srv then srv:stop() end
  end)
  before_each(function() audit.reset() end)

  it("computes MD5 as RFC 1321 says", function()
    for input, want in pairs {
      [""] = "d41d8cd98f00b204e9800998ecf8427e",
      ["a"] = "0cc175b9c0f1b6a831c399e269772661",
      ["abc"] = "900150983cd24fb0d6963f7d28e17f72",
      ["message digest"] = "f96b697d7cb7938d525a2f31aaf161d0",
      ["abcdefghijklmnopqrstuvwxyz"] = "c3fcd3d76192e4007dfb496cca67e13b",
      [string.rep("1234567890", 8)] = "57edf4a22be3c955ac49da2e2107b67a",
    } do
      assert.are.equal(want, md5.hex(input), input)
    end
  end)

  it("creates the rules, then finds them unchanged", function()
    assert.are.same({}, client:lifecycle("lifecycle-a"))
    local rules = { { id = "pg-backups", prefix = "pg/daily/", expire_days = 35, abort_incomplete_days = 1 } }
    assert.are.equal("configured", client:ensure_lifecycle { bucket = "lifecycle-a", rules = rules })
    assert.are.equal(1, #audit.recorded)
    local a = audit.recorded[1]
    assert.are.same({ "s3", "put-lifecycle", "lifecycle-a", { "pg-backups" } }, { a.kind, a.verb, a.bucket, a.rules })
    assert.are.equal("set lifecycle of s3://lifecycle-a: pg-backups (pg/daily/: expire after 35 d, abort uploads after 1 d)", a.summary)
    local got = client:lifecycle("lifecycle-a")
    assert.are.same({ { "pg-backups", "pg/daily/", 35, 1, true } },
      { { got[1].id, got[1].prefix, got[1].expire_days, got[1].abort_incomplete_days, got[1].plain } })
    audit.reset()
    assert.are.equal("unchanged", client:ensure_lifecycle { bucket = "lifecycle-a", rules = rules })
    assert.are.equal(0, #audit.recorded)
  end)

  it("changes a rule and keeps the rules of other ids", function()
    assert.are.equal("configured", client:ensure_lifecycle { bucket = "lifecycle-b",
      rules = { { id = "logs", prefix = "logs/", expire_days = 14 } } })
    assert.are.equal("configured", client:ensure_lifecycle { bucket = "lifecycle-b",
      rules = { { id = "backups", prefix = "pg/", expire_days = 7 } } })
    assert.are.equal("configured", client:ensure_lifecycle { bucket = "lifecycle-b",
      rules = { { id = "backups", prefix = "pg/", expire_days = 8 } } })
    local by_id = {}
    for _, r in ipairs(client:lifecycle("lifecycle-b")) do by_id[r.id] = { r.prefix, r.expire_days } end
    assert.are.same({ logs = { "logs/", 14 }, backups = { "pg/", 8 } }, by_id)
    assert.are.equal("unchanged", client:ensure_lifecycle { bucket = "lifecycle-b",
      rules = { { id = "logs", prefix = "logs/", expire_days = 14 }, { id = "backups", prefix = "pg/", expire_days = 8 } } })
  end)

  it("refuses malformed rules before sending anything", function()
    for _, bad in ipairs {
      { rules = {} },
      { rules = { { prefix = "x/", expire_days = 1 } } },
      { rules = { { id = "x", prefix = "x/" } } },
      { rules = { { id = "x", expire_days = 0 } } },
      { rules = { { id = "x", expire_days = 1.5 } } },
      { rules = { { id = "x", expire_days = 1, days = 3 } } },
      { rules = { { id = "x", expire_days = 1 }, { id = "x", expire_days = 2 } } },
    } do
      bad.bucket = "lifecycle-a"
      local ok, err = pcall(client.ensure_lifecycle, client, bad)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("s3:ensure_lifecycle: ", 1, true), tostring(err))
    end
    assert.are.equal(0, #audit.recorded)
  end)

  it("reports a change in a dry run without making it", function()
    local actions = {}
    audit.set_sink { dry_run = true, action = function(t) actions[#actions + 1] = t end, log = function() end, progress = function() end }
    local ok, err = pcall(function()
      assert.are.equal("would configure", client:ensure_lifecycle { bucket = "lifecycle-a",
        rules = { { id = "pg-backups", prefix = "pg/daily/", expire_days = 7 } } })
      assert.are.equal("unchanged", client:ensure_lifecycle { bucket = "lifecycle-a",
        rules = { { id = "pg-backups", prefix = "pg/daily/", expire_days = 35, abort_incomplete_days = 1 } } })
    end)
    audit.set_sink(nil)
    assert(ok, err)
    assert.are.same({ { "put-lifecycle", true } }, { { actions[1].verb, actions[1].dry_run } })
    assert.are.equal(35, client:lifecycle("lifecycle-a")[1].expire_days)
  end)

  it("names a missing bucket", function()
    local ok, err = pcall(client.ensure_lifecycle, client, { bucket = "no-such-bucket-here",
      rules = { { id = "x", expire_days = 1 } } })
    assert.is_false(ok)
    assert.are.same({ "s3", "NoSuchBucket" }, { err.kind, err.code })
  end)
end)
