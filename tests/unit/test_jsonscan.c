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

/* rb_json_members (the resume's fold plan) accepts exactly what
 * rb_json_scan does, whatever the text, and notes the members it asks for */
static void test_members_validate_alike(void) {
  static const char *const texts[] = {
    "{}", "{\"seq\":1}", "{\"seq\":1,}", "{\"a\":\"b\\\"c\"}", "{\"a\":\"\\u00e9\"}", "{\"a\":\"\\ud800\"}",
    "{\"a\":\"x\ty\"}", "{\"a\":[1,2,{\"b\":null}],\"c\":true}", "[1,2]", "\"str\"", "12", "{\"a\":1",
    "{\"a\":\"0123456789abcdef0123456789abcdef\"}", "{\"a\":\"0123456789abcdef0123456789abcde\\\"\"}",
    "{\"a\":\"0123456789abcdef0123456789abcdef\x01\"}", "{\"a\" : \"b\" , \"c\":-0.5e3 }", "{\"a\":tru}",
    "{\"\\u0061\":1}", "{\"a\":\"\xc3\xa9 and more than sixteen bytes \xe2\x82\xac\"}", " {\"a\":1} ", "{\"a\":1} x",
  };
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
    struct rb_json_member f[2] = {{.name = "a"}, {.name = "c"}};
    struct rb_json_members m = {.f = f, .n = 2};
    size_t len = strlen(texts[i]);
    int scan = rb_json_scan(NULL, texts[i], len), members = rb_json_members(texts[i], len, &m);
    if (scan != members)
      fprintf(stderr, "disagree on: %s\n", texts[i]);
    CHECK(scan == members);
  }
}

static void test_members_noted(void) {
  const char *text = "{\"type\":\"step.checkpoint\",\"step\":\"S1\",\"key\":\"i\\n\",\"n\":{\"type\":\"inner\"},"
                     "\"v\":[1],\"step\":\"S2\"}";
  struct rb_json_member f[5] = {{.name = "type"}, {.name = "step"}, {.name = "key"}, {.name = "v"}, {.name = "gone"}};
  struct rb_json_members m = {.f = f, .n = 5};
  CHECK(rb_json_members(text, strlen(text), &m) == 0);
  CHECK(m.object && !m.escaped_keys);
  /* the nested "type" is not a top-level member */
  CHECK(f[0].count == 1 && f[0].plain && f[0].len == 15 && memcmp(f[0].value, "step.checkpoint", 15) == 0);
  /* a repeated name: counted twice, the last value kept */
  CHECK(f[1].count == 2 && f[1].plain && f[1].len == 2 && memcmp(f[1].value, "S2", 2) == 0);
  /* a string with an escape is a string, not a plain one */
  CHECK(f[2].count == 1 && f[2].string && !f[2].plain);
  CHECK(f[3].count == 1 && !f[3].string && f[3].len == 3 && memcmp(f[3].value, "[1]", 3) == 0);
  CHECK(f[4].count == 0);
  const char *esc = "{\"k\\u0065y\":\"x\",\"type\":\"a\"}";
  CHECK(rb_json_members(esc, strlen(esc), &m) == 0 && m.escaped_keys && f[0].count == 1);
  CHECK(rb_json_members("[1]", 3, &m) == 0 && !m.object);
}

int main(void) {
  L = luaL_newstate();
  luaL_openlibs(L);
  test_long_numbers();
  test_members_validate_alike();
  test_members_noted();
  lua_close(L);
  return check_report("test_jsonscan");
}
