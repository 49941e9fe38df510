/*
 * Scrubbing is a scan that, at each byte whose value starts some registered
 * pattern, tries every pattern and replaces the longest match. The set is
 * small (a few forms of each secret a run handles), so this beats building
 * an automaton.
 *
 * Most patterns are fixed text. Encodings whose output varies between
 * encoders (which bytes a URL encoder escapes, the case of its hex, how a
 * JSON encoder writes a control character or a non-ASCII one) are matched
 * by decoding the text on the fly and comparing the result with the value,
 * so every encoder's output is caught without listing its variants.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


#include "crypto.h"
#include "redact.h"

/* encoded fragments shorter than this would match ordinary text */
#define MIN_FORM 8

enum kind {
  EXACT,     /* the bytes as they are */
  HEXCASE,   /* hex digits in either case; data kept in lower case */
  URL,       /* data is the value; matches its percent-encoded forms */
  JSON1,     /* data is the value; matches it inside a JSON string */
  JSON2,     /* ... inside a JSON string that is itself inside one */
  REMEMBERED /* too short to scrub, kept so it is known when seen again */
};

struct pattern {
  char *data;
  size_t len;
  enum kind kind;
};

struct rb_redactor {
  pthread_mutex_t lock;
  rb_alloc_fn alloc;
  void *ud;
  struct pattern *pats; /* sorted by length, longest first */
  size_t n, cap;
  /* the patterns that may start at byte c: by[at[c]] .. by[at[c + 1] - 1],
   * indices into pats in its order; rebuilt after patterns were added */
  uint32_t *by;
  size_t by_cap;
  uint32_t at[257];
  int stale;
};

/* ---- allocation ----------------------------------------------------------- */

static void *default_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}

static void *r_alloc(struct rb_redactor *r, size_t n) {
  return r->alloc(r->ud, NULL, 0, n ? n : 1);
}

static void r_free(struct rb_redactor *r, void *p, size_t n) {
  if (p)
    r->alloc(r->ud, p, n ? n : 1, 0);
}

/* wipes, then frees: for anything that held a secret */
static void r_wipe(struct rb_redactor *r, void *p, size_t n) {
  if (p) {
    rb_cleanse(p, n);
    r_free(r, p, n);
  }
}

struct rb_redactor *rb_redactor_new(rb_alloc_fn alloc, void *ud) {
  if (!alloc)
    alloc = default_alloc;
  struct rb_redactor *r = alloc(ud, NULL, 0, sizeof *r);
  if (!r)
    return NULL;
  memset(r, 0, sizeof *r);
  r->alloc = alloc;
  r->ud = ud;
  pthread_mutex_init(&r->lock, NULL);
  return r;
}

void rb_redactor_free(struct rb_redactor *r) {
  if (!r)
    return;
  for (size_t i = 0; i < r->n; i++)
    r_wipe(r, r->pats[i].data, r->pats[i].len);
  r_free(r, r->pats, r->cap * sizeof *r->pats);
  r_free(r, r->by, r->by_cap * sizeof *r->by);
  pthread_mutex_destroy(&r->lock);
  rb_alloc_fn alloc = r->alloc;
  void *ud = r->ud;
  alloc(ud, r, sizeof *r, 0);
}

void rb_redactor_free_text(struct rb_redactor *r, char *text, size_t len) {
  (void)len;
  /* the scrubber's buffers may be larger than the text: free by capacity */
  if (text) {
    size_t cap;
    memcpy(&cap, text - sizeof cap, sizeof cap);
    r_free(r, text - sizeof cap, cap);
  }
}

/* ---- registering ---------------------------------------------------------- */

