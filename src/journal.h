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
  long long mark_seq;   /* the seq asked for by the caller (the tip's), 0 = none */
  char mark_hash[65];   /* its hash, "" when the journal does not reach it */
};

/* The names the writer lays out itself; fields by these names are dropped. */
extern const char *const rb_journal_reserved[];

/* Called for each line whose chain verifies. The callback parses the line
 * (the scan does not, so a resume parses each event once): it returns 0 to
 * go on, 1 to stop, or -1 when the line is not valid JSON, which makes the
 * line bad. Without a callback the scan validates the JSON itself. */
typedef int (*rb_event_fn)(void *ud, const char *line, size_t len);

/* Reads and verifies the file. Returns 0 when it could be read (even if
 * damaged: see scan), -1 on an I/O error with errno set (ELOOP for a
 * symbolic link: store files are never followed). key may be NULL. Only
 * an incomplete last line (no newline) is a torn tail; a complete line
 * that does not verify is damage wherever it is. mark_seq > 0 asks for
 * that event's hash in scan->mark_hash. */
int rb_journal_scan(const char *path, const void *key, size_t keylen, long long mark_seq,
                    rb_event_fn fn, void *ud, struct rb_scan *scan);

/* The same over bytes in memory (what rb_journal_scan runs on the file's
 * contents; the fuzz target calls it directly). */
void rb_journal_verify(const char *buf, size_t size, const void *key, size_t keylen, long long mark_seq,
                       rb_event_fn fn, void *ud, struct rb_scan *scan);

/* Opens (creating with mode 0600 when create is set) for appending. The
 * caller has scanned it; the journal continues after scan->count events and
 * scan->valid_bytes bytes. A torn tail is cut here. With tip_path, every
 * append, once durable, then updates the tip record there (one pwrite,
 * not synced: the tip may lag the journal, never lead it). */
struct rb_journal *rb_journal_open(const char *path, const char *run, const void *key,
                                   size_t keylen, const struct rb_scan *scan, int create,
                                   const char *tip_path, char *err, size_t errlen);

/* The tip record: the last durable seq and its hash, kept beside the
 * journal so that a journal cut short is told from one that ended there.
 * Two slots of 256 bytes, written in turn, each a line
 *   runbook-tip 1 <seq> <hash> <hmac or -> <sha256 of the text before it>
 * padded with spaces; the reader takes the whole slot with the highest seq.
 * The HMAC (under the audit key, when the journal has one) covers
 * "runbook-tip 1 <run> <seq> <hash>". */
struct rb_tip {
  long long seq;
  char hash[65];
  int has_hmac;  /* the record carries an HMAC */
  int verified;  /* ... and it verified under the key given */
};

/* Returns 1 with tip filled, 0 when there is no tip file, -1 when it
 * cannot be trusted (no whole slot, a bad HMAC, a symbolic link) with err
 * set. */
int rb_tip_read(const char *path, const char *run, const void *key, size_t keylen,
                struct rb_tip *tip, char *err, size_t errlen);

/* Appends one event: fields is an object whose keys follow seq, ts, run and
 * type. Thread-safe. Returns the new seq, or -1 with err set (the file is
 * then left exactly as before the call). Steals no reference. */
long long rb_journal_append(struct rb_journal *j, const char *type, json_t *fields, char *err,
                            size_t errlen);

/* Formats event seq of run after prev exactly as the journal writes it
 * (the line with its hash, HMAC under key when given, and newline), for a
 * store that keeps lines elsewhere. Returns a malloc'd line of *linelen
 * bytes with its hash, or NULL with err set. */
char *rb_journal_format(const char *run, long long seq, const char *prev, const char *type,
                        json_t *fields, const void *key, size_t keylen, const char *ts,
                        char hash[65], size_t *linelen, char *err, size_t errlen);

/* Verifies one line (without its newline) as event seq after prev, the
 * way a scan does: 0 with its hash, or -1 with reason. */
int rb_journal_check_line(const char *line, size_t len, long long seq, const char *prev,
                          int want_hmac, const void *key, size_t keylen, char hash[65],
                          char *reason, size_t rlen);

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

/* Exclusive lock on a file (per run, and per runbook name while a run is
 * chosen). The holder writes "pid N on HOST (user U)" into the file; a
 * process that finds it held waits briefly for that text, so it can always
 * say who holds it. Returns an fd >= 0, or -1 with the holder (or an
 * error) in holder; *busy is set when another process holds it. */
int rb_lock_acquire(const char *path, char *holder, size_t holderlen, int *busy);
void rb_lock_release(int fd);

#endif
