-- The globals a chunk reads and writes, found without running it, as
-- luacheck finds them: the chunk is compiled, dumped (string.dump keeps
-- the debug information) and its bytecode walked. A global access is a
-- GETTABUP/SETTABUP whose table is the chunk's own _ENV upvalue, followed
-- through every nested function, so a `local _ENV` or a field of some
-- other upvalue is never mistaken for a global. Lua 5.4's dump format
-- (lundump.c) is stable within 5.4; a dump of another layout is refused
-- rather than misread.
local M = {}

local OP_GETTABUP, OP_SETTABUP = 11, 15
local OP_LOADK, OP_LOADKX, OP_GETUPVAL, OP_GETTABLE, OP_SETTABLE, OP_EXTRAARG = 3, 4, 9, 12, 16, 82
-- instructions that leave R[A] alone (stores, tests, jumps, returns)
local KEEPS_A = { [10] = true, [15] = true, [16] = true, [17] = true, [18] = true, [46] = true, [47] = true,
  [48] = true, [54] = true, [55] = true, [56] = true, [57] = true, [58] = true, [59] = true, [60] = true,
  [61] = true, [62] = true, [63] = true, [64] = true, [65] = true, [66] = true, [70] = true, [71] = true,
  [72] = true, [78] = true, [81] = true, [82] = true }
-- instructions that may write R[A] and every register above it
local FROM_A = { [8] = true, [68] = true, [69] = true, [73] = true, [74] = true, [75] = true, [76] = true,
  [77] = true, [80] = true }
local ABSLINEINFO = -0x80

local Reader = {}
Reader.__index = Reader

local function reader(s)
  return setmetatable({ s = s, pos = 1 }, Reader)
end

function Reader:byte()
  local b = self.s:byte(self.pos)
  if not b then error("truncated dump", 0) end
  self.pos = self.pos + 1
  return b
end

function Reader:bytes(n)
  local out = self.s:sub(self.pos, self.pos + n - 1)
  if #out ~= n then error("truncated dump", 0) end
  self.pos = self.pos + n
  return out
end

-- lundump.c loadUnsigned: 7 bits a byte, most significant first, the last
-- byte marked by its high bit
function Reader:varint()
  local x = 0
  repeat
    local b = self:byte()
    x = (x << 7) | (b & 0x7f)
  until b & 0x80 ~= 0
  return x
end

function Reader:string()
  local n = self:varint()
  if n == 0 then return nil end
  return self:bytes(n - 1)
end

local function header(r)
  if r:bytes(4) ~= "\27Lua" or r:byte() ~= 0x54 or r:byte() ~= 0 or r:bytes(6) ~= "\x19\x93\r\n\x1a\n" then
    error("not a Lua 5.4 dump", 0)
  end
  local isz, intsz, numsz = r:byte(), r:byte(), r:byte()
  if isz ~= 4 then error("unexpected instruction size " .. isz, 0) end
  r:bytes(intsz) -- LUAC_INT
  r:bytes(numsz) -- LUAC_NUM
  r.intsz, r.numsz = intsz, numsz
  r:byte() -- the main closure's number of upvalues
end

-- One function prototype: {code = {...}, k = {...}, upvalues = {{instack, idx}},
-- names = {upvalue names}, protos = {...}, lines = {line of each instruction}}
local function proto(r)
  local f = {}
  r:string() -- source
  f.linedefined = r:varint()
  r:varint() -- lastlinedefined
  r:byte(); r:byte(); r:byte() -- numparams, is_vararg, maxstacksize
  f.code = {}
  for i = 1, r:varint() do
    f.code[i] = string.unpack("<I4", r:bytes(4))
  end
  f.k = {}
  for i = 1, r:varint() do
    local t = r:byte()
    if t == 3 then r:bytes(r.intsz)          -- integer
    elseif t == 19 then r:bytes(r.numsz)     -- float
    elseif t == 4 or t == 20 then f.k[i] = r:string() -- short, long string
    elseif t ~= 0 and t ~= 1 and t ~= 17 then error("unknown constant type " .. t, 0) end
  end
  f.upvalues = {}
  for i = 1, r:varint() do
    local instack, idx = r:byte(), r:byte()
    r:byte() -- kind
    f.upvalues[i] = { instack = instack == 1, idx = idx }
  end
  f.protos = {}
  for i = 1, r:varint() do f.protos[i] = proto(r) end
  local lineinfo = {}
  for i = 1, r:varint() do
    local b = r:byte()
    lineinfo[i] = b >= 0x80 and b - 0x100 or b
  end
  local abs = {}
  for i = 1, r:varint() do abs[i] = { pc = r:varint(), line = r:varint() } end
  for _ = 1, r:varint() do r:string(); r:varint(); r:varint() end -- locals
  f.names = {}
  for i = 1, r:varint() do f.names[i] = r:string() end
  -- the line of each instruction: deltas, with absolute lines where marked
  f.lines = {}
  local line, a = f.linedefined, 1
  for pc = 1, #f.code do
    local d = lineinfo[pc]
    if d == nil then break end
    if d == ABSLINEINFO then
      line = abs[a] and abs[a].line or line
      a = a + 1
    else
      line = line + d
    end
    f.lines[pc] = line
  end
  return f
