/*
 * runbook._hash: streaming digests, for data that never sits in memory
 * whole (object storage uploads and downloads). runbook._crypto hashes a
 * string at once; this hashes it piece by piece.
 *
 *   local h = require("runbook._hash").sha256()
 *   h:update(chunk) ...; h:hex() -> digest so far (the hasher goes on)
 */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "crypto.h"
#include "secret.h"
#include "sha256.h"

#define HASH_MT "runbook.hash.Sha256"

struct hasher {
  struct rb_sha256_ctx c;
  lua_Integer size;
};

/* h:update(data) -> h (data: string or Secret) */
static int h_update(lua_State *L) {
  struct hasher *h = luaL_checkudata(L, 1, HASH_MT);
  size_t n;
  const char *p = rb_check_bytes(L, 2, &n, NULL);
  rb_sha256_update(&h->c, p, n);
  h->size += (lua_Integer)n;
  lua_settop(L, 1);
  return 1;
}

/* h:hex([raw]) -> the digest of everything so far; the hasher can go on */
static int h_hex(lua_State *L) {
  struct hasher *h = luaL_checkudata(L, 1, HASH_MT);
  struct rb_sha256_ctx copy = h->c;
  uint8_t d[RB_SHA256_LEN];
  rb_sha256_final(&copy, d);
  if (lua_toboolean(L, 2)) {
    lua_pushlstring(L, (const char *)d, sizeof d);
  } else {
    char hex[2 * RB_SHA256_LEN + 1];
    rb_hex(d, sizeof d, hex, 0);
    lua_pushstring(L, hex);
  }
  return 1;
}

/* h:size() -> bytes hashed so far */
static int h_size(lua_State *L) {
  lua_pushinteger(L, ((struct hasher *)luaL_checkudata(L, 1, HASH_MT))->size);
  return 1;
}

/* sha256([data]) -> hasher */
static int f_sha256(lua_State *L) {
  lua_settop(L, 1);
  struct hasher *h = lua_newuserdatauv(L, sizeof *h, 0);
  rb_sha256_init(&h->c);
  h->size = 0;
  luaL_setmetatable(L, HASH_MT);
  if (!lua_isnoneornil(L, 1)) {
    size_t n;
    const char *p = rb_check_bytes(L, 1, &n, NULL);
    rb_sha256_update(&h->c, p, n);
    h->size = (lua_Integer)n;
  }
  return 1;
}

static const luaL_Reg methods[] = {
  {"update", h_update},
  {"hex", h_hex},
  {"size", h_size},
  {NULL, NULL},
};

static const luaL_Reg funcs[] = {
  {"sha256", f_sha256},
  {NULL, NULL},
};

int luaopen_runbook__hash(lua_State *L) {
  if (luaL_newmetatable(L, HASH_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
