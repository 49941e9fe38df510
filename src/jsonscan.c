/*
 * A direct JSON reader for the journal. Resuming a run reads every event
 * of its journal; building a jansson tree per line and then converting it
 * cost more than everything else in a resume, so journal lines are parsed
 * straight onto the Lua stack (or only validated when L is NULL). The
 * values follow jsonconv.h's conventions: json.null, marked empty arrays,
 * integers as Lua integers.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "crypto.h"
#include "jsonconv.h"
#include "jsonscan.h"


struct reader {
  const char *p, *end;
  lua_State *L; /* NULL: validate only */
  luaL_Buffer *b;
  int depth;
  struct rb_json_members *m; /* when set, the top-level members are noted here */
  int escaped;               /* the last string read had an escape */
};

static void skip_ws(struct reader *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
    r->p++;
}

static int read_hex4(struct reader *r, unsigned *out) {
  if (r->end - r->p < 4)
    return -1;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int h = rb_hexval((unsigned char)r->p[i]);
    if (h < 0)
      return -1;
    v = v << 4 | (unsigned)h;
  }
  r->p += 4;
  *out = v;
  return 0;
}

static int utf8_encode(unsigned cp, char *out) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | cp >> 12);
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | cp >> 18);
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* 1 when none of the 8 bytes in v is '"', '\\' or below 0x20: each test
 * sets a byte's high bit when that byte matches (and only then for the
 * first match, which is all that is asked: whether any does) */
static int plain8(uint64_t v) {
  const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
  uint64_t q = v ^ (ones * '"'), b = v ^ (ones * '\\');
  uint64_t hit = ((q - ones) & ~q) | ((b - ones) & ~b) | ((v - ones * 0x20) & ~v);
  return (hit & highs) == 0;
}

#ifdef __SSE2__
/* the same for 16 bytes, with SSE2 (every x86-64 has it): a bit for each
 * byte that is a quote, a backslash or a control character */
static unsigned specials16(const char *p) {
  __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
  __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                             _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f)));
  return (unsigned)_mm_movemask_epi8(hit);
}
#endif

