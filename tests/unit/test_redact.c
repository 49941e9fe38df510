/* The redactor: every registered form of a secret is scrubbed, wherever it
 * sits in the text, and nothing else is touched. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "crypto.h"
#include "redact.h"

static char *scrub(struct rb_redactor *r, const char *s) {
  size_t n = 0;
  char *out = NULL;
  int rc = rb_redactor_scrub(r, s, strlen(s), &out, &n);
  CHECK(rc != RB_SCRUB_NOMEM);
  if (rc != RB_SCRUB_CHANGED)
    return strdup(s);
  char *z = malloc(n + 1);
  memcpy(z, out, n);
  z[n] = '\0';
  rb_redactor_free_text(r, out, n);
  return z;
}

#define SCRUBS_TO(r, in, want)                                                       \
  do {                                                                               \
    char *got_ = scrub(r, in);                                                       \
    CHECK_STR(got_, want);                                                           \
    free(got_);                                                                      \
  } while (0)

static void test_forms(void) {
  struct rb_redactor *r = rb_redactor_new(NULL, NULL);
  const char *pw = "s3cr3t-Pa55word!";
  CHECK(rb_redactor_add(r, pw, strlen(pw), NULL) == 0);
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
  struct rb_redactor *r = rb_redactor_new(NULL, NULL);
  CHECK(rb_redactor_add(r, "abc", 3, NULL) == 0); /* too short: would scrub ordinary words */
  SCRUBS_TO(r, "abcdef", "abcdef");
  CHECK(rb_redactor_add(r, "token-123", 9, NULL) == 0);
  CHECK(rb_redactor_add(r, "token-123456", 12, NULL) == 0);
  /* the longest registered form wins */
  SCRUBS_TO(r, "x token-123456 y", "x [REDACTED] y");
  SCRUBS_TO(r, "x token-1234 y", "x [REDACTED]4 y");
  CHECK(rb_redactor_count(r) >= 2);
  CHECK(rb_redactor_add_literal(r, "literal-only", 12, NULL) == 0);
  SCRUBS_TO(r, "[literal-only]", "[[REDACTED]]");
  rb_redactor_free(r);
}

static void test_binary(void) {
  struct rb_redactor *r = rb_redactor_new(NULL, NULL);
  const char bin[] = {'k', 'e', 'y', 0, 1, 2, 3, (char)0xff};
  CHECK(rb_redactor_add(r, bin, sizeof bin, NULL) == 0);
  char text[32] = "a:";
  memcpy(text + 2, bin, sizeof bin);
  text[2 + sizeof bin] = ':';
  size_t n = 0;
  char *out = NULL;
  CHECK(rb_redactor_scrub(r, text, 3 + sizeof bin, &out, &n) == RB_SCRUB_CHANGED);
  CHECK(out && n == 3 + strlen(RB_REDACTED) && memcmp(out, "a:" RB_REDACTED ":", n) == 0);
  rb_redactor_free_text(r, out, n);
  rb_redactor_free(r);
}

/* A URL encoder may escape any byte, in either hex case, and a form
 * encoder writes a space as "+": every such spelling is the secret. */
static void test_url_encoded(void) {
  struct rb_redactor *r = rb_redactor_new(NULL, NULL);
  const char *pw = "p+ss/w0rd w?x=1&y";
  CHECK(rb_redactor_add(r, pw, strlen(pw), NULL) == 0);
  SCRUBS_TO(r, "q=p%2Bss%2Fw0rd%20w%3Fx%3D1%26y&n=2", "q=[REDACTED]&n=2");
  SCRUBS_TO(r, "q=p%2bss%2fw0rd%20w%3fx%3d1%26y&n=2", "q=[REDACTED]&n=2");
  SCRUBS_TO(r, "path/p%2Bss/w0rd+w%3Fx=1%26y/end", "path/[REDACTED]/end");
  /* an encoder that escapes unreserved letters too */
  SCRUBS_TO(r, "%70%2B%73s%2Fw0rd%20w%3Fx%3D1%26y", "[REDACTED]");
  /* a near miss stays */
  SCRUBS_TO(r, "p%2Bss%2Fw0rd%20w%3Fx%3D1%26z", "p%2Bss%2Fw0rd%20w%3Fx%3D1%26z");
  SCRUBS_TO(r, "p%2", "p%2");
  rb_redactor_free(r);
}

/* A hex secret is the same secret in upper, lower or mixed case; the hex
 * of any secret likewise. */
