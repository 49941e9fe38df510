/*
 * runbook._json: encode and decode over jansson, with the conventions of
 * jsonconv.h (json.null, json.array, 64-bit integers, secrets refused unless
 * the caller says how to treat them).
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>

#include "jsonconv.h"

static int text_gc(lua_State *L) {
  char **box = lua_touserdata(L, 1);
  free(*box);
  *box = NULL;
  return 0;
}

/* encode(value [, {pretty=, indent=, secrets="error"|"redact"|"reveal", scrub=}]) */
static int f_encode(lua_State *L) {
  static const char *const modes[] = {"error", "redact", "reveal", NULL};
  struct rb_jsonopts o = {RB_SECRETS_ERROR, 0};
  size_t flags = JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(17);
  luaL_checkany(L, 1);
  if (lua_istable(L, 2)) {
    if (lua_getfield(L, 2, "secrets") != LUA_TNIL)
      o.secrets = (enum rb_secret_mode)luaL_checkoption(L, -1, NULL, modes);
    lua_pop(L, 1);
    lua_getfield(L, 2, "scrub");
    o.scrub = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 2, "pretty");
    if (lua_toboolean(L, -1)) {
      lua_getfield(L, 2, "indent");
      lua_Integer ind = luaL_optinteger(L, -1, 2);
      lua_pop(L, 1);
      if (ind < 0 || ind > 31)
        return luaL_error(L, "indent must be between 0 and 31");
      flags = (flags & ~(size_t)JSON_COMPACT) | JSON_INDENT(ind);
    }
    lua_pop(L, 1);
  }
  /* holds the text while Lua copies it: a memory error there cannot leak it */
  char **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  if (luaL_newmetatable(L, "runbook.json.Text")) {
    lua_pushcfunction(L, text_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  char err[256];
  json_t *j = rb_lua_to_json(L, 1, &o, err, sizeof err);
  if (!j)
    return luaL_error(L, "json.encode: %s", err);
  *box = json_dumps(j, flags);
  json_decref(j);
  if (!*box)
    return luaL_error(L, "json.encode: out of memory");
  lua_pushstring(L, *box);
  free(*box);
  *box = NULL;
  return 1;
}

/* Pushes "line L column C: " for byte offset k of s, counted as jansson
 * counts (lines from 1; columns in characters, from 1). */
static void push_where(lua_State *L, const char *s, size_t k) {
  int line = 1, column = 0;
  for (size_t i = 0; i <= k; i++) {
    if (i < k && s[i] == '\n') {
      line++;
      column = 0;
    } else if (((unsigned char)s[i] & 0xC0) != 0x80) {
      column++;
    }
  }
  lua_pushfstring(L, "line %d column %d: ", line, column);
}

/* The offset of the first bracket nested deeper than RB_JSON_MAX_DEPTH in
 * s[0..n), or -1. Only brackets outside strings count; n never goes past
 * what jansson has read, which is valid JSON that far. */
static long long too_deep_at(const char *s, size_t n) {
  int depth = 0, in_string = 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (in_string) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_string = 0;
    } else if (c == '"') {
      in_string = 1;
    } else if (c == '[' || c == '{') {
      if (++depth > RB_JSON_MAX_DEPTH)
        return (long long)i;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return -1;
}

static int decode_error(lua_State *L, const char *s, size_t k, const char *fmt, lua_Integer arg) {
  lua_pushnil(L);
  push_where(L, s, k);
  lua_pushfstring(L, fmt, arg);
  lua_concat(L, 2);
  return 2;
}

/* decode(text) -> value | nil, "line L column C: message"
 * Duplicate keys are refused, as runbook.yaml refuses them: a document
 * saying two things for one key is wrong, whichever the reader would keep. */
static int f_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  json_error_t e;
  json_t *j = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &e);
  /* how far jansson read: all of the text, or up to its error */
  size_t read = e.position < 0 ? 0 : (size_t)e.position > len ? len : (size_t)e.position;
  long long deep = too_deep_at(s, j ? len : read);
  if (deep >= 0) {
    json_decref(j);
    return decode_error(L, s, (size_t)deep, "arrays and objects nested deeper than %I levels",
                        (lua_Integer)RB_JSON_MAX_DEPTH);
  }
  /* jansson takes a NUL byte outside a string for the end of the text:
   * after a number it calls the text good ("123\0" gave 123), elsewhere it
   * reports an end of file that is not there. JSON never allows one. */
  const char *nul = memchr(s, '\0', j ? len : read);
  if (nul && (j || json_error_code(&e) == json_error_end_of_input_expected ||
              json_error_code(&e) == json_error_premature_end_of_input)) {
    json_decref(j);
    return decode_error(L, s, (size_t)(nul - s), "unexpected NUL byte at offset %I",
                        (lua_Integer)(nul - s));
  }
  if (!j) {
    lua_pushnil(L);
    lua_pushfstring(L, "line %d column %d: %s", e.line, e.column, e.text);
    return 2;
  }
  rb_json_to_lua(L, j);
  json_decref(j);
  return 1;
}

/* array([t]) -> t marked as a JSON array (so {} encodes as []) */
static int f_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  rb_mark_array(L, 1);
  return 1;
}

static int f_is_array(lua_State *L) {
  lua_pushboolean(L, lua_istable(L, 1) && rb_is_marked_array(L, 1));
  return 1;
}

static int f_is_null(lua_State *L) {
  lua_pushboolean(L, rb_is_null(L, 1));
  return 1;
}

static const luaL_Reg funcs[] = {
  {"encode", f_encode},
  {"decode", f_decode},
  {"array", f_array},
  {"is_array", f_is_array},
  {"is_null", f_is_null},
  {NULL, NULL},
};

int luaopen_runbook__json(lua_State *L) {
  luaL_newlib(L, funcs);
  rb_push_null(L);
  lua_setfield(L, -2, "null");
  return 1;
}
