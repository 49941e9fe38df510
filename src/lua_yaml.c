/*
 * runbook._yaml: YAML over libyaml's event API, with the conventions of
 * jsonconv.h (json.null, empty sequences as json.array, 64-bit integers).
 *
 * load(text) -> { doc1, doc2, ... } | nil, "line L column C: problem (context)"
 *   Plain scalars resolve by the YAML 1.2 core schema; quoted and block
 *   scalars are strings; !!str !!int !!float !!bool !!null !!binary are
 *   honoured and other tags ignored. An alias gives the anchored value itself
 *   (a table is shared, not copied). Merge keys (<<) follow the merge-key
 *   spec. Keys become strings (1 -> "1", true -> "true", null -> "null").
 *   Duplicate keys, unknown aliases, integers outside 64 bits and streams
 *   whose aliases expand past MAX_NODES nodes are errors.
 * dump(value [, {indent=2, secrets="error"|"redact"|"reveal"}]) -> text
 *   (yaml_dump.c)
 *
 * The libyaml parser lives in a userdata with __gc, so a Lua error (out of
 * memory) in the middle of a conversion cannot leak it or its events.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <yaml.h>

#include "crypto.h"
#include "jsonconv.h"
#include "modules.h"
#include "yamlconv.h"

#define LOADER_MT "runbook.yaml.Loader"
#define MAX_NODES 10000000 /* nodes after expanding aliases, per load */

struct loader {
  yaml_parser_t parser;
  yaml_event_t ev;
  int parser_open, ev_held;
  const char *text;
  size_t len;
  lua_Integer nodes;
  int depth;
  char err[512];
};

/* stack slots of load(): text, loader, documents, and per document the
 * anchors (name -> value), their expanded sizes, and the anchors of the
 * collections still being built (an alias to one of those is recursive) */
enum { S_TEXT = 1, S_LOADER, S_DOCS, S_ANCHORS, S_SIZES, S_OPEN };

static void loader_close(struct loader *ld) {
  if (ld->ev_held) {
    yaml_event_delete(&ld->ev);
    ld->ev_held = 0;
  }
  if (ld->parser_open) {
    yaml_parser_delete(&ld->parser);
    ld->parser_open = 0;
  }
}

static int loader_gc(lua_State *L) {
  loader_close(luaL_checkudata(L, 1, LOADER_MT));
  return 0;
}

static int fail_at(struct loader *ld, yaml_mark_t m, const char *fmt, ...) {
  va_list ap;
  int n = snprintf(ld->err, sizeof ld->err, "line %zu column %zu: ", m.line + 1, m.column + 1);
  va_start(ap, fmt);
  vsnprintf(ld->err + n, sizeof ld->err - (size_t)n, fmt, ap);
  va_end(ap);
  return -1;
}

/* A scalar for an error message: at most 40 bytes, control bytes as '?'. */
static const char *excerpt(const char *s, size_t len, char *buf, size_t size) {
  size_t n = len < 40 ? len : 40, k = 0;
  for (size_t i = 0; i < n && k + 4 < size; i++)
    buf[k++] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
  if (n < len && k + 4 < size)
    buf[k++] = '.', buf[k++] = '.', buf[k++] = '.';
  buf[k] = '\0';
  return buf;
}

/* The mark of a byte offset: libyaml's reader reports only the offset, and
 * at the end of text without a final newline its marks run one line past. */
static yaml_mark_t mark_at(const struct loader *ld, size_t offset) {
  yaml_mark_t m = {offset, 0, 0};
  for (size_t i = 0; i < offset && i < ld->len; i++) {
    if (ld->text[i] == '\n')
      m.line++, m.column = 0;
    else if (((unsigned char)ld->text[i] & 0xC0) != 0x80)
      m.column++;
  }
  return m;
}

static int reader_error(struct loader *ld) {
  const yaml_parser_t *p = &ld->parser;
  yaml_mark_t m = mark_at(ld, p->problem_offset);
  if (p->problem_value >= 0)
    return fail_at(ld, m, "%s (#x%02X)", p->problem, (unsigned)p->problem_value);
  return fail_at(ld, m, "%s", p->problem);
}

