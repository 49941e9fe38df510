/* SHA-256, HMAC, base64/hex and the AES-256-GCM sealing memos rely on. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "crypto.h"

static void hex_of(const uint8_t *d, size_t n, char *out) { rb_hex(d, n, out, 0); }

static void test_sha256(void) {
  uint8_t d[RB_SHA256_LEN];
  char hex[65];
  rb_sha256("abc", 3, d);
  hex_of(d, sizeof d, hex);
  CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  rb_sha256("", 0, d);
  hex_of(d, sizeof d, hex);
  CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_hmac(void) {
  /* RFC 4231 test case 2 */
  uint8_t d[RB_SHA256_LEN];
  char hex[65];
  const char *data = "what do ya want for nothing?";
  CHECK(rb_hmac_sha256("Jefe", 4, data, strlen(data), d) == 0);
  hex_of(d, sizeof d, hex);
  CHECK_STR(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

static void test_base64(void) {
  size_t n;
  char *s = rb_base64((const uint8_t *)"foobar", 6, 0, 1, &n);
  CHECK_STR(s, "Zm9vYmFy");
  free(s);
  s = rb_base64((const uint8_t *)"fo", 2, 0, 1, &n);
  CHECK_STR(s, "Zm8=");
  free(s);
  s = rb_base64((const uint8_t *)"fo", 2, 1, 0, &n);
  CHECK_STR(s, "Zm8");
  free(s);
  uint8_t bin[3] = {0xfb, 0xff, 0xfe};
  s = rb_base64(bin, 3, 0, 1, &n);
  CHECK_STR(s, "+//+");
  free(s);
  s = rb_base64(bin, 3, 1, 1, &n);
  CHECK_STR(s, "-__-");
  free(s);
  uint8_t out[16];
  CHECK(rb_unbase64("Zm9vYg==", 8, out) == 4 && memcmp(out, "foob", 4) == 0);
  CHECK(rb_unbase64("-__-", 4, out) == 3 && memcmp(out, bin, 3) == 0);
  CHECK(rb_unbase64("Zm9v!", 5, out) == -1);
  CHECK(rb_unbase64("Z", 1, out) == -1);
  CHECK(rb_unhex("00ff10", 6, out) == 3 && out[1] == 0xff);
  CHECK(rb_unhex("0g", 2, out) == -1);
  CHECK(rb_unhex("abc", 3, out) == -1);
}

static void test_gcm(void) {
  uint8_t key[RB_GCM_KEY_LEN], other[RB_GCM_KEY_LEN];
  memset(key, 7, sizeof key);
  memset(other, 8, sizeof other);
  const char *pt = "correct horse battery staple";
  size_t ptlen = strlen(pt);
  uint8_t box[64 + RB_GCM_OVERHEAD], box2[64 + RB_GCM_OVERHEAD], out[64];
  const char *aad = "run\0M3\0memo\0db-password";
  size_t aadlen = 23;
  CHECK(rb_gcm_seal(key, aad, aadlen, pt, ptlen, box) == 0);
  CHECK(rb_gcm_seal(key, aad, aadlen, pt, ptlen, box2) == 0);
  /* a fresh nonce each time: the same plaintext never seals the same way */
  CHECK(memcmp(box, box2, ptlen + RB_GCM_OVERHEAD) != 0);
  CHECK(memmem(box, ptlen + RB_GCM_OVERHEAD, "horse", 5) == NULL);
  long n = rb_gcm_open(key, aad, aadlen, box, ptlen + RB_GCM_OVERHEAD, out);
  CHECK(n == (long)ptlen && memcmp(out, pt, ptlen) == 0);
  /* wrong key, wrong associated data (another step's memo), any flipped bit */
  CHECK(rb_gcm_open(other, aad, aadlen, box, ptlen + RB_GCM_OVERHEAD, out) == -1);
  CHECK(rb_gcm_open(key, "run\0M4\0memo\0db-password", 23, box, ptlen + RB_GCM_OVERHEAD, out) == -1);
  for (size_t i = 0; i < ptlen + RB_GCM_OVERHEAD; i += 5) {
    box[i] ^= 1;
    CHECK(rb_gcm_open(key, aad, aadlen, box, ptlen + RB_GCM_OVERHEAD, out) == -1);
    box[i] ^= 1;
  }
  CHECK(rb_gcm_open(key, aad, aadlen, box, RB_GCM_OVERHEAD - 1, out) == -1);
  /* empty plaintext still authenticates */
  CHECK(rb_gcm_seal(key, NULL, 0, "", 0, box) == 0);
  CHECK(rb_gcm_open(key, NULL, 0, box, RB_GCM_OVERHEAD, out) == 0);
}

int main(void) {
  test_sha256();
  test_hmac();
  test_base64();
  test_gcm();
  return check_report("test_crypto");
}
