/*
 * The journal's writer and reader (journal.h): appending an event line with
 * its hash chain (and HMAC) and fsync'ing it before returning; scanning a
 * journal line by line, verifying each line's hash and the chain, and
 * telling a torn last line from damage. No Lua: lua_journal.c binds it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <pwd.h>

#include "crypto.h"
#include "fileio.h"
#include "journal.h"
#include "jsonscan.h"

#define HASH_TAG ",\"hash\":\""
#define HMAC_TAG "\",\"hmac\":\""
#define HASH_TAG_LEN 9
#define HMAC_TAG_LEN 10
#define SUFFIX_HASH (HASH_TAG_LEN + 64 + 2)                      /* ,"hash":"<64>"} */
#define SUFFIX_HMAC (HASH_TAG_LEN + 64 + HMAC_TAG_LEN + 64 + 2) /* ...","hmac":"<64>"} */

struct rb_journal {
  pthread_mutex_t lock;
  int refs;
  int fd;
  off_t size;
  long long seq;
  char prev[65];
  char *run;
  int tip_fd; /* the tip record, or -1 */
  uint8_t *key;
  size_t keylen;
  /* test failpoints from RUNBOOK_FAILPOINT: stop after appending seq N
   * ("after:N") or after writing half of seq N ("torn:N"), by SIGSTOP, so a
   * crash test can SIGKILL the process at an exact point */
  long long stop_after, torn_at;
  int unsynced; /* a lazy append is written but not yet fdatasync'd */
};

static int is_hex64(const char *p) {
  /* without a branch per digit: digits and letters alternate at random, and
   * a scan checks one stored hash per line */
  unsigned bad = 0;
  for (int i = 0; i < 64; i++) {
    unsigned c = (unsigned char)p[i];
    bad |= (c - '0' >= 10u) & (c - 'a' >= 6u);
  }
  return !bad;
}

static void digest_body(const char *line, size_t bodylen, const uint8_t *key, size_t keylen,
                        char hash[65], char mac[65]) {
  /* the hashed bytes are the line up to ,"hash": with a closing brace */
  uint8_t d[RB_SHA256_LEN];
  rb_sha256_2(line, bodylen, "}", 1, d);
  rb_hex(d, sizeof d, hash, 0);
  if (key && mac) {
    char *body = malloc(bodylen + 1);
    if (!body) {
      mac[0] = '\0';
      return;
    }
    memcpy(body, line, bodylen);
    body[bodylen] = '}';
    rb_hmac_sha256(key, keylen, body, bodylen + 1, d);
    rb_hex(d, sizeof d, mac, 0);
    free(body);
  }
}

/* Checks one line's chain: its seq, its prev, its hash (and HMAC). The
 * layout is the writer's own ({"seq":N, ... ,"prev":"<64>","hash":"<64>"}),
 * so seq and prev are read in place; a line laid out otherwise is bad. */
