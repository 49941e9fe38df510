/*
 * runbook._secret: the Secret userdata, random secrets and the AES-GCM
 * sealing of secrets for memos. Secret bytes live in malloc'd memory that is
 * wiped when the value is collected; they become a Lua string only through
 * :reveal().
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "dynlib.h"
#include "crypto.h"
#include "host.h"
#include "redact.h"
#include "secret.h"

struct secret {
  char *data; /* NULL once wiped */
  size_t len;
};

static struct secret *check_secret(lua_State *L, int idx) {
  struct secret *s = luaL_checkudata(L, idx, RB_SECRET_MT);
  if (!s->data)
    luaL_error(L, "attempt to use a wiped secret");
  return s;
}

static void push_secret_mt(lua_State *L);

void rb_secret_push(lua_State *L, const char *data, size_t len) {
  struct secret *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->data = NULL;
  s->len = 0;
  push_secret_mt(L);
  lua_setmetatable(L, -2);
  s->data = malloc(len + 1);
  if (!s->data)
    luaL_error(L, "out of memory");
  memcpy(s->data, data, len);
  s->data[len] = '\0';
  s->len = len;
  rb_redactor_add(rb_host_get(L)->redactor, data, len);
}

const char *rb_secret_test(lua_State *L, int idx, size_t *len) {
  struct secret *s = luaL_testudata(L, idx, RB_SECRET_MT);
  if (!s || !s->data)
    return NULL;
  if (len)
    *len = s->len;
  return s->data;
}

const char *rb_check_bytes(lua_State *L, int idx, size_t *len, int *is_secret) {
  const char *p = rb_secret_test(L, idx, len);
  if (is_secret)
    *is_secret = p != NULL;
  if (p)
    return p;
  if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER)
    return lua_tolstring(L, idx, len);
  luaL_typeerror(L, idx, "string or secret");
  return NULL;
}

const char *rb_opt_bytes(lua_State *L, int idx, size_t *len, int *is_secret) {
  if (lua_isnoneornil(L, idx)) {
    if (is_secret)
      *is_secret = 0;
    if (len)
      *len = 0;
    return NULL;
  }
  return rb_check_bytes(L, idx, len, is_secret);
}

/* ---- metamethods ---------------------------------------------------------- */

static int s_wipe(lua_State *L) {
  struct secret *s = luaL_checkudata(L, 1, RB_SECRET_MT);
  if (s->data) {
    rb_cleanse(s->data, s->len);
    free(s->data);
    s->data = NULL;
  }
  return 0;
}

static int s_tostring(lua_State *L) {
  lua_pushliteral(L, RB_REDACTED);
  return 1;
}

static int s_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_secret(L, 1)->len);
  return 1;
}

static int s_eq(lua_State *L) {
  size_t la = 0, lb = 0;
  const char *a = rb_secret_test(L, 1, &la), *b = rb_secret_test(L, 2, &lb);
  lua_pushboolean(L, a && b && la == lb && rb_ct_memcmp(a, b, la) == 0);
  return 1;
}

/* "user:" .. pw and pw .. "@host" are secrets too */
static int s_concat(lua_State *L) {
  size_t la = 0, lb = 0;
  const char *a = rb_check_bytes(L, 1, &la, NULL);
  const char *b = rb_check_bytes(L, 2, &lb, NULL);
  char *buf = malloc(la + lb + 1);
  if (!buf)
    return luaL_error(L, "out of memory");
  memcpy(buf, a, la);
  memcpy(buf + la, b, lb);
  buf[la + lb] = '\0'; /* as every secret's bytes are: C APIs take them */
  /* the joined value is registered as one literal: each part already is */
  struct secret *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->data = buf;
  s->len = la + lb;
  push_secret_mt(L);
  lua_setmetatable(L, -2);
  rb_redactor_add_literal(rb_host_get(L)->redactor, buf, la + lb);
  return 1;
}

/* ---- methods ---------------------------------------------------------------- */

