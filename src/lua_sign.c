/*
 * runbook._sign: Ed25519 keys and detached signatures for signed runbooks
 * (runbook sign / keygen / exec --require-signature), over OpenSSL's EVP.
 * Keys travel as PEM (PKCS#8 private keys, SubjectPublicKeyInfo public
 * keys), so `openssl genpkey -algorithm ed25519` makes keys runbook reads.
 * Every OpenSSL object is freed before a Lua error is raised.
 *
 *   keygen() -> private_pem, public_pem
 *   public_of(pem) -> public_pem          (of a private or public key)
 *   raw_public(pem) -> 32 bytes           (the key id is a digest of these)
 *   sign(private_pem, message) -> 64-byte signature
 *   verify(public_pem, message, signature) -> boolean
 * Bad input (not a PEM Ed25519 key) returns nil and a message.
 */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "dl_crypto.h"
#include "dynlib.h"
#include "modules.h"

/* libcrypto is loaded on first use (dynlib.c): raise when it cannot be */
static void need_crypto(lua_State *L) {
  char err[256];
  if (rb_dl_crypto(err, sizeof err) != 0)
    luaL_error(L, "signatures need libcrypto: %s", err);
}

/* A key from PEM text: a private key when one parses, else a public key. */
static EVP_PKEY *read_key(const char *pem, size_t len, int want_private) {
  if (len == 0 || len > 65536) /* no PEM key is bigger; and BIO takes an int */
    return NULL;
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  if (!b)
    return NULL;
  EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
  if (!k && !want_private) {
    BIO_free(b);
    b = BIO_new_mem_buf(pem, (int)len);
    if (!b)
      return NULL;
    k = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
  }
  BIO_free(b);
  if (k && EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
    EVP_PKEY_free(k);
    return NULL;
  }
  return k;
}

/* Pushes the PEM of k's public (or private) half; 0 on failure. */
static int push_pem(lua_State *L, EVP_PKEY *k, int private_half) {
  BIO *b = BIO_new(BIO_s_mem());
  if (!b)
    return 0;
  int ok = private_half ? PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) : PEM_write_bio_PUBKEY(b, k);
  char *data = NULL;
  long n = ok ? BIO_get_mem_data(b, &data) : 0;
  if (ok && n > 0)
    lua_pushlstring(L, data, (size_t)n);
  BIO_free(b);
  return ok && n > 0;
}

static int fail(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

static int f_keygen(lua_State *L) {
  need_crypto(L);
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
  EVP_PKEY *k = NULL;
  int ok = c && EVP_PKEY_keygen_init(c) == 1 && EVP_PKEY_keygen(c, &k) == 1;
  EVP_PKEY_CTX_free(c);
  if (!ok) {
    EVP_PKEY_free(k);
    return fail(L, "cannot generate an Ed25519 key");
  }
  int pushed = push_pem(L, k, 1);
  if (pushed && !push_pem(L, k, 0)) {
    lua_pop(L, 1);
    pushed = 0;
  }
  EVP_PKEY_free(k);
  return pushed ? 2 : fail(L, "cannot write the key as PEM");
}

static int f_public_of(lua_State *L) {
  size_t len;
  const char *pem = luaL_checklstring(L, 1, &len);
  need_crypto(L);
  EVP_PKEY *k = read_key(pem, len, 0);
  if (!k)
    return fail(L, "not an Ed25519 key in PEM form");
  int ok = push_pem(L, k, 0);
  EVP_PKEY_free(k);
  return ok ? 1 : fail(L, "cannot write the public key as PEM");
}

static int f_raw_public(lua_State *L) {
  size_t len;
  const char *pem = luaL_checklstring(L, 1, &len);
  need_crypto(L);
  EVP_PKEY *k = read_key(pem, len, 0);
  if (!k)
    return fail(L, "not an Ed25519 key in PEM form");
  unsigned char raw[32];
  size_t n = sizeof raw;
  int ok = EVP_PKEY_get_raw_public_key(k, raw, &n) == 1 && n == sizeof raw;
  EVP_PKEY_free(k);
  if (!ok)
    return fail(L, "cannot read the public key");
  lua_pushlstring(L, (const char *)raw, n);
  return 1;
}

static int f_sign(lua_State *L) {
  size_t klen, mlen;
  const char *pem = luaL_checklstring(L, 1, &klen);
  const char *msg = luaL_checklstring(L, 2, &mlen);
  need_crypto(L);
  EVP_PKEY *k = read_key(pem, klen, 1);
  if (!k)
    return fail(L, "not an Ed25519 private key in PEM form");
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned char sig[64];
  size_t n = sizeof sig;
  /* Ed25519 signs the message itself: no digest is named */
  int ok = md && EVP_DigestSignInit(md, NULL, NULL, NULL, k) == 1 &&
           EVP_DigestSign(md, sig, &n, (const unsigned char *)msg, mlen) == 1;
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(k);
  if (!ok)
    return fail(L, "signing failed");
  lua_pushlstring(L, (const char *)sig, n);
  return 1;
}

static int f_verify(lua_State *L) {
  size_t klen, mlen, slen;
  const char *pem = luaL_checklstring(L, 1, &klen);
  const char *msg = luaL_checklstring(L, 2, &mlen);
  const char *sig = luaL_checklstring(L, 3, &slen);
  need_crypto(L);
  EVP_PKEY *k = read_key(pem, klen, 0);
  if (!k)
    return fail(L, "not an Ed25519 key in PEM form");
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int ok = md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, k) == 1 &&
           EVP_DigestVerify(md, (const unsigned char *)sig, slen, (const unsigned char *)msg, mlen) == 1;
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(k);
  lua_pushboolean(L, ok);
  return 1;
}

static const luaL_Reg funcs[] = {
  {"keygen", f_keygen},         {"public_of", f_public_of}, {"raw_public", f_raw_public},
  {"sign", f_sign},             {"verify", f_verify},       {NULL, NULL},
};

int luaopen_runbook__sign(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