static int check_line(const char *line, size_t len, long long seq, const char *prev, int want_hmac,
                      const uint8_t *key, size_t keylen, char hash_out[65], char *reason,
                      size_t rlen) {
  static const char head[] = "{\"seq\":";
  if (len < sizeof head || memcmp(line, head, sizeof head - 1) != 0) {
    snprintf(reason, rlen, "seq %lld is not an event line", seq);
    return -1;
  }
  long long found = 0;
  size_t i = sizeof head - 1;
  int digits = 0;
  while (i < len && line[i] >= '0' && line[i] <= '9' && digits < 18) {
    found = found * 10 + (line[i++] - '0');
    digits++;
  }
  if (!digits || i >= len || line[i] != ',') {
    snprintf(reason, rlen, "seq %lld is not an event line", seq);
    return -1;
  }
  if (found != seq) {
    snprintf(reason, rlen, "expected seq %lld, found seq %lld (an event was deleted or reordered)", seq,
             found);
    return -1;
  }
  int has_hmac = len >= SUFFIX_HMAC &&
                 memcmp(line + len - SUFFIX_HMAC, HASH_TAG, HASH_TAG_LEN) == 0 &&
                 memcmp(line + len - SUFFIX_HMAC + HASH_TAG_LEN + 64, HMAC_TAG, HMAC_TAG_LEN) == 0;
  size_t suffix = has_hmac ? SUFFIX_HMAC : SUFFIX_HASH;
  static const char prevtag[] = ",\"prev\":\"";
  size_t prevlen = sizeof prevtag - 1 + 64 + 1;
  if (len < suffix + prevlen || memcmp(line + len - suffix, HASH_TAG, HASH_TAG_LEN) != 0 ||
      memcmp(line + len - 2, "\"}", 2) != 0 || !is_hex64(line + len - suffix + HASH_TAG_LEN) ||
      memcmp(line + len - suffix - prevlen, prevtag, sizeof prevtag - 1) != 0 ||
      line[len - suffix - 1] != '"') {
    snprintf(reason, rlen, "seq %lld does not end with its prev and hash", seq);
    return -1;
  }
  if (has_hmac != want_hmac) {
    snprintf(reason, rlen, "seq %lld %s an HMAC while the journal %s", seq,
             has_hmac ? "carries" : "lacks", want_hmac ? "is HMAC-protected" : "is not");
    return -1;
  }
  const char *stored = line + len - suffix + HASH_TAG_LEN;
  if (memcmp(line + len - suffix - 65, prev, 64) != 0) {
    snprintf(reason, rlen, "seq %lld: prev does not match the hash of seq %lld", seq, seq - 1);
    return -1;
  }
  char hash[65], mac[65];
  size_t bodylen = len - suffix;
  digest_body(line, bodylen, key, keylen, hash, has_hmac && key ? mac : NULL);
  if (memcmp(hash, stored, 64) != 0) {
    snprintf(reason, rlen, "seq %lld: hash does not match its content (edited)", seq);
    return -1;
  }
  if (has_hmac) {
    if (!key) {
      snprintf(reason, rlen, "seq %lld: the journal is HMAC-protected; set RUNBOOK_AUDIT_KEY", seq);
      return -1;
    }
    if (rb_ct_memcmp(mac, stored + 64 + HMAC_TAG_LEN, 64) != 0) {
      snprintf(reason, rlen, "seq %lld: HMAC does not verify (edited, or a different audit key)",
               seq);
      return -1;
    }
  }
  memcpy(hash_out, hash, 65);
  return 0;
}

static void scan_init(struct rb_scan *scan, long long mark_seq) {
  memset(scan, 0, sizeof *scan);
  strcpy(scan->last_hash, RB_GENESIS);
  scan->mark_seq = mark_seq;
  if (mark_seq == 0)
    strcpy(scan->mark_hash, RB_GENESIS);
}

/* The state of a scan between lines, so the file can be read in pieces. */
struct verifier {
  const void *key;
  size_t keylen;
  rb_event_fn fn;
  void *ud;
  struct rb_scan *scan;
  char prev[65];
  long long seq;
};

/* Verifies one line (len bytes, without its newline; nl: it had one) that
 * ends at file offset next. Returns 1 when the scan stops there. */