static int next(struct loader *ld) {
  if (ld->ev_held) {
    yaml_event_delete(&ld->ev);
    ld->ev_held = 0;
  }
  if (yaml_parser_parse(&ld->parser, &ld->ev)) {
    ld->ev_held = 1;
    return 0;
  }
  const yaml_parser_t *p = &ld->parser;
  switch (p->error) {
  case YAML_READER_ERROR:
    return reader_error(ld);
  case YAML_SCANNER_ERROR:
  case YAML_PARSER_ERROR: {
    yaml_mark_t m = p->problem_mark.index >= ld->len ? mark_at(ld, ld->len) : p->problem_mark;
    if (p->context)
      return fail_at(ld, m, "%s (%s)", p->problem, p->context);
    return fail_at(ld, m, "%s", p->problem ? p->problem : "syntax error");
  }
  default:
    snprintf(ld->err, sizeof ld->err, "out of memory");
    return -1;
  }
}

static int count(struct loader *ld, lua_Integer n, yaml_mark_t m) {
  if (ld->nodes > MAX_NODES - n)
    return fail_at(ld, m, "aliases expand this YAML to more than %d nodes (an alias bomb?)", MAX_NODES);
  ld->nodes += n;
  return 0;
}

static int push_binary(struct loader *ld, lua_State *L, const char *s, size_t len, yaml_mark_t m) {
  /* base64 in YAML may be folded over lines: drop the whitespace first */
  char *buf = lua_newuserdatauv(L, len + 1, 0);
  size_t n = 0;
  for (size_t i = 0; i < len; i++)
    if (s[i] != ' ' && s[i] != '\n' && s[i] != '\r' && s[i] != '\t')
      buf[n++] = s[i];
  uint8_t *out = lua_newuserdatauv(L, n / 4 * 3 + 3, 0);
  long got = rb_unbase64(buf, n, out);
  if (got < 0)
    return fail_at(ld, m, "!!binary value is not valid base64");
  lua_pushlstring(L, (const char *)out, (size_t)got);
  lua_replace(L, -3);
  lua_pop(L, 1);
  return 0;
}

static int push_number(struct loader *ld, lua_State *L, enum rb_ytype t, const struct rb_yvalue *v, const char *s,
                       size_t len, yaml_mark_t m) {
  char ex[48];
  if (t == RB_Y_RANGE)
    return fail_at(ld, m, "integer %s is outside the 64-bit range (quote it to keep it as a string)",
                   excerpt(s, len, ex, sizeof ex));
  if (t == RB_Y_INT)
    lua_pushinteger(L, (lua_Integer)v->i);
  else
    lua_pushnumber(L, v->d);
  return 0;
}

/* Pushes the value of the current scalar event. */
static int push_scalar(struct loader *ld, lua_State *L) {
  const yaml_event_t *e = &ld->ev;
  const char *s = (const char *)e->data.scalar.value, *tag = (const char *)e->data.scalar.tag;
  size_t len = e->data.scalar.length;
  int plain = e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
  struct rb_yvalue v;
  enum rb_ytype t;
  char ex[48];

  if (tag && strncmp(tag, RB_YAML_TAG_PREFIX, sizeof RB_YAML_TAG_PREFIX - 1) == 0) {
    const char *name = tag + sizeof RB_YAML_TAG_PREFIX - 1;
    if (strcmp(name, "str") == 0) {
      lua_pushlstring(L, s, len);
      return 0;
    }
    if (strcmp(name, "null") == 0) {
      if (!rb_yaml_null(s, len))
        return fail_at(ld, e->start_mark, "invalid !!null value \"%s\"", excerpt(s, len, ex, sizeof ex));
      rb_push_null(L);
      return 0;
    }
    if (strcmp(name, "bool") == 0) {
      if (!rb_yaml_bool(s, len, &v.b))
        return fail_at(ld, e->start_mark, "invalid !!bool value \"%s\"", excerpt(s, len, ex, sizeof ex));
      lua_pushboolean(L, v.b);
      return 0;
    }
    if (strcmp(name, "int") == 0) {
      if ((t = rb_yaml_int(s, len, &v.i)) == RB_Y_STR)
        return fail_at(ld, e->start_mark, "invalid !!int value \"%s\"", excerpt(s, len, ex, sizeof ex));
      return push_number(ld, L, t, &v, s, len, e->start_mark);
    }
    if (strcmp(name, "float") == 0) {
      if (rb_yaml_int(s, len, &v.i) == RB_Y_INT)
        v.d = (double)v.i;
      else if (!rb_yaml_float(s, len, &v.d))
        return fail_at(ld, e->start_mark, "invalid !!float value \"%s\"", excerpt(s, len, ex, sizeof ex));
      lua_pushnumber(L, v.d);
      return 0;
    }
    if (strcmp(name, "binary") == 0)
      return push_binary(ld, L, s, len, e->start_mark);
    /* other standard tags (timestamp, merge, ...): as if untagged */
  } else if (tag && strcmp(tag, "!") == 0) {
    plain = 0; /* the non-specific tag: "not resolved", so a string */
  }
  if (!plain) {
    lua_pushlstring(L, s, len);
    return 0;
  }
  switch ((t = rb_yaml_resolve(s, len, &v))) {
  case RB_Y_NULL:
    rb_push_null(L);
    return 0;
  case RB_Y_BOOL:
    lua_pushboolean(L, v.b);
    return 0;
  case RB_Y_STR:
    lua_pushlstring(L, s, len);
    return 0;
  default:
    return push_number(ld, L, t, &v, s, len, e->start_mark);
  }
}

