/* The journal: hash chain, HMAC, verification naming the first bad seq,
 * torn tails, reopening, and the per-run lock. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "journal.h"
#include "jsonconv.h"

static char dir[256];

static char *path_of(const char *name) {
  static char buf[512];
  snprintf(buf, sizeof buf, "%s/%s", dir, name);
  return buf;
}

static void write_n(const char *path, int n, const char *key) {
  struct rb_scan s;
  unlink(path);
  char err[256];
  struct rb_journal *j = rb_journal_open(path, "run-1", key, key ? strlen(key) : 0, NULL, 1, NULL, err, sizeof err);
  CHECK(j != NULL);
  for (int i = 1; i <= n; i++) {
    json_t *f = json_pack("{s:s, s:i}", "step", "M1", "i", i);
    CHECK(rb_journal_append(j, i == 1 ? "run.started" : "step.memo", f, err, sizeof err) == i);
    json_decref(f);
  }
  rb_journal_release(j);
  (void)s;
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  *len = fread(buf, 1, (size_t)n, f);
  buf[*len] = '\0';
  fclose(f);
  return buf;
}

static void spit(const char *path, const char *buf, size_t len) {
  FILE *f = fopen(path, "wb");
  fwrite(buf, 1, len, f);
  fclose(f);
}

/* the byte offset of line k (1-based) */
static char *line_at(char *buf, int k) {
  char *p = buf;
  for (int i = 1; i < k; i++)
    p = strchr(p, '\n') + 1;
  return p;
}

static int count_cb(void *ud, const char *line, size_t len) {
  (void)line;
  (void)len;
  (*(int *)ud)++;
  return 0;
}

static void test_chain(void) {
  const char *p = path_of("chain.jsonl");
  write_n(p, 10, NULL);
  struct rb_scan s;
  int seen = 0;
  CHECK(rb_journal_scan(p, NULL, 0, 0, count_cb, &seen, &s) == 0);
  CHECK(s.count == 10 && seen == 10 && s.bad_seq == 0 && s.torn_bytes == 0 && !s.hmac);
  struct stat st;
  CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600);

  size_t len;
  char *buf = slurp(p, &len);
  CHECK(strncmp(buf, "{\"seq\":1,\"ts\":\"", 15) == 0);
  CHECK(strstr(buf, "\"prev\":\"" RB_GENESIS "\"") != NULL);

  /* edit a value inside event 4 */
  char *copy = malloc(len + 1);
  memcpy(copy, buf, len + 1);
  char *l4 = line_at(copy, 4);
  char *i4 = strstr(l4, "\"i\":4");
  i4[4] = '9';
  spit(p, copy, len);
  CHECK(rb_journal_scan(p, NULL, 0, 0, NULL, NULL, &s) == 0);
  CHECK(s.bad_seq == 4 && s.count == 3);
  CHECK(strstr(s.reason, "hash does not match") != NULL);

  /* a line whose chain verifies but whose content is not JSON */
  {
    struct rb_journal *j;
    struct rb_scan s2;
    char err[256];
    const char *q = path_of("notjson.jsonl");
    write_n(q, 2, NULL);
    CHECK(rb_journal_scan(q, NULL, 0, 0, NULL, NULL, &s2) == 0);
    j = rb_journal_open(q, "run-1", NULL, 0, &s2, 0, NULL, err, sizeof err);
    json_t *f = json_pack("{s:s}", "x", "y");
    CHECK(rb_journal_append(j, "a", f, err, sizeof err) == 3);
    CHECK(rb_journal_append(j, "b", f, err, sizeof err) == 4);
    json_decref(f);
    rb_journal_release(j);
    CHECK(rb_journal_scan(q, NULL, 0, 0, NULL, NULL, &s2) == 0 && s2.count == 4);
  }

  /* delete event 6 */
  memcpy(copy, buf, len + 1);
  char *l6 = line_at(copy, 6), *l7 = line_at(copy, 7);
  memmove(l6, l7, strlen(l7) + 1);
  spit(p, copy, strlen(copy));
  CHECK(rb_journal_scan(p, NULL, 0, 0, NULL, NULL, &s) == 0);
  CHECK(s.bad_seq == 6 && strstr(s.reason, "expected seq 6, found seq 7") != NULL);

  /* swap events 2 and 3 */
  memcpy(copy, buf, len + 1);
  char *a = line_at(copy, 2), *b = line_at(copy, 3), *c = line_at(copy, 4);
  size_t la = (size_t)(b - a), lb = (size_t)(c - b);
  char *tmp = malloc(la + lb);
  memcpy(tmp, b, lb);
  memcpy(tmp + lb, a, la);
  memcpy(a, tmp, la + lb);
  free(tmp);
  spit(p, copy, len);
  CHECK(rb_journal_scan(p, NULL, 0, 0, NULL, NULL, &s) == 0);
  CHECK(s.bad_seq == 2);

  /* re-chaining an edit (hash recomputed without the key) breaks the next prev */
  free(copy);
  free(buf);
}

