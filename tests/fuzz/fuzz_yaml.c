/*
 * runbook.yaml.load (src/lua_yaml.c over libyaml) and the documented
 * round trip: load(dump(v)) gives back v. Loading either gives documents
 * or raises a structured yaml error; each document that loads dumps, and
 * the dump loads back to an equal value (same types, same array marks).
 * Documents whose aliases expand past a budget skip the round trip, which
 * would only time out.
 */
#include "fuzz_lua.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char DRIVER[] =
  "local yaml = require 'runbook.yaml'\n"
  "local json = require 'runbook.json'\n"
  "local errors = require 'runbook.errors'\n"
  "local function trace(e) if type(e) == 'string' then return debug.traceback(e, 2) end return e end\n"
  "local function size(v, budget)\n"
  "  if type(v) ~= 'table' then return budget - 1 end\n"
  "  budget = budget - 1\n"
  "  for k, x in pairs(v) do\n"
  "    if budget < 0 then return budget end\n"
  "    budget = size(x, budget - 1)\n"
  "  end\n"
  "  return budget\n"
  "end\n"
  "local function same(a, b, path)\n"
  "  if type(a) ~= type(b) then error(path .. ': ' .. type(a) .. ' came back as ' .. type(b), 0) end\n"
  "  if type(a) == 'number' then\n"
  "    if math.type(a) ~= math.type(b) then error(path .. ': ' .. math.type(a) .. ' came back as ' .. math.type(b), 0) end\n"
  "    if a ~= b and not (a ~= a and b ~= b) then error(path .. ': ' .. tostring(a) .. ' came back as ' .. tostring(b), 0) end\n"
  "    if a == 0 and b == 0 and 1 / a ~= 1 / b then error(path .. ': the sign of zero was lost', 0) end\n"
  "  elseif type(a) == 'table' then\n"
  "    if json.is_array(a) ~= json.is_array(b) then error(path .. ': the array mark was lost', 0) end\n"
  "    for k, x in pairs(a) do same(x, b[k], path .. '.' .. tostring(k)) end\n"
  "    for k in pairs(b) do if a[k] == nil then error(path .. ': extra key ' .. tostring(k), 0) end end\n"
  "  elseif a ~= b then\n"
  "    error(path .. ': ' .. string.format('%q', tostring(a)) .. ' came back as ' .. string.format('%q', tostring(b)), 0)\n"
  "  end\n"
  "end\n"
  "return function(text)\n"
  "  local ok, docs = xpcall(yaml.load_all, trace, text)\n"
  "  if not ok then\n"
  "    if not errors.is(docs, 'yaml') then error(type(docs) == 'string' and docs or 'load raised a ' .. type(docs), 0) end\n"
  "    return\n"
  "  end\n"
  "  assert(json.is_array(docs), 'load_all did not return an array')\n"
  "  for i, doc in ipairs(docs) do\n"
  "    if size(doc, 20000) >= 0 then\n"
  "      local dumped = yaml.dump(doc)\n"
  "      local back = yaml.load_all(dumped)\n"
  "      if #back ~= 1 then error('document ' .. i .. ' dumped as ' .. #back .. ' documents:\\n' .. dumped, 0) end\n"
  "      local same_ok, why = pcall(same, doc, back[1], 'document ' .. i)\n"
  "      if not same_ok then error(why .. '\\ndumped as:\\n' .. dumped, 0) end\n"
  "    end\n"
  "  end\n"
  "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lua_State *L;
  if (!L)
    L = rbf_lua_open(DRIVER, "=fuzz_yaml", NULL);
  rbf_lua_run(L, data, size);
  return 0;
}