static int verify_line(struct verifier *v, const char *line, size_t len, int nl, off_t next) {
  struct rb_scan *scan = v->scan;
  long long seq = v->seq;
  if (seq == 1)
    scan->hmac = len >= SUFFIX_HMAC &&
                 memcmp(line + len - SUFFIX_HMAC + HASH_TAG_LEN + 64, HMAC_TAG, HMAC_TAG_LEN) == 0;
  char hash[65];
  int bad = !nl; /* a line without its newline never finished */
  int rc = 0;
  if (!bad && check_line(line, len, seq, v->prev, scan->hmac, v->key, v->keylen, hash, scan->reason,
                         sizeof scan->reason) != 0)
    bad = 1;
  else if (bad)
    snprintf(scan->reason, sizeof scan->reason, "seq %lld is incomplete (no newline)", seq);
  if (!bad) {
    rc = v->fn ? v->fn(v->ud, line, len) : rb_json_scan(NULL, line, len);
    if (rc < 0) {
      bad = 1;
      snprintf(scan->reason, sizeof scan->reason, "seq %lld is not valid JSON", seq);
    }
  }
  if (bad) {
    if (!nl) {
      /* an unfinished last line: torn by a crash, cut on the next open.
       * A complete line that does not verify is no crash's doing (an
       * event is one write ending in its newline): it is damage */
      uint8_t d[RB_SHA256_LEN];
      scan->torn_bytes = (off_t)len;
      rb_sha256(line, len, d);
      rb_hex(d, sizeof d, scan->torn_sha256, 0);
    } else {
      scan->bad_seq = seq;
    }
    return 1;
  }
  if (seq == scan->mark_seq)
    memcpy(scan->mark_hash, hash, 65);
  memcpy(v->prev, hash, 65);
  scan->count = seq;
  scan->valid_bytes = next;
  v->seq++;
  return rc > 0;
}

/* Verifies the complete lines in buf, which begins at file offset base;
 * returns how many bytes they took, and sets *stop when the scan ends. */
static size_t verify_lines(struct verifier *v, const char *buf, size_t size, off_t base, int *stop) {
  size_t pos = 0;
  while (pos < size) {
    const char *nl = memchr(buf + pos, '\n', size - pos);
    if (!nl)
      break;
    size_t len = (size_t)(nl - (buf + pos));
    if (verify_line(v, buf + pos, len, 1, base + (off_t)(pos + len + 1))) {
      *stop = 1;
      break;
    }
    pos += len + 1;
  }
  return pos;
}

int rb_journal_scan(const char *path, const void *key, size_t keylen, long long mark_seq,
                    rb_event_fn fn, void *ud, struct rb_scan *scan) {
  scan_init(scan, mark_seq);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return -1;
  /* read in pieces, as the benchmark's floor does: a buffer the size of
   * the journal costs a page fault per 4 KiB; a line longer than the
   * buffer grows it */
  size_t cap = 65536, have = 0;
  char *buf = malloc(cap);
  if (!buf) {
    close(fd);
    errno = ENOMEM;
    return -1;
  }
  struct verifier v = {key, keylen, fn, ud, scan, RB_GENESIS, 1};
  off_t base = 0; /* the file offset of buf[0] */
  int stop = 0;
  for (;;) {
    ssize_t n = read(fd, buf + have, cap - have);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      /* the end (or a read error, taken as the end, as before): what is
       * left has no newline */
      if (have > 0)
        verify_line(&v, buf, have, 0, base + (off_t)have);
      break;
    }
    have += (size_t)n;
    size_t used = verify_lines(&v, buf, have, base, &stop);
    if (stop)
      break;
    memmove(buf, buf + used, have - used);
    have -= used;
    base += (off_t)used;
    if (have == cap) {
      char *grown = realloc(buf, cap * 2);
      if (!grown) {
        free(buf);
        close(fd);
        errno = ENOMEM;
        return -1;
      }
      buf = grown;
      cap *= 2;
    }
  }
  close(fd);
  free(buf);
  memcpy(scan->last_hash, v.prev, 65);
  return 0;
}

void rb_journal_verify(const char *buf, size_t size, const void *key, size_t keylen, long long mark_seq,
                       rb_event_fn fn, void *ud, struct rb_scan *scan) {
  scan_init(scan, mark_seq);
  struct verifier v = {key, keylen, fn, ud, scan, RB_GENESIS, 1};
  int stop = 0;
  size_t used = verify_lines(&v, buf, size, 0, &stop);
  if (!stop && used < size)
    verify_line(&v, buf + used, size - used, 0, (off_t)size);
  memcpy(scan->last_hash, v.prev, 65);
}