/* a string; pushes it when reading into Lua */
static int read_string(struct reader *r) {
  r->p++; /* opening quote */
  const char *start = r->p;
  /* fast path: no escapes, sixteen (or eight) bytes at a time while none
   * of them is a quote, a backslash or a control character */
  r->escaped = 0;
#ifdef __SSE2__
  while (r->end - r->p >= 16) {
    unsigned hits = specials16(r->p);
    if (hits) {
      r->p += __builtin_ctz(hits); /* straight to the first of them */
      goto special;
    }
    r->p += 16;
  }
#endif
  while (r->end - r->p >= 8) {
    uint64_t v;
    memcpy(&v, r->p, 8);
    if (!plain8(v))
      break;
    r->p += 8;
  }
  while (r->p < r->end && *r->p != '"' && *r->p != '\\') {
    if ((unsigned char)*r->p < 0x20)
      return -1;
    r->p++;
  }
  if (r->p >= r->end)
    return -1;
#ifdef __SSE2__
special:
#endif
  if (*r->p == '"') {
    if (r->L)
      lua_pushlstring(r->L, start, (size_t)(r->p - start));
    r->p++;
    return 0;
  }
  luaL_Buffer b;
  r->escaped = 1; /* (or a control byte, which fails below) */
  if (r->L) {
    luaL_buffinit(r->L, &b);
    luaL_addlstring(&b, start, (size_t)(r->p - start));
  }
  while (r->p < r->end && *r->p != '"') {
    char c = *r->p++;
    if ((unsigned char)c < 0x20)
      return -1;
    if (c != '\\') {
      if (r->L)
        luaL_addchar(&b, c);
      continue;
    }
    if (r->p >= r->end)
      return -1;
    char e = *r->p++;
    char out[4];
    int n = 1;
    switch (e) {
    case '"': out[0] = '"'; break;
    case '\\': out[0] = '\\'; break;
    case '/': out[0] = '/'; break;
    case 'b': out[0] = '\b'; break;
    case 'f': out[0] = '\f'; break;
    case 'n': out[0] = '\n'; break;
    case 'r': out[0] = '\r'; break;
    case 't': out[0] = '\t'; break;
    case 'u': {
      unsigned cp;
      if (read_hex4(r, &cp) != 0)
        return -1;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned lo;
        if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u')
          return -1;
        r->p += 2;
        if (read_hex4(r, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
          return -1;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return -1;
      }
      n = utf8_encode(cp, out);
      break;
    }
    default:
      return -1;
    }
    if (r->L)
      luaL_addlstring(&b, out, (size_t)n);
  }
  if (r->p >= r->end)
    return -1;
  r->p++;
  if (r->L)
    luaL_pushresult(&b);
  return 0;
}

static int read_number(struct reader *r) {
  const char *start = r->p;
  int is_float = 0;
  if (r->p < r->end && *r->p == '-')
    r->p++;
  if (r->p >= r->end || *r->p < '0' || *r->p > '9')
    return -1;
  if (*r->p == '0')
    r->p++;
  else
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
      r->p++;
  if (r->p < r->end && *r->p == '.') {
    is_float = 1;
    r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9')
      return -1;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
      r->p++;
  }
  if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
    is_float = 1;
    r->p++;
    if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
      r->p++;
    if (r->p >= r->end || *r->p < '0' || *r->p > '9')
      return -1;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
      r->p++;
  }
  if (!r->L)
    return 0;
  /* JSON puts no bound on a number's digits ("0.000...1"), so a long one
   * gets a buffer of its own: reading must accept what validating accepts */
  char small[64], *buf = small;
  size_t n = (size_t)(r->p - start);
  if (n >= sizeof small && !(buf = malloc(n + 1)))
    return -1;
  memcpy(buf, start, n);
  buf[n] = '\0';
  errno = 0;
  long long v = is_float ? 0 : strtoll(buf, NULL, 10);
  if (!is_float && errno == 0)
    lua_pushinteger(r->L, (lua_Integer)v);
  else
    lua_pushnumber(r->L, strtod(buf, NULL));
  if (buf != small)
    free(buf);
  return 0;
}

static int literal(struct reader *r, const char *word, size_t n) {
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
    return -1;
  r->p += n;
  return 0;
}

static int read_value(struct reader *r);

static unsigned signature(const char *name, size_t len) {
  return (unsigned)((len & 7) << 3 | ((unsigned char)name[0] & 7));
}

static void note_member(struct rb_json_members *m, const char *key, size_t keylen, int key_escaped,
                        const char *value, size_t vlen, int plain) {
  if (key_escaped) {
    m->escaped_keys = 1; /* its name is only known decoded: it could be any of them */
    return;
  }
  /* most names are not asked for: a 64-bit signature of length and first
   * byte turns them away before any comparison */
  if (keylen == 0 || !(m->sigs >> signature(key, keylen) & 1))
    return;
  for (int i = 0; i < m->n; i++) {
    struct rb_json_member *f = &m->f[i];
    if (f->namelen != keylen || memcmp(f->name, key, keylen) != 0)
      continue;
    f->count++;
    f->string = vlen >= 2 && value[0] == '"';
    f->plain = f->string && plain;
    f->value = f->plain ? value + 1 : value;
    f->len = f->plain ? vlen - 2 : vlen;
    return;
  }
}

