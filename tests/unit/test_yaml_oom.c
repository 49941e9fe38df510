/*
 * runbook._yaml under memory failure: every Lua allocation from the first
 * to the last of a load or a dump is made to fail in turn. Each run must
 * end in a clean error (or success) and, under the sanitizer build, leave
 * nothing behind: the libyaml parser, its events and the emitter's buffer
 * are owned by userdata whose __gc frees them when a Lua error cuts the
 * conversion short.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "modules.h"

static long budget = -1; /* allocations left before failing; -1: no limit */

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  /* Lua requires shrinking to succeed; fail only new blocks and growth */
  if (budget >= 0 && (ptr == NULL || nsize > osize)) {
    if (budget == 0)
      return NULL;
    budget--;
  }
  return realloc(ptr, nsize);
}

static const char *const TEXT = "base: &b {image: api, replicas: 1, tags: [a, b]}\n"
                                "web:\n  <<: *b\n  replicas: 3\n  script: |\n    set -e\n    echo hi\n"
                                "list: [*b, *b, ~, 1.5, 0x10, !!binary aGVsbG8=]\n"
                                "--- second\n--- [1, {a: []}]\n";

/* Runs `chunk` with the allocator failing after n allocations; returns 1
 * when it ran to the end, 0 when it stopped on an error. */
static int run_with_budget(const char *chunk, long n) {
  lua_State *L = lua_newstate(limited_alloc, NULL);
  if (!L) {
    fprintf(stderr, "cannot create a Lua state\n");
    exit(2);
  }
  luaL_openlibs(L);
  luaL_requiref(L, "yaml", luaopen_runbook__yaml, 1);
  lua_pop(L, 1);
  lua_pushstring(L, TEXT);
  lua_setglobal(L, "TEXT");
  if (luaL_loadstring(L, chunk) != LUA_OK) {
    fprintf(stderr, "chunk: %s\n", lua_tostring(L, -1));
    exit(2);
  }
  budget = n;
  int ok = lua_pcall(L, 0, 0, 0) == LUA_OK;
  budget = -1;
  if (!ok && lua_type(L, -1) != LUA_TSTRING) {
    fprintf(stderr, "budget %ld: error is not a message\n", n);
    exit(1);
  }
  lua_close(L);
  return ok;
}

/* Fails allocation 0, 1, 2, ... until the chunk completes. */
static long sweep(const char *name, const char *chunk) {
  long n = 0;
  while (!run_with_budget(chunk, n)) {
    if (++n > 200000) {
      fprintf(stderr, "%s: never completed\n", name);
      exit(1);
    }
  }
  printf("%s: completed with %ld allocations, each failure before that handled\n", name, n);
  return n;
}

int main(void) {
  sweep("load", "local docs = assert(yaml.load(TEXT)); assert(docs[1].web.image == 'api')");
  sweep("load error", "local d, e = yaml.load(TEXT .. '\\n--- {a: 1, a: 2}'); assert(e and e:find('duplicate key'))");
  sweep("dump", "local s = yaml.dump(assert(yaml.load(TEXT))[1]); assert(s:find('replicas: 3', 1, true))");
  sweep("dump error", "local ok, e = pcall(yaml.dump, {a = {1, 2, print}}); assert(not ok and e:find('function'))");
  return 0;
}