static long long env_failpoint(const char *kind) {
  const char *fp = getenv("RUNBOOK_FAILPOINT");
  size_t n = strlen(kind);
  if (!fp || strncmp(fp, kind, n) != 0 || fp[n] != ':')
    return 0;
  return atoll(fp + n + 1);
}

static const char *open_error(int e) {
  return e == ELOOP ? "a symbolic link; store files are never followed (replace it with the run's own file)"
                    : strerror(e);
}

static void tip_mac(const struct rb_journal *j, long long seq, const char *hash, char mac[65]) {
  char msg[512];
  int n = snprintf(msg, sizeof msg, "runbook-tip 1 %s %lld %s", j->run, seq, hash);
  uint8_t d[RB_SHA256_LEN];
  rb_hmac_sha256(j->key, j->keylen, msg, n > 0 && (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1, d);
  rb_hex(d, sizeof d, mac, 0);
}

#define TIP_SLOT 256

/* The tip file holds two fixed slots, written in turn (seq N goes to slot
 * N % 2) by one pwrite each: cheap, and a write torn by a power cut spoils
 * one slot only, whose checksum then fails, leaving the other (one event
 * older: a tip that lags). Not synced: a lost update only makes it lag. */
static void write_tip_slot(struct rb_journal *j, long long seq, int slot) {
  char rec[TIP_SLOT + 1], mac[65] = "-";
  if (j->key)
    tip_mac(j, seq, j->prev, mac);
  int n = snprintf(rec, sizeof rec, "runbook-tip 1 %lld %s %s", seq, j->prev, mac);
  uint8_t d[RB_SHA256_LEN];
  char sum[65];
  rb_sha256(rec, (size_t)n, d);
  rb_hex(d, sizeof d, sum, 0);
  n += snprintf(rec + n, sizeof rec - (size_t)n, " %s", sum);
  memset(rec + n, ' ', (size_t)(TIP_SLOT - 1 - n));
  rec[TIP_SLOT - 1] = '\n';
  (void)!pwrite(j->tip_fd, rec, TIP_SLOT, (off_t)slot * TIP_SLOT);
}

static void write_tip(struct rb_journal *j) {
  if (j->tip_fd >= 0)
    write_tip_slot(j, j->seq, (int)(j->seq % 2));
}

/* One slot: 1 when it parses and its checksum holds. */
static int parse_tip(const char *rec, size_t len, long long *seq, char hash[65], char mac[65]) {
  char line[TIP_SLOT + 1], sum[65];
  while (len > 0 && rec[len - 1] == ' ')
    len--;
  if (len < 66 || len >= sizeof line)
    return 0;
  memcpy(line, rec, len);
  line[len] = '\0';
  int used = 0;
  if (sscanf(line, "runbook-tip 1 %lld %64s %64s %64s%n", seq, hash, mac, sum, &used) != 4 ||
      (size_t)used != len || *seq < 0 || strlen(hash) != 64 || !is_hex64(hash) ||
      strlen(sum) != 64)
    return 0;
  uint8_t d[RB_SHA256_LEN];
  char want[65];
  rb_sha256(line, len - 65, d);
  rb_hex(d, sizeof d, want, 0);
  return strcmp(want, sum) == 0;
}

int rb_tip_read(const char *path, const char *run, const void *key, size_t keylen,
                struct rb_tip *tip, char *err, size_t errlen) {
  memset(tip, 0, sizeof *tip);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT)
      return 0;
    snprintf(err, errlen, "the tip record %s: %s", path, open_error(errno));
    return -1;
  }
  char buf[4 * TIP_SLOT];
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  if (n < 0) {
    snprintf(err, errlen, "the tip record %s: %s", path, strerror(errno));
    return -1;
  }
  struct rb_journal fake = {.run = (char *)run, .key = (uint8_t *)key, .keylen = keylen};
  int found = 0;
  size_t pos = 0;
  while (pos < (size_t)n) {
    char *nl = memchr(buf + pos, '\n', (size_t)n - pos);
    if (!nl)
      break; /* a slot without its newline is not whole */
    size_t len = (size_t)(nl - (buf + pos));
    long long seq;
    char hash[65], mac[65];
    if (parse_tip(buf + pos, len, &seq, hash, mac)) {
      int has_hmac = strcmp(mac, "-") != 0, verified = 0;
      if (has_hmac && key && keylen) {
        char want[65];
        tip_mac(&fake, seq, hash, want);
        if (strlen(mac) != 64 || rb_ct_memcmp(want, mac, 64) != 0) {
          snprintf(err, errlen, "the tip record %s: HMAC does not verify (edited, or a different audit key)", path);
          return -1;
        }
        verified = 1;
      }
      if (!found || seq > tip->seq) {
        tip->seq = seq;
        memcpy(tip->hash, hash, 65);
        tip->has_hmac = has_hmac;
        tip->verified = verified;
      }
      found = 1;
    }
    pos += len + 1;
  }
  if (!found) {
    snprintf(err, errlen, "the tip record %s is garbled", path);
    return -1;
  }
  return 1;
}

