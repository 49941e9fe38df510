-- AWS Signature Version 4 for the Authorization header, as S3-compatible
-- stores (AWS, R2, Spaces, MinIO) check it. The caller builds the request;
-- this makes the canonical request, the string to sign and the signature.
-- HMACs come from runbook._crypto, which takes the secret key as a Secret.
local crypto = require "runbook._crypto"
local url_lib = require "runbook.http.url"

local M = {}

M.EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
M.UNSIGNED = "UNSIGNED-PAYLOAD"

local function trim(s)
  return (tostring(s):gsub("^%s+", ""):gsub("%s+$", ""):gsub("%s+", " "))
end

--- Canonical query string: names and values percent-encoded, sorted by name
--- then value; a name without a value gets "=".
---@param query table<string, string|number|boolean|nil>|nil
function M.canonical_query(query)
  local pairs_ = {}
  for k, v in pairs(query or {}) do
    if v == true then v = "" end
    if v ~= false and v ~= nil then
      pairs_[#pairs_ + 1] = { url_lib.encode(k), url_lib.encode(tostring(v)) }
    end
  end
  table.sort(pairs_, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local out = {}
  for i, p in ipairs(pairs_) do out[i] = p[1] .. "=" .. p[2] end
  return table.concat(out, "&")
end

--- The signing key for a day, region and service (32 raw bytes). It is
--- derived from the secret key and usable only for that scope.
function M.signing_key(secret_key, date, region, service)
  local k = crypto.hmac_sha256("AWS4" .. secret_key, date, true)
  k = crypto.hmac_sha256(k, region, true)
  k = crypto.hmac_sha256(k, service, true)
  return crypto.hmac_sha256(k, "aws4_request", true)
end

--- Signs a request. r: method, path (the URI path exactly as sent, already
--- percent-encoded), query (table), headers ({name = value}; must include
--- host and x-amz-date), payload_hash, region, service, access_key,
--- secret_key (string or Secret) or key (a signing_key result), amz_date
--- ("20130524T000000Z"). Returns the Authorization value and the parts.
---@return string authorization, table parts
function M.sign(r)
  local amz_date = assert(r.amz_date, "sigv4: amz_date required")
  local date = amz_date:sub(1, 8)
  local names, lower = {}, {}
  for k, v in pairs(r.headers) do
    local n = k:lower()
    if lower[n] then error("sigv4: header " .. n .. " given twice", 2) end
    lower[n] = trim(v)
    names[#names + 1] = n
  end
  table.sort(names)
  local canon_headers = {}
  for i, n in ipairs(names) do canon_headers[i] = n .. ":" .. lower[n] .. "\n" end
  local signed = table.concat(names, ";")
  local canonical = table.concat({
    r.method, r.path, M.canonical_query(r.query), table.concat(canon_headers), signed, r.payload_hash,
  }, "\n")
  local scope = date .. "/" .. r.region .. "/" .. r.service .. "/aws4_request"
  local to_sign = "AWS4-HMAC-SHA256\n" .. amz_date .. "\n" .. scope .. "\n" .. crypto.sha256(canonical)
  local key = r.key or M.signing_key(r.secret_key, date, r.region, r.service)
  local signature = crypto.hmac_sha256(key, to_sign)
  local access = type(r.access_key) == "string" and r.access_key or r.access_key:reveal()
  local auth = string.format("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
    access, scope, signed, signature)
  return auth, { canonical_request = canonical, string_to_sign = to_sign, signed_headers = signed, signature = signature, scope = scope }
end

return M