static void test_torn_tail(void) {
  const char *p = path_of("torn.jsonl");
  write_n(p, 5, NULL);
  size_t len;
  char *buf = slurp(p, &len);
  /* a crash in the middle of writing event 5 */
  char *l5 = line_at(buf, 5);
  size_t keep = (size_t)(l5 - buf) + 40;
  spit(p, buf, keep);
  struct rb_scan s;
  CHECK(rb_journal_scan(p, NULL, 0, 0, NULL, NULL, &s) == 0);
  CHECK(s.count == 4 && s.bad_seq == 0 && s.torn_bytes == 40 && strlen(s.torn_sha256) == 64);
  CHECK(s.valid_bytes == (off_t)(l5 - buf));

  /* opening cuts it and the chain continues from event 4 */
  char err[256];
  struct rb_journal *j = rb_journal_open(p, "run-1", NULL, 0, &s, 0, NULL, err, sizeof err);
  CHECK(j != NULL);
  json_t *f = json_pack("{s:i}", "bytes", 40);
  CHECK(rb_journal_append(j, "journal.truncated", f, err, sizeof err) == 5);
  json_decref(f);
  rb_journal_release(j);
  CHECK(rb_journal_scan(p, NULL, 0, 0, NULL, NULL, &s) == 0);
  CHECK(s.count == 5 && s.bad_seq == 0 && s.torn_bytes == 0);

  /* a complete but corrupt last line is damage, not a torn tail: a crash
   * cannot leave a whole line with its newline that fails to verify */
  free(buf);
  buf = slurp(p, &len);
  char *l5b = line_at(buf, 5);
  l5b[10] = 'X';
  spit(p, buf, len);
  CHECK(rb_journal_scan(p, NULL, 0, 0, NULL, NULL, &s) == 0);
  CHECK(s.count == 4 && s.torn_bytes == 0 && s.bad_seq == 5);
  char *l3 = line_at(buf, 3);
  l3[12] = 'X';
  spit(p, buf, len);
  CHECK(rb_journal_scan(p, NULL, 0, 0, NULL, NULL, &s) == 0);
  CHECK(s.bad_seq == 3 && s.torn_bytes == 0);
  free(buf);
}

static void test_hmac(void) {
  const char *p = path_of("hmac.jsonl");
  write_n(p, 4, "team-key");
  struct rb_scan s;
  CHECK(rb_journal_scan(p, "team-key", 8, 0, NULL, NULL, &s) == 0);
  CHECK(s.count == 4 && s.hmac && s.bad_seq == 0);
  CHECK(rb_journal_scan(p, "other-key", 9, 0, NULL, NULL, &s) == 0);
  CHECK(s.bad_seq == 1 && strstr(s.reason, "HMAC does not verify") != NULL);
  CHECK(rb_journal_scan(p, NULL, 0, 0, NULL, NULL, &s) == 0);
  CHECK(s.bad_seq == 1 && strstr(s.reason, "RUNBOOK_AUDIT_KEY") != NULL);

  /* stripping the HMAC from one line is detected */
  size_t len;
  char *buf = slurp(p, &len);
  char *l2 = line_at(buf, 2), *l3 = line_at(buf, 3);
  char *h = strstr(l2, "\",\"hmac\":\"");
  CHECK(h != NULL && h < l3);
  size_t cut = 10 + 64;
  memmove(h, h + cut, strlen(h + cut) + 1);
  spit(p, buf, strlen(buf));
  CHECK(rb_journal_scan(p, "team-key", 8, 0, NULL, NULL, &s) == 0);
  CHECK(s.bad_seq == 2);
  free(buf);
}

