-- MD5 (RFC 1321) in Lua, for the Content-MD5 header S3-compatible services
-- require on a few small configuration PUTs (PutBucketLifecycleConfiguration:
-- Ceph's RGW behind DigitalOcean Spaces refuses it without one). Bodies are a
-- few kilobytes, so speed does not matter and no library needs loading.
local M = {}

local S = {
  7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
  5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
  4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
  6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
}
local K = {}
for i = 0, 63 do K[i + 1] = math.floor(math.abs(math.sin(i + 1)) * 2 ^ 32) end

local MASK = 0xffffffff

local function rotl(x, n)
  x = x & MASK
  return ((x << n) | (x >> (32 - n))) & MASK
end

--- The 16-byte digest of `s`.
function M.digest(s)
  local len = #s
  s = s .. "\128" .. string.rep("\0", (55 - len) % 64) .. string.pack("<I8", (len * 8) & 0xffffffffffffffff)
  local a0, b0, c0, d0 = 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476
  local m = {}
  for chunk = 1, #s, 64 do
    for j = 0, 15 do m[j] = string.unpack("<I4", s, chunk + 4 * j) end
    local a, b, c, d = a0, b0, c0, d0
    for i = 0, 63 do
      local f, g
      if i < 16 then
        f, g = (b & c) | (~b & d), i
      elseif i < 32 then
        f, g = (d & b) | (~d & c), (5 * i + 1) % 16
      elseif i < 48 then
        f, g = b ~ c ~ d, (3 * i + 5) % 16
      else
        f, g = c ~ (b | (~d & MASK)), (7 * i) % 16
      end
      f = (f + a + K[i + 1] + m[g]) & MASK
      a, d, c = d, c, b
      b = (b + rotl(f, S[i + 1])) & MASK
    end
    a0, b0 = (a0 + a) & MASK, (b0 + b) & MASK
    c0, d0 = (c0 + c) & MASK, (d0 + d) & MASK
  end
  return string.pack("<I4I4I4I4", a0, b0, c0, d0)
end

--- The digest in lowercase hex.
function M.hex(s)
  return (M.digest(s):gsub(".", function(ch) return string.format("%02x", ch:byte()) end))
end

return M
