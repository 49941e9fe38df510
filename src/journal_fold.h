/*
 * What a resume's fold needs of a journal (journal_fold.c). The run state
 * is a fold over every event (stdlib/runbook/_engine/state.lua), but most
 * of a long run's events change nothing a later event does not set again:
 * a checkpoint or a memo that a later one of the same step and key
 * replaces, and an action, which only counts. The plan notes each verified
 * line as the scan meets it (validating its JSON as the scan must), keeps a
 * copy of the lines the fold may need and drops a checkpoint's copy when a
 * later one replaces it; the lines left out pass the fold's checks as they
 * are (state.check), so leaving them out changes nothing but the cost.
 */
#ifndef RUNBOOK_JOURNAL_FOLD_H
#define RUNBOOK_JOURNAL_FOLD_H

#include <stddef.h>

enum rb_fold_use {
  RB_FOLD_DECODE, /* the fold reads the event: text is the line */
  RB_FOLD_LAST,   /* ... a checkpoint or memo, the last of its step and key so far */
  RB_FOLD_ACTION, /* an action, counted for its step: text is the step's name, or NULL */
  RB_FOLD_GONE,   /* replaced by a later checkpoint or memo (dropped at the next compaction) */
};

struct rb_fold_line {
  char *text; /* owned; NULL for GONE */
  size_t len, cap;
  size_t step, steplen, key, keylen; /* LAST: where its step and key are in text */
  long long seq;
  unsigned char use;  /* enum rb_fold_use */
  unsigned char kind; /* LAST: 1 checkpoint, 2 memo */
};

struct rb_fold_plan {
  struct rb_fold_line *lines; /* in journal order */
  size_t n, cap;
  size_t *slot; /* an open-addressed set of the LAST lines: index + 1 */
  size_t slots, live;
  size_t recent, recent_slot; /* the LAST line added last (index + 1) and its slot: a loop's checkpoints find it first */
  unsigned rebuilds;          /* how many times the set was rebuilt (its slots moved) */
  long long noted; /* lines noted: the next one's seq is noted + 1 */
  long long gone;  /* how many lines were replaced */
  size_t tombs;    /* GONE lines still in lines[] */
  char *last;     /* a copy of the last line when it is an action (the fold reads the last line) */
  size_t lastlen, lastcap;
  int last_action;
  int started; /* 1 once the first event other than journal.truncated was a clean run.started, -1 when it was not */
  int oom;     /* a line could not be noted: the plan is not to be used */
};

/* An rb_event_fn: validates the line's JSON (-1 when it is not) and notes
 * it in the plan (a struct rb_fold_plan *, zeroed to begin with). */
int rb_fold_note(void *plan, const char *line, size_t len);

/* Once every line is noted: the last one becomes one the fold reads. */
void rb_fold_finish(struct rb_fold_plan *plan);

void rb_fold_free(struct rb_fold_plan *plan);

#endif
