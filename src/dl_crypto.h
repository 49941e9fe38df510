/* libcrypto, for AES-256-GCM, Ed25519 signatures of signed runbooks (lua_sign.c)
 * and its version (`runbook version`), called through pointers loaded on first
 * use (see dynlib.h). SHA-256, HMAC, randomness and constant-time helpers
 * are our own (sha256.c, crypto.c), so a run that seals no secret never
 * maps libcrypto. */
#ifndef RUNBOOK_DL_CRYPTO_H
#define RUNBOOK_DL_CRYPTO_H

#include <openssl/crypto.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

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
  X(OpenSSL_version) \
  X(BIO_ctrl) \
  X(BIO_free) \
  X(BIO_new) \
  X(BIO_new_mem_buf) \
  X(BIO_s_mem) \
  X(EVP_DigestSign) \
  X(EVP_DigestSignInit) \
  X(EVP_DigestVerify) \
  X(EVP_DigestVerifyInit) \
  X(EVP_MD_CTX_free) \
  X(EVP_MD_CTX_new) \
  X(EVP_PKEY_CTX_free) \
  X(EVP_PKEY_CTX_new_id) \
  X(EVP_PKEY_free) \
  X(EVP_PKEY_get_id) \
  X(EVP_PKEY_get_raw_public_key) \
  X(EVP_PKEY_keygen) \
  X(EVP_PKEY_keygen_init) \
  X(PEM_read_bio_PUBKEY) \
  X(PEM_read_bio_PrivateKey) \
  X(PEM_write_bio_PUBKEY) \
  X(PEM_write_bio_PrivateKey)

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
#define BIO_ctrl (rb_crypto.BIO_ctrl)
#define BIO_free (rb_crypto.BIO_free)
#define BIO_new (rb_crypto.BIO_new)
#define BIO_new_mem_buf (rb_crypto.BIO_new_mem_buf)
#define BIO_s_mem (rb_crypto.BIO_s_mem)
#define EVP_DigestSign (rb_crypto.EVP_DigestSign)
#define EVP_DigestSignInit (rb_crypto.EVP_DigestSignInit)
#define EVP_DigestVerify (rb_crypto.EVP_DigestVerify)
#define EVP_DigestVerifyInit (rb_crypto.EVP_DigestVerifyInit)
#define EVP_MD_CTX_free (rb_crypto.EVP_MD_CTX_free)
#define EVP_MD_CTX_new (rb_crypto.EVP_MD_CTX_new)
#define EVP_PKEY_CTX_free (rb_crypto.EVP_PKEY_CTX_free)
#define EVP_PKEY_CTX_new_id (rb_crypto.EVP_PKEY_CTX_new_id)
#define EVP_PKEY_free (rb_crypto.EVP_PKEY_free)
#define EVP_PKEY_get_id (rb_crypto.EVP_PKEY_get_id)
#define EVP_PKEY_get_raw_public_key (rb_crypto.EVP_PKEY_get_raw_public_key)
#define EVP_PKEY_keygen (rb_crypto.EVP_PKEY_keygen)
#define EVP_PKEY_keygen_init (rb_crypto.EVP_PKEY_keygen_init)
#define PEM_read_bio_PUBKEY (rb_crypto.PEM_read_bio_PUBKEY)
#define PEM_read_bio_PrivateKey (rb_crypto.PEM_read_bio_PrivateKey)
#define PEM_write_bio_PUBKEY (rb_crypto.PEM_write_bio_PUBKEY)
#define PEM_write_bio_PrivateKey (rb_crypto.PEM_write_bio_PrivateKey)
#endif

#endif