/* Replaces the scalar on top with the string form used as a mapping key. */
static int to_key(struct loader *ld, lua_State *L, yaml_mark_t m) {
  char buf[40];
  switch (lua_type(L, -1)) {
  case LUA_TSTRING:
    return 0;
  case LUA_TBOOLEAN:
    lua_pushstring(L, lua_toboolean(L, -1) ? "true" : "false");
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, -1)) {
      lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, -1));
    } else {
      rb_yaml_format_float(lua_tonumber(L, -1), buf, sizeof buf);
      lua_pushstring(L, buf);
    }
    break;
  case LUA_TTABLE:
    return fail_at(ld, m, "a mapping key must be a scalar (an alias used as a key names a collection)");
  default:
    lua_pushliteral(L, "null");
    break;
  }
  lua_replace(L, -2);
  return 0;
}

/* Registers the value on top under the anchor name at slot `name`. */
static void set_anchor(lua_State *L, int name, lua_Integer size) {
  lua_pushvalue(L, name);
  lua_pushvalue(L, -2);
  lua_rawset(L, S_ANCHORS);
  lua_pushvalue(L, name);
  lua_pushinteger(L, size);
  lua_rawset(L, S_SIZES);
}

/* While a collection with an anchor is built, the name means "open": an
 * alias to it inside is recursive, even if an older node had the name. */
static void set_open(lua_State *L, int name, int open) {
  if (open) {
    lua_pushvalue(L, name);
    lua_pushnil(L);
    lua_rawset(L, S_ANCHORS);
  }
  lua_pushvalue(L, name);
  if (open)
    lua_pushboolean(L, 1);
  else
    lua_pushnil(L);
  lua_rawset(L, S_OPEN);
}

static int load_node(struct loader *ld, lua_State *L, lua_Integer *size);

/* A mapping is a table without the array mark and without [1]; keys are
 * always strings, so a loaded mapping never has integer keys. */
static int is_mapping(lua_State *L, int idx) {
  if (!lua_istable(L, idx) || rb_is_marked_array(L, idx))
    return 0;
  int seq = lua_rawgeti(L, idx, 1) != LUA_TNIL;
  lua_pop(L, 1);
  return !seq;
}

/* Copies the keys of the mapping on top into t where t has none yet. */
static lua_Integer merge_into(lua_State *L, int t) {
  lua_Integer n = 0;
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pushvalue(L, -2);
    if (lua_rawget(L, t) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, t);
      n++;
    } else {
      lua_pop(L, 2);
    }
  }
  return n;
}

/* Applies the << values collected in the list at `merges`, in order, so
 * explicit keys win over merged ones and earlier merges over later ones. */
static int apply_merges(struct loader *ld, lua_State *L, int t, int merges, yaml_mark_t m) {
  lua_Integer n = lua_rawlen(L, merges), added = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, merges, i);
    added += merge_into(L, t);
    lua_pop(L, 1);
  }
  return count(ld, added, m);
}