static int lower(int c) {
  return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* the bytes an occurrence of p may start with (at most 3) */
static int starts(const struct pattern *p, uint8_t out[3]) {
  uint8_t c = (uint8_t)p->data[0];
  int n = 0;
  out[n++] = c;
  switch (p->kind) {
  case HEXCASE:
    if (c >= 'a' && c <= 'f')
      out[n++] = (uint8_t)(c - 32);
    break;
  case URL:
    out[n++] = '%';
    if (c == ' ')
      out[n++] = '+';
    break;
  case JSON1:
  case JSON2:
    if (c != '\\')
      out[n++] = '\\';
    break;
  case EXACT:
    break;
  case REMEMBERED:
    return 0;
  }
  return n;
}

/* Caller holds the lock. -1 when out of memory (the scan then tries every
 * pattern at every byte: slower, never less thorough). */
static int index_patterns(struct rb_redactor *r) {
  uint32_t count[256] = {0};
  uint8_t b[3];
  size_t total = 0;
  for (size_t i = 0; i < r->n; i++)
    for (int k = starts(&r->pats[i], b) - 1; k >= 0; k--, total++)
      count[b[k]]++;
  if (total > r->by_cap) {
    uint32_t *by = r->alloc(r->ud, r->by, r->by_cap * sizeof *by, total * sizeof *by);
    if (!by)
      return -1;
    r->by = by;
    r->by_cap = total;
  }
  r->at[0] = 0;
  for (int c = 0; c < 256; c++)
    r->at[c + 1] = r->at[c] + count[c];
  uint32_t fill[256];
  memcpy(fill, r->at, sizeof fill);
  for (size_t i = 0; i < r->n; i++)
    for (int k = starts(&r->pats[i], b) - 1; k >= 0; k--)
      r->by[fill[b[k]]++] = (uint32_t)i;
  r->stale = 0;
  return 0;
}

/* Caller holds the lock. Returns 1 when added, 0 when already there, -1
 * when out of memory. */
static int add_pattern(struct rb_redactor *r, enum kind kind, const char *s, size_t len) {
  size_t i;
  for (i = 0; i < r->n; i++) {
    const struct pattern *p = &r->pats[i];
    if (p->kind != kind || p->len != len)
      continue;
    size_t k = 0;
    if (kind == HEXCASE)
      while (k < len && p->data[k] == lower((uint8_t)s[k]))
        k++;
    else
      k = memcmp(p->data, s, len) == 0 ? len : 0;
    if (k == len)
      return 0;
  }
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    struct pattern *p = r->alloc(r->ud, r->pats, r->cap * sizeof *p, cap * sizeof *p);
    if (!p)
      return -1;
    r->pats = p;
    r->cap = cap;
  }
  char *copy = r_alloc(r, len);
  if (!copy)
    return -1;
  for (size_t k = 0; k < len; k++)
    copy[k] = kind == HEXCASE ? (char)lower((uint8_t)s[k]) : s[k];
  /* insertion keeps longest first */
  for (i = r->n; i > 0 && r->pats[i - 1].len < len; i--)
    r->pats[i] = r->pats[i - 1];
  r->pats[i].data = copy;
  r->pats[i].len = len;
  r->pats[i].kind = kind;
  r->n++;
  r->stale = 1;
  return 1;
}

static int add_form(struct rb_redactor *r, enum kind kind, const char *s, size_t len) {
  return len >= MIN_FORM && add_pattern(r, kind, s, len) < 0 ? -1 : 0;
}

/* The base64 of v when it sits at byte offset k (0..2) inside a longer
 * blob: encode k filler bytes + v and keep only the characters that depend
 * on v alone. */
static int add_base64_aligned(struct rb_redactor *r, const char *v, size_t len, int k, int url) {
  size_t blen = len + 2, elen = RB_BASE64_SIZE(len + 2);
  uint8_t *buf = r_alloc(r, blen);
  char *enc = r_alloc(r, elen);
  int rc = -1;
  if (buf && enc) {
    memset(buf, 0, 2);
    memcpy(buf + k, v, len);
    size_t n = rb_base64_to(buf, len + (size_t)k, url, 0, enc);
    size_t skip = k == 0 ? 0 : (size_t)k + 1;
    size_t drop = (len + (size_t)k) % 3 == 0 ? 0 : 1;
    rc = n > skip + drop ? add_form(r, EXACT, enc + skip, n - skip - drop) : 0;
  }
  r_wipe(r, buf, blen);
  r_wipe(r, enc, elen);
  return rc;
}

static int is_hex_text(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (rb_hexval((uint8_t)s[i]) < 0)
      return 0;
  return 1;
}

/* some URL encoder would write it differently: it holds a byte outside
 * the unreserved set that every encoder leaves alone */
static int url_differs(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    uint8_t c = (uint8_t)s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '-' || c == '.' || c == '_'))
      return 1;
  }
  return 0;
}

/* some JSON encoder would escape a byte of it ("\/" and "\u00e9" included) */
static int json_differs(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    uint8_t c = (uint8_t)s[i];
    if (c < 0x20 || c == '"' || c == '\\' || c == '/' || c >= 0x7f)
      return 1;
  }
  return 0;
}

static int add_forms(struct rb_redactor *r, const char *s, size_t len) {
  size_t hlen = 2 * len + 1, elen = RB_BASE64_SIZE(len);
  char *hex = r_alloc(r, hlen), *enc = r_alloc(r, elen);
  int rc = hex && enc ? 0 : -1;
  if (rc == 0) {
    rb_hex((const uint8_t *)s, len, hex, 0);
    rc = add_form(r, HEXCASE, hex, 2 * len);
  }
  for (int url = 0; rc == 0 && url <= 1; url++) {
    for (int pad = 0; rc == 0 && pad <= 1; pad++)
      rc = add_form(r, EXACT, enc, rb_base64_to((const uint8_t *)s, len, url, pad, enc));
    for (int k = 0; rc == 0 && k < 3; k++)
      rc = add_base64_aligned(r, s, len, k, url);
  }
  r_wipe(r, hex, hlen);
  r_wipe(r, enc, elen);
  if (rc == 0 && url_differs(s, len) && add_pattern(r, URL, s, len) < 0)
    rc = -1;
  if (rc == 0 && json_differs(s, len) && (add_pattern(r, JSON1, s, len) < 0 || add_pattern(r, JSON2, s, len) < 0))
    rc = -1;
  return rc;
}

