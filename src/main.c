/*
 * runbook: the protected main, in the manner of lua.c. Everything runs
 * inside lua_pcall with a traceback handler; runbook._engine.cli does the work and
 * returns the exit code. An error that escapes it prints as
 * "runbook: message" and exits 2.
 *
 * Libraries initialise lazily, in the core that needs them (libcurl's
 * global state in runbook._curl, OpenSSL's providers on the first secret):
 * a runbook that never touches the network pays for neither.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "host.h"
#include "lua_alloc.h"
#include "modules.h"

/* an error that escapes runbook._engine.cli: its message and traceback */
static int msghandler(lua_State *L) {
  rb_error_normalize(L, 1, "internal", 1);
  lua_getfield(L, -1, "message");
  lua_getfield(L, -2, "traceback");
  lua_pushfstring(L, "%s\n%s", lua_tostring(L, -2), lua_tostring(L, -1));
  return 1;
}

/* the message, scrubbed; run protected (the host may not be attached yet) */
static int scrub_top(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  rb_push_scrubbed(L, s, n);
  return 1;
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  luaL_openlibs(L);
  rb_host_attach(L, NULL);
  rb_open_modules(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "runbook._engine.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_call(L, 1, 1);
  return 1;
}

int main(int argc, char **argv) {
#ifdef M_MMAP_THRESHOLD
  /* Streams move through Lua as strings of up to a part (8 MiB). glibc
   * raises its mmap threshold each time such a block is freed, after which
   * they come from the heap, fragment it and keep the process growing with
   * the number of parts. A fixed threshold keeps big blocks mmap'ed and
   * returned on free: a 500 MB backup then peaks within a few MB of a 50 MB
   * one (bench/pg_s3_rss.sh). */
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
  /* small blocks from a pool (lua_alloc.c): malloc and free of each were
   * a sixth of a short run */
  struct rb_pool *pool;
  lua_State *L = rb_lua_newstate(&pool);
  if (!L) {
    fprintf(stderr, "runbook: cannot create the Lua state: out of memory\n");
    return 2;
  }
  lua_pushcfunction(L, msghandler);
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 1);
  int code;
  if (status != LUA_OK) {
    /* scrubbed like everything else printed: an error can quote a secret */
    const char *msg = NULL;
    if (lua_isstring(L, -1)) {
      lua_pushcfunction(L, scrub_top);
      lua_pushvalue(L, -2);
      msg = lua_pcall(L, 1, 1, 0) == LUA_OK ? lua_tostring(L, -1) : "(an error whose message could not be scrubbed)";
    }
    fprintf(stderr, "runbook: %s\n", msg ? msg : "(no message)");
    code = 2;
  } else {
    code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
  }
  fflush(stdout);
  lua_close(L);
  rb_pool_destroy(pool);
  return code;
}
