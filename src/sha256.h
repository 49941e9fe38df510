/* SHA-256 (FIPS 180-4), our own: every run hashes its journal, and going
 * through libcrypto for it meant mapping and relocating libcrypto at every
 * start. Streaming context plus one-shot helpers in crypto.h. */
#ifndef RUNBOOK_SHA256_H
#define RUNBOOK_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct rb_sha256_ctx {
  uint32_t h[8];
  uint64_t bytes;   /* message length so far */
  uint8_t block[64]; /* pending partial block */
  size_t fill;
};

void rb_sha256_init(struct rb_sha256_ctx *c);
void rb_sha256_update(struct rb_sha256_ctx *c, const void *data, size_t len);
/* writes the digest; the context must be initialised again before reuse */
void rb_sha256_final(struct rb_sha256_ctx *c, uint8_t out[32]);

/* for tests: use the portable code even where SHA-NI is there (1), or pick
 * again (0); not thread-safe */
void rb_sha256_force_portable(int on);

#endif
