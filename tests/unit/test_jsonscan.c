/*
 * The journal's JSON reader (jsonscan.c): reading a line onto the Lua
 * stack accepts exactly what validating it accepts. Found by fuzz_journal:
 * a number of 64 characters or more validated but did not read, so a
 * journal line could verify and then fail to load on resume.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "check.h"
#include "jsonscan.h"

static lua_State *L;

/* both modes accept text; the value read is left on the stack */
static int reads(const char *text) {
  size_t len = strlen(text);
  int valid = rb_json_scan(NULL, text, len) == 0;
  int top = lua_gettop(L);
  int read = rb_json_scan(L, text, len) == 0;
  CHECK(valid == read);
  CHECK(lua_gettop(L) == top + (read ? 1 : 0));
  return valid && read;
}

static void test_long_numbers(void) {
  char text[256];
  /* an integer of 70 digits does not fit 64 bits: it reads as a float */
  memset(text, '9', 70);
  text[70] = '\0';
  CHECK(reads(text));
  CHECK(!lua_isinteger(L, -1) && lua_tonumber(L, -1) > 9.9e69);
  lua_settop(L, 0);
  /* a fraction with many zeros */
  strcpy(text, "0.");
  memset(text + 2, '0', 80);
  strcpy(text + 82, "125");
  CHECK(reads(text));
  CHECK(fabs(lua_tonumber(L, -1) - 1.25e-81) < 1e-90);
  lua_settop(L, 0);
  /* inside an object, as in a journal line */
  snprintf(text, sizeof text, "{\"seq\":1,\"big\":%s,\"x\":1}", "1234567890123456789012345678901234567890123456789012345678901234567890");
  CHECK(reads(text));
  CHECK(lua_istable(L, -1) && lua_getfield(L, -1, "x") == LUA_TNUMBER && lua_tointeger(L, -1) == 1);
  lua_settop(L, 0);
  /* the 64-bit limits stay integers */
  CHECK(reads("-9223372036854775808") && lua_isinteger(L, -1) && lua_tointeger(L, -1) == LUA_MININTEGER);
  lua_settop(L, 0);
}

int main(void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  test_long_numbers();
  lua_close(L);
  return check_report("test_jsonscan");
}