end

-- Calls visit(kind, name, line, in_function) for every global access of f,
-- where env[i] says whether f's upvalue i is the chunk's _ENV.
local function walk(f, env, depth, visit)
  -- a global whose name is past the 256th constant is reached through
  -- registers: GETUPVAL r _ENV; LOADK(X) r' "name"; GETTABLE/SETTABLE
  local envreg, kreg = {}, {}
  local function clear(a, upward)
    if upward then
      for r in pairs(envreg) do if r >= a then envreg[r] = nil end end
      for r in pairs(kreg) do if r >= a then kreg[r] = nil end end
    else
      envreg[a], kreg[a] = nil, nil
    end
  end
  local code = f.code
  for pc, ins in ipairs(code) do
    local op = ins & 0x7f
    local a, b, c = (ins >> 7) & 0xff, (ins >> 16) & 0xff, (ins >> 24) & 0xff
    local line = f.lines[pc] or f.linedefined
    if op == OP_GETTABUP or op == OP_SETTABUP then
      local up, key
      if op == OP_GETTABUP then up, key = b, f.k[c + 1] else up, key = a, f.k[b + 1] end
      if env[up + 1] and key then
        visit(op == OP_GETTABUP and "get" or "set", key, line, depth > 0)
      end
    elseif op == OP_GETTABLE and envreg[b] and kreg[c] then
      visit("get", kreg[c], line, depth > 0)
    elseif op == OP_SETTABLE and envreg[a] and kreg[b] then
      visit("set", kreg[b], line, depth > 0)
    end
    if FROM_A[op] then
      clear(a, true)
    elseif not KEEPS_A[op] then
      clear(a, false)
    end
    if op == OP_GETUPVAL and env[b + 1] then
      envreg[a] = true
    elseif op == OP_LOADK then
      kreg[a] = f.k[(ins >> 15) + 1]
    elseif op == OP_LOADKX and code[pc + 1] and code[pc + 1] & 0x7f == OP_EXTRAARG then
      kreg[a] = f.k[(code[pc + 1] >> 7) + 1]
    end
  end
  for _, p in ipairs(f.protos) do
    local penv = {}
    for i, u in ipairs(p.upvalues) do
      -- an upvalue from the parent's upvalue list carries _ENV on; one from
      -- a parent register is a local (a `local _ENV` is no global table)
      penv[i] = (not u.instack) and env[u.idx + 1] or false
    end
    walk(p, penv, depth + 1, visit)
  end
end

--- The global accesses of a chunk's source: a list of {kind = "get"|"set",
--- name, line, in_function}, in bytecode order. Returns nil, message when
--- the source does not compile.
---@param src string
---@param chunkname string|nil
function M.accesses(src, chunkname)
  local fn, err = load(src, chunkname or "=chunk", "t", {})
  if not fn then return nil, err end
  local r = reader(string.dump(fn, false))
  local ok, main = pcall(function()
    header(r)
    return proto(r)
  end)
  if not ok then return nil, "cannot read the compiled chunk: " .. tostring(main) end
  local env = {}
  for i, name in ipairs(main.names) do env[i] = name == "_ENV" end
  local out = {}
  walk(main, env, 0, function(kind, name, line, in_function)
    out[#out + 1] = { kind = kind, name = name, line = line, in_function = in_function }
  end)
  return out
end

return M