static int m_reveal(lua_State *L) {
  struct secret *s = check_secret(L, 1);
  lua_pushlstring(L, s->data, s->len);
  return 1;
}

static int m_base64(lua_State *L) {
  struct secret *s = check_secret(L, 1);
  int url = lua_toboolean(L, 2);
  size_t n;
  char *enc = rb_base64((const uint8_t *)s->data, s->len, url, !url, &n);
  if (!enc)
    return luaL_error(L, "out of memory");
  rb_secret_push(L, enc, n);
  rb_cleanse(enc, n);
  free(enc);
  return 1;
}

static int m_hex(lua_State *L) {
  struct secret *s = check_secret(L, 1);
  char *hex = malloc(2 * s->len + 1);
  if (!hex)
    return luaL_error(L, "out of memory");
  rb_hex((const uint8_t *)s->data, s->len, hex, 0);
  rb_secret_push(L, hex, 2 * s->len);
  rb_cleanse(hex, 2 * s->len);
  free(hex);
  return 1;
}

/* s:sub(i [, j]) -> Secret, with string.sub's index rules */
static int m_sub(lua_State *L) {
  struct secret *s = check_secret(L, 1);
  lua_Integer n = (lua_Integer)s->len;
  lua_Integer i = luaL_checkinteger(L, 2), j = luaL_optinteger(L, 3, -1);
  if (i < 0)
    i = i < -n ? 1 : n + i + 1;
  else if (i == 0)
    i = 1;
  if (j < 0)
    j = n + j + 1;
  else if (j > n)
    j = n;
  if (i > j) {
    rb_secret_push(L, "", 0);
    return 1;
  }
  rb_secret_push(L, s->data + i - 1, (size_t)(j - i + 1));
  return 1;
}

static const luaL_Reg methods[] = {
  {"reveal", m_reveal},
  {"base64", m_base64},
  {"hex", m_hex},
  {"sub", m_sub},
  {"len", s_len},
  {"wipe", s_wipe},
  {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
  {"__tostring", s_tostring},
  {"__len", s_len},
  {"__eq", s_eq},
  {"__concat", s_concat},
  {"__gc", s_wipe},
  {"__close", s_wipe},
  {NULL, NULL},
};

static void push_secret_mt(lua_State *L) {
  if (luaL_newmetatable(L, RB_SECRET_MT)) {
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "secret");
    lua_setfield(L, -2, "__metatable"); /* getmetatable(s) cannot reach the methods' upvalues */
  }
}

/* ---- module functions --------------------------------------------------------- */

static int f_new(lua_State *L) {
  size_t len;
  const char *p = rb_check_bytes(L, 1, &len, NULL);
  rb_secret_push(L, p, len);
  return 1;
}

static int f_is(lua_State *L) {
  lua_pushboolean(L, rb_secret_test(L, 1, NULL) != NULL);
  return 1;
}

/* register(s): a plain string that must never be printed either */
static int f_register(lua_State *L) {
  size_t len;
  const char *p = rb_check_bytes(L, 1, &len, NULL);
  rb_redactor_add(rb_host_get(L)->redactor, p, len);
  return 0;
}

