/*
 * The fold's plan over a verified journal (journal_fold.h). A line is left
 * out of the fold only when what it would do is known without decoding it,
 * which needs it "clean": an object whose top-level names carry no escape,
 * holding seq, ts, run, type, step and key at most once each, its type a
 * plain string (no escapes), ts and run strings. Then the decoded event
 * would hold exactly those values, and:
 *  - it passes state.check: ts and run are strings, type is one, and
 *    step.checkpoint and step.memo carry step and key (and a run.started
 *    came first: nothing is left out before one);
 *  - a checkpoint (or memo) with a plain step and key sets checkpoints[key]
 *    (memos[key]) of its step; a later one of the same step and key sets it
 *    again, and nothing reads the value in between (step.reset and
 *    step.undone empty the checkpoints, which the later one then sets
 *    again), so only the last of each is decoded;
 *  - an action with a plain step, or none, only adds one to its step's
 *    count, in any order.
 * Every event also moves the state's event count, last seq and last ts; the
 * fold makes up the count, and since the last line is always decoded, the
 * last seq and ts come from it (every line has a seq: it begins with one).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "journal_fold.h"
#include "jsonscan.h"

enum { F_SEQ, F_TS, F_RUN, F_TYPE, F_STEP, F_KEY, F_N };

static int is_word(const struct rb_json_member *f, const char *word, size_t n) {
  return f->count == 1 && f->plain && f->len == n && memcmp(f->value, word, n) == 0;
}
#define is(f, word) is_word(f, word, sizeof word - 1)

static uint64_t mix(uint64_t h, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  return (h ^ 0xff) * 1099511628211ULL; /* ends the field: "ab"+"c" is not "a"+"bc" */
}

static uint64_t hash_of(const struct rb_fold_line *l) {
  return mix(mix(14695981039346656037ULL ^ l->kind, l->text + l->step, l->steplen), l->text + l->key,
             l->keylen);
}

static int same(const struct rb_fold_line *a, const struct rb_fold_line *b) {
  return a->kind == b->kind && a->steplen == b->steplen && a->keylen == b->keylen &&
         memcmp(a->text + a->step, b->text + b->step, a->steplen) == 0 &&
         memcmp(a->text + a->key, b->text + b->key, a->keylen) == 0;
}

/* the slot of l's step and key: where it is, or the empty one it would take */
static size_t find(const struct rb_fold_plan *p, const struct rb_fold_line *l) {
  size_t at = (size_t)hash_of(l) & (p->slots - 1);
  while (p->slot[at] && !same(&p->lines[p->slot[at] - 1], l))
    at = (at + 1) & (p->slots - 1);
  return at;
}

/* Drops the GONE lines (keeping the order) and rebuilds the set at a size
 * that leaves it at most half full. */
static int compact(struct rb_fold_plan *p) {
  size_t kept = 0;
  for (size_t i = 0; i < p->n; i++)
    if (p->lines[i].use != RB_FOLD_GONE)
      p->lines[kept++] = p->lines[i];
  p->n = kept;
  p->tombs = 0;
  size_t slots = 64;
  while (slots < p->live * 4)
    slots *= 2;
  size_t *slot = calloc(slots, sizeof *slot);
  if (!slot)
    return -1;
  free(p->slot);
  p->slot = slot;
  p->slots = slots;
  p->recent = 0;
  p->rebuilds++;
  for (size_t i = 0; i < p->n; i++)
    if (p->lines[i].use == RB_FOLD_LAST)
      p->slot[find(p, &p->lines[i])] = i + 1;
  return 0;
}

/* A new line at the end of the plan, with room for len bytes of text
 * (taking over a buffer when one is given). NULL when out of memory (the
 * buffer is freed then). */
static struct rb_fold_line *add(struct rb_fold_plan *p, char *buf, size_t cap, size_t len) {
  if (p->n == p->cap) {
    if (p->tombs > p->n / 2 && compact(p) != 0) {
      free(buf);
      return NULL;
    }
    if (p->n == p->cap) {
      size_t cap2 = p->cap ? p->cap * 2 : 256;
      struct rb_fold_line *grown = realloc(p->lines, cap2 * sizeof *grown);
      if (!grown) {
        free(buf);
        return NULL;
      }
      p->lines = grown;
      p->cap = cap2;
    }
  }
  if (len > cap || !buf) {
    char *b = realloc(buf, len ? len : 1);
    if (!b) {
      free(buf);
      return NULL;
    }
    buf = b;
    cap = len ? len : 1;
  }
  struct rb_fold_line *l = &p->lines[p->n++];
  memset(l, 0, sizeof *l);
  l->text = buf;
  l->cap = cap;
  l->len = len;
  return l;
}

