/* SHA-256 and HMAC-SHA256 are our own (sha256.c); randomness comes from
 * getrandom(2). Only AES-256-GCM goes to libcrypto, loaded on first use
 * (dl_crypto.h): every run hashes its journal, few seal a secret, and
 * mapping libcrypto was an eighth of a short run's instructions. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "crypto.h"
#include "dl_crypto.h"
#include "sha256.h"

void rb_sha256(const void *data, size_t len, uint8_t out[RB_SHA256_LEN]) {
  struct rb_sha256_ctx c;
  rb_sha256_init(&c);
  rb_sha256_update(&c, data, len);
  rb_sha256_final(&c, out);
}

void rb_sha256_2(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[RB_SHA256_LEN]) {
  struct rb_sha256_ctx c;
  rb_sha256_init(&c);
  rb_sha256_update(&c, a, alen);
  rb_sha256_update(&c, b, blen);
  rb_sha256_final(&c, out);
}

/* RFC 2104 */
int rb_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                   uint8_t out[RB_SHA256_LEN]) {
  uint8_t k[64] = {0}, pad[64], inner[RB_SHA256_LEN];
  if (keylen > sizeof k)
    rb_sha256(key, keylen, k);
  else if (keylen)
    memcpy(k, key, keylen);
  struct rb_sha256_ctx c;
  for (int i = 0; i < 64; i++)
    pad[i] = k[i] ^ 0x36;
  rb_sha256_init(&c);
  rb_sha256_update(&c, pad, sizeof pad);
  rb_sha256_update(&c, data, len);
  rb_sha256_final(&c, inner);
  for (int i = 0; i < 64; i++)
    pad[i] = k[i] ^ 0x5c;
  rb_sha256_init(&c);
  rb_sha256_update(&c, pad, sizeof pad);
  rb_sha256_update(&c, inner, sizeof inner);
  rb_sha256_final(&c, out);
  rb_cleanse(k, sizeof k);
  rb_cleanse(pad, sizeof pad);
  rb_cleanse(inner, sizeof inner);
  rb_cleanse(&c, sizeof c);
  return 0;
}

int rb_random(void *buf, size_t len) {
  uint8_t *p = buf;
  while (len) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

void rb_cleanse(void *p, size_t len) {
  explicit_bzero(p, len);
}

int rb_ct_memcmp(const void *a, const void *b, size_t len) {
  const volatile uint8_t *x = a, *y = b;
  uint8_t d = 0;
  for (size_t i = 0; i < len; i++)
    d |= x[i] ^ y[i];
  return d;
}

/* "000102...ff": a byte's two lowercase digits at twice its value (a journal
 * scan turns a digest per line into hex; one copy per byte is the faster) */
#define HEX_ROW(h) h "0" h "1" h "2" h "3" h "4" h "5" h "6" h "7" h "8" h "9" h "a" h "b" h "c" h "d" h "e" h "f"
static const char hex_pairs[] = HEX_ROW("0") HEX_ROW("1") HEX_ROW("2") HEX_ROW("3") HEX_ROW("4") HEX_ROW("5")
  HEX_ROW("6") HEX_ROW("7") HEX_ROW("8") HEX_ROW("9") HEX_ROW("a") HEX_ROW("b") HEX_ROW("c") HEX_ROW("d")
  HEX_ROW("e") HEX_ROW("f");

void rb_hex(const uint8_t *in, size_t len, char *out, int upper) {
  if (!upper) {
    for (size_t i = 0; i < len; i++)
      memcpy(out + 2 * i, hex_pairs + 2 * in[i], 2);
    out[2 * len] = '\0';
    return;
  }
  const char *digits = "0123456789ABCDEF";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * len] = '\0';
}

int rb_hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

