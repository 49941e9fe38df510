/*
 * Converting between Lua values and jansson trees, shared by runbook._json,
 * runbook._yaml, runbook._pg, the journal binding and its reader
 * (jsonconv.h): json.null and json.array sentinels, 64-bit integers, floats
 * that round-trip, depth limits, and secrets refused unless allowed. Takes a
 * lua_State: it is a conversion library for the bindings, not a binding.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "jsonconv.h"
#include "redact.h"
#include "secret.h"

#define NULL_KEY "runbook.json.null"
#define ARRAY_KEY "runbook.json.array"

static int null_tostring(lua_State *L) {
  lua_pushliteral(L, "null");
  return 1;
}

void rb_push_null(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    lua_newuserdatauv(L, 0, 0);
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "json.null");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, NULL_KEY);
  }
}

int rb_is_null(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TUSERDATA)
    return 0;
  rb_push_null(L);
  int eq = lua_rawequal(L, idx, -1);
  lua_pop(L, 1);
  return eq;
}

static void push_array_mt(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, ARRAY_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "json.array");
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, ARRAY_KEY);
  }
}

void rb_mark_array(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  push_array_mt(L);
  lua_setmetatable(L, idx);
}

int rb_is_marked_array(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (!lua_getmetatable(L, idx))
    return 0;
  push_array_mt(L);
  int eq = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return eq;
}

/* ---- Lua -> JSON ------------------------------------------------------------ */

struct conv {
  lua_State *L;
  const struct rb_jsonopts *o;
  char *err;
  size_t errlen;
  struct rb_redactor *redactor;
};

static json_t *fail(struct conv *c, const char *msg) {
  if (!c->err[0])
    snprintf(c->err, c->errlen, "%s", msg);
  return NULL;
}

static json_t *make_string(struct conv *c, const char *s, size_t len) {
  json_t *j;
  char *scrubbed = NULL;
  size_t slen = 0;
  int rc = c->redactor ? rb_redactor_scrub(c->redactor, s, len, &scrubbed, &slen) : RB_SCRUB_CLEAN;
  if (rc == RB_SCRUB_CHANGED) {
    s = scrubbed;
    len = slen;
  } else if (rc == RB_SCRUB_NOMEM) {
    /* the string could not be checked: withhold it */
    s = RB_REDACTED;
    len = sizeof RB_REDACTED - 1;
  }
  j = json_stringn(s, len);
  rb_redactor_free_text(c->redactor, scrubbed, slen);
  if (!j)
    return fail(c, "string is not valid UTF-8 (encode binary data as base64 or hex)");
  return j;
}

/* 0 when the table is a sequence 1..n (n > 0), n otherwise; -1 if it has
 * integer keys that do not form a sequence */
static lua_Integer sequence_length(lua_State *L, int idx, int *has_string_keys) {
  lua_Integer n = 0, max = 0;
  *has_string_keys = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TNUMBER && lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k < 1) {
        lua_pop(L, 1);
        return -1;
      }
      if (k > max)
        max = k;
      n++;
    } else if (lua_type(L, -1) == LUA_TSTRING) {
      *has_string_keys = 1;
    } else {
      lua_pop(L, 1);
      return -1;
    }
  }
  if (n > 0 && max != n)
    return -1;
  return n;
}

static json_t *convert(struct conv *c, int idx, int depth);

struct key {
  const char *s;
  size_t len;
};

static int cmp_keys(const void *a, const void *b) {
  const struct key *x = a, *y = b;
  int d = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
  return d ? d : (x->len > y->len) - (x->len < y->len);
}