static const char ALNUM[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/* random(n, encoding): n random bytes, encoded; for "alnum", n characters */
static int f_random(lua_State *L) {
  static const char *const encs[] = {"hex", "base64", "base64url", "alnum", "raw", NULL};
  lua_Integer n = luaL_checkinteger(L, 1);
  int enc = luaL_checkoption(L, 2, "hex", encs);
  luaL_argcheck(L, n >= 1 && n <= 4096, 1, "between 1 and 4096 expected");
  uint8_t *raw = malloc((size_t)n);
  char *text = NULL;
  size_t tlen = 0;
  if (!raw)
    return luaL_error(L, "out of memory");
  if (enc == 3) {
    /* rejection sampling keeps every character equally likely */
    text = malloc((size_t)n);
    size_t got = 0;
    uint8_t b;
    while (text && got < (size_t)n) {
      if (rb_random(&b, 1) != 0)
        break;
      if (b < 248)
        text[got++] = ALNUM[b % 62];
    }
    if (!text || got < (size_t)n) {
      free(raw);
      free(text);
      return luaL_error(L, "the system random generator failed");
    }
    tlen = (size_t)n;
  } else {
    if (rb_random(raw, (size_t)n) != 0) {
      free(raw);
      return luaL_error(L, "the system random generator failed");
    }
    if (enc == 0) {
      text = malloc(2 * (size_t)n + 1);
      if (text)
        rb_hex(raw, (size_t)n, text, 0);
      tlen = 2 * (size_t)n;
    } else if (enc == 1 || enc == 2) {
      text = rb_base64(raw, (size_t)n, enc == 2, enc == 1, &tlen);
    } else {
      text = malloc((size_t)n);
      if (text)
        memcpy(text, raw, (size_t)n);
      tlen = (size_t)n;
    }
  }
  rb_cleanse(raw, (size_t)n);
  free(raw);
  if (!text)
    return luaL_error(L, "out of memory");
  rb_secret_push(L, text, tlen);
  rb_cleanse(text, tlen);
  free(text);
  return 1;
}

static const uint8_t *check_key(lua_State *L, int idx) {
  size_t len;
  const char *k = rb_check_bytes(L, idx, &len, NULL);
  luaL_argcheck(L, len == RB_GCM_KEY_LEN, idx, "a 32-byte key expected");
  return (const uint8_t *)k;
}

/* seal(key, aad, secret_or_string) -> nonce||ciphertext||tag (binary string) */
static int f_seal(lua_State *L) {
  const uint8_t *key = check_key(L, 1);
  size_t aadlen, ptlen;
  const char *aad = luaL_checklstring(L, 2, &aadlen);
  const char *pt = rb_check_bytes(L, 3, &ptlen, NULL);
  char err[256];
  if (rb_dl_crypto(err, sizeof err) != 0)
    return luaL_error(L, "AES-256-GCM: %s", err);
  uint8_t *out = malloc(ptlen + RB_GCM_OVERHEAD);
  if (!out)
    return luaL_error(L, "out of memory");
  if (rb_gcm_seal(key, aad, aadlen, pt, ptlen, out) != 0) {
    free(out);
    return luaL_error(L, "AES-256-GCM encryption failed");
  }
  lua_pushlstring(L, (const char *)out, ptlen + RB_GCM_OVERHEAD);
  free(out);
  return 1;
}

/* open(key, aad, blob) -> Secret | nil, "authentication failed" */
static int f_open(lua_State *L) {
  const uint8_t *key = check_key(L, 1);
  size_t aadlen, inlen;
  const char *aad = luaL_checklstring(L, 2, &aadlen);
  const uint8_t *in = (const uint8_t *)luaL_checklstring(L, 3, &inlen);
  char err[256];
  if (rb_dl_crypto(err, sizeof err) != 0)
    return luaL_error(L, "AES-256-GCM: %s", err);
  uint8_t *out = malloc(inlen + 1);
  if (!out)
    return luaL_error(L, "out of memory");
  long n = rb_gcm_open(key, aad, aadlen, in, inlen, out);
  if (n < 0) {
    free(out);
    lua_pushnil(L);
    lua_pushliteral(L, "authentication failed");
    return 2;
  }
  rb_secret_push(L, (const char *)out, (size_t)n);
  rb_cleanse(out, (size_t)n);
  free(out);
  return 1;
}

static const luaL_Reg funcs[] = {
  {"new", f_new},
  {"is", f_is},
  {"register", f_register},
  {"random", f_random},
  {"seal", f_seal},
  {"open", f_open},
  {NULL, NULL},
};

int luaopen_runbook__secret(lua_State *L) {
  luaL_newlib(L, funcs);
  push_secret_mt(L);
  lua_pop(L, 1);
  return 1;
}