long rb_unhex(const char *in, size_t len, uint8_t *out) {
  if (len % 2)
    return -1;
  for (size_t i = 0; i < len; i += 2) {
    int hi = rb_hexval((unsigned char)in[i]), lo = rb_hexval((unsigned char)in[i + 1]);
    if (hi < 0 || lo < 0)
      return -1;
    out[i / 2] = (uint8_t)(hi << 4 | lo);
  }
  return (long)(len / 2);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t rb_base64_to(const uint8_t *in, size_t len, int url, int pad, char *out) {
  const char *a = url ? B64URL : B64;
  char *p = out;
  size_t i = 0;
  for (; i + 2 < len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    *p++ = a[v >> 18];
    *p++ = a[(v >> 12) & 63];
    *p++ = a[(v >> 6) & 63];
    *p++ = a[v & 63];
  }
  if (i < len) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
    *p++ = a[v >> 18];
    *p++ = a[(v >> 12) & 63];
    if (i + 1 < len)
      *p++ = a[(v >> 6) & 63];
    else if (pad)
      *p++ = '=';
    if (pad)
      *p++ = '=';
  }
  *p = '\0';
  return (size_t)(p - out);
}

char *rb_base64(const uint8_t *in, size_t len, int url, int pad, size_t *outlen) {
  char *out = malloc(RB_BASE64_SIZE(len));
  if (!out)
    return NULL;
  size_t n = rb_base64_to(in, len, url, pad, out);
  if (outlen)
    *outlen = n;
  return out;
}

static int b64val(char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+' || c == '-')
    return 62;
  if (c == '/' || c == '_')
    return 63;
  return -1;
}

long rb_unbase64(const char *in, size_t len, uint8_t *out) {
  while (len > 0 && in[len - 1] == '=')
    len--;
  if (len % 4 == 1)
    return -1;
  uint32_t acc = 0;
  int bits = 0;
  long n = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64val(in[i]);
    if (v < 0)
      return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (uint8_t)(acc >> bits);
    }
  }
  return n;
}

int rb_gcm_seal(const uint8_t key[RB_GCM_KEY_LEN], const void *aad, size_t aadlen,
                const void *pt, size_t ptlen, uint8_t *out) {
  if (rb_dl_crypto(NULL, 0) != 0)
    return -1;
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  int ok = 0, n = 0;
  uint8_t *nonce = out, *ct = out + RB_GCM_NONCE_LEN, *tag = ct + ptlen;
  if (!c || rb_random(nonce, RB_GCM_NONCE_LEN) != 0)
    goto done;
  if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) != 1)
    goto done;
  if (aadlen && EVP_EncryptUpdate(c, NULL, &n, aad, (int)aadlen) != 1)
    goto done;
  if (EVP_EncryptUpdate(c, ct, &n, pt, (int)ptlen) != 1)
    goto done;
  if (EVP_EncryptFinal_ex(c, ct + n, &n) != 1)
    goto done;
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, RB_GCM_TAG_LEN, tag) != 1)
    goto done;
  ok = 1;
done:
  EVP_CIPHER_CTX_free(c);
  return ok ? 0 : -1;
}

long rb_gcm_open(const uint8_t key[RB_GCM_KEY_LEN], const void *aad, size_t aadlen,
                 const uint8_t *in, size_t inlen, uint8_t *out) {
  if (inlen < RB_GCM_OVERHEAD)
    return -1;
  size_t ctlen = inlen - RB_GCM_OVERHEAD;
  const uint8_t *nonce = in, *ct = in + RB_GCM_NONCE_LEN, *tag = ct + ctlen;
  if (rb_dl_crypto(NULL, 0) != 0)
    return -1;
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  long result = -1;
  int n = 0, m = 0;
  if (!c)
    return -1;
  if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) != 1)
    goto done;
  if (aadlen && EVP_DecryptUpdate(c, NULL, &n, aad, (int)aadlen) != 1)
    goto done;
  if (EVP_DecryptUpdate(c, out, &n, ct, (int)ctlen) != 1)
    goto done;
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, RB_GCM_TAG_LEN, (void *)tag) != 1)
    goto done;
  if (EVP_DecryptFinal_ex(c, out + n, &m) != 1)
    goto done;
  result = n + m;
done:
  EVP_CIPHER_CTX_free(c);
  return result;
}