static int note(struct rb_fold_plan *p, const char *line, size_t len, long long seq) {
  struct rb_json_member f[F_N] = {{.name = "seq", .namelen = 3},  {.name = "ts", .namelen = 2},
                                  {.name = "run", .namelen = 3},  {.name = "type", .namelen = 4},
                                  {.name = "step", .namelen = 4}, {.name = "key", .namelen = 3}};
  struct rb_json_members m = {.f = f, .n = F_N};
  if (rb_json_members(line, len, &m) != 0)
    return -1;
  p->last_action = 0;
  /* each name used below is asked to appear once (is(), count == 1): a
   * repeated one is decoded, where the last of them counts */
  int clean = m.object && !m.escaped_keys && f[F_TYPE].count == 1 && f[F_TYPE].plain &&
              f[F_SEQ].count == 1 && f[F_TS].count == 1 && f[F_TS].string && f[F_RUN].count == 1 &&
              f[F_RUN].string && f[F_STEP].count <= 1 && f[F_KEY].count <= 1;
  int leave_out = 0, kind = 0;
  if (p->started == 0) {
    /* state.check: the first event that is not a cut's record is run.started */
    if (clean && is(&f[F_TYPE], "run.started"))
      p->started = 1;
    else if (!clean || !is(&f[F_TYPE], "journal.truncated"))
      p->started = -1;
  } else if (p->started > 0 && clean) {
    int step_plain = f[F_STEP].count == 1 && f[F_STEP].plain;
    if (is(&f[F_TYPE], "action"))
      leave_out = step_plain || f[F_STEP].count == 0;
    else if (step_plain && f[F_KEY].count == 1 && f[F_KEY].plain)
      kind = is(&f[F_TYPE], "step.checkpoint") ? 1 : is(&f[F_TYPE], "step.memo") ? 2 : 0;
  }
  if (leave_out) {
    /* an action: its step's name is kept to count it, and the line itself
     * in case it is the last */
    if (len > p->lastcap) {
      char *b = realloc(p->last, len);
      if (!b)
        return p->oom = 1, 0;
      p->last = b;
      p->lastcap = len;
    }
    memcpy(p->last, line, len);
    p->lastlen = len;
    size_t n = f[F_STEP].count ? f[F_STEP].len : 0;
    struct rb_fold_line *l = add(p, NULL, 0, n);
    if (!l)
      return p->oom = 1, 0;
    if (f[F_STEP].count)
      memcpy(l->text, f[F_STEP].value, n);
    else {
      free(l->text);
      l->text = NULL;
    }
    l->use = RB_FOLD_ACTION;
    l->seq = seq;
    p->last_action = 1;
    return 0;
  }
  char *buf = NULL;
  size_t bufcap = 0, at = 0, replaced = 0;
  unsigned rebuilds = p->rebuilds;
  if (kind && p->slot) {
    /* the one this replaces, if any: its line is gone, and its buffer is this one's */
    struct rb_fold_line probe = {.text = (char *)line, .kind = (unsigned char)kind,
                                 .step = (size_t)(f[F_STEP].value - line), .steplen = f[F_STEP].len,
                                 .key = (size_t)(f[F_KEY].value - line), .keylen = f[F_KEY].len};
    if (p->recent && same(&p->lines[p->recent - 1], &probe))
      at = p->recent_slot;
    else
      at = find(p, &probe);
    replaced = p->slot[at];
    if (replaced) {
      struct rb_fold_line *old = &p->lines[replaced - 1];
      buf = old->text;
      bufcap = old->cap;
      old->text = NULL;
      old->use = RB_FOLD_GONE; /* its slot goes to this line below */
      p->gone++;
      p->tombs++;
    }
  }
  struct rb_fold_line *l = add(p, buf, bufcap, len);
  if (!l)
    return p->oom = 1, 0;
  memcpy(l->text, line, len);
  l->seq = seq;
  l->use = RB_FOLD_DECODE;
  if (!kind)
    return 0;
  l->use = RB_FOLD_LAST;
  l->kind = (unsigned char)kind;
  l->step = (size_t)(f[F_STEP].value - line);
  l->steplen = f[F_STEP].len;
  l->key = (size_t)(f[F_KEY].value - line);
  l->keylen = f[F_KEY].len;
  if (!replaced) {
    p->live++;
    if (!p->slot || p->live * 2 > p->slots) {
      if (compact(p) != 0)
        return p->oom = 1, 0;
      l = &p->lines[p->n - 1];
    }
  }
  if (!replaced || p->rebuilds != rebuilds)
    at = find(p, l); /* a rebuild placed it already when it had one: find gives that slot */
  p->slot[at] = p->n;
  p->recent = p->n;
  p->recent_slot = at;
  return 0;
}

int rb_fold_note(void *ud, const char *line, size_t len) {
  struct rb_fold_plan *p = ud;
  if (p->oom)
    return 0;
  int rc = note(p, line, len, p->noted + 1);
  if (rc == 0)
    p->noted++;
  return rc;
}

void rb_fold_finish(struct rb_fold_plan *p) {
  if (p->oom || !p->last_action || p->n == 0)
    return;
  /* the last line is an action: the fold reads it (its last seq and ts) */
  struct rb_fold_line *l = &p->lines[p->n - 1];
  free(l->text);
  l->text = p->last;
  l->len = p->lastlen;
  l->cap = p->lastcap;
  l->use = RB_FOLD_DECODE;
  p->last = NULL;
  p->lastcap = p->lastlen = 0;
}

void rb_fold_free(struct rb_fold_plan *p) {
  for (size_t i = 0; i < p->n; i++)
    free(p->lines[i].text);
  free(p->lines);
  free(p->slot);
  free(p->last);
  memset(p, 0, sizeof *p);
}
