/*
 * runbook._yaml: YAML into Lua values over libyaml's event parser, and Lua
 * values into block-style YAML. Conversions follow jsonconv.h (json.null,
 * marked empty arrays, 64-bit integers), so YAML and JSON documents look
 * the same to a runbook. Plain scalars resolve by the YAML 1.2 core schema;
 * quoted and block scalars are strings.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <yaml.h>

#include "crypto.h"
#include "jsonconv.h"
#include "secret.h"

#define PARSER_MT "runbook.yaml.Parser"
#define MAX_NODES 10000000L /* aliases included: a guard against alias bombs */
#define MAX_DEPTH 500

/* The parser lives in a userdata so a Lua error (out of memory) mid-way
 * still frees it. */
struct parser {
  yaml_parser_t p;
  int open;
};

static int parser_gc(lua_State *L) {
  struct parser *ps = luaL_checkudata(L, 1, PARSER_MT);
  if (ps->open) {
    yaml_parser_delete(&ps->p);
    ps->open = 0;
  }
  return 0;
}

struct load {
  lua_State *L;
  struct parser *ps;
  int anchors; /* stack index: anchor name -> value */
  int sizes;   /* stack index: table -> node count (for alias accounting) */
  long nodes;
  int depth;
  char err[300];
};

static int fail(struct load *c, const yaml_mark_t *m, const char *fmt, const char *arg) {
  if (!c->err[0]) {
    char msg[200];
    snprintf(msg, sizeof msg, fmt, arg ? arg : "");
    if (m)
      snprintf(c->err, sizeof c->err, "line %zu column %zu: %s", m->line + 1, m->column + 1, msg);
    else
      snprintf(c->err, sizeof c->err, "%s", msg);
  }
  return -1;
}

static int next_event(struct load *c, yaml_event_t *ev) {
  if (!yaml_parser_parse(&c->ps->p, ev)) {
    yaml_parser_t *p = &c->ps->p;
    if (!c->err[0]) {
      if (p->context)
        snprintf(c->err, sizeof c->err, "line %zu column %zu: %s (%s at line %zu)",
                 p->problem_mark.line + 1, p->problem_mark.column + 1,
                 p->problem ? p->problem : "syntax error", p->context, p->context_mark.line + 1);
      else
        snprintf(c->err, sizeof c->err, "line %zu column %zu: %s", p->problem_mark.line + 1,
                 p->problem_mark.column + 1, p->problem ? p->problem : "syntax error");
    }
    return -1;
  }
  return 0;
}

/* ---- scalars ----------------------------------------------------------------- */

static int all_of(const char *s, size_t n, const char *set) {
  if (n == 0)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!strchr(set, s[i]))
      return 0;
  return 1;
}

static int is_float_text(const char *s, size_t n) {
  size_t i = 0, digits = 0;
  if (i < n && (s[i] == '-' || s[i] == '+'))
    i++;
  while (i < n && s[i] >= '0' && s[i] <= '9') {
    i++;
    digits++;
  }
  if (i < n && s[i] == '.') {
    i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
      i++;
      digits++;
    }
  }
  if (!digits)
    return 0;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '-' || s[i] == '+'))
      i++;
    size_t e = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
      i++;
      e++;
    }
    if (!e)
      return 0;
  }
  return i == n;
}

/* Pushes the core-schema value of a plain scalar. Returns 1 when it is not
 * a string (so dump knows to quote such strings). */
static int resolve_plain(lua_State *L, const char *s, size_t n, int push) {
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(s, lit, n) == 0)
  if (n == 0 || IS("~") || IS("null") || IS("Null") || IS("NULL")) {
    if (push)
      rb_push_null(L);
    return 1;
  }
  if (IS("true") || IS("True") || IS("TRUE")) {
    if (push)
      lua_pushboolean(L, 1);
    return 1;
  }
  if (IS("false") || IS("False") || IS("FALSE")) {
    if (push)
      lua_pushboolean(L, 0);
    return 1;
  }
  if (IS(".inf") || IS(".Inf") || IS(".INF") || IS("+.inf") || IS("+.Inf") || IS("+.INF")) {
    if (push)
      lua_pushnumber(L, HUGE_VAL);
    return 1;
  }
  if (IS("-.inf") || IS("-.Inf") || IS("-.INF")) {
    if (push)
      lua_pushnumber(L, -HUGE_VAL);
    return 1;
  }
  if (IS(".nan") || IS(".NaN") || IS(".NAN")) {
    if (push)
      lua_pushnumber(L, NAN);
    return 1;
  }
