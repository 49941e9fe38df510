/*
 * The one table of built-in modules, in the manner of Lua's linit.c: every
 * C core (runbook._host, runbook._pg, ...) and every embedded stdlib file
 * (the table cmake/embed_stdlib.cmake generates) registered as a
 * package.preload loader; RUNBOOK_STDLIB_DIR loads the stdlib from disk.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "modules.h"

static const luaL_Reg cores[] = {
  {"runbook._host", luaopen_runbook__host},
  {"runbook._fs", luaopen_runbook__fs},
  {"runbook._json", luaopen_runbook__json},
  {"runbook._yaml", luaopen_runbook__yaml},
  {"runbook._crypto", luaopen_runbook__crypto},
  {"runbook._sign", luaopen_runbook__sign},
  {"runbook._secret", luaopen_runbook__secret},
  {"runbook._journal", luaopen_runbook__journal},
  {"runbook._proc", luaopen_runbook__proc},
  {"runbook._thread", luaopen_runbook__thread},
  {"runbook._redis", luaopen_runbook__redis},
  {"runbook._net", luaopen_runbook__net},
  {"runbook._pg", luaopen_runbook__pg},
  {"runbook._curl", luaopen_runbook__curl},
  {"runbook._hash", luaopen_runbook__hash},
  {"runbook._build", luaopen_runbook__build},
  {"runbook._httpd", luaopen_runbook__httpd},
  {NULL, NULL},
};

/* preload loader for an embedded file (bytecode); upvalue 1 is its index in rb_stdlib */
static int load_embedded(lua_State *L) {
  const struct rb_embedded *e = &rb_stdlib[lua_tointeger(L, lua_upvalueindex(1))];
  if (luaL_loadbufferx(L, e->code, e->len, e->chunkname, "b") != LUA_OK)
    return lua_error(L);
  lua_pushstring(L, e->name);
  lua_call(L, 1, 1);
  return 1;
}

/* preload loader reading the file from RUNBOOK_STDLIB_DIR; upvalue 1 is the path */
static int load_from_disk(lua_State *L) {
  const char *path = lua_tostring(L, lua_upvalueindex(1));
  if (luaL_loadfile(L, path) != LUA_OK)
    return lua_error(L);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

void rb_open_modules(lua_State *L) {
  const char *dev = getenv("RUNBOOK_STDLIB_DIR");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *c = cores; c->name; c++) {
    lua_pushcfunction(L, c->func);
    lua_setfield(L, -2, c->name);
  }
  for (int i = 0; rb_stdlib[i].name; i++) {
    if (dev && *dev) {
      /* chunkname "@runbook/x.lua" -> DIR/runbook/x.lua */
      lua_pushfstring(L, "%s/%s", dev, rb_stdlib[i].chunkname + 1);
      lua_pushcclosure(L, load_from_disk, 1);
    } else {
      lua_pushinteger(L, i);
      lua_pushcclosure(L, load_embedded, 1);
    }
    lua_setfield(L, -2, rb_stdlib[i].name);
  }
  lua_pop(L, 1);
}
