/*
 * The redactor: every secret value the process has seen, with its encoded
 * forms, and a scrubber that replaces them in any text bound for the
 * console, a log or the journal. Thread-safe; one per process.
 *
 * It fails closed: when it cannot allocate, adding a secret reports an
 * error (the caller must not use the value) and scrubbing reports that the
 * whole text is to be withheld.
 */
#ifndef RUNBOOK_REDACT_H
#define RUNBOOK_REDACT_H

#include <stddef.h>

#define RB_REDACTED "[REDACTED]"
/* Shorter values would scrub ordinary words; secrets are longer than this. */
#define RB_REDACT_MIN 4
/* Values shorter than this are still redacted, but likely to match
 * ordinary words too: the operator is warned. */
#define RB_REDACT_WARN 8

/* Same contract as lua_Alloc, so a Lua state's allocator can be passed;
 * it must be thread-safe, as the redactor is shared by parallel steps. */
typedef void *(*rb_alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);

struct rb_redactor;

/* alloc NULL: malloc and free. Returns NULL when out of memory. */
struct rb_redactor *rb_redactor_new(rb_alloc_fn alloc, void *ud);
void rb_redactor_free(struct rb_redactor *r);

/* Registers a value and its derived forms: hex in any letter case, base64
 * and base64url (padded or not, at each of the three byte alignments, so
 * the value is found inside a longer encoded blob too), the value in any
 * letter case when it is itself hex, its percent-encoded form (any escape
 * set, either hex case, "+" for a space) and its JSON-escaped form, once or
 * twice escaped (JSON text inside a JSON string).
 * Returns 0, or -1 when out of memory (then the value may be partly
 * registered and must not be used). *is_new (may be NULL) is set when the
 * value was not registered before: values under RB_REDACT_MIN bytes are
 * remembered for that but never scrubbed. */
int rb_redactor_add(struct rb_redactor *r, const char *s, size_t len, int *is_new);

/* Registers exactly this text, with no derived forms (hex text is still
 * matched in any letter case). Same returns. */
int rb_redactor_add_literal(struct rb_redactor *r, const char *s, size_t len, int *is_new);

#define RB_SCRUB_CLEAN 0   /* nothing registered in the text; *out untouched */
#define RB_SCRUB_CHANGED 1 /* *out: a scrubbed copy, for rb_redactor_free_text */
#define RB_SCRUB_NOMEM (-1) /* out of memory: show RB_REDACTED instead of the text */

/* Replaces every registered form in s by [REDACTED]. */
int rb_redactor_scrub(struct rb_redactor *r, const char *s, size_t len, char **out, size_t *outlen);
void rb_redactor_free_text(struct rb_redactor *r, char *text, size_t len);

/* The number of patterns that are scrubbed. */
size_t rb_redactor_count(struct rb_redactor *r);

#endif
