/* Hashes, MACs, randomness (ours) and authenticated encryption (libcrypto,
 * loaded on first use: rb_dl_crypto). */
#ifndef RUNBOOK_CRYPTO_H
#define RUNBOOK_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define RB_SHA256_LEN 32
#define RB_GCM_KEY_LEN 32
#define RB_GCM_NONCE_LEN 12
#define RB_GCM_TAG_LEN 16

void rb_sha256(const void *data, size_t len, uint8_t out[RB_SHA256_LEN]);
/* the digest of a followed by b */
void rb_sha256_2(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[RB_SHA256_LEN]);
int rb_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                   uint8_t out[RB_SHA256_LEN]);
/* 0 on success, -1 when the system RNG fails */
int rb_random(void *buf, size_t len);
/* wipes memory the compiler may not optimise away */
void rb_cleanse(void *p, size_t len);
/* 0 when equal; time depends on len only */
int rb_ct_memcmp(const void *a, const void *b, size_t len);

/* hex: out must hold 2*len+1 bytes; lowercase unless upper */
void rb_hex(const uint8_t *in, size_t len, char *out, int upper);
/* the value of one hex digit, or -1 */
int rb_hexval(int c);
/* returns decoded length or -1 */
long rb_unhex(const char *in, size_t len, uint8_t *out);

/* base64: url selects the URL alphabet, pad adds '='. Returns malloc'd text. */
char *rb_base64(const uint8_t *in, size_t len, int url, int pad, size_t *outlen);
/* The same into out, which holds RB_BASE64_SIZE(len) bytes; returns the
 * length written (a '\0' follows). */
size_t rb_base64_to(const uint8_t *in, size_t len, int url, int pad, char *out);
#define RB_BASE64_SIZE(len) (4 * (((len) + 2) / 3) + 1)
/* Accepts both alphabets, padding optional, no whitespace. -1 on bad input. */
long rb_unbase64(const char *in, size_t len, uint8_t *out);

/* AES-256-GCM (libcrypto; call rb_dl_crypto first to report why it is not
 * there). seal writes nonce||ciphertext||tag (len + 28 bytes) to out.
 * open returns the plaintext length, or -1 when the tag does not verify. */
int rb_gcm_seal(const uint8_t key[RB_GCM_KEY_LEN], const void *aad, size_t aadlen,
                const void *pt, size_t ptlen, uint8_t *out);
long rb_gcm_open(const uint8_t key[RB_GCM_KEY_LEN], const void *aad, size_t aadlen,
                 const uint8_t *in, size_t inlen, uint8_t *out);
#define RB_GCM_OVERHEAD (RB_GCM_NONCE_LEN + RB_GCM_TAG_LEN)

#endif