static void test_reopen(void) {
  const char *p = path_of("reopen.jsonl");
  write_n(p, 3, NULL);
  struct rb_scan s;
  CHECK(rb_journal_scan(p, NULL, 0, 0, NULL, NULL, &s) == 0);
  char err[256];
  struct rb_journal *j = rb_journal_open(p, "run-1", NULL, 0, &s, 0, NULL, err, sizeof err);
  CHECK(rb_journal_seq(j) == 3);
  CHECK(rb_journal_append(j, "run.resumed", NULL, err, sizeof err) == 4);
  /* fields may not override the chain's own keys */
  json_t *f = json_pack("{s:i, s:s, s:s}", "seq", 99, "hash", "x", "note", "kept");
  CHECK(rb_journal_append(j, "note", f, err, sizeof err) == 5);
  json_decref(f);
  rb_journal_release(j);
  CHECK(rb_journal_scan(p, NULL, 0, 0, NULL, NULL, &s) == 0);
  CHECK(s.count == 5 && s.bad_seq == 0);
}

static void test_tip(void) {
  char p[512], tip[512], err[256]; /* path_of's buffer is reused */
  snprintf(p, sizeof p, "%s", path_of("tip.jsonl"));
  snprintf(tip, sizeof tip, "%s", path_of("tip"));
  unlink(p);
  unlink(tip);
  struct rb_tip t;
  CHECK(rb_tip_read(tip, "run-1", NULL, 0, &t, err, sizeof err) == 0);
  struct rb_journal *j = rb_journal_open(p, "run-1", "team-key", 8, NULL, 1, tip, err, sizeof err);
  CHECK(j != NULL);
  /* a new journal's tip exists at once, at seq 0 */
  CHECK(rb_tip_read(tip, "run-1", "team-key", 8, &t, err, sizeof err) == 1 && t.seq == 0);
  CHECK(strcmp(t.hash, RB_GENESIS) == 0 && t.has_hmac && t.verified);
  for (int i = 1; i <= 3; i++)
    CHECK(rb_journal_append(j, "step.memo", NULL, err, sizeof err) == i);
  rb_journal_release(j);
  struct rb_scan s;
  CHECK(rb_journal_scan(p, "team-key", 8, 2, NULL, NULL, &s) == 0 && s.count == 3);
  CHECK(rb_tip_read(tip, "run-1", "team-key", 8, &t, err, sizeof err) == 1);
  CHECK(t.seq == 3 && strcmp(t.hash, s.last_hash) == 0 && t.verified);
  CHECK(strlen(s.mark_hash) == 64 && strcmp(s.mark_hash, s.last_hash) != 0);
  /* another run's tip, or another key, does not verify */
  CHECK(rb_tip_read(tip, "run-2", "team-key", 8, &t, err, sizeof err) == -1 && strstr(err, "HMAC") != NULL);
  CHECK(rb_tip_read(tip, "run-1", "other", 5, &t, err, sizeof err) == -1);
  /* without a key it is read, unverified */
  CHECK(rb_tip_read(tip, "run-1", NULL, 0, &t, err, sizeof err) == 1 && t.has_hmac && !t.verified);
  /* two slots, written in turn: a spoilt newest slot (a torn write) leaves
   * the older one, a tip that lags; with both spoilt it is garbled */
  size_t len;
  char *buf = slurp(tip, &len);
  CHECK(len == 512 && buf[255] == '\n' && buf[511] == '\n' && buf[256 + 14] == '3' && buf[14] == '2');
  buf[256 + 14] = '4';
  spit(tip, buf, len);
  CHECK(rb_tip_read(tip, "run-1", NULL, 0, &t, err, sizeof err) == 1 && t.seq == 2);
  buf[14] = '5';
  spit(tip, buf, len);
  CHECK(rb_tip_read(tip, "run-1", NULL, 0, &t, err, sizeof err) == -1 && strstr(err, "garbled") != NULL);
  free(buf);
  /* a symbolic link is never followed, for the journal nor the tip */
  char link[512];
  snprintf(link, sizeof link, "%s", path_of("link.jsonl"));
  unlink(link);
  CHECK(symlink(p, link) == 0);
  CHECK(rb_journal_scan(link, NULL, 0, 0, NULL, NULL, &s) == -1);
  CHECK(rb_journal_open(link, "run-1", NULL, 0, NULL, 0, NULL, err, sizeof err) == NULL && strstr(err, "symbolic link") != NULL);
}