#undef IS
  char buf[80];
  if (n < sizeof buf) {
    memcpy(buf, s, n);
    buf[n] = '\0';
    size_t off = (buf[0] == '-' || buf[0] == '+') ? 1 : 0;
    int base = 0;
    const char *digits = NULL;
    if (all_of(buf + off, n - off, "0123456789")) {
      base = 10;
      digits = buf;
    } else if (off == 0 && n > 2 && buf[0] == '0' && buf[1] == 'x' && all_of(buf + 2, n - 2, "0123456789abcdefABCDEF")) {
      base = 16;
      digits = buf + 2;
    } else if (off == 0 && n > 2 && buf[0] == '0' && buf[1] == 'o' && all_of(buf + 2, n - 2, "01234567")) {
      base = 8;
      digits = buf + 2;
    }
    if (base) {
      if (push) {
        errno = 0;
        char *end;
        long long v = strtoll(digits, &end, base);
        /* beyond 64 bits: a float, like the value's magnitude says */
        if (errno == ERANGE)
          lua_pushnumber(L, strtod(buf, NULL));
        else
          lua_pushinteger(L, (lua_Integer)v);
      }
      return 1;
    }
    if (is_float_text(buf, n)) {
      if (push)
        lua_pushnumber(L, strtod(buf, NULL));
      return 1;
    }
  }
  if (push)
    lua_pushlstring(L, s, n);
  return 0;
}

static int push_scalar(struct load *c, yaml_event_t *ev) {
  lua_State *L = c->L;
  const char *s = (const char *)ev->data.scalar.value;
  size_t n = ev->data.scalar.length;
  const char *tag = (const char *)ev->data.scalar.tag;
  if (tag && strncmp(tag, "tag:yaml.org,2002:", 18) == 0) {
    const char *t = tag + 18;
    if (strcmp(t, "str") == 0) {
      lua_pushlstring(L, s, n);
    } else if (strcmp(t, "binary") == 0) {
      char *clean = malloc(n + 1);
      uint8_t *out = malloc(n + 1);
      size_t k = 0;
      if (!clean || !out) {
        free(clean);
        free(out);
        return fail(c, &ev->start_mark, "out of memory", NULL);
      }
      for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\n' && s[i] != '\r' && s[i] != '\t')
          clean[k++] = s[i];
      long m = rb_unbase64(clean, k, out);
      free(clean);
      if (m < 0) {
        free(out);
        return fail(c, &ev->start_mark, "!!binary value is not valid base64", NULL);
      }
      lua_pushlstring(L, (const char *)out, (size_t)m);
      free(out);
    } else if (strcmp(t, "int") == 0 || strcmp(t, "float") == 0 || strcmp(t, "bool") == 0 ||
               strcmp(t, "null") == 0) {
      int resolved = resolve_plain(L, s, n, 1);
      int ok = resolved && ((t[0] == 'i' && lua_isinteger(L, -1)) ||
                            (t[0] == 'f' && lua_type(L, -1) == LUA_TNUMBER) ||
                            (t[0] == 'b' && lua_isboolean(L, -1)) || (t[0] == 'n' && rb_is_null(L, -1)));
      if (!ok) {
        lua_pop(L, 1);
        char what[64];
        snprintf(what, sizeof what, "!!%s", t);
        return fail(c, &ev->start_mark, "value is not a valid %s", what);
      }
      if (t[0] == 'f' && lua_isinteger(L, -1)) {
        lua_Number f = (lua_Number)lua_tointeger(L, -1);
        lua_pop(L, 1);
        lua_pushnumber(L, f);
      }
    } else {
      lua_pushlstring(L, s, n);
    }
  } else if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !(tag && strcmp(tag, "!") == 0)) {
    resolve_plain(L, s, n, 1);
  } else {
    lua_pushlstring(L, s, n);
  }
  c->nodes++;
  return 0;
}

/* ---- nodes ------------------------------------------------------------------- */