/* the value itself: scrubbed when long enough, remembered when not; a hex
 * value in any letter case (also for a literal, so registering the same
 * value both ways finds it known) */
static int add_value(struct rb_redactor *r, const char *s, size_t len, int *is_new) {
  enum kind kind = len < RB_REDACT_MIN ? REMEMBERED : is_hex_text(s, len) ? HEXCASE : EXACT;
  int rc = add_pattern(r, kind, s, len);
  if (is_new)
    *is_new = rc == 1;
  return rc < 0 ? -1 : 0;
}

int rb_redactor_add(struct rb_redactor *r, const char *s, size_t len, int *is_new) {
  if (is_new)
    *is_new = 0;
  if (!r || len == 0)
    return 0;
  pthread_mutex_lock(&r->lock);
  int rc = add_value(r, s, len, is_new);
  if (rc == 0 && len >= RB_REDACT_MIN)
    rc = add_forms(r, s, len);
  pthread_mutex_unlock(&r->lock);
  return rc;
}

int rb_redactor_add_literal(struct rb_redactor *r, const char *s, size_t len, int *is_new) {
  if (is_new)
    *is_new = 0;
  if (!r || len == 0)
    return 0;
  pthread_mutex_lock(&r->lock);
  int rc = add_value(r, s, len, is_new);
  pthread_mutex_unlock(&r->lock);
  return rc;
}

size_t rb_redactor_count(struct rb_redactor *r) {
  pthread_mutex_lock(&r->lock);
  size_t n = 0;
  for (size_t i = 0; i < r->n; i++)
    n += r->pats[i].kind != REMEMBERED;
  pthread_mutex_unlock(&r->lock);
  return n;
}

/* ---- matching --------------------------------------------------------------- */

/* Percent-decodes t while it equals v; returns the length of t consumed, 0
 * when t does not start with an encoding of v. */
static size_t match_url(const char *t, size_t tlen, const char *v, size_t vlen) {
  size_t j = 0;
  for (size_t k = 0; k < vlen; k++) {
    if (j >= tlen)
      return 0;
    uint8_t c = (uint8_t)v[k], x = (uint8_t)t[j];
    if (x == '%' && j + 2 < tlen) {
      int hi = rb_hexval((uint8_t)t[j + 1]), lo = rb_hexval((uint8_t)t[j + 2]);
      if (hi >= 0 && lo >= 0 && (hi << 4 | lo) == c) {
        j += 3;
        continue;
      }
    }
    if (x == c || (x == '+' && c == ' ')) {
      j++;
      continue;
    }
    return 0;
  }
  return j;
}

/* A decoder of the inside of a JSON string, reading the text (in == NULL)
 * or the output of another decoder (a string inside a string). */
struct jdec {
  struct jdec *in;
  const char *t;
  size_t tlen, i;
  uint8_t pend[4]; /* the UTF-8 bytes of a \u escape not yet returned */
  int np, ip;
};

static int jnext(struct jdec *d);

static int jsrc(struct jdec *d) {
  if (d->in)
    return jnext(d->in);
  return d->i < d->tlen ? (uint8_t)d->t[d->i++] : -1;
}

static long jhex4(struct jdec *d) {
  long v = 0;
  for (int k = 0; k < 4; k++) {
    int c = jsrc(d), h = c < 0 ? -1 : rb_hexval(c);
    if (h < 0)
      return -1;
    v = v << 4 | h;
  }
  return v;
}

