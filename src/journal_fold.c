/*
 * The fold's plan over a verified journal (journal_fold.h). A line is left
 * out of the fold only when what it would do is known without decoding it,
 * which needs it "clean": an object whose top-level names carry no escape
 * and hold seq, ts, run, type, step and key at most once each, its type,
 * step and key plain strings. Then the decoded event would hold exactly
 * those values, and:
 *  - it passes state.check: ts and run are strings, type is one, and
 *    step.checkpoint and step.memo carry step and key (and a run.started
 *    came first: nothing is left out before one);
 *  - a checkpoint (or memo) sets checkpoints[key] (memos[key]) of its step;
 *    a later clean one of the same step and key sets it again, and nothing
 *    reads the value in between (step.reset and step.undone empty the
 *    checkpoints, which the later one then sets again), so only the last of
 *    each is decoded;
 *  - an action only adds one to its step's count, in any order.
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

static int is(const struct rb_json_member *f, const char *word) {
  size_t n = strlen(word);
  return f->count == 1 && f->plain && f->len == n && memcmp(f->value, word, n) == 0;
}

int rb_fold_note(void *ud, const char *line, size_t len) {
  struct rb_fold_plan *p = ud;
  struct rb_json_member f[F_N] = {{.name = "seq"}, {.name = "ts"},   {.name = "run"},
                                  {.name = "type"}, {.name = "step"}, {.name = "key"}};
  struct rb_json_members m = {f, F_N, 0, 0};
  if (rb_json_members(line, len, &m) != 0)
    return -1;
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 1024;
    struct rb_fold_line *grown = realloc(p->lines, cap * sizeof *grown);
    if (!grown) {
      p->oom = 1;
      return 0;
    }
    p->lines = grown;
    p->cap = cap;
  }
  struct rb_fold_line *l = &p->lines[p->n++];
  memset(l, 0, sizeof *l);
  l->text = line;
  l->len = len;
  l->use = RB_FOLD_DECODE;
  /* each name used below is asked to appear once (is(), count == 1): a
   * repeated one is decoded, where the last of them counts */
  int clean = m.object && !m.escaped_keys && f[F_TYPE].count == 1 && f[F_TYPE].plain;
  if (p->started == 0) {
    /* state.check: the first event that is not a cut's record is run.started */
    if (!clean)
      p->started = -1;
    else if (is(&f[F_TYPE], "run.started"))
      p->started = 1;
    else if (!is(&f[F_TYPE], "journal.truncated"))
      p->started = -1;
    return 0;
  }
  if (p->started < 0 || !clean || f[F_SEQ].count != 1 || f[F_TS].count != 1 || !f[F_TS].string ||
      f[F_RUN].count != 1 || !f[F_RUN].string)
    return 0;
  int step_plain = f[F_STEP].count == 1 && f[F_STEP].plain;
  if (step_plain) {
    l->step = f[F_STEP].value;
    l->steplen = f[F_STEP].len;
  }
  if (is(&f[F_TYPE], "action")) {
    if (step_plain || f[F_STEP].count == 0)
      l->use = RB_FOLD_ACTION;
    return 0;
  }
  int kind = is(&f[F_TYPE], "step.checkpoint") ? 1 : is(&f[F_TYPE], "step.memo") ? 2 : 0;
  if (kind && step_plain && f[F_KEY].count == 1 && f[F_KEY].plain) {
    l->kind = (unsigned char)kind;
    l->key = f[F_KEY].value;
    l->keylen = f[F_KEY].len;
  }
  return 0;
}

static uint64_t mix(uint64_t h, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  return (h ^ 0xff) * 1099511628211ULL; /* ends the field: "ab"+"c" is not "a"+"bc" */
}

static int same(const struct rb_fold_line *a, const struct rb_fold_line *b) {
  return a->kind == b->kind && a->steplen == b->steplen && a->keylen == b->keylen &&
         memcmp(a->step, b->step, a->steplen) == 0 && memcmp(a->key, b->key, a->keylen) == 0;
}

int rb_fold_finish(struct rb_fold_plan *p) {
  if (p->n == 0)
    return 0;
  p->lines[p->n - 1].use = RB_FOLD_DECODE; /* an action there; a checkpoint there is the last of its key */
  size_t candidates = 0;
  for (size_t i = 0; i < p->n; i++)
    candidates += p->lines[i].kind != 0;
  if (candidates == 0)
    return 0;
  size_t size = 16;
  while (size < candidates * 2)
    size *= 2;
  /* an open-addressed set of (kind, step, key), slots holding line index + 1 */
  size_t *slot = calloc(size, sizeof *slot);
  if (!slot) {
    for (size_t i = 0; i < p->n; i++)
      p->lines[i].use = RB_FOLD_DECODE;
    return -1;
  }
  for (size_t i = p->n; i-- > 0;) {
    struct rb_fold_line *l = &p->lines[i];
    if (!l->kind)
      continue;
    uint64_t h = mix(mix(14695981039346656037ULL ^ l->kind, l->step, l->steplen), l->key, l->keylen);
    size_t at = (size_t)h & (size - 1);
    while (slot[at] && !same(&p->lines[slot[at] - 1], l))
      at = (at + 1) & (size - 1);
    if (slot[at])
      l->use = RB_FOLD_SUPERSEDED; /* a later one of the same step and key replaces it */
    else
      slot[at] = i + 1;
  }
  free(slot);
  return 0;
}

void rb_fold_free(struct rb_fold_plan *p) {
  free(p->lines);
  p->lines = NULL;
  p->n = p->cap = 0;
}