static int parse_node(struct load *c, yaml_event_t *ev);

static long size_of(struct load *c, int idx) {
  if (lua_type(c->L, idx) != LUA_TTABLE)
    return 1;
  lua_pushvalue(c->L, idx);
  lua_rawget(c->L, c->sizes);
  long n = (long)lua_tointeger(c->L, -1);
  lua_pop(c->L, 1);
  return n > 0 ? n : 1;
}

static void remember_anchor(struct load *c, const yaml_char_t *anchor) {
  if (!anchor)
    return;
  lua_pushstring(c->L, (const char *)anchor);
  lua_pushvalue(c->L, -2);
  lua_rawset(c->L, c->anchors);
}

static int parse_sequence(struct load *c, yaml_event_t *start) {
  lua_State *L = c->L;
  long before = c->nodes;
  lua_newtable(L);
  remember_anchor(c, start->data.sequence_start.anchor);
  lua_Integer i = 0;
  for (;;) {
    yaml_event_t ev;
    if (next_event(c, &ev) != 0)
      return -1;
    if (ev.type == YAML_SEQUENCE_END_EVENT) {
      yaml_event_delete(&ev);
      break;
    }
    int rc = parse_node(c, &ev);
    yaml_event_delete(&ev);
    if (rc != 0)
      return -1;
    lua_rawseti(L, -2, ++i);
  }
  if (i == 0)
    rb_mark_array(L, -1);
  c->nodes++;
  lua_pushvalue(L, -1);
  lua_pushinteger(L, c->nodes - before);
  lua_rawset(L, c->sizes);
  return 0;
}

