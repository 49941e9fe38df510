/*
 * Scrubbing is a scan that, at each byte whose value starts some registered
 * pattern, tries the patterns longest first. The set is small (a few forms
 * of each secret a run handles), so this beats building an automaton.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


#include "crypto.h"
#include "redact.h"

/* encoded fragments shorter than this would match ordinary text */
#define MIN_FORM 8

struct pattern {
  char *data;
  size_t len;
};

struct rb_redactor {
  pthread_mutex_t lock;
  struct pattern *pats; /* sorted by length, longest first */
  size_t n, cap;
  uint8_t first[256];
};

struct rb_redactor *rb_redactor_new(void) {
  struct rb_redactor *r = calloc(1, sizeof *r);
  if (r)
    pthread_mutex_init(&r->lock, NULL);
  return r;
}

void rb_redactor_free(struct rb_redactor *r) {
  if (!r)
    return;
  for (size_t i = 0; i < r->n; i++) {
    rb_cleanse(r->pats[i].data, r->pats[i].len);
    free(r->pats[i].data);
  }
  free(r->pats);
  pthread_mutex_destroy(&r->lock);
  free(r);
}

/* caller holds the lock */
static void add_pattern(struct rb_redactor *r, const char *s, size_t len) {
  size_t i;
  for (i = 0; i < r->n; i++)
    if (r->pats[i].len == len && memcmp(r->pats[i].data, s, len) == 0)
      return;
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    struct pattern *p = realloc(r->pats, cap * sizeof *p);
    if (!p)
      return;
    r->pats = p;
    r->cap = cap;
  }
  char *copy = malloc(len);
  if (!copy)
    return;
  memcpy(copy, s, len);
  /* insertion keeps longest first */
  for (i = r->n; i > 0 && r->pats[i - 1].len < len; i--)
    r->pats[i] = r->pats[i - 1];
  r->pats[i].data = copy;
  r->pats[i].len = len;
  r->n++;
  r->first[(uint8_t)s[0]] = 1;
}

static void add_form(struct rb_redactor *r, const char *s, size_t len) {
  if (len >= MIN_FORM)
    add_pattern(r, s, len);
}

/* The base64 of v when it sits at byte offset k (0..2) inside a longer
 * blob: encode k filler bytes + v and keep only the characters that depend
 * on v alone. */
static void add_base64_aligned(struct rb_redactor *r, const char *v, size_t len, int k, int url) {
  uint8_t *buf = malloc(len + 2);
  if (!buf)
    return;
  memset(buf, 0, 2);
  memcpy(buf + k, v, len);
  size_t n;
  char *enc = rb_base64(buf, len + (size_t)k, url, 0, &n);
  free(buf);
  if (!enc)
    return;
  size_t skip = k == 0 ? 0 : (size_t)k + 1;
  size_t rem = (len + (size_t)k) % 3;
  size_t drop = rem == 0 ? 0 : 1;
  if (n > skip + drop)
    add_form(r, enc + skip, n - skip - drop);
  rb_cleanse(enc, n);
  free(enc);
}

void rb_redactor_add(struct rb_redactor *r, const char *s, size_t len) {
  if (!r || len < RB_REDACT_MIN)
    return;
  pthread_mutex_lock(&r->lock);
  add_pattern(r, s, len);
  char *hex = malloc(2 * len + 1);
  if (hex) {
    rb_hex((const uint8_t *)s, len, hex, 0);
    add_form(r, hex, 2 * len);
    rb_hex((const uint8_t *)s, len, hex, 1);
    add_form(r, hex, 2 * len);
    rb_cleanse(hex, 2 * len);
    free(hex);
  }
  for (int url = 0; url <= 1; url++) {
    for (int pad = 0; pad <= 1; pad++) {
      size_t n;
      char *enc = rb_base64((const uint8_t *)s, len, url, pad, &n);
      if (enc) {
        add_form(r, enc, n);
        rb_cleanse(enc, n);
        free(enc);
      }
    }
    for (int k = 0; k < 3; k++)
      add_base64_aligned(r, s, len, k, url);
  }
  pthread_mutex_unlock(&r->lock);
}

void rb_redactor_add_literal(struct rb_redactor *r, const char *s, size_t len) {
  if (!r || len < RB_REDACT_MIN)
    return;
  pthread_mutex_lock(&r->lock);
  add_pattern(r, s, len);
  pthread_mutex_unlock(&r->lock);
}

size_t rb_redactor_count(struct rb_redactor *r) {
  pthread_mutex_lock(&r->lock);
  size_t n = r->n;
  pthread_mutex_unlock(&r->lock);
  return n;
}

char *rb_redactor_scrub(struct rb_redactor *r, const char *s, size_t len, size_t *outlen) {
  if (!r)
    return NULL;
  pthread_mutex_lock(&r->lock);
  char *out = NULL;
  size_t olen = 0, ocap = 0, copied = 0; /* s[copied..i) still to copy */
  for (size_t i = 0; i < len;) {
    size_t m = 0;
    if (r->first[(uint8_t)s[i]]) {
      for (size_t p = 0; p < r->n; p++) {
        struct pattern *pt = &r->pats[p];
        if (pt->len <= len - i && memcmp(s + i, pt->data, pt->len) == 0) {
          m = pt->len;
          break;
        }
      }
    }
    if (!m) {
      i++;
      continue;
    }
    size_t need = olen + (i - copied) + sizeof RB_REDACTED + (len - i);
    if (need > ocap) {
      ocap = need * 2;
      char *grown = realloc(out, ocap);
      if (!grown) {
        /* out of memory: better to lose the whole text than leak a secret */
        free(out);
        pthread_mutex_unlock(&r->lock);
        out = strdup(RB_REDACTED);
        *outlen = out ? sizeof RB_REDACTED - 1 : 0;
        return out;
      }
      out = grown;
    }
    memcpy(out + olen, s + copied, i - copied);
    olen += i - copied;
    memcpy(out + olen, RB_REDACTED, sizeof RB_REDACTED - 1);
    olen += sizeof RB_REDACTED - 1;
    i += m;
    copied = i;
  }
  pthread_mutex_unlock(&r->lock);
  if (!out)
    return NULL;
  memcpy(out + olen, s + copied, len - copied);
  olen += len - copied;
  *outlen = olen;
  return out;
}
