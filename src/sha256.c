/*
 * SHA-256 from FIPS 180-4 (sections 4.1.2, 4.2.2, 5.1.1, 5.3.3, 6.2).
 *
 * Two compression functions: a portable one written straight from the
 * standard, and, on x86-64 processors with the SHA extensions, one using
 * the SHA-NI instructions (SHA256RNDS2 does two rounds, SHA256MSG1/MSG2
 * the message schedule), chosen once at run time. Verified against the
 * FIPS test vectors and against OpenSSL in tests/unit/test_sha256.c.
 */
#include <string.h>

#include "sha256.h"

static const uint32_t K[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t rotr(uint32_t x, int n) {
  return x >> n | x << (32 - n);
}

#define CH(x, y, z) (((x) & (y)) ^ (~(x) & (z)))
#define MAJ(x, y, z) (((x) & (y)) ^ ((x) & (z)) ^ ((y) & (z)))
#define BSIG0(x) (rotr(x, 2) ^ rotr(x, 13) ^ rotr(x, 22))
#define BSIG1(x) (rotr(x, 6) ^ rotr(x, 11) ^ rotr(x, 25))
#define SSIG0(x) (rotr(x, 7) ^ rotr(x, 18) ^ ((x) >> 3))
#define SSIG1(x) (rotr(x, 17) ^ rotr(x, 19) ^ ((x) >> 10))

/* section 6.2.2, for nblocks consecutive 64-byte blocks */
static void compress_portable(uint32_t h[8], const uint8_t *p, size_t nblocks) {
  uint32_t w[64];
  for (; nblocks--; p += 64) {
    for (int t = 0; t < 16; t++)
      w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 | (uint32_t)p[4 * t + 2] << 8 |
             p[4 * t + 3];
    for (int t = 16; t < 64; t++)
      w[t] = SSIG1(w[t - 2]) + w[t - 7] + SSIG0(w[t - 15]) + w[t - 16];
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
      uint32_t t1 = hh + BSIG1(e) + CH(e, f, g) + K[t] + w[t];
      uint32_t t2 = BSIG0(a) + MAJ(a, b, c);
      hh = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <cpuid.h>

/*
 * The SHA extensions keep the state as two registers, ABEF and CDGH (each
 * with A, resp. C, in the high lane). SHA256RNDS2 performs two rounds,
 * taking W[t]+K[t] for those rounds in the low 64 bits of its third operand;
 * SHA256MSG1 and SHA256MSG2 compute the sigma0 and sigma1 parts of the
 * schedule for four words at a time (the W[t-7] term is added in between).
 */
__attribute__((target("sha,sse4.1"))) static void compress_shani(uint32_t h[8], const uint8_t *p,
                                                                 size_t nblocks) {
  const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
  __m128i dcba = _mm_loadu_si128((const __m128i *)&h[0]); /* lanes: a b c d (low to high) */
  __m128i hgfe = _mm_loadu_si128((const __m128i *)&h[4]); /* lanes: e f g h */
  /* ABEF = lanes (f, e, b, a), CDGH = lanes (h, g, d, c) */
  __m128i t = _mm_shuffle_epi32(dcba, 0xB1);     /* b a d c */
  hgfe = _mm_shuffle_epi32(hgfe, 0x1B);          /* h g f e */
  __m128i abef = _mm_alignr_epi8(t, hgfe, 8);    /* f e b a */
  __m128i cdgh = _mm_blend_epi16(hgfe, t, 0xF0); /* h g d c */

  for (; nblocks--; p += 64) {
    __m128i abef0 = abef, cdgh0 = cdgh, g[16]; /* g[r] = W[4r..4r+3] */
    for (int r = 0; r < 4; r++)
      g[r] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * r)), bswap);
    for (int r = 0; r < 16; r++) {
      if (r >= 4) {
        /* W[t-16] + sigma0(W[t-15]), plus W[t-7], plus sigma1(W[t-2]) */
        __m128i x = _mm_sha256msg1_epu32(g[r - 4], g[r - 3]);
        x = _mm_add_epi32(x, _mm_alignr_epi8(g[r - 1], g[r - 2], 4));
        g[r] = _mm_sha256msg2_epu32(x, g[r - 1]);
      }
      __m128i wk = _mm_add_epi32(g[r], _mm_loadu_si128((const __m128i *)&K[4 * r]));
      cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
      abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0E));
    }
    abef = _mm_add_epi32(abef, abef0);
    cdgh = _mm_add_epi32(cdgh, cdgh0);
  }
  /* back to a b c d / e f g h */
  t = _mm_shuffle_epi32(abef, 0x1B);               /* a b e f */
  cdgh = _mm_shuffle_epi32(cdgh, 0xB1);            /* g h c d */
  dcba = _mm_blend_epi16(t, cdgh, 0xF0);           /* a b c d */
  hgfe = _mm_alignr_epi8(cdgh, t, 8);              /* e f g h */
  _mm_storeu_si128((__m128i *)&h[0], dcba);
  _mm_storeu_si128((__m128i *)&h[4], hgfe);
}

static void (*compress)(uint32_t[8], const uint8_t *, size_t) = compress_portable;

/* chosen once, before main, so threads only ever read it */
/* CPUID rather than __builtin_cpu_supports("sha"), which clang 14 lacks:
 * leaf 7 EBX bit 29 is SHA, leaf 1 ECX bit 19 is SSE4.1 */
__attribute__((constructor)) static void compress_pick(void) {
  unsigned a, b, c, d;
  int sse41 = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 19));
  int sha = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29));
  if (sha && sse41)
    compress = compress_shani;
}

void rb_sha256_force_portable(int on) {
  if (on)
    compress = compress_portable;
  else
    compress_pick();
}
#else
#define compress compress_portable
void rb_sha256_force_portable(int on) {
  (void)on;
}
#endif

void rb_sha256_init(struct rb_sha256_ctx *c) {
  static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(c->h, H0, sizeof H0);
  c->bytes = 0;
  c->fill = 0;
}

void rb_sha256_update(struct rb_sha256_ctx *c, const void *data, size_t len) {
  const uint8_t *p = data;
  c->bytes += len;
  if (c->fill) {
    size_t take = 64 - c->fill < len ? 64 - c->fill : len;
    memcpy(c->block + c->fill, p, take);
    c->fill += take;
    p += take;
    len -= take;
    if (c->fill < 64)
      return;
    compress(c->h, c->block, 1);
    c->fill = 0;
  }
  if (len >= 64) {
    compress(c->h, p, len / 64);
    p += len & ~(size_t)63;
    len &= 63;
  }
  memcpy(c->block, p, len);
  c->fill = len;
}

/* section 5.1.1: a 1 bit, zeros, then the length in bits as 64-bit big-endian */
void rb_sha256_final(struct rb_sha256_ctx *c, uint8_t out[32]) {
  uint64_t bits = c->bytes * 8;
  c->block[c->fill++] = 0x80;
  if (c->fill > 56) {
    memset(c->block + c->fill, 0, 64 - c->fill);
    compress(c->h, c->block, 1);
    c->fill = 0;
  }
  memset(c->block + c->fill, 0, 56 - c->fill);
  for (int i = 0; i < 8; i++)
    c->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
  compress(c->h, c->block, 1);
  for (int i = 0; i < 8; i++) {
    out[4 * i] = (uint8_t)(c->h[i] >> 24);
    out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
    out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
    out[4 * i + 3] = (uint8_t)c->h[i];
  }
}