/* merges the mapping at src into dst, keeping keys dst already has */
static void merge_into(lua_State *L, int dst, int src) {
  lua_pushnil(L);
  while (lua_next(L, src)) {
    lua_pushvalue(L, -2);
    if (lua_rawget(L, dst) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -2);
      lua_rawset(L, dst);
    } else {
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

static int parse_mapping(struct load *c, yaml_event_t *start) {
  lua_State *L = c->L;
  long before = c->nodes;
  lua_newtable(L);
  int t = lua_gettop(L);
  remember_anchor(c, start->data.mapping_start.anchor);
  lua_newtable(L); /* merge sources, applied at the end: explicit keys win */
  int merges = lua_gettop(L);
  lua_Integer nmerge = 0;
  for (;;) {
    yaml_event_t kev;
    if (next_event(c, &kev) != 0)
      return -1;
    if (kev.type == YAML_MAPPING_END_EVENT) {
      yaml_event_delete(&kev);
      break;
    }
    int is_merge = 0;
    yaml_mark_t kmark = kev.start_mark;
    if (kev.type == YAML_SCALAR_EVENT) {
      const char *ks = (const char *)kev.data.scalar.value;
      size_t kn = kev.data.scalar.length;
      is_merge = kev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && kn == 2 && memcmp(ks, "<<", 2) == 0;
      /* keys are strings: a plain 1 or true keeps its text */
      lua_pushlstring(L, ks, kn);
      remember_anchor(c, kev.data.scalar.anchor);
      c->nodes++;
    } else if (kev.type == YAML_ALIAS_EVENT) {
      lua_pushstring(L, (const char *)kev.data.alias.anchor);
      lua_rawget(L, c->anchors);
      if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        int r = fail(c, &kmark, "mapping key alias *%s is not a string", (const char *)kev.data.alias.anchor);
        yaml_event_delete(&kev);
        return r;
      }
    } else {
      yaml_event_delete(&kev);
      return fail(c, &kmark, "complex mapping keys are not supported", NULL);
    }
    yaml_event_delete(&kev);

    yaml_event_t vev;
    if (next_event(c, &vev) != 0)
      return -1;
    int rc = parse_node(c, &vev);
    yaml_event_delete(&vev);
    if (rc != 0)
      return -1;
    if (is_merge) {
      /* <<: *base, or <<: [*a, *b] (earlier sources win) */
      if (lua_type(L, -1) != LUA_TTABLE) {
        lua_pop(L, 2);
        return fail(c, &kmark, "the value of a merge key (<<) must be a mapping or a list of mappings", NULL);
      }
      lua_Integer len = (lua_Integer)lua_rawlen(L, -1);
      if (len > 0) {
        for (lua_Integer k = 1; k <= len; k++) {
          lua_rawgeti(L, -1, k);
          if (lua_type(L, -1) != LUA_TTABLE) {
            lua_pop(L, 3);
            return fail(c, &kmark, "the value of a merge key (<<) must be a mapping or a list of mappings", NULL);
          }
          lua_rawseti(L, merges, ++nmerge);
        }
        lua_pop(L, 2);
      } else {
        lua_rawseti(L, merges, ++nmerge);
        lua_pop(L, 1);
      }
      continue;
    }
    lua_pushvalue(L, -2);
    if (lua_rawget(L, t) != LUA_TNIL) {
      lua_pop(L, 1);
      const char *k = lua_tostring(L, -2);
      char key[120];
      snprintf(key, sizeof key, "%.100s", k ? k : "?");
      lua_pop(L, 2);
      return fail(c, &kmark, "duplicate mapping key '%s'", key);
    }
    lua_pop(L, 1);
    lua_rawset(L, t);
  }
  for (lua_Integer k = 1; k <= nmerge; k++) {
    lua_rawgeti(L, merges, k);
    merge_into(L, t, lua_gettop(L));
    lua_pop(L, 1);
  }
  lua_pop(L, 1); /* merges */
  c->nodes++;
  lua_pushvalue(L, -1);
  lua_pushinteger(L, c->nodes - before);
  lua_rawset(L, c->sizes);
  return 0;
}

static int parse_node(struct load *c, yaml_event_t *ev) {
  lua_State *L = c->L;
  if (c->nodes > MAX_NODES)
    return fail(c, &ev->start_mark, "the document expands to more than 10000000 nodes (an alias bomb?)", NULL);
  if (++c->depth > MAX_DEPTH)
    return fail(c, &ev->start_mark, "nested too deeply", NULL);
  if (!lua_checkstack(L, 8))
    return fail(c, &ev->start_mark, "nested too deeply", NULL);
  int rc;
  switch (ev->type) {
  case YAML_SCALAR_EVENT:
    rc = push_scalar(c, ev);
    if (rc == 0)
      remember_anchor(c, ev->data.scalar.anchor);
    break;
  case YAML_ALIAS_EVENT:
    lua_pushstring(L, (const char *)ev->data.alias.anchor);
    if (lua_rawget(L, c->anchors) == LUA_TNIL) {
      lua_pop(L, 1);
      rc = fail(c, &ev->start_mark, "unknown alias *%s", (const char *)ev->data.alias.anchor);
    } else {
      /* an alias shares the anchored value; count what it would expand to */
      c->nodes += size_of(c, -1);
      rc = c->nodes > MAX_NODES
               ? fail(c, &ev->start_mark, "the document expands to more than 10000000 nodes (an alias bomb?)", NULL)
               : 0;
    }
    break;
  case YAML_SEQUENCE_START_EVENT:
    rc = parse_sequence(c, ev);
    break;
  case YAML_MAPPING_START_EVENT:
    rc = parse_mapping(c, ev);
    break;
  default:
    rc = fail(c, &ev->start_mark, "unexpected YAML event", NULL);
  }
  c->depth--;
  return rc;
}

/* load(text) -> {doc, ...} | nil, "line L column C: problem" */
static int f_load(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  struct parser *ps = lua_newuserdatauv(L, sizeof *ps, 0);
  ps->open = 0;
  luaL_setmetatable(L, PARSER_MT);
  if (!yaml_parser_initialize(&ps->p))
    return luaL_error(L, "cannot initialise the YAML parser");
  ps->open = 1;
  yaml_parser_set_input_string(&ps->p, (const unsigned char *)text, len);
  struct load c;
  memset(&c, 0, sizeof c);
  c.L = L;
  c.ps = ps;
  lua_newtable(L); /* documents */
  int docs = lua_gettop(L);
  lua_Integer ndocs = 0;
  int rc = 0;
  for (;;) {
    yaml_event_t ev;
    if (next_event(&c, &ev) != 0) {
      rc = -1;
      break;
    }
    yaml_event_type_t type = ev.type;
    if (type == YAML_STREAM_END_EVENT) {
      yaml_event_delete(&ev);
      break;
    }
    if (type == YAML_DOCUMENT_START_EVENT) {
      yaml_event_delete(&ev);
      lua_newtable(L);
      c.anchors = lua_gettop(L);
      lua_newtable(L);
      lua_newtable(L);
      lua_pushliteral(L, "k");
      lua_setfield(L, -2, "__mode");
      lua_setmetatable(L, -2);
      c.sizes = lua_gettop(L);
      yaml_event_t root;
      if (next_event(&c, &root) != 0) {
        rc = -1;
        break;
      }
      if (root.type == YAML_DOCUMENT_END_EVENT) {
        rb_push_null(L); /* an empty document */
      } else {
        int prc = parse_node(&c, &root);
        yaml_event_delete(&root);
        if (prc != 0) {
          rc = -1;
          break;
        }
        yaml_event_t end;
        if (next_event(&c, &end) != 0) {
          rc = -1;
          break;
        }
        yaml_event_delete(&end);
      }
      if (root.type == YAML_DOCUMENT_END_EVENT)
        yaml_event_delete(&root);
      lua_rawseti(L, docs, ++ndocs);
      lua_pop(L, 2); /* anchors, sizes */
      continue;
    }
    yaml_event_delete(&ev); /* stream start */
  }
  yaml_parser_delete(&ps->p);
  ps->open = 0;
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, c.err[0] ? c.err : "invalid YAML");
    return 2;
  }
  lua_pushvalue(L, docs);
  return 1;
}