struct rb_journal *rb_journal_open(const char *path, const char *run, const void *key,
                                   size_t keylen, const struct rb_scan *scan, int create,
                                   const char *tip_path, char *err, size_t errlen) {
  int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0), 0600);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", path, open_error(errno));
    return NULL;
  }
  if (scan && scan->torn_bytes > 0) {
    if (ftruncate(fd, scan->valid_bytes) != 0 || fsync(fd) != 0) {
      snprintf(err, errlen, "%s: cannot cut the torn tail: %s", path, strerror(errno));
      close(fd);
      return NULL;
    }
  }
  off_t size = lseek(fd, 0, SEEK_END);
  struct rb_journal *j = calloc(1, sizeof *j);
  if (!j || !(j->run = strdup(run))) {
    free(j);
    close(fd);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  j->tip_fd = -1;
  if (tip_path) {
    j->tip_fd = open(tip_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (j->tip_fd < 0) {
      snprintf(err, errlen, "%s: %s", tip_path, open_error(errno));
      free(j->run);
      free(j);
      close(fd);
      return NULL;
    }
  }
  pthread_mutex_init(&j->lock, NULL);
  j->refs = 1;
  j->fd = fd;
  j->size = size;
  j->seq = scan ? scan->count : 0;
  strcpy(j->prev, scan ? scan->last_hash : RB_GENESIS);
  /* a journal started with an HMAC keeps one; without, stays without */
  if (key && keylen && (!scan || scan->count == 0 || scan->hmac)) {
    j->key = malloc(keylen);
    if (j->key) {
      memcpy(j->key, key, keylen);
      j->keylen = keylen;
    }
  }
  j->stop_after = env_failpoint("after");
  j->torn_at = env_failpoint("torn");
  struct stat tst;
  if (j->tip_fd >= 0 && fstat(j->tip_fd, &tst) == 0 && tst.st_size < 2 * TIP_SLOT) {
    /* a tip made now (a new journal, or one from before tips) starts at
     * the events the caller read, in both slots: never an empty file */
    write_tip_slot(j, j->seq, 0);
    write_tip_slot(j, j->seq, 1);
  }
  if (create && size == 0) {
    /* a new journal's tip exists from the start, and both names are made
     * durable by one directory sync */
    (void)rb_fsync_parent(path);
  }
  return j;
}

const char *const rb_journal_reserved[] = {"seq", "ts", "run", "type", "step", "prev", "hash", "hmac", NULL};

static int reserved(const char *k) {
  for (int i = 0; rb_journal_reserved[i]; i++)
    if (strcmp(k, rb_journal_reserved[i]) == 0)
      return 1;
  return 0;
}

char *rb_journal_format(const char *run, long long seq, const char *prev, const char *type,
                        json_t *fields, const void *key, size_t keylen, const char *ts,
                        char hash[65], size_t *linelen, char *err, size_t errlen) {
  json_t *o = json_object();
  json_object_set_new(o, "seq", json_integer(seq));
  json_object_set_new(o, "ts", json_string(ts));
  json_object_set_new(o, "run", json_string(run));
  json_object_set_new(o, "type", json_string(type));
  json_t *step = fields ? json_object_get(fields, "step") : NULL;
  if (step)
    json_object_set(o, "step", step);
  if (fields) {
    const char *k;
    json_t *v;
    json_object_foreach(fields, k, v) {
      if (!reserved(k))
        json_object_set(o, k, v);
    }
  }
  json_object_set_new(o, "prev", json_string(prev));
  char *body = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
  json_decref(o);
  if (!body) {
    snprintf(err, errlen, "cannot serialise the event");
    return NULL;
  }
  size_t blen = strlen(body) - 1; /* without the closing brace */
  char mac[65];
  digest_body(body, blen, key, keylen, hash, key ? mac : NULL);
  size_t cap = blen + SUFFIX_HMAC + 2;
  char *line = malloc(cap);
  if (!line) {
    free(body);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  int n;
  if (key)
    n = snprintf(line, cap, "%.*s" HASH_TAG "%s" HMAC_TAG "%s\"}\n", (int)blen, body, hash, mac);
  else
    n = snprintf(line, cap, "%.*s" HASH_TAG "%s\"}\n", (int)blen, body, hash);
  free(body);
  *linelen = (size_t)n;
  return line;
}

int rb_journal_check_line(const char *line, size_t len, long long seq, const char *prev,
                          int want_hmac, const void *key, size_t keylen, char hash[65],
                          char *reason, size_t rlen) {
  return check_line(line, len, seq, prev, want_hmac, key, keylen, hash, reason, rlen);
}

static long long append(struct rb_journal *j, const char *type, json_t *fields, int lazy, char *err,
                        size_t errlen) {
  char ts[40];
  pthread_mutex_lock(&j->lock);
  long long seq = j->seq + 1;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  rb_iso_time((double)now.tv_sec + now.tv_nsec / 1e9, ts, sizeof ts);
  char hash[65];
  size_t len;
  char *line = rb_journal_format(j->run, seq, j->prev, type, fields, j->key, j->keylen, ts, hash,
                                 &len, err, errlen);
  if (!line) {
    pthread_mutex_unlock(&j->lock);
    return -1;
  }
  int n = (int)len;

  if (seq == j->torn_at) {
    (void)!write(j->fd, line, (size_t)n / 2);
    fsync(j->fd);
    raise(SIGSTOP);
  }
  if (rb_write_all(j->fd, line, (size_t)n) != 0 || (!lazy && fdatasync(j->fd) != 0)) {
    int e = errno;
    /* leave the file as it was: a half line would be cut as torn anyway,
     * but a later append must not follow it */
    if (ftruncate(j->fd, j->size) == 0)
      fdatasync(j->fd);
    free(line);
    pthread_mutex_unlock(&j->lock);
    snprintf(err, errlen, "cannot write the journal: %s", strerror(e));
    return -1;
  }
  free(line);
  j->unsynced = lazy;
  j->size += n;
  j->seq = seq;
  memcpy(j->prev, hash, 65);
  if (!lazy)
    write_tip(j); /* only now: the event it names is durable */
  pthread_mutex_unlock(&j->lock);
  if (seq == j->stop_after)
    raise(SIGSTOP);
  return seq;
}

long long rb_journal_append(struct rb_journal *j, const char *type, json_t *fields, char *err,
                            size_t errlen) {
  return append(j, type, fields, 0, err, errlen);
}

long long rb_journal_append_lazy(struct rb_journal *j, const char *type, json_t *fields, char *err,
                                 size_t errlen) {
  return append(j, type, fields, 1, err, errlen);
}

int rb_journal_sync(struct rb_journal *j, char *err, size_t errlen) {
  pthread_mutex_lock(&j->lock);
  int rc = 0;
  if (j->unsynced) {
    if (fdatasync(j->fd) != 0) {
      snprintf(err, errlen, "cannot sync the journal: %s", strerror(errno));
      rc = -1;
    } else {
      j->unsynced = 0;
      write_tip(j); /* the lazy events are durable now */
    }
  }
  pthread_mutex_unlock(&j->lock);
  return rc;
}

long long rb_journal_seq(struct rb_journal *j) {
  pthread_mutex_lock(&j->lock);
  long long s = j->seq;
  pthread_mutex_unlock(&j->lock);
  return s;
}

void rb_journal_retain(struct rb_journal *j) {
  pthread_mutex_lock(&j->lock);
  j->refs++;
  pthread_mutex_unlock(&j->lock);
}

void rb_journal_release(struct rb_journal *j) {
  if (!j)
    return;
  pthread_mutex_lock(&j->lock);
  int last = --j->refs == 0;
  pthread_mutex_unlock(&j->lock);
  if (!last)
    return;
  if (j->unsynced && fdatasync(j->fd) == 0)
    write_tip(j);
  close(j->fd);
  if (j->key) {
    rb_cleanse(j->key, j->keylen);
    free(j->key);
  }
  free(j->run);
  if (j->tip_fd >= 0)
    close(j->tip_fd);
  pthread_mutex_destroy(&j->lock);
  free(j);
}

static void holder_text(char *buf, size_t n) {
  char host[HOST_NAME_MAX + 1] = "unknown";
  gethostname(host, sizeof host);
  host[HOST_NAME_MAX] = '\0';
  struct passwd pw, *res = NULL;
  char pwbuf[1024];
  const char *user = NULL;
  if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof pwbuf, &res) == 0 && res)
    user = res->pw_name;
  if (!user)
    user = getenv("USER");
  snprintf(buf, n, "pid %ld on %s (user %s)\n", (long)getpid(), host, user ? user : "unknown");
}

