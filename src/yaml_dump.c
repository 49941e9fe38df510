/*
 * Part of the runbook._yaml binding (it takes a lua_State): yaml.dump, Lua
 * values to YAML text through libyaml's emitter, block style, mapping keys
 * sorted. Strings are quoted exactly where a plain scalar would load back as
 * something else (see rb_yaml_needs_quotes), so load(dump(v)) gives v back.
 * The emitter and its output buffer live in a userdata with __gc, so a Lua
 * error in the middle of a dump cannot leak them.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <yaml.h>

#include "crypto.h"
#include "jsonconv.h"
#include "redact.h"
#include "secret.h"
#include "yamlconv.h"

#define DUMPER_MT "runbook.yaml.Dumper"

struct dumper {
  yaml_emitter_t em;
  int em_open;
  char *out;
  size_t len, cap;
  enum rb_secret_mode secrets;
  char err[256];
};

/* stack slots of dump(): value, options, dumper, tables being dumped */
enum { D_VALUE = 1, D_OPTS, D_DUMPER, D_VISITING };

static void dumper_close(struct dumper *d) {
  if (d->em_open) {
    yaml_emitter_delete(&d->em);
    d->em_open = 0;
  }
  free(d->out);
  d->out = NULL;
}

static int dumper_gc(lua_State *L) {
  dumper_close(luaL_checkudata(L, 1, DUMPER_MT));
  return 0;
}

static int write_out(void *data, unsigned char *buf, size_t size) {
  struct dumper *d = data;
  if (d->len + size > d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 1024;
    while (cap < d->len + size)
      cap *= 2;
    char *p = realloc(d->out, cap);
    if (!p)
      return 0;
    d->out = p;
    d->cap = cap;
  }
  memcpy(d->out + d->len, buf, size);
  d->len += size;
  return 1;
}

static int dfail(struct dumper *d, const char *fmt, ...) {
  va_list ap;
  if (d->err[0])
    return -1;
  va_start(ap, fmt);
  vsnprintf(d->err, sizeof d->err, fmt, ap);
  va_end(ap);
  return -1;
}

/* The emitter owns the event from here on, whether it succeeds or not. */
static int emit(struct dumper *d, yaml_event_t *ev, int made) {
  if (!made)
    return dfail(d, "out of memory");
  if (!yaml_emitter_emit(&d->em, ev))
    return dfail(d, "%s", d->em.problem ? d->em.problem : "emitter failed");
  return 0;
}

static int emit_scalar(struct dumper *d, const char *tag, const char *s, size_t len, int plain_implicit,
                       yaml_scalar_style_t style) {
  yaml_event_t ev;
  if (len > INT_MAX)
    return dfail(d, "string of %zu bytes is too long", len);
  int made = yaml_scalar_event_initialize(&ev, NULL, (yaml_char_t *)tag, (yaml_char_t *)s, (int)len, plain_implicit,
                                          !tag, style);
  return emit(d, &ev, made);
}

/* Strings load back as the same bytes: quoted where a plain scalar would
 * read as another type, multi-line ones as | blocks (libyaml falls back to
 * quotes where a block cannot hold them), other bytes as !!binary. */
static int emit_string(struct dumper *d, const char *s, size_t len, int key) {
  if (!rb_yaml_utf8(s, len)) {
    size_t n;
    char *b64 = rb_base64((const uint8_t *)s, len, 0, 1, &n);
    if (!b64)
      return dfail(d, "out of memory");
    int rc = emit_scalar(d, RB_YAML_TAG_PREFIX "binary", b64, n, 0, YAML_ANY_SCALAR_STYLE);
    free(b64);
    return rc;
  }
  if (memchr(s, '\n', len))
    return emit_scalar(d, NULL, s, len, 0, key ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_LITERAL_SCALAR_STYLE);
  if (rb_yaml_needs_quotes(s, len))
    return emit_scalar(d, NULL, s, len, 0, YAML_DOUBLE_QUOTED_SCALAR_STYLE);
  return emit_scalar(d, NULL, s, len, 1, YAML_ANY_SCALAR_STYLE);
}

/* As jsonconv.c: n for a sequence 1..n, 0 for no integer keys, -1 for
 * integer keys that are not a sequence or keys of other types. */
static lua_Integer sequence_length(lua_State *L, int idx, int *has_string_keys) {
  lua_Integer n = 0, max = 0;
  *has_string_keys = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
      if (lua_tointeger(L, -1) > max)
        max = lua_tointeger(L, -1);
      n++;
    } else if (lua_type(L, -1) == LUA_TSTRING) {
      *has_string_keys = 1;
    } else {
      lua_pop(L, 1);
      return -1;
    }
  }
  return n > 0 && max != n ? -1 : n;
}

struct key {
  const char *s;
  size_t len;
};

static int cmp_keys(const void *a, const void *b) {
  const struct key *x = a, *y = b;
  int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int emit_value(struct dumper *d, lua_State *L, int idx, int depth);

static int emit_mapping(struct dumper *d, lua_State *L, int idx, int depth) {
  yaml_event_t ev;
  size_t count = 0, k = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
  }
  /* scratch owned by Lua; the key strings stay anchored by the table */
  struct key *keys = lua_newuserdatauv(L, sizeof *keys * (count ? count : 1), 0);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    keys[k].s = lua_tolstring(L, -1, &keys[k].len);
    k++;
  }
  qsort(keys, count, sizeof *keys, cmp_keys);
  if (emit(d, &ev, yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE)))
    return -1;
  for (k = 0; k < count; k++) {
    if (emit_string(d, keys[k].s, keys[k].len, 1))
      return -1;
    lua_pushlstring(L, keys[k].s, keys[k].len);
    lua_rawget(L, idx);
    if (emit_value(d, L, lua_gettop(L), depth + 1))
      return -1;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return emit(d, &ev, yaml_mapping_end_event_initialize(&ev));
}