/* ---- dump -------------------------------------------------------------------- */

/* The output buffer lives in a userdata (freed by __gc even if a Lua error
 * interrupts the dump); luaL_Buffer would forbid the stack use below. */
#define SBUF_MT "runbook.yaml.Buffer"

struct sbuf {
  char *p;
  size_t n, cap;
  int oom;
};

static int sbuf_gc(lua_State *L) {
  struct sbuf *b = luaL_checkudata(L, 1, SBUF_MT);
  free(b->p);
  b->p = NULL;
  return 0;
}

static void sb_addlstring(struct sbuf *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = (b->n + n + 1) * 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

static void sb_addstring(struct sbuf *b, const char *s) { sb_addlstring(b, s, strlen(s)); }
static void sb_addchar(struct sbuf *b, char c) { sb_addlstring(b, &c, 1); }

/* YAML 1.1 readers (go-yaml v2, behind kubectl) take these as booleans */
static int yaml11_bool(const char *s, size_t n) {
  static const char *const words[] = {"y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
                                      "on", "On", "ON", "off", "Off", "OFF", NULL};
  for (int i = 0; words[i]; i++)
    if (strlen(words[i]) == n && memcmp(words[i], s, n) == 0)
      return 1;
  return 0;
}

static int needs_quotes(lua_State *L, const char *s, size_t n) {
  if (n == 0)
    return 1;
  if (resolve_plain(L, s, n, 0) || yaml11_bool(s, n))
    return 1; /* would read back as null, a boolean or a number */
  if (strchr("-?:,[]{}#&*!|>'\"%@` \t", s[0]) || s[n - 1] == ' ' || s[n - 1] == ':')
    return 1;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x20 || ch == 0x7f)
      return 1;
    if ((ch == ':' && i + 1 < n && s[i + 1] == ' ') || (ch == '#' && i > 0 && s[i - 1] == ' '))
      return 1;
  }
  return 0;
}

static void dump_quoted(struct sbuf *b, const char *s, size_t n) {
  sb_addchar(b, '"');
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    switch (ch) {
    case '"': sb_addstring(b, "\\\""); break;
    case '\\': sb_addstring(b, "\\\\"); break;
    case '\n': sb_addstring(b, "\\n"); break;
    case '\t': sb_addstring(b, "\\t"); break;
    case '\r': sb_addstring(b, "\\r"); break;
    default:
      if (ch < 0x20 || ch == 0x7f) {
        char esc[8];
        snprintf(esc, sizeof esc, "\\x%02x", ch);
        sb_addstring(b, esc);
      } else {
        sb_addchar(b, (char)ch);
      }
    }
  }
  sb_addchar(b, '"');
}

static void add_indent(struct sbuf *b, int n) {
  for (int i = 0; i < n; i++)
    sb_addchar(b, ' ');
}

