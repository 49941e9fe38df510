/*
 * The Lua harness of the fuzz targets (fuzz_lua.h): a state with the
 * embedded stdlib, a driver function called per input, and a line hook that
 * reports Lua line-pair coverage to libFuzzer through its extra counters.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "fuzz_lua.h"
#include "host.h"
#include "modules.h"

#define COUNTERS 65536

/* libFuzzer reads every byte of this section as a coverage counter */
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_edges[COUNTERS];
static uint32_t prev_loc;

static uint32_t mix(uintptr_t a, uint32_t b) {
  uint64_t h = (uint64_t)a * 0x9E3779B97F4A7C15ull ^ (uint64_t)b * 0xC2B2AE3D27D4EB4Full;
  h ^= h >> 29;
  return (uint32_t)h;
}

static void line_hook(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "S", ar))
    return;
  /* the source string lives in the function's prototype: its address is
   * stable for the life of the state and cheap to hash */
  uint32_t loc = mix((uintptr_t)ar->source, (uint32_t)ar->currentline);
  lua_edges[(loc ^ prev_loc) % COUNTERS]++;
  prev_loc = loc >> 1;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int open_state(lua_State *L) {
  const luaL_Reg *globals = lua_touserdata(L, 1);
  luaL_openlibs(L);
  rb_host_attach(L, NULL);
  rb_open_modules(L);
  lua_pushglobaltable(L);
  if (globals)
    luaL_setfuncs(L, globals, 0);
  return 0;
}

lua_State *rbf_lua_open(const char *driver, const char *name, const luaL_Reg *globals) {
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "fuzz: cannot create a Lua state\n");
    exit(2);
  }
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, open_state);
  lua_pushlightuserdata(L, (void *)globals);
  if (lua_pcall(L, 1, 0, 1) != LUA_OK || luaL_loadbuffer(L, driver, strlen(driver), name) != LUA_OK ||
      lua_pcall(L, 0, 1, 1) != LUA_OK || !lua_isfunction(L, -1)) {
    fprintf(stderr, "fuzz: driver %s: %s\n", name, lua_isstring(L, -1) ? lua_tostring(L, -1) : "did not return a function");
    exit(2);
  }
  /* stack: traceback, driver function; both stay for every run */
  lua_sethook(L, line_hook, LUA_MASKLINE, 0);
  return L;
}

void rbf_lua_run(lua_State *L, const uint8_t *data, size_t size) {
  prev_loc = 0;
  lua_pushvalue(L, 2);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
    fprintf(stderr, "fuzz: %s\n", lua_tostring(L, -1));
    abort();
  }
}
