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

#include "crypto.h"
#include "dynlib.h"
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

/* ---- registering with the redactor ---------------------------------------- */

/* The nearest caller outside the standard library (the runbook or spec
 * that made the secret), as " (registered at file:line)", or "". */
static void push_where(lua_State *L) {
  lua_Debug ar;
  const char *dev = getenv("RUNBOOK_STDLIB_DIR"); /* stdlib files loaded from there */
  size_t devlen = dev ? strlen(dev) : 0;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0 || ar.source[0] != '@')
      continue;
    if (strncmp(ar.source, "@runbook/", 9) == 0)
      continue;
    if (dev && strncmp(ar.source + 1, dev, devlen) == 0 && strncmp(ar.source + 1 + devlen, "/runbook/", 9) == 0)
      continue;
    lua_pushfstring(L, " (registered at %s:%d)", ar.short_src, ar.currentline);
    return;
  }
  lua_pushliteral(L, "");
}

/* A short secret explains odd output: said once, when it is first
 * registered. It goes to the running step's log and console, or straight
 * to stderr outside a step (parameters are read before the first step).
 * Scrubbed like everything else, so it cannot show the value. */
static void warn_short(lua_State *L, size_t len) {
  push_where(L);
  if (len < RB_REDACT_MIN)
    lua_pushfstring(L, "a secret of %d character%s%s is too short to redact: it is shown as it is wherever it "
                       "appears (secrets need %d characters or more)",
                    (int)len, len == 1 ? "" : "s", lua_tostring(L, -1), RB_REDACT_MIN);
  else
    lua_pushfstring(L, "a secret of %d characters%s is shorter than %d: it is still redacted, so every "
                       "occurrence of the same text, even inside other words and step titles, shows as "
                       RB_REDACTED "; use a longer secret to avoid this",
                    (int)len, lua_tostring(L, -1), RB_REDACT_WARN);
  lua_remove(L, -2);
  int in_step = 0;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "runbook._engine.audit") == LUA_TTABLE) {
    lua_getfield(L, -1, "current");
    lua_call(L, 0, 1);
    in_step = !lua_isnil(L, -1);
    lua_pop(L, 1);
  }
  if (in_step) {
    lua_getfield(L, -1, "log");
    lua_pushliteral(L, "warn");
    lua_pushvalue(L, -5);
    lua_call(L, 2, 0);
    lua_pop(L, 3);
    return;
  }
  lua_pop(L, 2);
  lua_pushliteral(L, "runbook: warning: ");
  lua_insert(L, -2);
  lua_pushliteral(L, "\n");
  lua_concat(L, 3);
  size_t n;
  const char *msg = lua_tolstring(L, -1, &n);
  rb_push_scrubbed(L, msg, n);
  msg = lua_tolstring(L, -1, &n);
  rb_console_write(L, 2, msg, n);
  lua_pop(L, 2);
}

void rb_secret_register(lua_State *L, const char *data, size_t len, int literal) {
  struct rb_redactor *r = rb_host_get(L)->redactor;
  int is_new = 0;
  int rc = literal ? rb_redactor_add_literal(r, data, len, &is_new) : rb_redactor_add(r, data, len, &is_new);
  if (rc != 0)
    luaL_error(L, "out of memory while registering a secret with the redactor: the secret was not used, "
                  "so it cannot be shown; free some memory and run again");
  if (is_new && len < RB_REDACT_WARN)
    warn_short(L, len);
}

/* A new Secret of len bytes, zeroed, owned by the userdata from the start
 * so a raised error cannot leak (or leave unwiped) what is written into it. */
static struct secret *new_secret(lua_State *L, size_t len) {
  struct secret *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->data = NULL;
  s->len = 0;
  push_secret_mt(L);
  lua_setmetatable(L, -2);
  s->data = calloc(1, len + 1);
  if (!s->data)
    luaL_error(L, "out of memory");
  s->len = len;
  return s;
}

void rb_secret_push(lua_State *L, const char *data, size_t len) {
  struct secret *s = new_secret(L, len);
  memcpy(s->data, data, len);
  rb_secret_register(L, s->data, len, 0);
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

static void wipe(struct secret *s) {
  if (s->data) {
    rb_cleanse(s->data, s->len);
    free(s->data);
    s->data = NULL;
  }
}

static int s_wipe(lua_State *L) {
  wipe(luaL_checkudata(L, 1, RB_SECRET_MT));
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
  struct secret *s = new_secret(L, la + lb); /* '\0'-terminated, as every secret's bytes are: C APIs take them */
  memcpy(s->data, a, la);
  memcpy(s->data + la, b, lb);
  /* the joined value is registered as one literal: each part already is */
  rb_secret_register(L, s->data, la + lb, 1);
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
  struct secret *e = new_secret(L, RB_BASE64_SIZE(s->len));
  e->len = rb_base64_to((const uint8_t *)s->data, s->len, url, !url, e->data);
  rb_secret_register(L, e->data, e->len, 0);
  return 1;
}

static int m_hex(lua_State *L) {
  struct secret *s = check_secret(L, 1);
  struct secret *h = new_secret(L, 2 * s->len);
  rb_hex((const uint8_t *)s->data, s->len, h->data, 0);
  rb_secret_register(L, h->data, h->len, 0);
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
  rb_secret_register(L, p, len, 0);
  return 0;
}

static const char ALNUM[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/* random(n, encoding): n random bytes, encoded; for "alnum", n characters */
static int f_random(lua_State *L) {
  static const char *const encs[] = {"hex", "base64", "base64url", "alnum", "raw", NULL};
  lua_Integer n = luaL_checkinteger(L, 1);
  int enc = luaL_checkoption(L, 2, "hex", encs);
  luaL_argcheck(L, n >= 1 && n <= 4096, 1, "between 1 and 4096 expected");
  size_t len = (size_t)n;
  size_t size = enc == 0 ? 2 * len : enc == 1 || enc == 2 ? RB_BASE64_SIZE(len) : len;
  /* the secret first: nothing below may raise while raw is held */
  struct secret *s = new_secret(L, size);
  uint8_t *raw = malloc(len);
  int ok = raw != NULL;
  if (ok && enc == 3) {
    /* rejection sampling keeps every character equally likely */
    size_t got = 0;
    while (ok && got < len) {
      ok = rb_random(raw, 1) == 0;
      if (ok && raw[0] < 248)
        s->data[got++] = ALNUM[raw[0] % 62];
    }
  } else if (ok) {
    ok = rb_random(raw, len) == 0;
    if (ok && enc == 0)
      rb_hex(raw, len, s->data, 0);
    else if (ok && (enc == 1 || enc == 2))
      s->len = rb_base64_to(raw, len, enc == 2, enc == 1, s->data);
    else if (ok)
      memcpy(s->data, raw, len);
  }
  if (raw) {
    rb_cleanse(raw, len);
    free(raw);
  }
  if (!raw)
    return luaL_error(L, "out of memory");
  if (!ok)
    return luaL_error(L, "the system random generator failed");
  rb_secret_register(L, s->data, s->len, 0);
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
  struct secret *s = new_secret(L, inlen);
  long n = rb_gcm_open(key, aad, aadlen, in, inlen, (uint8_t *)s->data);
  if (n < 0) {
    wipe(s); /* whatever was decrypted before the tag failed */
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_pushliteral(L, "authentication failed");
    return 2;
  }
  rb_cleanse(s->data + n, inlen - (size_t)n); /* keep the '\0' after the value */
  s->len = (size_t)n;
  rb_secret_register(L, s->data, s->len, 0);
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
