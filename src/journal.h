/*
 * The journal: an append-only JSON Lines file, one event a line, each line
 *   {"seq":N,"ts":"...","run":"...","type":"...",...,"prev":"<hex>","hash":"<hex>"}
 * optionally followed by ,"hmac":"<hex>" before the closing brace. hash is the
 * SHA-256 of the line's bytes up to (not including) ,"hash": with "}" appended,
 * so it covers prev and therefore the whole chain; hmac is HMAC-SHA256 of the
 * same bytes under the team's audit key. Every append is fsync'd before the
 * call returns.
 */
#ifndef RUNBOOK_JOURNAL_H
#define RUNBOOK_JOURNAL_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#define RB_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"

struct rb_journal;

struct rb_scan {
  long long count;      /* valid events */
  long long bad_seq;    /* first bad seq (0 = none), for damage before the tail */
  char reason[256];     /* why the first bad line is bad */
  off_t valid_bytes;    /* length of the valid prefix */
  off_t torn_bytes;     /* length of a bad last line (0 = none) */
  char torn_sha256[65]; /* digest of the torn bytes, for the record */
  int hmac;             /* the journal carries HMACs */
  char last_hash[65];
};

/* Called for each line whose chain verifies. The callback parses the line
 * (the scan does not, so a resume parses each event once): it returns 0 to
 * go on, 1 to stop, or -1 when the line is not valid JSON, which makes the
 * line bad. Without a callback the scan validates the JSON itself. */
typedef int (*rb_event_fn)(void *ud, const char *line, size_t len);

/* Reads and verifies the file. Returns 0 when it could be read (even if
 * damaged: see scan), -1 on an I/O error with errno set. key may be NULL. */
int rb_journal_scan(const char *path, const void *key, size_t keylen, rb_event_fn fn, void *ud,
                    struct rb_scan *scan);

/* Opens (creating with mode 0600 when create is set) for appending. The
 * caller has scanned it; the journal continues after scan->count events and
 * scan->valid_bytes bytes. A torn tail is cut here. */
struct rb_journal *rb_journal_open(const char *path, const char *run, const void *key,
                                   size_t keylen, const struct rb_scan *scan, int create,
                                   char *err, size_t errlen);

/* Appends one event: fields is an object whose keys follow seq, ts, run and
 * type. Thread-safe. Returns the new seq, or -1 with err set (the file is
 * then left exactly as before the call). Steals no reference. */
long long rb_journal_append(struct rb_journal *j, const char *type, json_t *fields, char *err,
                            size_t errlen);

/* The same, without the fdatasync: the event is durable once a later
 * append, rb_journal_sync or the last release has synced the file. For
 * events written back to back before any side effect (see docs/journal.md). */
long long rb_journal_append_lazy(struct rb_journal *j, const char *type, json_t *fields, char *err,
                                 size_t errlen);
/* fdatasync when a lazy append is pending. 0, or -1 with err set. */
int rb_journal_sync(struct rb_journal *j, char *err, size_t errlen);

long long rb_journal_seq(struct rb_journal *j);
void rb_journal_retain(struct rb_journal *j);
void rb_journal_release(struct rb_journal *j);

/* Exclusive per-run lock. Returns an fd >= 0, or -1 with the holder's
 * "pid N on HOST" (or an error) in holder. */
int rb_lock_acquire(const char *path, char *holder, size_t holderlen);
void rb_lock_release(int fd);

#endif
