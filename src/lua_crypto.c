/*
 * runbook._crypto: digests, MACs and encodings for Lua. Functions accept a
 * Secret wherever they accept a string; an encoding of a Secret is a Secret,
 * while a digest or MAC is not (it reveals nothing of a random key).
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <sys/random.h>

#include "crypto.h"
#include "secret.h"

static void push_maybe_secret(lua_State *L, const char *p, size_t n, int secret) {
  if (secret)
    rb_secret_push(L, p, n);
  else
    lua_pushlstring(L, p, n);
}

static void push_digest(lua_State *L, const uint8_t *d, size_t n, int raw) {
  if (raw) {
    lua_pushlstring(L, (const char *)d, n);
  } else {
    char hex[2 * RB_SHA256_LEN + 1];
    rb_hex(d, n, hex, 0);
    lua_pushstring(L, hex);
  }
}

/* sha256(data [, raw]) -> hex (or 32 raw bytes) */
static int f_sha256(lua_State *L) {
  size_t len;
  const char *p = rb_check_bytes(L, 1, &len, NULL);
  uint8_t d[RB_SHA256_LEN];
  rb_sha256(p, len, d);
  push_digest(L, d, sizeof d, lua_toboolean(L, 2));
  return 1;
}

/* hmac_sha256(key, data [, raw]) -> hex (or raw) */
static int f_hmac_sha256(lua_State *L) {
  size_t klen, len;
  const char *k = rb_check_bytes(L, 1, &klen, NULL);
  const char *p = rb_check_bytes(L, 2, &len, NULL);
  uint8_t d[RB_SHA256_LEN];
  if (rb_hmac_sha256(k, klen, p, len, d) != 0)
    return luaL_error(L, "HMAC-SHA256 failed");
  push_digest(L, d, sizeof d, lua_toboolean(L, 3));
  return 1;
}

/* random_hex(nbytes): for identifiers, not for secrets (those come from
 * OpenSSL's generator); the kernel's is enough and spares starting OpenSSL's */
static int f_random_hex(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1 && n <= 256, 1, "between 1 and 256 expected");
  uint8_t buf[256];
  char hex[513];
  if (getrandom(buf, (size_t)n, 0) != (ssize_t)n)
    return luaL_error(L, "the system random generator failed");
  rb_hex(buf, (size_t)n, hex, 0);
  lua_pushstring(L, hex);
  return 1;
}

/* base64_encode(data [, url [, pad]]) */
static int f_base64_encode(lua_State *L) {
  size_t len, n;
  int secret;
  const char *p = rb_check_bytes(L, 1, &len, &secret);
  int url = lua_toboolean(L, 2);
  int pad = lua_isnoneornil(L, 3) ? !url : lua_toboolean(L, 3);
  char *enc = rb_base64((const uint8_t *)p, len, url, pad, &n);
  if (!enc)
    return luaL_error(L, "out of memory");
  push_maybe_secret(L, enc, n, secret);
  rb_cleanse(enc, n);
  free(enc);
  return 1;
}

/* base64_decode(text) -> bytes | nil, message */
static int f_base64_decode(lua_State *L) {
  size_t len;
  int secret;
  const char *p = rb_check_bytes(L, 1, &len, &secret);
  uint8_t *out = malloc(len + 1);
  if (!out)
    return luaL_error(L, "out of memory");
  long n = rb_unbase64(p, len, out);
  if (n < 0) {
    free(out);
    lua_pushnil(L);
    lua_pushliteral(L, "invalid base64");
    return 2;
  }
  push_maybe_secret(L, (const char *)out, (size_t)n, secret);
  rb_cleanse(out, (size_t)n);
  free(out);
  return 1;
}

static int f_hex_encode(lua_State *L) {
  size_t len;
  int secret;
  const char *p = rb_check_bytes(L, 1, &len, &secret);
  char *out = malloc(2 * len + 1);
  if (!out)
    return luaL_error(L, "out of memory");
  rb_hex((const uint8_t *)p, len, out, lua_toboolean(L, 2));
  push_maybe_secret(L, out, 2 * len, secret);
  rb_cleanse(out, 2 * len);
  free(out);
  return 1;
}

static int f_hex_decode(lua_State *L) {
  size_t len;
  int secret;
  const char *p = rb_check_bytes(L, 1, &len, &secret);
  uint8_t *out = malloc(len / 2 + 1);
  if (!out)
    return luaL_error(L, "out of memory");
  long n = rb_unhex(p, len, out);
  if (n < 0) {
    free(out);
    lua_pushnil(L);
    lua_pushliteral(L, "invalid hex");
    return 2;
  }
  push_maybe_secret(L, (const char *)out, (size_t)n, secret);
  rb_cleanse(out, (size_t)n);
  free(out);
  return 1;
}

/* constant-time comparison of two strings or secrets */
static int f_equal(lua_State *L) {
  size_t la, lb;
  const char *a = rb_check_bytes(L, 1, &la, NULL);
  const char *b = rb_check_bytes(L, 2, &lb, NULL);
  lua_pushboolean(L, la == lb && rb_ct_memcmp(a, b, la) == 0);
  return 1;
}

static const luaL_Reg funcs[] = {
  {"sha256", f_sha256},
  {"hmac_sha256", f_hmac_sha256},
  {"random_hex", f_random_hex},
  {"base64_encode", f_base64_encode},
  {"base64_decode", f_base64_decode},
  {"hex_encode", f_hex_encode},
  {"hex_decode", f_hex_decode},
  {"equal", f_equal},
  {NULL, NULL},
};

int luaopen_runbook__crypto(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
