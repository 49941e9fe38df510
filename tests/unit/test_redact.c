/* The redactor: every registered form of a secret is scrubbed, wherever it
 * sits in the text, and nothing else is touched. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "crypto.h"
#include "redact.h"

static char *scrub(struct rb_redactor *r, const char *s) {
  size_t n;
  char *out = rb_redactor_scrub(r, s, strlen(s), &n);
  if (!out)
    return strdup(s);
  char *z = malloc(n + 1);
  memcpy(z, out, n);
  z[n] = '\0';
  free(out);
  return z;
}

#define SCRUBS_TO(r, in, want)                                                       \
  do {                                                                               \
    char *got_ = scrub(r, in);                                                       \
    CHECK_STR(got_, want);                                                           \
    free(got_);                                                                      \
  } while (0)

static void test_forms(void) {
  struct rb_redactor *r = rb_redactor_new();
  const char *pw = "s3cr3t-Pa55word!";
  rb_redactor_add(r, pw, strlen(pw));
  SCRUBS_TO(r, "password=s3cr3t-Pa55word! ok", "password=[REDACTED] ok");
  SCRUBS_TO(r, "twice s3cr3t-Pa55word!s3cr3t-Pa55word!", "twice [REDACTED][REDACTED]");
  SCRUBS_TO(r, "nothing here", "nothing here");

  char hex[64], up[64];
  rb_hex((const uint8_t *)pw, strlen(pw), hex, 0);
  rb_hex((const uint8_t *)pw, strlen(pw), up, 1);
  char line[256];
  snprintf(line, sizeof line, "hex %s and %s.", hex, up);
  SCRUBS_TO(r, line, "hex [REDACTED] and [REDACTED].");

  size_t n;
  char *b64 = rb_base64((const uint8_t *)pw, strlen(pw), 0, 1, &n);
  char *url = rb_base64((const uint8_t *)pw, strlen(pw), 1, 0, &n);
  snprintf(line, sizeof line, "data: %s url: %s", b64, url);
  SCRUBS_TO(r, line, "data: [REDACTED] url: [REDACTED]");
  free(b64);
  free(url);

  /* inside a longer base64 blob, at each byte alignment */
  for (int k = 0; k < 3; k++) {
    char blob[128];
    snprintf(blob, sizeof blob, "%.*sUSER=admin\nPASSWORD=%s\n", k, "xyz", pw);
    char *enc = rb_base64((const uint8_t *)blob, strlen(blob), 0, 1, &n);
    char *out = scrub(r, enc);
    /* the part of the encoding that depends only on the password is gone */
    CHECK(strstr(out, "[REDACTED]") != NULL);
    char *pwb64 = rb_base64((const uint8_t *)pw, strlen(pw), 0, 0, &n);
    CHECK(strstr(out, pwb64) == NULL);
    free(pwb64);
    free(enc);
    free(out);
  }
  rb_redactor_free(r);
}

static void test_short_and_overlap(void) {
  struct rb_redactor *r = rb_redactor_new();
  rb_redactor_add(r, "abc", 3); /* too short: would scrub ordinary words */
  SCRUBS_TO(r, "abcdef", "abcdef");
  rb_redactor_add(r, "token-123", 9);
  rb_redactor_add(r, "token-123456", 12);
  /* the longest registered form wins */
  SCRUBS_TO(r, "x token-123456 y", "x [REDACTED] y");
  SCRUBS_TO(r, "x token-1234 y", "x [REDACTED]4 y");
  CHECK(rb_redactor_count(r) >= 2);
  rb_redactor_add_literal(r, "literal-only", 12);
  SCRUBS_TO(r, "[literal-only]", "[[REDACTED]]");
  rb_redactor_free(r);
}

static void test_binary(void) {
  struct rb_redactor *r = rb_redactor_new();
  const char bin[] = {'k', 'e', 'y', 0, 1, 2, 3, (char)0xff};
  rb_redactor_add(r, bin, sizeof bin);
  char text[32] = "a:";
  memcpy(text + 2, bin, sizeof bin);
  text[2 + sizeof bin] = ':';
  size_t n;
  char *out = rb_redactor_scrub(r, text, 3 + sizeof bin, &n);
  CHECK(out && n == 3 + strlen(RB_REDACTED) && memcmp(out, "a:" RB_REDACTED ":", n) == 0);
  free(out);
  rb_redactor_free(r);
}

int main(void) {
  test_forms();
  test_short_and_overlap();
  test_binary();
  return check_report("test_redact");
}
