/*
 * The redactor: every secret value the process has seen, with its encoded
 * forms, and a scrubber that replaces them in any text bound for the
 * console, a log or the journal. Thread-safe; one per process.
 */
#ifndef RUNBOOK_REDACT_H
#define RUNBOOK_REDACT_H

#include <stddef.h>

#define RB_REDACTED "[REDACTED]"
/* Shorter values would scrub ordinary words; secrets are longer than this. */
#define RB_REDACT_MIN 4

struct rb_redactor;

struct rb_redactor *rb_redactor_new(void);
void rb_redactor_free(struct rb_redactor *r);

/* Registers a value and its hex (lower and upper), base64 and base64url
 * forms (padded or not, at each of the three byte alignments, so the value
 * is found inside a longer encoded blob too). */
void rb_redactor_add(struct rb_redactor *r, const char *s, size_t len);

/* Registers exactly this text, with no derived forms. */
void rb_redactor_add_literal(struct rb_redactor *r, const char *s, size_t len);

/* Returns NULL when s holds nothing registered; otherwise a malloc'd copy
 * with every registered form replaced by [REDACTED] and its length in *outlen. */
char *rb_redactor_scrub(struct rb_redactor *r, const char *s, size_t len, size_t *outlen);

size_t rb_redactor_count(struct rb_redactor *r);

#endif