/* the next decoded byte, or -1 at the end of the text or a bad escape */
static int jnext(struct jdec *d) {
  if (d->ip < d->np)
    return d->pend[d->ip++];
  int c = jsrc(d);
  if (c != '\\')
    return c;
  switch (c = jsrc(d)) {
  case '"':
  case '\\':
  case '/':
    return c;
  case 'b':
    return '\b';
  case 'f':
    return '\f';
  case 'n':
    return '\n';
  case 'r':
    return '\r';
  case 't':
    return '\t';
  case 'u':
    break;
  default:
    return -1;
  }
  long cp = jhex4(d);
  if (cp >= 0xD800 && cp < 0xDC00) {
    if (jsrc(d) != '\\' || jsrc(d) != 'u')
      return -1;
    long lo = jhex4(d);
    if (lo < 0xDC00 || lo > 0xDFFF)
      return -1;
    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
  } else if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) {
    return -1;
  }
  if (cp < 0x80) {
    d->pend[0] = (uint8_t)cp;
    d->np = 1;
  } else if (cp < 0x800) {
    d->pend[0] = (uint8_t)(0xC0 | cp >> 6);
    d->pend[1] = (uint8_t)(0x80 | (cp & 63));
    d->np = 2;
  } else if (cp < 0x10000) {
    d->pend[0] = (uint8_t)(0xE0 | cp >> 12);
    d->pend[1] = (uint8_t)(0x80 | ((cp >> 6) & 63));
    d->pend[2] = (uint8_t)(0x80 | (cp & 63));
    d->np = 3;
  } else {
    d->pend[0] = (uint8_t)(0xF0 | cp >> 18);
    d->pend[1] = (uint8_t)(0x80 | ((cp >> 12) & 63));
    d->pend[2] = (uint8_t)(0x80 | ((cp >> 6) & 63));
    d->pend[3] = (uint8_t)(0x80 | (cp & 63));
    d->np = 4;
  }
  d->ip = 1;
  return d->pend[0];
}

static size_t match_json(const char *t, size_t tlen, const char *v, size_t vlen, int depth) {
  struct jdec d[2] = {{.t = t, .tlen = tlen}, {.in = &d[0]}};
  struct jdec *top = &d[depth - 1];
  for (size_t k = 0; k < vlen; k++)
    if (jnext(top) != (uint8_t)v[k])
      return 0;
  return d[0].i;
}

/* the length of the longest form at the start of t among the patterns
 * listed in idx (all of them when idx is NULL), or 0 */
static size_t match_at(const struct rb_redactor *r, const uint32_t *idx, size_t nidx, const char *t, size_t tlen) {
  size_t best = 0, m;
  for (size_t q = 0; q < nidx; q++) {
    const struct pattern *pt = &r->pats[idx ? idx[q] : q];
    if (pt->len > tlen)
      continue;
    switch (pt->kind) {
    case EXACT:
      if (pt->len > best && memcmp(t, pt->data, pt->len) == 0)
        best = pt->len;
      break;
    case HEXCASE:
      if (pt->len > best) {
        size_t k = 0;
        while (k < pt->len && lower((uint8_t)t[k]) == pt->data[k])
          k++;
        if (k == pt->len)
          best = k;
      }
      break;
    case URL:
      if ((m = match_url(t, tlen, pt->data, pt->len)) > best)
        best = m;
      break;
    case JSON1:
    case JSON2:
      if ((m = match_json(t, tlen, pt->data, pt->len, pt->kind == JSON1 ? 1 : 2)) > best)
        best = m;
      break;
    case REMEMBERED:
      break;
    }
  }
  return best;
}

/* ---- scrubbing --------------------------------------------------------------- */

/* Output buffers carry their capacity in front, so rb_redactor_free_text
 * can hand the allocator the size it was given. */
static int grow(struct rb_redactor *r, char **buf, size_t *cap, size_t need) {
  if (need <= *cap)
    return 0;
  size_t ncap = need * 2, h = sizeof ncap;
  char *base = *buf ? *buf - h : NULL;
  char *grown = r->alloc(r->ud, base, base ? *cap + h : 0, ncap + h);
  if (!grown)
    return -1;
  memcpy(grown, &ncap, h);
  *buf = grown + h;
  *cap = ncap;
  return 0;
}

int rb_redactor_scrub(struct rb_redactor *r, const char *s, size_t len, char **outp, size_t *outlen) {
  if (!r)
    return RB_SCRUB_CLEAN;
  pthread_mutex_lock(&r->lock);
  int indexed = !r->stale || index_patterns(r) == 0;
  char *out = NULL;
  size_t olen = 0, ocap = 0, copied = 0; /* s[copied..i) still to copy */
  for (size_t i = 0; i < len;) {
    size_t m;
    if (indexed) {
      uint8_t c = (uint8_t)s[i];
      m = r->at[c + 1] > r->at[c] ? match_at(r, r->by + r->at[c], r->at[c + 1] - r->at[c], s + i, len - i) : 0;
    } else {
      m = match_at(r, NULL, r->n, s + i, len - i);
    }
    if (!m) {
      i++;
      continue;
    }
    if (grow(r, &out, &ocap, olen + (i - copied) + sizeof RB_REDACTED + (len - i)) != 0) {
      /* out of memory: the caller withholds the whole text */
      rb_redactor_free_text(r, out, olen);
      pthread_mutex_unlock(&r->lock);
      return RB_SCRUB_NOMEM;
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
    return RB_SCRUB_CLEAN;
  memcpy(out + olen, s + copied, len - copied);
  olen += len - copied;
  out[olen] = '\0';
  *outp = out;
  *outlen = olen;
  return RB_SCRUB_CHANGED;
}
