/*
 * runbook.template: ${VAR} and ${VAR:-default} over any text. Rendering
 * either gives a string (a secret when a secret was substituted) or raises
 * a structured template error; anything else (a Lua runtime error) is a
 * bug. Text without a '$' renders as itself, and every name render reports
 * missing is one names() lists.
 */
#include "fuzz_lua.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char DRIVER[] =
  "local template = require 'runbook.template'\n"
  "local errors = require 'runbook.errors'\n"
  "local secret = require 'runbook.secret'\n"
  "local vars = { A = 'alpha', B = '', N = 42, F = 1.5, T = true, S = secret.wrap('s3cr3t-value'),\n"
  "  NL = 'two\\nlines', D = '${A}', DOLLAR = '$$' }\n"
  "local function trace(e) if type(e) == 'string' then return debug.traceback(e, 2) end return e end\n"
  "return function(text)\n"
  "  local names = template.names(text)\n"
  "  local listed = {}\n"
  "  for _, n in ipairs(names) do listed[n] = true end\n"
  "  local ok, res = xpcall(template.render, trace, text, vars)\n"
  "  if ok then\n"
  "    assert(type(res) == 'string' or secret.is(res), 'render returned a ' .. type(res))\n"
  "    if not text:find('$', 1, true) then assert(res == text, 'text without $ changed') end\n"
  "  elseif errors.is(res, 'template') then\n"
  "    assert(res.code == 'missing' or res.code == 'syntax' or res.code == 'type', 'unknown code ' .. tostring(res.code))\n"
  "    if res.code == 'missing' then\n"
  "      for _, m in ipairs(res.details.missing) do assert(listed[m.name], 'names() misses ' .. m.name) end\n"
  "    end\n"
  "  else\n"
  "    error(type(res) == 'string' and res or ('render raised a ' .. type(res)), 0)\n"
  "  end\n"
  "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lua_State *L;
  if (!L)
    L = rbf_lua_open(DRIVER, "=fuzz_template", NULL);
  rbf_lua_run(L, data, size);
  return 0;
}
