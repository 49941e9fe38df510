-- SigV4 signing checked against the examples AWS publishes: the S3 API
-- reference's "Examples: Signature Calculations" (GET Object with a Range,
-- PUT Object, GET Bucket lifecycle, GET Bucket list) and the general
-- signature test suite's get-vanilla.
local sigv4 = require "runbook.s3.sigv4"
local secret = require "runbook.secret"
local s3 = require "runbook.s3"

describe("runbook.s3.sigv4", function()
  local S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
  local function s3_example(t)
    t.region, t.service, t.access_key, t.amz_date = "us-east-1", "s3", "AKIAIOSFODNN7EXAMPLE", "20130524T000000Z"
    t.secret_key = t.secret_key or secret.wrap(S3_SECRET)
    t.headers.host = "examplebucket.s3.amazonaws.com"
    t.headers["x-amz-date"] = "20130524T000000Z"
    t.headers["x-amz-content-sha256"] = t.payload_hash
    return sigv4.sign(t)
  end

  it("signs GET Object with a Range header", function()
    local auth, parts = s3_example { method = "GET", path = "/test.txt", headers = { range = "bytes=0-9" }, payload_hash = sigv4.EMPTY_SHA256 }
    assert.are.equal("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
      .. "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
      .. "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", auth)
    assert.are.equal(table.concat({ "GET", "/test.txt", "", "host:examplebucket.s3.amazonaws.com", "range:bytes=0-9",
      "x-amz-content-sha256:" .. sigv4.EMPTY_SHA256, "x-amz-date:20130524T000000Z", "",
      "host;range;x-amz-content-sha256;x-amz-date", sigv4.EMPTY_SHA256 }, "\n"), parts.canonical_request)
  end)

  it("signs PUT Object with a signed payload", function()
    local payload = require("runbook._crypto").sha256("Welcome to Amazon S3.")
    assert.are.equal("44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072", payload)
    local _, parts = s3_example { method = "PUT", path = "/test%24file.text", payload_hash = payload,
      headers = { date = "Fri, 24 May 2013 00:00:00 GMT", ["x-amz-storage-class"] = "REDUCED_REDUNDANCY" } }
    assert.are.equal("98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd", parts.signature)
    assert.are.equal("date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class", parts.signed_headers)
  end)

  it("signs GET Bucket lifecycle (a parameter without a value)", function()
    local _, parts = s3_example { method = "GET", path = "/", query = { lifecycle = "" }, headers = {}, payload_hash = sigv4.EMPTY_SHA256 }
    assert.are.equal("fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543", parts.signature)
  end)

  it("signs GET Bucket (list) with sorted query parameters", function()
    local _, parts = s3_example { method = "GET", path = "/", query = { prefix = "J", ["max-keys"] = 2 }, headers = {}, payload_hash = sigv4.EMPTY_SHA256 }
    assert.are.equal("34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7", parts.signature)
    assert.matches("\nmax%-keys=2&prefix=J\n", parts.canonical_request)
  end)

  it("matches the general suite's get-vanilla, with a plain-string secret", function()
    local auth, parts = sigv4.sign { method = "GET", path = "/", headers = { host = "example.amazonaws.com", ["x-amz-date"] = "20150830T123600Z" },
      payload_hash = sigv4.EMPTY_SHA256, region = "us-east-1", service = "service", access_key = "AKIDEXAMPLE",
      secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", amz_date = "20150830T123600Z" }
    assert.are.equal("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
      .. "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", auth)
    assert.are.equal("AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
      .. "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63", parts.string_to_sign)
  end)

  it("gives the same signature from a cached signing key", function()
    local key = sigv4.signing_key(secret.wrap(S3_SECRET), "20130524", "us-east-1", "s3")
    assert.are.equal(32, #key)
    local _, parts = s3_example { method = "GET", path = "/test.txt", headers = { range = "bytes=0-9" },
      payload_hash = sigv4.EMPTY_SHA256, key = key, secret_key = "unused" }
    assert.are.equal("f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", parts.signature)
  end)

  it("encodes query names and values as SigV4 wants", function()
    assert.are.equal("a=&b=x%2Fy%20z&c=%2B%3D%26&d=1", sigv4.canonical_query { d = 1, c = "+=&", b = "x/y z", a = true, e = false })
    assert.are.equal("", sigv4.canonical_query(nil))
  end)

  it("builds path-style and virtual-hosted URLs", function()
    local aws = s3.connect { region = "eu-west-1", access_key = "AK", secret_key = "SK" }
    assert.is_false(aws.path_style)
    local h, p = aws:_url("backups", "db/2026 11 22.dump")
    assert.are.equal("backups.s3.eu-west-1.amazonaws.com", h)
    assert.are.equal("/db/2026%2011%2022.dump", p)
    h, p = aws:_url("my.dotted.bucket", "k")
    assert.are.equal("s3.eu-west-1.amazonaws.com", h)
    assert.are.equal("/my.dotted.bucket/k", p)
    local r2 = s3.connect { endpoint = "https://ACCOUNT.r2.cloudflarestorage.com", region = "auto", access_key = "AK", secret_key = "SK" }
    assert.is_true(r2.path_style)
    h, p = r2:_url("docs", "a/b.pdf")
    assert.are.equal("account.r2.cloudflarestorage.com", h)
    assert.are.equal("/docs/a/b.pdf", p)
    local spaces = s3.connect { endpoint = "https://nyc3.digitaloceanspaces.com", region = "nyc3", path_style = false, access_key = "AK", secret_key = "SK" }
    h, p = spaces:_url("tezca-backups", "x")
    assert.are.equal("tezca-backups.nyc3.digitaloceanspaces.com", h)
    assert.are.equal("/x", p)
  end)

  it("refuses a client without credentials or with unknown options", function()
    local ok, err = pcall(s3.connect, { endpoint = "http://127.0.0.1:9000" })
    assert.is_false(ok)
    assert.matches("s3.connect: access_key and secret_key are required (strings or secrets)", err, 1, true)
    ok, err = pcall(s3.connect, { access_key = "a", secret_key = "b", bucket = "x" })
    assert.is_false(ok)
    assert.matches("s3.connect: unknown option 'bucket'", err, 1, true)
  end)
end)