static int read_object(struct reader *r) {
  r->p++;
  if (r->L) {
    luaL_checkstack(r->L, 4, "JSON nested too deeply");
    lua_newtable(r->L);
  }
  skip_ws(r);
  if (r->p < r->end && *r->p == '}') {
    r->p++;
    return 0;
  }
  for (;;) {
    skip_ws(r);
    const char *key = r->p + 1;
    if (r->p >= r->end || *r->p != '"' || read_string(r) != 0)
      return -1;
    size_t keylen = (size_t)(r->p - 1 - key);
    int key_escaped = r->escaped;
    skip_ws(r);
    if (r->p >= r->end || *r->p != ':')
      return -1;
    r->p++;
    skip_ws(r);
    const char *value = r->p;
    if (read_value(r) != 0)
      return -1;
    if (r->m && r->depth == 1)
      note_member(r->m, key, keylen, key_escaped, value, (size_t)(r->p - value),
                  *value == '"' && !r->escaped);
    if (r->L)
      lua_rawset(r->L, -3);
    skip_ws(r);
    if (r->p >= r->end)
      return -1;
    if (*r->p == ',') {
      r->p++;
      continue;
    }
    if (*r->p == '}') {
      r->p++;
      return 0;
    }
    return -1;
  }
}

static int read_array(struct reader *r) {
  r->p++;
  if (r->L) {
    luaL_checkstack(r->L, 4, "JSON nested too deeply");
    lua_newtable(r->L);
  }
  skip_ws(r);
  if (r->p < r->end && *r->p == ']') {
    r->p++;
    if (r->L)
      rb_mark_array(r->L, -1);
    return 0;
  }
  lua_Integer i = 0;
  for (;;) {
    if (read_value(r) != 0)
      return -1;
    if (r->L)
      lua_rawseti(r->L, -2, ++i);
    skip_ws(r);
    if (r->p >= r->end)
      return -1;
    if (*r->p == ',') {
      r->p++;
      continue;
    }
    if (*r->p == ']') {
      r->p++;
      return 0;
    }
    return -1;
  }
}

static int read_value(struct reader *r) {
  skip_ws(r);
  if (r->p >= r->end)
    return -1;
  /* collections count, as everywhere else (jsonconv.h) */
  int nests = *r->p == '{' || *r->p == '[';
  if (nests && ++r->depth > RB_JSON_MAX_DEPTH)
    return -1;
  int rc;
  switch (*r->p) {
  case '{': rc = read_object(r); break;
  case '[': rc = read_array(r); break;
  case '"': rc = read_string(r); break;
  case 't':
    rc = literal(r, "true", 4);
    if (rc == 0 && r->L)
      lua_pushboolean(r->L, 1);
    break;
  case 'f':
    rc = literal(r, "false", 5);
    if (rc == 0 && r->L)
      lua_pushboolean(r->L, 0);
    break;
  case 'n':
    rc = literal(r, "null", 4);
    if (rc == 0 && r->L)
      rb_push_null(r->L);
    break;
  default: rc = read_number(r); break;
  }
  if (nests)
    r->depth--;
  return rc;
}

int rb_json_scan(lua_State *L, const char *s, size_t len) {
  struct reader r = {s, s + len, L, NULL, 0, NULL, 0};
  int top = L ? lua_gettop(L) : 0;
  if (read_value(&r) != 0) {
    if (L)
      lua_settop(L, top);
    return -1;
  }
  skip_ws(&r);
  if (r.p != r.end) {
    if (L)
      lua_settop(L, top);
    return -1;
  }
  return 0;
}

int rb_json_members(const char *s, size_t len, struct rb_json_members *m) {
  m->sigs = 0;
  for (int i = 0; i < m->n; i++) {
    if (!m->f[i].namelen)
      m->f[i].namelen = strlen(m->f[i].name);
    m->f[i].count = 0;
    m->f[i].string = m->f[i].plain = 0;
    if (m->f[i].namelen)
      m->sigs |= 1ULL << signature(m->f[i].name, m->f[i].namelen);
  }
  m->escaped_keys = 0;
  struct reader r = {s, s + len, NULL, NULL, 0, m, 0};
  skip_ws(&r);
  m->object = r.p < r.end && *r.p == '{';
  if (read_value(&r) != 0)
    return -1;
  skip_ws(&r);
  return r.p == r.end ? 0 : -1;
}
