/*
 * The kubeconfig loader (runbook.k8s._config, Lua over runbook._yaml): the
 * input is one kubeconfig file, or two separated by a line "%%%%" (merged
 * as KUBECONFIG would, first file wins). Loading either resolves a
 * configuration or raises a structured config error naming the file (for
 * the current context and for each context the files name); a
 * Lua runtime error (indexing a number a file put where a mapping goes)
 * is a bug. Paths a file names are only stat'ed, never read or run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fuzz_lua.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char DRIVER[] =
  "local config = require 'runbook.k8s._config'\n"
  "local audit = require 'runbook._engine.audit'\n"
  "local errors = require 'runbook.errors'\n"
  "local dir = os.getenv('RBFUZZ_DIR')\n"
  "local paths = { dir .. '/a.kubeconfig', dir .. '/b.kubeconfig' }\n"
  "local function write(path, text)\n"
  "  local f = assert(io.open(path, 'wb'))\n"
  "  f:write(text)\n"
  "  f:close()\n"
  "end\n"
  "local function trace(e) if type(e) == 'string' then return debug.traceback(e, 2) end return e end\n"
  "local function getenv(k) return nil end\n"
  "local function check(context, files)\n"
  "  local ok, cfg = xpcall(config.load, trace, { kubeconfig = files, context = context, getenv = getenv })\n"
  "  if ok then\n"
  "    assert(type(cfg.server) == 'string' and cfg.server:match('^https?://'), 'a configuration without a server')\n"
  "    assert(type(cfg.namespace) == 'string' and cfg.namespace ~= '', 'a configuration without a namespace')\n"
  "    assert(type(cfg.auth) == 'table' and type(cfg.auth.how) == 'string', 'a configuration without auth')\n"
  "  elseif not errors.is(cfg, 'config') then\n"
  "    error(type(cfg) == 'string' and cfg or ('load raised a ' .. type(cfg)), 0)\n"
  "  elseif not cfg.message:find(dir, 1, true) and not cfg.message:find('current-context', 1, true) then\n"
  "    error('a config error that names no file: ' .. cfg.message, 0)\n"
  "  end\n"
  "end\n"
  "return function(text)\n"
  "  audit.logs = {}\n"
  "  local a, b = text:match('^(.-)\\n%%%%%%%%\\n(.*)$')\n"
  "  local files\n"
  "  if a then write(paths[1], a) write(paths[2], b) files = paths\n"
  "  else write(paths[1], text) files = { paths[1] } end\n"
  "  check(nil, files)\n"
  "  -- every context the merged files name, not only the current one\n"
  "  local mok, merged = pcall(config.merge, files)\n"
  "  if mok then\n"
  "    local names = {}\n"
  "    for name in pairs(merged.contexts) do names[#names + 1] = name end\n"
  "    table.sort(names)\n"
  "    for i = 1, math.min(#names, 4) do check(names[i], files) end\n"
  "  end\n"
  "end\n";

static char dir[] = "/tmp/rbfuzz-kubeconfig-XXXXXX";

static void cleanup(void) {
  char path[sizeof dir + 16];
  snprintf(path, sizeof path, "%s/a.kubeconfig", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/b.kubeconfig", dir);
  unlink(path);
  rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lua_State *L;
  if (!L) {
    if (!mkdtemp(dir)) {
      perror("mkdtemp");
      exit(2);
    }
    atexit(cleanup);
    setenv("RBFUZZ_DIR", dir, 1);
    L = rbf_lua_open(DRIVER, "=fuzz_kubeconfig", NULL);
  }
  rbf_lua_run(L, data, size);
  return 0;
}