/* a multi-line string as a literal block, when that reads back exactly */
static int dump_block(struct sbuf *b, const char *s, size_t n, int indent) {
  if (n == 0 || !memchr(s, '\n', n) || s[0] == ' ' || s[0] == '\n')
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if ((ch < 0x20 && ch != '\n') || ch == 0x7f)
      return 0;
    if (ch == ' ' && (i + 1 == n || s[i + 1] == '\n'))
      return 0; /* trailing spaces on a line would be lost in some editors; quote */
  }
  size_t trailing = 0;
  while (trailing < n && s[n - 1 - trailing] == '\n')
    trailing++;
  sb_addstring(b, trailing == 0 ? "|-" : trailing == 1 ? "|" : "|+");
  size_t body = n - (trailing ? trailing : 0);
  size_t start = 0;
  for (size_t i = 0; i <= body; i++) {
    if (i == body || s[i] == '\n') {
      sb_addchar(b, '\n');
      if (i > start) {
        add_indent(b, indent);
        sb_addlstring(b, s + start, i - start);
      }
      start = i + 1;
    }
  }
  for (size_t k = 1; k < trailing; k++)
    sb_addchar(b, '\n');
  return 1;
}

struct dump {
  lua_State *L;
  struct sbuf *b;
  int step;
  char err[200];
};

static int dump_value(struct dump *d, int idx, int indent, int depth, int inline_first);

static int dump_scalar(struct dump *d, int idx, int indent) {
  lua_State *L = d->L;
  struct sbuf *b = d->b;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    sb_addstring(b, "null");
    return 0;
  case LUA_TBOOLEAN:
    sb_addstring(b, lua_toboolean(L, idx) ? "true" : "false");
    return 0;
  case LUA_TNUMBER: {
    char num[64];
    if (lua_isinteger(L, idx)) {
      snprintf(num, sizeof num, LUA_INTEGER_FMT, lua_tointeger(L, idx));
    } else {
      double v = lua_tonumber(L, idx);
      if (isnan(v))
        strcpy(num, ".nan");
      else if (isinf(v))
        strcpy(num, v > 0 ? ".inf" : "-.inf");
      else {
        snprintf(num, sizeof num, "%.17g", v);
        if (!strpbrk(num, ".eE"))
          strcat(num, ".0");
      }
    }
    sb_addstring(b, num);
    return 0;
  }
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (dump_block(b, s, n, indent))
      return 0;
    if (needs_quotes(L, s, n))
      dump_quoted(b, s, n);
    else
      sb_addlstring(b, s, n);
    return 0;
  }
  case LUA_TUSERDATA:
    if (rb_is_null(L, idx)) {
      sb_addstring(b, "null");
      return 0;
    }
    if (rb_secret_test(L, idx, NULL)) {
      snprintf(d->err, sizeof d->err, "cannot encode a secret value (reveal it explicitly)");
      return -1;
    }
    /* fallthrough */
  default:
    snprintf(d->err, sizeof d->err, "cannot encode a %s value", luaL_typename(L, idx));
    return -1;
  }
}

