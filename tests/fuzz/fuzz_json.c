/*
 * runbook.json.decode (jansson through src/jsonconv.c) and the journal's
 * own JSON reader (src/jsonscan.c), on the same text. Decoding either gives
 * a value or raises a structured json error; a decoded value encodes, and
 * encoding is stable (decode(encode(v)) encodes to the same text). When
 * both readers accept a text, they must read the same value.
 */
#include "fuzz_lua.h"
#include "jsonscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* scan(text) -> true, value | false */
static int l_scan(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  if (rb_json_scan(L, s, len) != 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -2);
  return 2;
}

static const luaL_Reg GLOBALS[] = {{"scan", l_scan}, {NULL, NULL}};

static const char DRIVER[] =
  "local json = require 'runbook.json'\n"
  "local errors = require 'runbook.errors'\n"
  "local function trace(e) if type(e) == 'string' then return debug.traceback(e, 2) end return e end\n"
  "return function(text)\n"
  "  local ok, v = xpcall(json.decode, trace, text)\n"
  "  local sok, sv = scan(text)\n"
  "  if not ok then\n"
  "    if not errors.is(v, 'json') then error(type(v) == 'string' and v or 'decode raised a ' .. type(v), 0) end\n"
  "    return\n"
  "  end\n"
  "  local t1 = json.encode(v)\n"
  "  local t2 = json.encode(json.decode(t1))\n"
  "  if t1 ~= t2 then error('encoding is not stable:\\n' .. t1 .. '\\n' .. t2, 0) end\n"
  "  if sok then\n"
  "    local t3 = json.encode(sv)\n"
  "    if t3 ~= t1 then error('jansson and the journal reader disagree:\\n' .. t1 .. '\\n' .. t3, 0) end\n"
  "  end\n"
  "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lua_State *L;
  if (!L)
    L = rbf_lua_open(DRIVER, "=fuzz_json", GLOBALS);
  rbf_lua_run(L, data, size);
  return 0;
}
