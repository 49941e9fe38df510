/*
 * What a resume's fold needs of a journal (journal_fold.c). The run state
 * is a fold over every event (stdlib/runbook/_engine/state.lua), but most
 * of a long run's events change nothing a later event does not set again:
 * a checkpoint or a memo that a later one of the same step and key
 * replaces, and an action, which only counts. The plan notes each verified
 * line as the scan meets it (validating its JSON as the scan must) and
 * then says which lines the fold must decode; the others pass the fold's
 * checks as they are (state.check), so leaving them out changes nothing
 * but the cost.
 */
#ifndef RUNBOOK_JOURNAL_FOLD_H
#define RUNBOOK_JOURNAL_FOLD_H

#include <stddef.h>

enum rb_fold_use {
  RB_FOLD_DECODE,     /* the fold reads the event */
  RB_FOLD_SUPERSEDED, /* a checkpoint or memo a later one replaces */
  RB_FOLD_ACTION,     /* an action: counted for its step (step NULL: none) */
};

struct rb_fold_line {
  const char *text; /* the line in the scanned buffer, without its newline */
  size_t len;
  const char *step, *key; /* plain string values (no escapes), or NULL */
  size_t steplen, keylen;
  unsigned char use;  /* enum rb_fold_use */
  unsigned char kind; /* a candidate to be replaced: 1 checkpoint, 2 memo, else 0 */
};

struct rb_fold_plan {
  struct rb_fold_line *lines;
  size_t n, cap;
  int started; /* 1 once the first event other than journal.truncated was a clean run.started, -1 when it was not */
  int oom;     /* a line could not be noted: the plan is not used */
};

/* An rb_event_fn: validates the line's JSON (-1 when it is not) and notes
 * it in the plan (a struct rb_fold_plan *). */
int rb_fold_note(void *plan, const char *line, size_t len);

/* Decides which lines the fold must decode, once every line is noted:
 * the last line always, a checkpoint or memo unless a later one of the
 * same step and key replaces it. 0, or -1 when out of memory (the plan
 * then says every line is to be decoded). */
int rb_fold_finish(struct rb_fold_plan *plan);

void rb_fold_free(struct rb_fold_plan *plan);

#endif