static int cmp_keys(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* inline_first: the first entry goes on the current line ("- key: v") */
static int dump_table(struct dump *d, int idx, int indent, int depth, int inline_first) {
  lua_State *L = d->L;
  struct sbuf *b = d->b;
  lua_Integer n = 0, max = 0, count = 0;
  int strkeys = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
    if (lua_isinteger(L, -1)) {
      lua_Integer k = lua_tointeger(L, -1);
      if (k > max)
        max = k;
      if (k >= 1)
        n++;
    } else if (lua_type(L, -1) == LUA_TSTRING) {
      strkeys = 1;
    } else {
      lua_pop(L, 1);
      snprintf(d->err, sizeof d->err, "table keys must be strings or a sequence 1..n");
      return -1;
    }
  }
  int as_array = rb_is_marked_array(L, idx) || (n > 0 && !strkeys);
  if (as_array) {
    if (strkeys || n != max || n != count) {
      snprintf(d->err, sizeof d->err, "table mixes sequence and string keys (sparse array?)");
      return -1;
    }
    if (n == 0) {
      sb_addstring(b, "[]");
      return 0;
    }
    for (lua_Integer i = 1; i <= n; i++) {
      if (!(inline_first && i == 1)) {
        sb_addchar(b, '\n');
        add_indent(b, indent);
      }
      sb_addstring(b, "- ");
      lua_rawgeti(L, idx, i);
      int rc = dump_value(d, lua_gettop(L), indent + 2, depth + 1, 1);
      lua_pop(L, 1);
      if (rc)
        return -1;
    }
    return 0;
  }
  if (count == 0) {
    sb_addstring(b, "{}");
    return 0;
  }
  if (n > 0) {
    snprintf(d->err, sizeof d->err, "table mixes sequence and string keys");
    return -1;
  }
  const char **keys = malloc(sizeof *keys * (size_t)count);
  if (!keys) {
    snprintf(d->err, sizeof d->err, "out of memory");
    return -1;
  }
  lua_Integer k = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    keys[k++] = lua_tostring(L, -1);
  }
  qsort(keys, (size_t)count, sizeof *keys, cmp_keys);
  int rc = 0;
  for (lua_Integer i = 0; i < count && rc == 0; i++) {
    if (!(inline_first && i == 0)) {
      sb_addchar(b, '\n');
      add_indent(b, indent);
    }
    size_t kl = strlen(keys[i]);
    if (needs_quotes(L, keys[i], kl))
      dump_quoted(b, keys[i], kl);
    else
      sb_addlstring(b, keys[i], kl);
    sb_addchar(b, ':');
    lua_getfield(L, idx, keys[i]);
    int v = lua_gettop(L);
    int nested = lua_type(L, v) == LUA_TTABLE;
    if (!nested)
      sb_addchar(b, ' ');
    rc = dump_value(d, v, indent + d->step, depth + 1, 0);
    lua_pop(L, 1);
  }
  free(keys);
  return rc;
}

static int dump_value(struct dump *d, int idx, int indent, int depth, int inline_first) {
  if (depth > 200) {
    snprintf(d->err, sizeof d->err, "value nested too deeply (a cycle?)");
    return -1;
  }
  if (lua_type(d->L, idx) == LUA_TTABLE) {
    if (!lua_checkstack(d->L, 6)) {
      snprintf(d->err, sizeof d->err, "value nested too deeply");
      return -1;
    }
    /* an empty table stays on the key's line: "key: []" */
    lua_pushnil(d->L);
    int empty = !lua_next(d->L, idx);
    if (!empty)
      lua_pop(d->L, 2);
    if (empty && !inline_first)
      sb_addchar(d->b, ' ');
    return dump_table(d, idx, indent, depth, inline_first && !empty);
  }
  return dump_scalar(d, idx, indent);
}

/* dump(value [, {indent=2}]) -> text */
static int f_dump(lua_State *L) {
  luaL_checkany(L, 1);
  int step = 2;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "indent");
    step = (int)luaL_optinteger(L, -1, 2);
    lua_pop(L, 1);
    luaL_argcheck(L, step >= 1 && step <= 8, 2, "indent must be from 1 to 8");
  }
  lua_settop(L, 1);
  struct sbuf *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, SBUF_MT);
  struct dump d = {L, b, step, ""};
  int rc = dump_value(&d, 1, 0, 0, 0);
  if (rc != 0)
    return luaL_error(L, "yaml.dump: %s", d.err);
  sb_addchar(b, '\n');
  if (b->oom)
    return luaL_error(L, "yaml.dump: out of memory");
  /* a top-level mapping or sequence starts with the newline its entries add */
  const char *s = b->p;
  size_t len = b->n;
  if (len > 1 && (s[0] == '\n' || (s[0] == ' ' && (s[1] == '[' || s[1] == '{')))) {
    s++;
    len--;
  }
  lua_pushlstring(L, s, len);
  return 1;
}

static const luaL_Reg funcs[] = {{"load", f_load}, {"dump", f_dump}, {NULL, NULL}};

int luaopen_runbook__yaml(lua_State *L) {
  luaL_newmetatable(L, SBUF_MT);
  lua_pushcfunction(L, sbuf_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, PARSER_MT);
  lua_pushcfunction(L, parser_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  rb_push_null(L);
  lua_setfield(L, -2, "null");
  return 1;
}