int rb_lock_acquire(const char *path, char *holder, size_t holderlen, int *busy) {
  if (busy)
    *busy = 0;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    snprintf(holder, holderlen, "%s: %s", path, open_error(errno));
    return -1;
  }
  /* The holder writes who it is just after taking the lock, and empties
   * the file just before letting go: a process that finds the lock held
   * but the file empty or half written looks again (taking the lock, if
   * it was let go meanwhile) until the text is whole, within a deadline. */
  struct timespec t0, now, nap = {0, 5 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
      break;
    int e = errno;
    if (e != EWOULDBLOCK) {
      snprintf(holder, holderlen, "%s: %s", path, strerror(e));
      close(fd);
      return -1;
    }
    ssize_t n = pread(fd, holder, holderlen - 1, 0);
    if (n > 0 && holder[n - 1] == '\n') {
      holder[n - 1] = '\0';
      holder[strcspn(holder, "\n")] = '\0';
      if (busy)
        *busy = 1;
      close(fd);
      return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 > 3000) {
      snprintf(holder, holderlen, "another process (it has not written who it is into %s)", path);
      if (busy)
        *busy = 1;
      close(fd);
      return -1;
    }
    nanosleep(&nap, NULL);
  }
  char buf[HOST_NAME_MAX + 1200];
  holder_text(buf, sizeof buf);
  size_t n = strlen(buf);
  /* the whole text in one write, then drop whatever an older holder left */
  if (pwrite(fd, buf, n, 0) == (ssize_t)n && ftruncate(fd, (off_t)n) == 0) {
    /* written */
  }
  return fd;
}
void rb_lock_release(int fd) {
  if (fd >= 0) {
    if (ftruncate(fd, 0) != 0) {
      /* the lock file's content is advisory; the flock is what matters */
    }
    flock(fd, LOCK_UN);
    close(fd);
  }
}