static json_t *convert_table(struct conv *c, int idx, int depth) {
  lua_State *L = c->L;
  int strkeys;
  lua_Integer n = sequence_length(L, idx, &strkeys);
  int as_array = rb_is_marked_array(L, idx);
  if (n < 0)
    return fail(c, "table has keys that are neither a sequence 1..n nor strings (sparse array?)");
  if (n > 0 && strkeys)
    return fail(c, "table mixes sequence and string keys");
  if (as_array && strkeys)
    return fail(c, "json.array has string keys");
  if (n > 0 || as_array) {
    json_t *a = json_array();
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, i);
      json_t *v = convert(c, lua_gettop(L), depth + 1);
      lua_pop(L, 1);
      if (!v || json_array_append_new(a, v) != 0) {
        json_decref(a);
        return fail(c, "out of memory");
      }
    }
    return a;
  }
  /* objects: keys sorted so output is stable (tables have no order) */
  int count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
  }
  /* scratch owned by Lua, so an out-of-memory error cannot leak it */
  struct key *keys = lua_newuserdatauv(L, sizeof *keys * (size_t)(count ? count : 1), 0);
  int k = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    /* strings are anchored by the table; lengths keep keys binary-safe */
    keys[k].s = lua_tolstring(L, -1, &keys[k].len);
    k++;
  }
  qsort(keys, (size_t)count, sizeof *keys, cmp_keys);
  json_t *o = json_object();
  for (int i = 0; i < count; i++) {
    lua_pushlstring(L, keys[i].s, keys[i].len);
    lua_rawget(L, idx);
    json_t *v = convert(c, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
    if (!v) {
      json_decref(o);
      lua_pop(L, 1);
      return NULL;
    }
    size_t klen = keys[i].len, slen = 0;
    const char *key = keys[i].s;
    char *scrubbed = NULL;
    int rc = c->redactor ? rb_redactor_scrub(c->redactor, key, klen, &scrubbed, &slen) : RB_SCRUB_CLEAN;
    if (rc == RB_SCRUB_CHANGED) {
      key = scrubbed;
      klen = slen;
    } else if (rc == RB_SCRUB_NOMEM) {
      key = RB_REDACTED; /* keys that collide this way keep the last value */
      klen = sizeof RB_REDACTED - 1;
    }
    int bad = json_object_setn_new(o, key, klen, v) != 0;
    rb_redactor_free_text(c->redactor, scrubbed, slen);
    if (bad) {
      json_decref(o);
      lua_pop(L, 1);
      return fail(c, "object key is not valid UTF-8");
    }
  }
  lua_pop(L, 1);
  return o;
}

static json_t *convert(struct conv *c, int idx, int depth) {
  lua_State *L = c->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return json_null();
  case LUA_TBOOLEAN:
    return json_boolean(lua_toboolean(L, idx));
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      return json_integer((json_int_t)lua_tointeger(L, idx));
    else {
      double d = lua_tonumber(L, idx);
      if (!isfinite(d))
        return fail(c, "number is NaN or infinite");
      return json_real(d);
    }
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    return make_string(c, s, len);
  }
  case LUA_TTABLE:
    /* the table at depth d is level d + 1 */
    if (depth >= RB_JSON_MAX_DEPTH || !lua_checkstack(L, 8)) {
      if (!c->err[0])
        snprintf(c->err, c->errlen, "value nested deeper than %d levels (a cycle?)", RB_JSON_MAX_DEPTH);
      return NULL;
    }
    return convert_table(c, idx, depth);
  case LUA_TUSERDATA: {
    size_t len;
    const char *s;
    if (rb_is_null(L, idx))
      return json_null();
    if ((s = rb_secret_test(L, idx, &len))) {
      if (c->o->secrets == RB_SECRETS_REVEAL) {
        json_t *j = json_stringn(s, len);
        return j ? j : fail(c, "secret is not valid UTF-8");
      }
      if (c->o->secrets == RB_SECRETS_REDACT)
        return json_string(RB_REDACTED);
      return fail(c, "cannot encode a secret value (reveal it explicitly)");
    }
    return fail(c, "cannot encode a userdata value");
  }
  default:
    if (!c->err[0])
      snprintf(c->err, c->errlen, "cannot encode a %s value", lua_typename(L, lua_type(L, idx)));
    return NULL;
  }
}

json_t *rb_lua_to_json(lua_State *L, int idx, const struct rb_jsonopts *o, char *err, size_t errlen) {
  struct conv c = {L, o, err, errlen, NULL};
  err[0] = '\0';
  if (o->scrub)
    c.redactor = rb_host_get(L)->redactor;
  json_t *j = convert(&c, lua_absindex(L, idx), 0);
  if (!j && !err[0])
    snprintf(err, errlen, "out of memory");
  return j;
}

/* ---- JSON -> Lua ------------------------------------------------------------ */

void rb_json_to_lua(lua_State *L, json_t *j) {
  luaL_checkstack(L, 4, "JSON nested too deeply");
  switch (json_typeof(j)) {
  case JSON_OBJECT: {
    const char *key;
    json_t *v;
    lua_createtable(L, 0, (int)json_object_size(j));
    json_object_foreach(j, key, v) {
      rb_json_to_lua(L, v);
      lua_setfield(L, -2, key);
    }
    break;
  }
  case JSON_ARRAY: {
    size_t i, n = json_array_size(j);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
      rb_json_to_lua(L, json_array_get(j, i));
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    if (n == 0)
      rb_mark_array(L, -1);
    break;
  }
  case JSON_STRING:
    lua_pushlstring(L, json_string_value(j), json_string_length(j));
    break;
  case JSON_INTEGER:
    lua_pushinteger(L, (lua_Integer)json_integer_value(j));
    break;
  case JSON_REAL:
    lua_pushnumber(L, json_real_value(j));
    break;
  case JSON_TRUE:
    lua_pushboolean(L, 1);
    break;
  case JSON_FALSE:
    lua_pushboolean(L, 0);
    break;
  case JSON_NULL:
  default:
    rb_push_null(L);
    break;
  }
}