static void test_lock(void) {
  char holder[256];
  int fd = rb_lock_acquire(path_of("lock"), holder, sizeof holder, NULL);
  CHECK(fd >= 0);
  int fd2 = rb_lock_acquire(path_of("lock"), holder, sizeof holder, NULL);
  CHECK(fd2 == -1);
  char want[64];
  snprintf(want, sizeof want, "pid %ld on ", (long)getpid());
  CHECK(strncmp(holder, want, strlen(want)) == 0 && strstr(holder, " (user ") != NULL);
  rb_lock_release(fd);
  fd2 = rb_lock_acquire(path_of("lock"), holder, sizeof holder, NULL);
  CHECK(fd2 >= 0);
  rb_lock_release(fd2);
}

/* An event as deep as the one nesting limit (jsonconv.h) is written, so it
 * must read back: the reader used to stop at 100 levels while the writer
 * went to 200, and such a journal read as damaged on resume. */
static void test_deep_event(void) {
  const char *p = path_of("deep.jsonl");
  char err[256];
  unlink(p);
  struct rb_journal *j = rb_journal_open(p, "run-1", NULL, 0, NULL, 1, NULL, err, sizeof err);
  CHECK(j != NULL);
  /* the event object is level 1; v holds the other RB_JSON_MAX_DEPTH - 1 */
  json_t *v = json_array();
  for (int i = 2; i < RB_JSON_MAX_DEPTH; i++) {
    json_t *outer = json_array();
    json_array_append_new(outer, v);
    v = outer;
  }
  json_t *f = json_object();
  json_object_set_new(f, "v", v);
  CHECK(rb_journal_append(j, "step.done", f, err, sizeof err) == 1);
  json_decref(f);
  rb_journal_release(j);
  struct rb_scan s;
  int n = 0;
  CHECK(rb_journal_scan(p, NULL, 0, 0, NULL, NULL, &s) == 0);
  CHECK(s.count == 1 && s.bad_seq == 0 && s.torn_bytes == 0);
  CHECK(rb_journal_scan(p, NULL, 0, 0, count_cb, &n, &s) == 0 && n == 1);
}

/* The scan reads in pieces: a line longer than its buffer, and lines that
 * straddle pieces, verify as any other; a torn tail longer than the buffer
 * is measured whole; the scan of the file agrees with the scan of its bytes
 * in memory. */
static void test_long_lines(void) {
  const char *p = path_of("long.jsonl");
  char err[256];
  unlink(p);
  struct rb_journal *j = rb_journal_open(p, "run-1", NULL, 0, NULL, 1, NULL, err, sizeof err);
  CHECK(j != NULL);
  size_t big = 200000;
  char *text = malloc(big + 1);
  memset(text, 'x', big);
  text[big] = '\0';
  for (int i = 1; i <= 40; i++) {
    /* short lines, then one of 200 kB, so lines fall across every piece */
    json_t *f = json_pack("{s:s, s:s}", "step", "S", "v", i == 20 ? text : "short");
    CHECK(rb_journal_append(j, i == 1 ? "run.started" : "step.memo", f, err, sizeof err) == i);
    json_decref(f);
  }
  rb_journal_release(j);
  struct rb_scan s, mem;
  int n = 0;
  CHECK(rb_journal_scan(p, NULL, 0, 20, count_cb, &n, &s) == 0);
  CHECK(s.count == 40 && n == 40 && s.bad_seq == 0 && s.torn_bytes == 0 && strlen(s.mark_hash) == 64);
  size_t len;
  char *buf = slurp(p, &len);
  CHECK(s.valid_bytes == (off_t)len);
  rb_journal_verify(buf, len, NULL, 0, 20, NULL, NULL, &mem);
  CHECK(mem.count == 40 && strcmp(mem.last_hash, s.last_hash) == 0 && strcmp(mem.mark_hash, s.mark_hash) == 0);
  /* a torn tail of 150 kB: the next open cuts exactly that */
  FILE *f = fopen(p, "ab");
  fputs("{\"seq\":41,\"v\":\"", f);
  fwrite(text, 1, 150000 - 15, f); /* 15: the bytes before it */
  fclose(f);
  CHECK(rb_journal_scan(p, NULL, 0, 0, NULL, NULL, &s) == 0);
  CHECK(s.count == 40 && s.torn_bytes == 150000 && s.valid_bytes == (off_t)len && s.bad_seq == 0);
  free(buf);
  free(text);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/rb-journal-test-XXXXXX");
  if (!mkdtemp(dir))
    return 2;
  test_chain();
  test_torn_tail();
  test_hmac();
  test_reopen();
  test_tip();
  test_lock();
  test_deep_event();
  test_long_lines();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
  return check_report("test_journal");
}
