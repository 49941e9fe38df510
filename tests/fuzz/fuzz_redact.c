/*
 * The redactor: the input is secrets and a text, separated by 0xFF bytes
 * (the last piece is the text; a secret whose first byte is 0xFE is added
 * as a literal, without derived forms). Invariants: a registered value never
 * survives scrubbing, and neither does its hex in either case; scrubbing
 * that reports a clean text only does so when it holds no registered value.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "redact.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SECRETS 8

struct piece {
  const char *p;
  size_t n;
  int literal;
};

/* A value is checked only when it cannot be made up of the marker's own
 * bytes next to other text ("ED]x" after a replacement is not a leak). */
static int checkable(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (memchr(RB_REDACTED, s[i], sizeof RB_REDACTED - 1))
      return 0;
  return n >= RB_REDACT_MIN;
}

static void must_not_hold(const char *out, size_t outlen, const char *s, size_t n, const char *what) {
  if (checkable(s, n) && memmem(out, outlen, s, n)) {
    fprintf(stderr, "fuzz: %s of a secret (%zu bytes) survived scrubbing\n", what, n);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct piece pieces[MAX_SECRETS + 1];
  int np = 0;
  const char *p = (const char *)data, *end = p + size;
  while (np < MAX_SECRETS) {
    const char *sep = memchr(p, 0xFF, (size_t)(end - p));
    if (!sep)
      break;
    pieces[np].literal = sep > p && (unsigned char)p[0] == 0xFE;
    pieces[np].p = p + pieces[np].literal;
    pieces[np].n = (size_t)(sep - pieces[np].p);
    np++;
    p = sep + 1;
  }
  /* an exact-size copy of the text, so ASan sees a read past its end */
  size_t tlen = (size_t)(end - p);
  char *text = malloc(tlen ? tlen : 1);
  memcpy(text, p, tlen);

  struct rb_redactor *r = rb_redactor_new(NULL, NULL);
  for (int i = 0; i < np; i++) {
    int rc = pieces[i].literal ? rb_redactor_add_literal(r, pieces[i].p, pieces[i].n, NULL)
                               : rb_redactor_add(r, pieces[i].p, pieces[i].n, NULL);
    if (rc != 0) {
      fprintf(stderr, "fuzz: adding a secret failed without a memory limit\n");
      abort();
    }
  }
  size_t outlen = 0;
  char *out = NULL;
  int rc = rb_redactor_scrub(r, text, tlen, &out, &outlen);
  if (rc != RB_SCRUB_CLEAN && rc != RB_SCRUB_CHANGED) {
    fprintf(stderr, "fuzz: scrubbing returned %d without a memory limit\n", rc);
    abort();
  }
  const char *res = rc == RB_SCRUB_CHANGED ? out : text;
  size_t rlen = rc == RB_SCRUB_CHANGED ? outlen : tlen;
  for (int i = 0; i < np; i++) {
    must_not_hold(res, rlen, pieces[i].p, pieces[i].n, "the value");
    if (!pieces[i].literal && pieces[i].n >= RB_REDACT_MIN && pieces[i].n <= 512) {
      char hex[1025];
      rb_hex((const uint8_t *)pieces[i].p, pieces[i].n, hex, 0);
      must_not_hold(res, rlen, hex, 2 * pieces[i].n, "the hex");
      rb_hex((const uint8_t *)pieces[i].p, pieces[i].n, hex, 1);
      must_not_hold(res, rlen, hex, 2 * pieces[i].n, "the upper-case hex");
    }
  }
  if (rc == RB_SCRUB_CHANGED)
    rb_redactor_free_text(r, out, outlen);
  free(text);
  rb_redactor_free(r);
  return 0;
}