/* Only a plain << is the merge key ("<<" quoted is an ordinary key). */
static int is_merge_key(const yaml_event_t *e) {
  if (e->type != YAML_SCALAR_EVENT || e->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
      e->data.scalar.length != 2 || memcmp(e->data.scalar.value, "<<", 2) != 0)
    return 0;
  const char *tag = (const char *)e->data.scalar.tag;
  return !tag || strcmp(tag, RB_YAML_TAG_PREFIX "merge") == 0;
}

/* Adds the value on top (a mapping, or a sequence of mappings) to the list
 * of mappings to merge at `merges`. */
static int add_merge(struct loader *ld, lua_State *L, int merges, yaml_mark_t m) {
  static const char msg[] = "the merge key << takes a mapping or a sequence of mappings";
  lua_Integer n = lua_rawlen(L, merges);
  if (is_mapping(L, -1)) {
    lua_rawseti(L, merges, ++n);
    return 0;
  }
  if (!lua_istable(L, -1))
    return fail_at(ld, m, msg);
  lua_Integer k = lua_rawlen(L, -1);
  for (lua_Integer j = 1; j <= k; j++) {
    lua_rawgeti(L, -1, j);
    if (!is_mapping(L, -1))
      return fail_at(ld, m, msg);
    lua_rawseti(L, merges, ++n);
  }
  lua_pop(L, 1);
  return 0;
}

/* The current event is MAPPING_START and the new table is on top. */
static int load_mapping(struct loader *ld, lua_State *L, lua_Integer *size) {
  int t = lua_gettop(L), merges = t + 1;
  yaml_mark_t start = ld->ev.start_mark;
  char ex[48];
  lua_pushnil(L); /* the list of << values, made on the first one */
  for (;;) {
    lua_Integer ksize, vsize;
    if (next(ld))
      return -1;
    if (ld->ev.type == YAML_MAPPING_END_EVENT)
      break;
    yaml_mark_t km = ld->ev.start_mark;
    int merge = is_merge_key(&ld->ev);
    if (ld->ev.type == YAML_SEQUENCE_START_EVENT || ld->ev.type == YAML_MAPPING_START_EVENT)
      return fail_at(ld, km, "a mapping key must be a scalar (complex keys are not supported)");
    if (load_node(ld, L, &ksize) || to_key(ld, L, km))
      return -1;
    if (next(ld))
      return -1;
    yaml_mark_t vm = ld->ev.start_mark;
    if (load_node(ld, L, &vsize))
      return -1;
    *size += ksize + vsize;
    if (merge) {
      if (!lua_isnil(L, merges))
        return fail_at(ld, km, "duplicate key \"<<\" (merge several mappings with <<: [*a, *b])");
      lua_newtable(L);
      lua_replace(L, merges);
      if (add_merge(ld, L, merges, vm))
        return -1;
      lua_pop(L, 1); /* the key */
      continue;
    }
    lua_pushvalue(L, -2);
    if (lua_rawget(L, t) != LUA_TNIL) {
      size_t klen;
      const char *k = lua_tolstring(L, -3, &klen);
      return fail_at(ld, km, "duplicate key \"%s\"", excerpt(k, klen, ex, sizeof ex));
    }
    lua_pop(L, 1);
    lua_rawset(L, t);
  }
  if (!lua_isnil(L, merges) && apply_merges(ld, L, t, merges, start))
    return -1;
  lua_settop(L, t);
  return 0;
}

static int load_collection(struct loader *ld, lua_State *L, lua_Integer *size) {
  int mapping = ld->ev.type == YAML_MAPPING_START_EVENT;
  const yaml_char_t *anchor = mapping ? ld->ev.data.mapping_start.anchor : ld->ev.data.sequence_start.anchor;
  yaml_mark_t m = ld->ev.start_mark;
  if (++ld->depth > RB_YAML_MAX_DEPTH)
    return fail_at(ld, m, "collections nested deeper than %d levels", RB_YAML_MAX_DEPTH);
  if (!lua_checkstack(L, 16))
    return fail_at(ld, m, "collections nested too deeply");
  if (count(ld, 1, m))
    return -1;
  if (anchor)
    lua_pushstring(L, (const char *)anchor);
  else
    lua_pushnil(L);
  int name = lua_gettop(L);
  if (anchor)
    set_open(L, name, 1);
  lua_newtable(L);
  *size = 1;
  if (mapping) {
    if (load_mapping(ld, L, size))
      return -1;
  } else {
    lua_Integer n = 0, sz;
    for (;;) {
      if (next(ld))
        return -1;
      if (ld->ev.type == YAML_SEQUENCE_END_EVENT)
        break;
      if (load_node(ld, L, &sz))
        return -1;
      lua_rawseti(L, -2, ++n);
      *size += sz;
    }
    if (n == 0)
      rb_mark_array(L, -1);
  }
  if (anchor) {
    set_open(L, name, 0);
    set_anchor(L, name, *size);
  }
  lua_remove(L, name);
  ld->depth--;
  return 0;
}

