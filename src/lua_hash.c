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
#include <openssl/evp.h>

#include "crypto.h"
#include "secret.h"

#define HASH_MT "runbook.hash.Sha256"

struct hasher {
  EVP_MD_CTX *md; /* NULL once freed */
  lua_Integer size;
};

static struct hasher *check_hasher(lua_State *L) {
  struct hasher *h = luaL_checkudata(L, 1, HASH_MT);
  if (!h->md)
    luaL_error(L, "attempt to use a freed hasher");
  return h;
}

static int h_gc(lua_State *L) {
  struct hasher *h = luaL_checkudata(L, 1, HASH_MT);
  if (h->md) {
    EVP_MD_CTX_free(h->md);
    h->md = NULL;
  }
  return 0;
}

/* h:update(data) -> h (data: string or Secret) */
static int h_update(lua_State *L) {
  struct hasher *h = check_hasher(L);
  size_t n;
  const char *p = rb_check_bytes(L, 2, &n, NULL);
  if (EVP_DigestUpdate(h->md, p, n) != 1)
    return luaL_error(L, "sha256: update failed");
  h->size += (lua_Integer)n;
  lua_settop(L, 1);
  return 1;
}

/* h:hex([raw]) -> the digest of everything so far; the hasher can go on */
static int h_hex(lua_State *L) {
  struct hasher *h = check_hasher(L);
  EVP_MD_CTX *copy = EVP_MD_CTX_new();
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!copy || EVP_MD_CTX_copy_ex(copy, h->md) != 1 || EVP_DigestFinal_ex(copy, d, &n) != 1) {
    EVP_MD_CTX_free(copy);
    return luaL_error(L, "sha256: final failed");
  }
  EVP_MD_CTX_free(copy);
  if (lua_toboolean(L, 2)) {
    lua_pushlstring(L, (const char *)d, n);
  } else {
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    rb_hex(d, n, hex, 0);
    lua_pushstring(L, hex);
  }
  return 1;
}

/* h:size() -> bytes hashed so far */
static int h_size(lua_State *L) {
  lua_pushinteger(L, check_hasher(L)->size);
  return 1;
}

/* sha256([data]) -> hasher */
static int f_sha256(lua_State *L) {
  lua_settop(L, 1);
  struct hasher *h = lua_newuserdatauv(L, sizeof *h, 0);
  h->md = NULL;
  h->size = 0;
  luaL_setmetatable(L, HASH_MT);
  h->md = EVP_MD_CTX_new();
  if (!h->md || EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1)
    return luaL_error(L, "sha256: cannot initialise the digest");
  if (!lua_isnoneornil(L, 1)) {
    size_t n;
    const char *p = rb_check_bytes(L, 1, &n, NULL);
    EVP_DigestUpdate(h->md, p, n);
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
    lua_pushcfunction(L, h_gc);
    lua_setfield(L, -2, "__gc");
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
