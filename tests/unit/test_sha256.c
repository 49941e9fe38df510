/* Our SHA-256 (src/sha256.c): the FIPS 180-4 / NIST example vectors, then
 * agreement with OpenSSL on random messages of every length around the
 * block and padding boundaries, fed in random pieces, through both the
 * portable code and (where the processor has it) the SHA-NI code. */
#define OPENSSL_API_COMPAT 0x10100000L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "check.h"
#include "crypto.h"
#include "sha256.h"

static void hex_of(const char *msg, size_t len, char out[65]) {
  uint8_t d[32];
  rb_sha256(msg, len, d);
  rb_hex(d, 32, out, 0);
}

static void test_vectors(void) {
  char h[65];
  hex_of("", 0, h);
  CHECK_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  hex_of("abc", 3, h);
  CHECK_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  hex_of(m448, strlen(m448), h);
  CHECK_STR(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                     "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
  hex_of(m896, strlen(m896), h);
  CHECK_STR(h, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  /* one million 'a', fed 1000 bytes at a time */
  char a[1000];
  memset(a, 'a', sizeof a);
  struct rb_sha256_ctx c;
  uint8_t d[32];
  rb_sha256_init(&c);
  for (int i = 0; i < 1000; i++)
    rb_sha256_update(&c, a, sizeof a);
  rb_sha256_final(&c, d);
  rb_hex(d, 32, h, 0);
  CHECK_STR(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_against_openssl(void) {
  enum { MAX = 1 << 20 };
  uint8_t *buf = malloc(MAX);
  uint64_t x = 0x9e3779b97f4a7c15u;
  for (size_t i = 0; i < MAX; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    buf[i] = (uint8_t)x;
  }
  size_t lens[400], n = 0;
  for (size_t l = 0; l <= 300; l++)
    lens[n++] = l;
  lens[n++] = 4096;
  lens[n++] = 65535;
  lens[n++] = MAX;
  int mismatches = 0;
  for (size_t k = 0; k < n; k++) {
    uint8_t want[32], one[32], pieces[32];
    SHA256(buf, lens[k], want);
    rb_sha256(buf, lens[k], one);
    /* the same message in random pieces */
    struct rb_sha256_ctx c;
    rb_sha256_init(&c);
    size_t off = 0;
    while (off < lens[k]) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      size_t step = (size_t)(x % 150);
      if (step > lens[k] - off)
        step = lens[k] - off;
      rb_sha256_update(&c, buf + off, step);
      off += step;
    }
    rb_sha256_final(&c, pieces);
    if (memcmp(want, one, 32) != 0 || memcmp(want, pieces, 32) != 0) {
      if (mismatches++ < 5)
        fprintf(stderr, "mismatch with OpenSSL at length %zu\n", lens[k]);
    }
  }
  CHECK(mismatches == 0);
  free(buf);
}

static void test_hmac_rfc4231(void) {
  /* RFC 4231 test case 2, through our SHA-256 */
  uint8_t d[32];
  char h[65];
  const char *data = "what do ya want for nothing?";
  CHECK(rb_hmac_sha256("Jefe", 4, data, strlen(data), d) == 0);
  rb_hex(d, 32, h, 0);
  CHECK_STR(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  /* test case 6: a key longer than the block */
  uint8_t key[131];
  memset(key, 0xaa, sizeof key);
  const char *m = "Test Using Larger Than Block-Size Key - Hash Key First";
  CHECK(rb_hmac_sha256(key, sizeof key, m, strlen(m), d) == 0);
  rb_hex(d, 32, h, 0);
  CHECK_STR(h, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

int main(void) {
  for (int portable = 1; portable >= 0; portable--) {
    rb_sha256_force_portable(portable);
    test_vectors();
    test_against_openssl();
    test_hmac_rfc4231();
  }
  return check_report("test_sha256");
}