static int load_alias(struct loader *ld, lua_State *L, lua_Integer *size) {
  const char *name = (const char *)ld->ev.data.alias.anchor;
  yaml_mark_t m = ld->ev.start_mark;
  if (lua_getfield(L, S_ANCHORS, name) == LUA_TNIL) {
    int open = lua_getfield(L, S_OPEN, name) != LUA_TNIL;
    if (open)
      return fail_at(ld, m, "alias *%s refers to a collection that contains it (recursive data is not supported)",
                     name);
    return fail_at(ld, m, "unknown alias *%s (no anchor &%s before it in this document)", name, name);
  }
  lua_getfield(L, S_SIZES, name);
  *size = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return count(ld, *size, m);
}

/* Pushes the node that starts at the current event. */
static int load_node(struct loader *ld, lua_State *L, lua_Integer *size) {
  switch (ld->ev.type) {
  case YAML_SCALAR_EVENT:
    *size = 1;
    if (count(ld, 1, ld->ev.start_mark) || push_scalar(ld, L))
      return -1;
    if (ld->ev.data.scalar.anchor) {
      lua_pushstring(L, (const char *)ld->ev.data.scalar.anchor);
      lua_pushvalue(L, -2);
      set_anchor(L, lua_gettop(L) - 1, 1);
      lua_pop(L, 2);
    }
    return 0;
  case YAML_ALIAS_EVENT:
    return load_alias(ld, L, size);
  case YAML_SEQUENCE_START_EVENT:
  case YAML_MAPPING_START_EVENT:
    return load_collection(ld, L, size);
  default:
    return fail_at(ld, ld->ev.start_mark, "unexpected event %d", (int)ld->ev.type);
  }
}

static int load_stream(struct loader *ld, lua_State *L) {
  lua_Integer ndocs = 0, size;
  if (next(ld)) /* STREAM_START */
    return -1;
  for (;;) {
    if (next(ld))
      return -1;
    if (ld->ev.type == YAML_STREAM_END_EVENT)
      return 0;
    /* DOCUMENT_START: anchors do not carry over between documents */
    lua_settop(L, S_DOCS);
    lua_newtable(L);
    lua_newtable(L);
    lua_newtable(L);
    if (next(ld) || load_node(ld, L, &size))
      return -1;
    lua_rawseti(L, S_DOCS, ++ndocs);
    if (next(ld)) /* DOCUMENT_END */
      return -1;
  }
}

static int f_load(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  lua_settop(L, 1);
  struct loader *ld = lua_newuserdatauv(L, sizeof *ld, 0);
  memset(ld, 0, sizeof *ld);
  luaL_setmetatable(L, LOADER_MT);
  lua_newtable(L);
  rb_mark_array(L, S_DOCS);
  if (!yaml_parser_initialize(&ld->parser))
    return luaL_error(L, "yaml.load: out of memory");
  ld->parser_open = 1;
  ld->text = text;
  ld->len = len;
  yaml_parser_set_input_string(&ld->parser, (const unsigned char *)text, len);
  int rc = load_stream(ld, L);
  loader_close(ld);
  if (rc) {
    lua_pushnil(L);
    lua_pushstring(L, ld->err);
    return 2;
  }
  lua_settop(L, S_DOCS);
  return 1;
}

static const luaL_Reg funcs[] = {
  {"load", f_load},
  {"dump", rb_yaml_dump},
  {NULL, NULL},
};

int luaopen_runbook__yaml(lua_State *L) {
  luaL_newmetatable(L, LOADER_MT);
  lua_pushcfunction(L, loader_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
