/* libcrypto, for AES-256-GCM (and its version, for `runbook version`), called through pointers loaded on first
 * use (see dynlib.h). SHA-256, HMAC, randomness and constant-time helpers
 * are our own (sha256.c, crypto.c), so a run that seals no secret never
 * maps libcrypto. */
#ifndef RUNBOOK_DL_CRYPTO_H
#define RUNBOOK_DL_CRYPTO_H

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "dynlib.h"

#define RB_CRYPTO_FUNCS(X) \
  X(EVP_CIPHER_CTX_ctrl) \
  X(EVP_CIPHER_CTX_free) \
  X(EVP_CIPHER_CTX_new) \
  X(EVP_DecryptFinal_ex) \
  X(EVP_DecryptInit_ex) \
  X(EVP_DecryptUpdate) \
  X(EVP_EncryptFinal_ex) \
  X(EVP_EncryptInit_ex) \
  X(EVP_EncryptUpdate) \
  X(EVP_aes_256_gcm) \
  X(OpenSSL_version)

#define RB_DL_FIELD(name) __typeof__(name) *name;
struct rb_crypto_api {
  RB_CRYPTO_FUNCS(RB_DL_FIELD)
};
#undef RB_DL_FIELD
extern struct rb_crypto_api rb_crypto;

/* dynlib.c defines RB_DL_DEFINE to fill the table under the real names */
#ifndef RB_DL_DEFINE
#define EVP_CIPHER_CTX_ctrl (rb_crypto.EVP_CIPHER_CTX_ctrl)
#define EVP_CIPHER_CTX_free (rb_crypto.EVP_CIPHER_CTX_free)
#define EVP_CIPHER_CTX_new (rb_crypto.EVP_CIPHER_CTX_new)
#define EVP_DecryptFinal_ex (rb_crypto.EVP_DecryptFinal_ex)
#define EVP_DecryptInit_ex (rb_crypto.EVP_DecryptInit_ex)
#define EVP_DecryptUpdate (rb_crypto.EVP_DecryptUpdate)
#define EVP_EncryptFinal_ex (rb_crypto.EVP_EncryptFinal_ex)
#define EVP_EncryptInit_ex (rb_crypto.EVP_EncryptInit_ex)
#define EVP_EncryptUpdate (rb_crypto.EVP_EncryptUpdate)
#define EVP_aes_256_gcm (rb_crypto.EVP_aes_256_gcm)
#define OpenSSL_version (rb_crypto.OpenSSL_version)
#endif

#endif