static int emit_table(struct dumper *d, lua_State *L, int idx, int depth) {
  yaml_event_t ev;
  int strkeys;
  if (depth >= RB_YAML_MAX_DEPTH || !lua_checkstack(L, 8))
    return dfail(d, "value nested deeper than %d levels", RB_YAML_MAX_DEPTH);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, D_VISITING) != LUA_TNIL)
    return dfail(d, "value contains a cycle (a table that contains itself)");
  lua_pop(L, 1);
  lua_Integer n = sequence_length(L, idx, &strkeys);
  int as_array = rb_is_marked_array(L, idx);
  if (n < 0)
    return dfail(d, "table has keys that are neither a sequence 1..n nor strings (sparse array?)");
  if (n > 0 && strkeys)
    return dfail(d, "table mixes sequence and string keys");
  if (as_array && strkeys)
    return dfail(d, "json.array has string keys");
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, D_VISITING);
  if (n > 0 || as_array) {
    if (emit(d, &ev, yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE)))
      return -1;
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, i);
      if (emit_value(d, L, lua_gettop(L), depth + 1))
        return -1;
      lua_pop(L, 1);
    }
    if (emit(d, &ev, yaml_sequence_end_event_initialize(&ev)))
      return -1;
  } else if (emit_mapping(d, L, idx, depth)) {
    return -1;
  }
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, D_VISITING);
  return 0;
}

static int emit_value(struct dumper *d, lua_State *L, int idx, int depth) {
  char buf[40];
  size_t len;
  const char *s;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return emit_scalar(d, NULL, "null", 4, 1, YAML_PLAIN_SCALAR_STYLE);
  case LUA_TBOOLEAN:
    s = lua_toboolean(L, idx) ? "true" : "false";
    return emit_scalar(d, NULL, s, strlen(s), 1, YAML_PLAIN_SCALAR_STYLE);
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      snprintf(buf, sizeof buf, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, idx));
    else
      rb_yaml_format_float(lua_tonumber(L, idx), buf, sizeof buf);
    return emit_scalar(d, NULL, buf, strlen(buf), 1, YAML_PLAIN_SCALAR_STYLE);
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &len);
    return emit_string(d, s, len, 0);
  case LUA_TTABLE:
    return emit_table(d, L, idx, depth);
  case LUA_TUSERDATA:
    if (rb_is_null(L, idx))
      return emit_scalar(d, NULL, "null", 4, 1, YAML_PLAIN_SCALAR_STYLE);
    if ((s = rb_secret_test(L, idx, &len))) {
      if (d->secrets == RB_SECRETS_REVEAL)
        return emit_string(d, s, len, 0);
      if (d->secrets == RB_SECRETS_REDACT)
        return emit_string(d, RB_REDACTED, strlen(RB_REDACTED), 0);
      return dfail(d, "cannot encode a secret value (reveal it explicitly)");
    }
    return dfail(d, "cannot encode a userdata value");
  default:
    return dfail(d, "cannot encode a %s value", luaL_typename(L, idx));
  }
}

static int dump_document(struct dumper *d, lua_State *L) {
  yaml_event_t ev;
  if (emit(d, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING)) ||
      emit(d, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1)) ||
      emit_value(d, L, D_VALUE, 0) || emit(d, &ev, yaml_document_end_event_initialize(&ev, 1)) ||
      emit(d, &ev, yaml_stream_end_event_initialize(&ev)))
    return -1;
  if (!yaml_emitter_flush(&d->em))
    return dfail(d, "out of memory");
  return 0;
}

int rb_yaml_dump(lua_State *L) {
  static const char *const modes[] = {"error", "redact", "reveal", NULL};
  enum rb_secret_mode secrets = RB_SECRETS_ERROR;
  lua_Integer indent = 2;
  luaL_checkany(L, 1);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "secrets") != LUA_TNIL)
      secrets = (enum rb_secret_mode)luaL_checkoption(L, -1, NULL, modes);
    if (lua_getfield(L, 2, "indent") != LUA_TNIL) {
      indent = luaL_checkinteger(L, -1);
      if (indent < 2 || indent > 9)
        return luaL_error(L, "yaml.dump: indent must be between 2 and 9");
    }
  }
  lua_settop(L, 2);
  struct dumper *d = lua_newuserdatauv(L, sizeof *d, 0);
  memset(d, 0, sizeof *d);
  if (luaL_newmetatable(L, DUMPER_MT)) {
    lua_pushcfunction(L, dumper_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_newtable(L); /* D_VISITING */
  d->secrets = secrets;
  if (!yaml_emitter_initialize(&d->em))
    return luaL_error(L, "yaml.dump: out of memory");
  d->em_open = 1;
  yaml_emitter_set_output(&d->em, write_out, d);
  yaml_emitter_set_unicode(&d->em, 1);
  yaml_emitter_set_width(&d->em, -1);
  yaml_emitter_set_indent(&d->em, (int)indent);
  if (dump_document(d, L)) {
    dumper_close(d);
    return luaL_error(L, "yaml.dump: %s", d->err);
  }
  lua_pushlstring(L, d->out, d->len);
  dumper_close(d);
  return 1;
}
