/*
 * The journal reader: rb_journal_verify (what rb_journal_scan runs on a
 * file's bytes), its line verifier and the JSON scanner the events go
 * through. The first byte picks a mode:
 *   bit 0 clear: the rest is a journal file as is (the verifier's rejections);
 *   bit 0 set:   each line of the rest is an event's fields, which the
 *                harness wraps as the writer does ({"seq":N,<fields>,
 *                "prev":..., "hash":...}) with a correct chain, so mutations
 *                reach the JSON scanner instead of dying at the hash;
 *   bit 1:       with an HMAC under a fixed key (and the reader given it,
 *                unless bit 2 is also set);
 *   bits 3-7:    the seq whose hash the scan is asked for (0: none).
 * Invariants: the scan's numbers describe the input, and reading an event
 * onto the Lua stack accepts exactly what validating it accepts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "crypto.h"
#include "journal.h"
#include "journal_fold.h"
#include "jsonscan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char KEY[] = "fuzz-audit-key";

struct sink {
  lua_State *L;
  long long events;
};

static int on_event(void *ud, const char *line, size_t len) {
  struct sink *s = ud;
  int top = lua_gettop(s->L);
  int pushed = rb_json_scan(s->L, line, len);
  int valid = rb_json_scan(NULL, line, len);
  if ((pushed == 0) != (valid == 0)) {
    fprintf(stderr, "fuzz: reading an event (%d) and validating it (%d) disagree\n", pushed, valid);
    abort();
  }
  if (pushed == 0 && lua_gettop(s->L) != top + 1) {
    fprintf(stderr, "fuzz: the scanner pushed %d values\n", lua_gettop(s->L) - top);
    abort();
  }
  lua_settop(s->L, top);
  if (pushed != 0)
    return -1;
  s->events++;
  return 0;
}

/* wraps each line of fields as a correctly chained event */
static char *build(const uint8_t *in, size_t n, int hmac, size_t *outlen) {
  size_t cap = n * 2 + 256, len = 0;
  char *out = malloc(cap);
  char prev[65];
  strcpy(prev, RB_GENESIS);
  long long seq = 1;
  size_t pos = 0;
  while (pos < n) {
    const uint8_t *nl = memchr(in + pos, '\n', n - pos);
    size_t flen = nl ? (size_t)(nl - (in + pos)) : n - pos;
    size_t need = len + flen + 300;
    if (need > cap) {
      cap = need * 2;
      out = realloc(out, cap);
    }
    char *line = out + len;
    int h = snprintf(line, 32, "{\"seq\":%lld,", seq);
    memcpy(line + h, in + pos, flen);
    size_t body = (size_t)h + flen;
    body += (size_t)sprintf(line + body, ",\"prev\":\"%s\"", prev);
    uint8_t d[RB_SHA256_LEN];
    line[body] = '}';
    rb_sha256(line, body + 1, d);
    char hash[65], mac[65];
    rb_hex(d, sizeof d, hash, 0);
    size_t l = body;
    if (hmac) {
      rb_hmac_sha256(KEY, sizeof KEY - 1, line, body + 1, d);
      rb_hex(d, sizeof d, mac, 0);
      l += (size_t)sprintf(line + l, ",\"hash\":\"%s\",\"hmac\":\"%s\"}", hash, mac);
    } else {
      l += (size_t)sprintf(line + l, ",\"hash\":\"%s\"}", hash);
    }
    /* a last line without its newline stays torn, as a crash leaves it */
    if (nl)
      line[l++] = '\n';
    len += l;
    memcpy(prev, hash, 65);
    seq++;
    pos += flen + (nl ? 1 : 0);
  }
  *outlen = len;
  return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lua_State *L;
  if (!L) {
    L = luaL_newstate();
    luaL_openlibs(L);
  }
  if (size < 1)
    return 0;
  int mode = data[0];
  int hmac = mode & 2, keyless = mode & 4;
  const uint8_t *rest = data + 1;
  size_t n = size - 1, len = n;
  char *buf;
  if (mode & 1) {
    buf = build(rest, n, hmac, &len);
  } else {
    /* an exact-size copy, so ASan sees any read past the end */
    buf = malloc(n ? n : 1);
    memcpy(buf, rest, n);
  }
  struct sink s = {L, 0};
  struct rb_scan scan;
  const void *key = hmac && !keyless ? KEY : NULL;
  /* the upper bits ask for one event's hash, as a resume asks for the tip's */
  long long mark = mode >> 3;
  rb_journal_verify(buf, len, key, key ? sizeof KEY - 1 : 0, mark, on_event, &s, &scan);
  if (scan.count != s.events || scan.valid_bytes < 0 || (size_t)scan.valid_bytes > len ||
      (scan.torn_bytes && (size_t)(scan.valid_bytes + scan.torn_bytes) != len) ||
      (scan.bad_seq && scan.bad_seq != scan.count + 1) || strlen(scan.last_hash) != 64 ||
      (scan.valid_bytes > 0 && buf[scan.valid_bytes - 1] != '\n') ||
      (mark && (mark <= scan.count) != (strlen(scan.mark_hash) == 64))) {
    fprintf(stderr, "fuzz: inconsistent scan: count %lld events %lld valid %lld torn %lld bad %lld\n",
            scan.count, s.events, (long long)scan.valid_bytes, (long long)scan.torn_bytes, scan.bad_seq);
    abort();
  }
  /* without a callback the scan validates the JSON itself: same verdict */
  struct rb_scan plain;
  rb_journal_verify(buf, len, key, key ? sizeof KEY - 1 : 0, mark, NULL, NULL, &plain);
  if (plain.count != scan.count || plain.valid_bytes != scan.valid_bytes || plain.bad_seq != scan.bad_seq ||
      strcmp(plain.mark_hash, scan.mark_hash) != 0) {
    fprintf(stderr, "fuzz: the scan with and without a callback disagree\n");
    abort();
  }
  /* the resume's fold plan (journal_fold.h) validates alike, and every
   * line is decoded, replaced or an action: none is lost */
  struct rb_fold_plan plan;
  memset(&plan, 0, sizeof plan);
  struct rb_scan folded;
  rb_journal_verify(buf, len, key, key ? sizeof KEY - 1 : 0, mark, rb_fold_note, &plan, &folded);
  rb_fold_finish(&plan);
  long long kept = 0, actions = 0;
  for (size_t i = 0; i < plan.n; i++) {
    const struct rb_fold_line *l = &plan.lines[i];
    if (l->use == RB_FOLD_DECODE || l->use == RB_FOLD_LAST) {
      kept++;
      if (rb_json_scan(NULL, l->text, l->len) != 0 || l->seq < 1 || l->seq > folded.count) {
        fprintf(stderr, "fuzz: the fold plan kept a line it cannot decode\n");
        abort();
      }
    } else if (l->use == RB_FOLD_ACTION) {
      actions++;
    }
  }
  if (!plan.oom && (folded.count != plain.count || folded.bad_seq != plain.bad_seq ||
                    folded.valid_bytes != plain.valid_bytes || plan.noted != folded.count ||
                    kept + actions + plan.gone != folded.count ||
                    (folded.count > 0 && plan.lines[plan.n - 1].use == RB_FOLD_ACTION))) {
    fprintf(stderr, "fuzz: the fold plan disagrees: count %lld/%lld kept %lld actions %lld gone %lld\n",
            folded.count, plain.count, kept, actions, plan.gone);
    abort();
  }
  rb_fold_free(&plan);
  free(buf);
  return 0;
}
