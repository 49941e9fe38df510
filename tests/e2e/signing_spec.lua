-- Signed runbooks: keygen, sign, and exec --require-signature --trust,
-- refusing (exit 2, before any of the runbook's code runs) an unsigned,
-- modified or untrusted-key runbook, a changed or uncovered module, and an
-- altered signature; the signer's key id lands in run.started.
local rb = require "rbtest"
local fs = require "runbook._fs"
local json = require "runbook._json"

local BOOK = [[
local h = require "lib.helper"
-- a module loaded only when asked: unsigned unless it was loaded at signing
if os.getenv("EXTRA") then require "lib.extra" end
runbook "signed" {}
step "a" { run = function(ctx) ctx:log("helper says %s", h.word) end }
]]
-- a module that leaves a mark when its code runs
local HELPER = [[
local f = io.open(os.getenv("MARK"), "a"); if f then f:write("helper ran\n"); f:close() end
return { word = "hi" }
]]

describe("signed runbooks", function()
  local dir, env
  before_each(function()
    dir = rb.tmpdir("signing")
    assert(fs.mkdir_p(dir .. "/lib", 448))
    assert(fs.mkdir_p(dir .. "/trust", 448))
    rb.write(dir .. "/book.lua", BOOK)
    rb.write(dir .. "/lib/helper.lua", HELPER)
    env = { MARK = dir .. "/mark" }
  end)
  after_each(function() rb.rmtree(dir) end)

  local function run(args) return rb.run(args, { cwd = dir, env = env }) end
  local function strict() return rb.exec({ "book.lua", "--new", "--require-signature", "--trust", "trust" }, { cwd = dir, env = env }) end
  local function ran() return rb.exists(dir .. "/mark") end

  local function keygen_and_sign()
    local k = run { "keygen", "--out", "ops" }
    assert.are.equal(0, k.code, k.stderr)
    local kid = k.stdout:match("^key (%x+):")
    assert.are.equal(16, #kid)
    assert.are.equal(384, fs.stat(dir .. "/ops.pem").mode & 511, "the private key is 0600")
    assert(os.rename(dir .. "/ops.pub", dir .. "/trust/ops.pub"))
    local s = run { "sign", "book.lua", "--key", "ops.pem" }
    assert.are.equal(0, s.code, s.stderr)
    -- signing loads the book, so the helper ran then: start from no mark
    assert(os.remove(dir .. "/mark"))
    return kid
  end

  it("runs a signed runbook and records its signer", function()
    local kid = keygen_and_sign()
    local sig = json.decode(rb.read(dir .. "/book.lua.sig"))
    assert.are.same({ "book.lua", "lib/helper.lua" }, { sig.files[1].path, sig.files[2].path })
    assert.are.equal(kid, sig.key_id)
    local r = strict()
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(kid, rb.events(dir .. "/.runbook", "run.started")[1].signer)
  end)

  it("refuses, before any code runs, what is unsigned, changed, uncovered or signed by a stranger", function()
    local r = strict()
    assert.are.equal(2, r.code)
    assert.is_truthy(r.stderr:find("book.lua is not signed (no book.lua.sig); sign it with `runbook sign book.lua --key KEY.pem`", 1, true), r.stderr)

    local kid = keygen_and_sign()
    local good_sig = rb.read(dir .. "/book.lua.sig")

    rb.write(dir .. "/lib/helper.lua", HELPER .. "-- edited\n")
    r = strict()
    assert.are.equal(2, r.code)
    assert.is_truthy(r.stderr:find("module lib/helper.lua changed since book.lua was signed (sha256 ", 1, true), r.stderr)
    assert.is_false(ran(), "the changed module's code ran")
    rb.write(dir .. "/lib/helper.lua", HELPER)

    local sig = json.decode(good_sig)
    rb.write(dir .. "/book.lua", 'local e = 1\n' .. BOOK)
    r = strict()
    assert.are.equal(2, r.code)
    assert.is_truthy(r.stderr:find("book.lua changed since it was signed (sha256 " .. sig.files[1].sha256:sub(1, 12), 1, true), r.stderr)
    assert.is_false(ran())
    rb.write(dir .. "/book.lua", BOOK)

    -- an altered signature file
    sig.files[2].sha256 = string.rep("0", 64)
    rb.write(dir .. "/book.lua.sig", json.encode(sig))
    r = strict()
    assert.are.equal(2, r.code)
    assert.is_truthy(r.stderr:find("the signature in book.lua.sig does not verify with key " .. kid .. ": the signature file was altered", 1, true), r.stderr)

    -- signed by a key nobody trusts (made with openssl: PEM as runbook reads it)
    local p = require("runbook._proc").spawn { argv = { "openssl", "genpkey", "-algorithm", "ed25519", "-out", dir .. "/stranger.pem" } }
    assert.are.equal(0, p:communicate({ timeout = 30 }).code)
    assert.are.equal(0, run({ "sign", "book.lua", "--key", "stranger.pem" }).code)
    os.remove(dir .. "/mark")
    r = strict()
    assert.are.equal(2, r.code)
    assert.is_truthy(r.stderr:find("which is not among the trusted keys in trust (" .. kid .. ")", 1, true), r.stderr)
    assert.is_false(ran())

    -- no trust folder named
    r = rb.exec({ "book.lua", "--require-signature" }, { cwd = dir, env = env })
    assert.are.equal(2, r.code)
    assert.is_truthy(r.stderr:find("--require-signature needs --trust DIR (or RUNBOOK_TRUST)", 1, true), r.stderr)
  end)

  it("refuses a module the signature does not cover, before its code runs", function()
    keygen_and_sign()
    rb.write(dir .. "/lib/extra.lua", HELPER)
    env.EXTRA = "1"
    local r = strict()
    assert.are.equal(2, r.code)
    assert.is_truthy(r.stderr:find("module lib/extra.lua is loaded by book.lua but not covered by its signature", 1, true), r.stderr)
    assert.are.equal("helper ran\n", rb.read(dir .. "/mark"), "the signed helper ran, the unsigned module did not")
  end)
end)
