/*
 * The SQL splitter of migrations (runbook.pg._sqlsplit), which every migration file goes through before a
 * statement reaches the server. It must never raise, and its pieces must
 * tile the text: each starts where the previous ended, each but the last
 * ends with ';', and each one's line is the number of newlines before it.
 */
#include "fuzz_lua.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char DRIVER[] =
  "local split = require 'runbook.pg._sqlsplit'\n"
  "local function newlines(s) local _, n = s:gsub('\\n', '') return n end\n"
  "return function(text)\n"
  "  local out, atomic = split.split(text)\n"
  "  assert(type(out) == 'table' and type(atomic) == 'boolean', 'split returned the wrong types')\n"
  "  local pos, prev_line = 1, 0\n"
  "  for k, st in ipairs(out) do\n"
  "    assert(type(st.sql) == 'string' and #st.sql > 0, 'statement ' .. k .. ' is empty')\n"
  "    assert(text:sub(pos, pos + #st.sql - 1) == st.sql, 'statement ' .. k .. ' does not continue the text')\n"
  "    if k < #out then assert(st.sql:sub(-1) == ';', 'statement ' .. k .. ' does not end with ;') end\n"
  "    assert(st.line == newlines(text:sub(1, pos - 1)),\n"
  "      string.format('statement %d: line %s, %d newlines before it', k, st.line, newlines(text:sub(1, pos - 1))))\n"
  "    assert(math.type(st.content_line) == 'integer' and st.content_line >= st.line\n"
  "      and st.content_line <= st.line + newlines(st.sql),\n"
  "      string.format('statement %d: content_line %s outside lines %d..%d', k, tostring(st.content_line),\n"
  "        st.line, st.line + newlines(st.sql)))\n"
  "    assert(st.line >= prev_line)\n"
  "    prev_line = st.line\n"
  "    pos = pos + #st.sql\n"
  "  end\n"
  "  if #out > 0 and out[#out].sql:sub(-1) ~= ';' then\n"
  "    assert(pos == #text + 1, 'an unterminated last statement stops before the end')\n"
  "  end\n"
  "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lua_State *L;
  if (!L)
    L = rbf_lua_open(DRIVER, "=fuzz_sqlsplit", NULL);
  rbf_lua_run(L, data, size);
  return 0;
}
