-- Signed runbooks. `runbook sign FILE --key KEY.pem` writes FILE.sig, a
-- detached Ed25519 signature over the runbook and every local module it
-- loads (their paths, relative to the runbook's folder, and sha256s listed
-- in the signature file). `runbook exec --require-signature --trust DIR`
-- checks it before the runbook's code runs: the signature against a key in
-- DIR, the runbook file's hash, then each module's hash as it is required,
-- so nothing unsigned or changed executes. Refusals are usage errors
-- (exit 2) naming the file that changed or the key that is unknown.
local sign = require "runbook._sign"
local crypto = require "runbook._crypto"
local json = require "runbook._json"
local fs = require "runbook._fs"
local errors = require "runbook.errors"

local M = {}

M.VERSION = 1

local function refuse(fmt, ...)
  errors.raisef("signature", "refused", fmt, ...)
end

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

--- A key's id: the first 16 hex digits of the sha256 of its raw public key.
function M.key_id(pem)
  local raw, err = sign.raw_public(pem)
  if not raw then return nil, err end
  return crypto.sha256(raw):sub(1, 16)
end

-- the bytes the signature covers: a header, then one "sha256  path" line
-- per file, the runbook first, the modules in path order
local function canonical(runbook, files)
  local lines = { "runbook-signature v" .. M.VERSION, "runbook " .. runbook }
  for _, f in ipairs(files) do lines[#lines + 1] = f.sha256 .. "  " .. f.path end
  return table.concat(lines, "\n") .. "\n"
end

local function rel(book, path)
  if path:sub(1, #book.dir + 1) == book.dir .. "/" then return path:sub(#book.dir + 2) end
  return path
end

--- Signs a loaded book with the private key in key_path; writes FILE.sig.
--- Returns the signature file's path and the key id.
function M.sign(book, key_path)
  local pem, err = read(key_path)
  if not pem then errors.raisef("usage", "key", "sign: cannot read the key %s: %s", key_path, tostring(err)) end
  local kid, kerr = M.key_id(pem)
  if not kid then errors.raisef("usage", "key", "sign: %s: %s", key_path, kerr) end
  local name = book.file:match("([^/]+)$")
  local files = { { path = name, sha256 = book.sha256 } }
  local mods = {}
  for _, m in ipairs(book.modules or {}) do mods[#mods + 1] = { path = rel(book, m.path), sha256 = m.sha256, name = m.name } end
  table.sort(mods, function(a, b) return a.path < b.path end)
  for _, m in ipairs(mods) do files[#files + 1] = m end
  local sig, serr = sign.sign(pem, canonical(name, files))
  if not sig then errors.raisef("usage", "key", "sign: %s: %s", key_path, serr) end
  local doc = { version = M.VERSION, runbook = name, key_id = kid, files = files,
    signature = crypto.base64_encode(sig), signed_at = os.date("!%Y-%m-%dT%H:%M:%SZ") }
  local out = book.file .. ".sig"
  local ok, werr = fs.write_file(out, json.encode(doc, { pretty = true }) .. "\n", 420)
  if not ok then errors.raisef("usage", "io", "sign: cannot write %s: %s", out, tostring(werr)) end
  return out, kid
end

-- the trusted public keys of a folder: id -> pem (every file holding one)
local function trusted(dir)
  local keys, ids = {}, {}
  local names = fs.listdir(dir)
  if not names then refuse("the trust folder %s cannot be read", dir) end
  table.sort(names)
  for _, n in ipairs(names) do
    local pem = read(dir .. "/" .. n)
    local pub = pem and sign.public_of(pem)
    local kid = pub and M.key_id(pub)
    if kid and not keys[kid] then
      keys[kid] = pub
      ids[#ids + 1] = kid
    end
  end
  return keys, ids
end

--- Checks FILE.sig before the runbook is loaded. Returns a checker for the
--- loader ({key_id=, module(path, sha256)}) that refuses a module not
--- covered by the signature or changed since; raises when the signature,
--- the key or the runbook file does not hold.
function M.check(file, trust_dir)
  if not trust_dir or trust_dir == "" then
    errors.raisef("usage", "trust", "--require-signature needs --trust DIR (or RUNBOOK_TRUST): the folder of trusted public keys")
  end
  local sigpath = file .. ".sig"
  local text = read(sigpath)
  if not text then
    refuse("%s is not signed (no %s); sign it with `runbook sign %s --key KEY.pem`", file, sigpath, file)
  end
  local ok, doc = pcall(json.decode, text)
  if not ok or type(doc) ~= "table" or type(doc.files) ~= "table" or type(doc.signature) ~= "string" then
    refuse("%s is not a runbook signature file", sigpath)
  end
  if doc.version ~= M.VERSION then refuse("%s has signature version %s; this runbook reads version %d", sigpath, tostring(doc.version), M.VERSION) end
  local keys, ids = trusted(trust_dir)
  local pub = keys[doc.key_id]
  if not pub then
    refuse("%s is signed by key %s, which is not among the trusted keys in %s (%s)", file, tostring(doc.key_id), trust_dir,
      #ids > 0 and table.concat(ids, ", ") or "none")
  end
  local sig = crypto.base64_decode(doc.signature)
  if not sig or not sign.verify(pub, canonical(doc.runbook, doc.files), sig) then
    refuse("the signature in %s does not verify with key %s: the signature file was altered", sigpath, doc.key_id)
  end
  local src = read(file)
  local first = doc.files[1]
  local name = file:match("([^/]+)$")
  if not first or first.path ~= name or doc.runbook ~= name then
    refuse("%s was made for %s, not %s", sigpath, tostring(doc.runbook), name)
  end
  local now = src and crypto.sha256(src)
  if now ~= first.sha256 then
    refuse("%s changed since it was signed (sha256 %s… signed, %s… now)", file, first.sha256:sub(1, 12), tostring(now):sub(1, 12))
  end
  local signed = {}
  for i = 2, #doc.files do signed[doc.files[i].path] = doc.files[i].sha256 end
  local dir = (fs.realpath(file) or file):match("^(.*)/[^/]*$") or "."
  return {
    key_id = doc.key_id,
    sha256 = first.sha256,
    module = function(path, sha256)
      local r = path:sub(1, #dir + 1) == dir .. "/" and path:sub(#dir + 2) or path
      local want = signed[r]
      if not want then refuse("module %s is loaded by %s but not covered by its signature", r, name) end
      if want ~= sha256 then
        refuse("module %s changed since %s was signed (sha256 %s… signed, %s… now)", r, name, want:sub(1, 12), sha256:sub(1, 12))
      end
    end,
  }
end

return M