static void test_hex_case(void) {
  struct rb_redactor *r = rb_redactor_new(NULL, NULL);
  const char *tok = "9f86d081884c7d65";
  CHECK(rb_redactor_add(r, tok, strlen(tok), NULL) == 0);
  SCRUBS_TO(r, "token 9f86d081884c7d65.", "token [REDACTED].");
  SCRUBS_TO(r, "token 9F86D081884C7D65.", "token [REDACTED].");
  SCRUBS_TO(r, "token 9F86d081884C7d65.", "token [REDACTED].");
  SCRUBS_TO(r, "token 9F86D081884C7D66.", "token 9F86D081884C7D66.");
  const char *pw = "Mixed-Case-pw";
  CHECK(rb_redactor_add(r, pw, strlen(pw), NULL) == 0);
  char hex[64];
  rb_hex((const uint8_t *)pw, strlen(pw), hex, 0);
  hex[0] = '4', hex[1] = 'D'; /* "M" as 4D, the rest lower case */
  char line[128];
  snprintf(line, sizeof line, "<%s>", hex);
  SCRUBS_TO(r, line, "<[REDACTED]>");
  /* a secret that is not hex keeps its case: other-case text is not it */
  SCRUBS_TO(r, "MIXED-CASE-PW", "MIXED-CASE-PW");
  rb_redactor_free(r);
}

/* A secret with a quote, a backslash, a slash, a control character or a
 * non-ASCII character, as any JSON encoder writes it inside a string, and
 * as it reads once that JSON is itself put in a JSON string. */
static void test_json_escaped(void) {
  struct rb_redactor *r = rb_redactor_new(NULL, NULL);
  const char *pw = "a\"b\\c/d\te\x01" "f\xc3\xa9g\xf0\x9f\x94\x91";
  CHECK(rb_redactor_add(r, pw, strlen(pw), NULL) == 0);
  SCRUBS_TO(r, "{\"pw\":\"a\\\"b\\\\c/d\\te\\u0001f\xc3\xa9g\xf0\x9f\x94\x91\"}", "{\"pw\":\"[REDACTED]\"}");
  /* escaped slash, upper-case \u, every non-ASCII character escaped (surrogates for the key) */
  SCRUBS_TO(r, "{\"pw\":\"a\\\"b\\\\c\\/d\\u0009e\\u0001f\\u00E9g\\ud83d\\udd11\"}", "{\"pw\":\"[REDACTED]\"}");
  /* twice: {"body":"{\"pw\":\"a\\\"b...\"}"} */
  SCRUBS_TO(r, "{\"body\":\"{\\\"pw\\\":\\\"a\\\\\\\"b\\\\\\\\c/d\\\\te\\\\u0001f\xc3\xa9g\\\\ud83d\\\\udd11\\\"}\"}",
            "{\"body\":\"{\\\"pw\\\":\\\"[REDACTED]\\\"}\"}");
  /* a wrong escape or a different character is not the secret */
  SCRUBS_TO(r, "a\\\"b\\\\c/d\\te\\u0002f\xc3\xa9g", "a\\\"b\\\\c/d\\te\\u0002f\xc3\xa9g");
  SCRUBS_TO(r, "a\\\"b\\\\c/d\\te\\u00", "a\\\"b\\\\c/d\\te\\u00");
  rb_redactor_free(r);
}

/* is_new tells a first registration from a repeat, short values included
 * (they are remembered but never scrubbed), so a warning is given once. */
static void test_is_new(void) {
  struct rb_redactor *r = rb_redactor_new(NULL, NULL);
  int is_new = -1;
  CHECK(rb_redactor_add(r, "test", 4, &is_new) == 0 && is_new == 1);
  CHECK(rb_redactor_add(r, "test", 4, &is_new) == 0 && is_new == 0);
  CHECK(rb_redactor_add_literal(r, "test", 4, &is_new) == 0 && is_new == 0);
  CHECK(rb_redactor_add(r, "ab", 2, &is_new) == 0 && is_new == 1);
  CHECK(rb_redactor_add(r, "ab", 2, &is_new) == 0 && is_new == 0);
  CHECK(rb_redactor_add(r, "", 0, &is_new) == 0 && is_new == 0);
  CHECK(rb_redactor_add(r, "deadBEEF", 8, &is_new) == 0 && is_new == 1);
  CHECK(rb_redactor_add(r, "DEADbeef", 8, &is_new) == 0 && is_new == 0);
  CHECK(rb_redactor_add_literal(r, "deadbeef", 8, &is_new) == 0 && is_new == 0);
  SCRUBS_TO(r, "a test of ab", "a [REDACTED] of ab");
  rb_redactor_free(r);
}

int main(void) {
  test_forms();
  test_short_and_overlap();
  test_binary();
  test_url_encoded();
  test_hex_case();
  test_json_escaped();
  test_is_new();
  return check_report("test_redact");
}
