-- runbook.s3 against a real moto_server that verifies SigV4 signatures
-- (tests/harness/s3server.lua). moto checks signatures over the path as
-- its web layer re-quotes it, which differs from AWS for a few characters
-- in keys ("+", "*", "=", "&", non-ASCII): names here stay within what both
-- agree on. (The harness hands moto the query as sent, so "/" in a query
-- value, as in every prefix listing, is checked as AWS checks it.)
local s3 = require "runbook.s3"
local json = require "runbook._json"
local crypto = require "runbook._crypto"
local audit = require "runbook._engine.audit"
local secret = require "runbook.secret"
local s3server = require "s3server"
local rbtest = require "rbtest"

local function pattern_bytes(n, seed)
  local t, i = {}, 0
  while i < n do
    local piece = string.format("%08d:%s|", i, seed or "x")
    t[#t + 1] = piece
    i = i + #piece
  end
  return table.concat(t):sub(1, n)
end

describe("runbook.s3", function()
  local srv, store, dir

  setup(function()
    srv = s3server.start()
    store = s3.connect { endpoint = srv.endpoint, region = srv.region, access_key = srv.access_key,
      secret_key = secret.wrap(srv.secret_key), part_size = 4096 }
    store:ensure_bucket("runbook-tests")
    dir = rbtest.tmpdir("s3")
  end)
  teardown(function()
    if store then store:close() end
    if srv then srv:stop() end
    if dir then rbtest.rmtree(dir) end
  end)
  before_each(function() audit.reset() end)

  describe("buckets", function()
    it("creates a bucket once and reports it exists after", function()
      assert.are.equal("created", store:ensure_bucket("ensure-me"))
      assert.are.equal("exists", store:ensure_bucket("ensure-me"))
      assert.is_true(store:bucket_exists("ensure-me"))
      assert.is_false(store:bucket_exists("never-made"))
      assert.are.equal(1, #audit.recorded)
      assert.are.same({ kind = "s3", verb = "create-bucket", bucket = "ensure-me", summary = "created bucket s3://ensure-me" }, audit.recorded[1])
      store:delete_bucket("ensure-me")
      assert.is_false(store:bucket_exists("ensure-me"))
    end)
  end)

  describe("objects", function()
    it("puts and gets a string, recording size and sha256", function()
      local body = "hello, object storage"
      local info = store:put { bucket = "runbook-tests", key = "dir/hello world.txt", body = body,
        content_type = "text/plain", metadata = { owner = "devops" } }
      assert.are.equal(#body, info.size)
      assert.are.equal(crypto.sha256(body), info.sha256)
      assert.are.equal("s3://runbook-tests/dir/hello world.txt", info.location)
      local got, meta = store:get { bucket = "runbook-tests", key = "dir/hello world.txt" }
      assert.are.equal(body, got)
      assert.are.equal(info.sha256, meta.sha256)
      local head = store:head { bucket = "runbook-tests", key = "dir/hello world.txt" }
      assert.are.equal(#body, head.size)
      assert.are.equal("text/plain", head.content_type)
      assert.are.equal("devops", head.metadata.owner)
      assert.are.equal(info.etag, head.etag)
      local a = audit.recorded[1]
      assert.are.equal("put", a.verb)
      assert.are.equal("runbook-tests", a.bucket)
      assert.are.equal("dir/hello world.txt", a.key)
      assert.are.equal(#body, a.size)
      assert.are.equal(crypto.sha256(body), a.sha256)
    end)

    it("puts a file and gets it back into a file", function()
      local src, dst = dir .. "/small.bin", dir .. "/small.out"
      local data = pattern_bytes(3000, "file")
      rbtest.write(src, data)
      local info = store:put { bucket = "runbook-tests", key = "files/small.bin", file = src }
      assert.are.equal(3000, info.size)
      assert.are.equal(crypto.sha256(data), info.sha256)
      local got = store:get { bucket = "runbook-tests", key = "files/small.bin", file = dst }
      assert.are.equal(3000, got.size)
      assert.are.equal(crypto.sha256(data), got.sha256)
      assert.are.equal(data, rbtest.read(dst))
      assert.is_false(rbtest.exists(dst .. ".part"))
    end)

    it("puts a file larger than a part as a multipart upload", function()
      local src = dir .. "/large.bin"
      local data = pattern_bytes(4096 * 3 + 100, "large")
      rbtest.write(src, data)
      local info = store:put { bucket = "runbook-tests", key = "files/large.bin", file = src }
      assert.are.equal(#data, info.size)
      assert.are.equal(4, info.parts)
      assert.are.equal(crypto.sha256(data), info.sha256)
      assert.are.equal(data, (store:get { bucket = "runbook-tests", key = "files/large.bin" }))
    end)

    it("streams a source of known size (UNSIGNED-PAYLOAD) and one of unknown size (multipart)", function()
      local data = pattern_bytes(10000, "stream")
      local off = 0
      local function source(max)
        if off >= #data then return nil end
        local n = math.min(max, 777)
        local chunk = data:sub(off + 1, off + n)
        off = off + #chunk
        return chunk
      end
      local info = store:put { bucket = "runbook-tests", key = "stream/sized", source = source, size = #data }
      assert.are.equal(#data, info.size)
      assert.are.equal(crypto.sha256(data), info.sha256)
      off = 0
      info = store:put { bucket = "runbook-tests", key = "stream/unsized", source = source }
      assert.are.equal(3, info.parts)
      assert.are.equal(crypto.sha256(data), info.sha256)
      for _, key in ipairs { "stream/sized", "stream/unsized" } do
        local chunks = {}
        local got = store:get { bucket = "runbook-tests", key = key, on_data = function(c) chunks[#chunks + 1] = c end }
        assert.are.equal(data, table.concat(chunks))
        assert.are.equal(crypto.sha256(data), got.sha256)
      end
    end)

    it("lists over several pages with continuation tokens", function()
      local etags = {}
      for i = 1, 7 do etags[i] = store:put { bucket = "runbook-tests", key = string.format("page-%02d", i), body = tostring(i) }.etag end
      store:put { bucket = "runbook-tests", key = "tree.a.x", body = "x" }
      store:put { bucket = "runbook-tests", key = "tree.b.y", body = "y" }
      store:put { bucket = "runbook-tests", key = "tree.z", body = "z" }
      local objs = store:list { bucket = "runbook-tests", prefix = "page-", max_keys = 2 }
      assert.are.equal(7, #objs)
      for i, o in ipairs(objs) do
        assert.are.equal(string.format("page-%02d", i), o.key)
        assert.are.equal(1, o.size)
        assert.are.equal(etags[i], o.etag)
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT", o.last_modified)
      end
      assert.are.equal(3, #store:list { bucket = "runbook-tests", prefix = "page-", max_keys = 2, limit = 3 })
      -- "/" is the usual delimiter; moto mis-verifies a "/" in query values (see the top)
      local top, prefixes = store:list { bucket = "runbook-tests", prefix = "tree.", delimiter = "." }
      assert.are.equal(1, #top)
      assert.are.equal("tree.z", top[1].key)
      assert.are.same({ "tree.a.", "tree.b." }, prefixes)
    end)

    it("deletes objects", function()
      store:put { bucket = "runbook-tests", key = "to-delete", body = "bye" }
      audit.reset()
      store:delete { bucket = "runbook-tests", key = "to-delete" }
      assert.is_nil(store:head { bucket = "runbook-tests", key = "to-delete" })
      assert.are.same({ kind = "s3", verb = "delete", bucket = "runbook-tests", key = "to-delete", summary = "deleted s3://runbook-tests/to-delete" }, audit.recorded[1])
    end)
  end)

  describe("writer", function()
    it("uploads in parts with constant memory and reports size and sha256", function()
      local w = store:writer { bucket = "runbook-tests", key = "backups/db.dump", part_size = 2048 }
      local all = {}
      for i = 1, 13 do
        local chunk = pattern_bytes(500, "c" .. i)
        all[#all + 1] = chunk
        w:write(chunk)
        assert.is_true(w.buflen < 2048)
      end
      local info = w:finish()
      local data = table.concat(all)
      assert.are.same({ size = 6500, sha256 = crypto.sha256(data), location = "s3://runbook-tests/backups/db.dump",
        etag = info.etag, parts = 4 }, info)
      assert.are.equal(data, (store:get { bucket = "runbook-tests", key = "backups/db.dump" }))
      local a = audit.recorded[#audit.recorded]
      assert.are.equal("put", a.verb)
      assert.is_true(a.multipart)
      assert.are.equal(6500, a.size)
      assert.are.equal(crypto.sha256(data), a.sha256)
      local ok, err = pcall(w.write, w, "more")
      assert.is_false(ok)
      assert.matches("s3 writer for s3://runbook-tests/backups/db.dump: write after it was finished", err, 1, true)
    end)

    it("sends a small stream as one PUT", function()
      local w = store:writer { bucket = "runbook-tests", key = "backups/small.dump", part_size = 2048 }
      w:write("tiny ")
      w:write("backup")
      local info = w:finish()
      assert.are.equal(1, info.parts)
      assert.are.equal(11, info.size)
      assert.are.equal("tiny backup", (store:get { bucket = "runbook-tests", key = "backups/small.dump" }))
      assert.are.same({}, store:list_multipart { bucket = "runbook-tests" })
    end)

    it("aborts: no object, no upload left behind", function()
      local w = store:writer { bucket = "runbook-tests", key = "backups/aborted.dump", part_size = 1024 }
      w:write(pattern_bytes(3000))
      assert.is_not_nil(w.upload_id)
      assert.are.equal(1, #store:list_multipart { bucket = "runbook-tests" })
      w:abort()
      w:abort()
      assert.is_nil(store:head { bucket = "runbook-tests", key = "backups/aborted.dump" })
      assert.are.same({}, store:list_multipart { bucket = "runbook-tests" })
      local a = audit.recorded[#audit.recorded]
      assert.are.equal("abort-multipart", a.verb)
      assert.are.equal(2, a.parts)
    end)

    it("aborts when the producer fails inside a <close> scope", function()
      local ok, err = pcall(function()
        local w <close> = store:writer { bucket = "runbook-tests", key = "backups/failed.dump", part_size = 1024 }
        w:write(pattern_bytes(2500))
        error("pg_dump exited with code 1")
      end)
      assert.is_false(ok)
      assert.matches("pg_dump exited with code 1", err, 1, true)
      assert.is_nil(store:head { bucket = "runbook-tests", key = "backups/failed.dump" })
      assert.are.same({}, store:list_multipart { bucket = "runbook-tests" })
    end)

    it("aborts a stream put whose source fails midway", function()
      local n = 0
      local ok, err = pcall(store.put, store, { bucket = "runbook-tests", key = "backups/broken.dump", source = function()
        n = n + 1
        if n > 3 then error("source broke") end
        return pattern_bytes(4096)
      end })
      assert.is_false(ok)
      assert.matches("source broke", err, 1, true)
      assert.is_nil(store:head { bucket = "runbook-tests", key = "backups/broken.dump" })
      assert.are.same({}, store:list_multipart { bucket = "runbook-tests" })
    end)

    it("aborts and raises when a part cannot be uploaded", function()
      local w = store:writer { bucket = "no-such-bucket-here", key = "x.dump", part_size = 1024 }
      local ok, err = pcall(w.write, w, pattern_bytes(1500))
      assert.is_false(ok)
      assert.are.equal("NoSuchBucket", err.code)
      assert.are.equal("aborted", w.state)
      ok, err = pcall(w.finish, w)
      assert.is_false(ok)
      assert.matches("finish after it was aborted", err, 1, true)
    end)
  end)

  describe("multipart calls", function()
    it("create, upload parts, complete; each call audited", function()
      local id = store:create_multipart { bucket = "runbook-tests", key = "manual/mp", content_type = "application/octet-stream" }
      local a, b = pattern_bytes(1500, "a"), pattern_bytes(700, "b")
      local parts = {
        { 1, store:upload_part { bucket = "runbook-tests", key = "manual/mp", upload_id = id, part_number = 1, body = a } },
        { 2, store:upload_part { bucket = "runbook-tests", key = "manual/mp", upload_id = id, part_number = 2, body = b } },
      }
      local etag = store:complete_multipart { bucket = "runbook-tests", key = "manual/mp", upload_id = id, parts = parts }
      assert.matches("%-2$", etag)
      assert.are.equal(a .. b, (store:get { bucket = "runbook-tests", key = "manual/mp" }))
      local last = audit.recorded[#audit.recorded]
      assert.are.equal("complete-multipart", last.verb)
      assert.are.equal(2, last.parts)
      assert.are.equal("completed s3://runbook-tests/manual/mp from 2 parts", last.summary)
    end)

    it("abort discards the parts", function()
      local id = store:create_multipart { bucket = "runbook-tests", key = "manual/aborted" }
      store:upload_part { bucket = "runbook-tests", key = "manual/aborted", upload_id = id, part_number = 1, body = pattern_bytes(2000) }
      store:abort_multipart { bucket = "runbook-tests", key = "manual/aborted", upload_id = id }
      assert.are.same({}, store:list_multipart { bucket = "runbook-tests" })
      assert.is_nil(store:head { bucket = "runbook-tests", key = "manual/aborted" })
      assert.are.equal("abort-multipart", audit.recorded[#audit.recorded].verb)
    end)
  end)

  describe("errors", function()
    it("rejects a wrong secret with SignatureDoesNotMatch", function()
      local bad <close> = s3.connect { endpoint = srv.endpoint, access_key = srv.access_key, secret_key = secret.wrap("not-the-secret-key") }
      local ok, err = pcall(bad.get, bad, { bucket = "runbook-tests", key = "dir/hello world.txt" })
      assert.is_false(ok)
      assert.are.equal("s3", err.kind)
      assert.are.equal("SignatureDoesNotMatch", err.code)
      assert.are.equal("s3: get s3://runbook-tests/dir/hello world.txt: SignatureDoesNotMatch: The request signature we calculated "
        .. "does not match the signature you provided. Check your key and signing method. (HTTP 403)", err.message)
      assert.are.equal(403, err.details.status)
      ok, err = pcall(bad.put, bad, { bucket = "runbook-tests", key = "nope", body = "x" })
      assert.is_false(ok)
      assert.are.equal("SignatureDoesNotMatch", err.code)
    end)

    it("names NoSuchBucket and NoSuchKey with the bucket and key", function()
      local ok, err = pcall(store.put, store, { bucket = "missing-bucket", key = "a.txt", body = "x" })
      assert.is_false(ok)
      assert.are.equal("NoSuchBucket", err.code)
      assert.are.equal("s3: put s3://missing-bucket/a.txt: NoSuchBucket: The specified bucket does not exist (HTTP 404)", err.message)
      assert.are.equal("missing-bucket", err.details.bucket)
      ok, err = pcall(store.get, store, { bucket = "runbook-tests", key = "no/such/key" })
      assert.is_false(ok)
      assert.are.equal("NoSuchKey", err.code)
      assert.are.equal("s3: get s3://runbook-tests/no/such/key: NoSuchKey: The specified key does not exist. (HTTP 404)", err.message)
      assert.are.equal("no/such/key", err.details.key)
    end)

    it("fails a sized stream that delivers fewer bytes than promised", function()
      local given = false
      local ok, err = pcall(store.put, store, { bucket = "runbook-tests", key = "stream/short", size = 100, source = function()
        if given then return nil end
        given = true
        return string.rep("s", 40)
      end })
      assert.is_false(ok)
      assert.are.equal("s3", err.kind)
      assert.are.equal("protocol", err.code)
      assert.are.equal("s3: PUT " .. srv.endpoint .. "/runbook-tests/stream/short: the upload function gave 40 bytes, upload_size said 100", err.message)
      assert.is_nil(store:head { bucket = "runbook-tests", key = "stream/short" })
    end)

    it("leaves no file behind when a download fails", function()
      local dst = dir .. "/missing.out"
      local ok, err = pcall(store.get, store, { bucket = "runbook-tests", key = "no/such/key", file = dst })
      assert.is_false(ok)
      assert.are.equal("NoSuchKey", err.code)
      assert.is_false(rbtest.exists(dst))
      assert.is_false(rbtest.exists(dst .. ".part"))
    end)

    it("reports an unreachable endpoint with its URL", function()
      local port = rbtest.free_port()
      local down <close> = s3.connect { endpoint = "http://127.0.0.1:" .. port, access_key = "AK", secret_key = "SK", retries = 0 }
      local ok, err = pcall(down.get, down, { bucket = "b-1", key = "k" })
      assert.is_false(ok)
      assert.are.equal("s3", err.kind)
      assert.are.equal("connect", err.code)
      assert.matches("^s3: GET http://127%.0%.0%.1:" .. port .. "/b%-1/k: could not connect: ", err.message)
    end)

    it("keeps credentials out of logs, actions and errors", function()
      local sk = srv.secret_key
      local bad <close> = s3.connect { endpoint = srv.endpoint, access_key = srv.access_key, secret_key = secret.wrap("wrong-" .. sk) }
      local _, err = pcall(bad.put, bad, { bucket = "runbook-tests", key = "k", body = "x" })
      store:put { bucket = "runbook-tests", key = "creds-check", body = "x" }
      store:delete { bucket = "runbook-tests", key = "creds-check" }
      local text = json.encode({ audit.logs, audit.recorded, err.message }, { secrets = "redact" })
      for _, form in ipairs { sk, crypto.base64_encode(sk), crypto.hex_encode(sk) } do
        assert.is_nil(text:find(form, 1, true))
      end
    end)
  end)

  describe("dry run", function()
    it("reports writes without making them", function()
      local actions = {}
      audit.set_sink { dry_run = true, action = function(t) actions[#actions + 1] = t end, log = function() end, progress = function() end }
      local ok, err = pcall(function()
        assert.are.equal("would create", store:ensure_bucket("dry-bucket"))
        local info = store:put { bucket = "runbook-tests", key = "dry/put", body = "abc" }
        assert.is_true(info.dry_run)
        local w = store:writer { bucket = "runbook-tests", key = "dry/stream", part_size = 1024 }
        w:write(pattern_bytes(5000))
        local winfo = w:finish()
        assert.are.equal(5000, winfo.size)
        assert.are.equal(crypto.sha256(pattern_bytes(5000)), winfo.sha256)
        store:delete { bucket = "runbook-tests", key = "dir/hello world.txt" }
        -- reads still happen, but a download writes no file
        assert.are.equal("hello, object storage", (store:get { bucket = "runbook-tests", key = "dir/hello world.txt" }))
        local got = store:get { bucket = "runbook-tests", key = "dir/hello world.txt", file = dir .. "/dry.out" }
        assert.is_true(got.dry_run)
        assert.are.equal(crypto.sha256("hello, object storage"), got.sha256)
        assert.is_false(rbtest.exists(dir .. "/dry.out"))
        assert.is_false(rbtest.exists(dir .. "/dry.out.part"))
      end)
      audit.set_sink(nil)
      assert(ok, err)
      assert.is_false(store:bucket_exists("dry-bucket"))
      assert.is_nil(store:head { bucket = "runbook-tests", key = "dry/put" })
      assert.is_nil(store:head { bucket = "runbook-tests", key = "dry/stream" })
      assert.is_not_nil(store:head { bucket = "runbook-tests", key = "dir/hello world.txt" })
      assert.are.same({}, store:list_multipart { bucket = "runbook-tests" })
      assert.are.equal(4, #actions)
      for _, a in ipairs(actions) do assert.is_true(a.dry_run) end
      assert.are.equal("would put s3://runbook-tests/dry/put (3 bytes)", actions[2].summary)
      assert.are.equal("would delete s3://runbook-tests/dir/hello world.txt", actions[4].summary)
    end)
  end)
end)
