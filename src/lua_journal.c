/*
 * runbook._journal: reading, verifying and appending to run journals, and
 * the per-run lock. Event fields from Lua are scrubbed through the
 * redactor and secrets in them are written as [REDACTED]; the engine seals
 * the secrets a memo must keep before they get here.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "fileio.h"
#include "host.h"
#include "journal.h"
#include "journal_fold.h"
#include "jsonconv.h"
#include "jsonscan.h"
#include "secret.h"

#define JOURNAL_MT "runbook.Journal"
#define LOCK_MT "runbook.Lock"
#define FOLDSCAN_MT "runbook.FoldScan"

struct ljournal {
  struct rb_journal *j; /* NULL when closed */
};

struct llock {
  int fd; /* -1 when released */
};

static struct rb_journal *check_open(lua_State *L) {
  struct ljournal *lj = luaL_checkudata(L, 1, JOURNAL_MT);
  if (!lj->j)
    luaL_error(L, "attempt to use a closed journal");
  return lj->j;
}

static const char *opt_key(lua_State *L, int idx, size_t *len) {
  return rb_opt_bytes(L, idx, len, NULL);
}

struct collect {
  lua_State *L;
  int mode; /* 0 events, 1 lines, 2 none */
  lua_Integer n;
};

static int collect_event(void *ud, const char *line, size_t len) {
  struct collect *c = ud;
  if (c->mode != 0) {
    if (rb_json_scan(NULL, line, len) != 0)
      return -1;
    if (c->mode == 2)
      return 0;
    lua_pushlstring(c->L, line, len);
  } else if (rb_json_scan(c->L, line, len) != 0) {
    return -1;
  }
  lua_rawseti(c->L, -2, ++c->n);
  return 0;
}

static void push_scan(lua_State *L, const struct rb_scan *s) {
  lua_createtable(L, 0, 9);
  lua_pushinteger(L, s->count);
  lua_setfield(L, -2, "count");
  lua_pushinteger(L, (lua_Integer)s->valid_bytes);
  lua_setfield(L, -2, "valid_bytes");
  lua_pushboolean(L, s->hmac);
  lua_setfield(L, -2, "hmac");
  lua_pushstring(L, s->last_hash);
  lua_setfield(L, -2, "last_hash");
  if (s->bad_seq) {
    lua_pushinteger(L, s->bad_seq);
    lua_setfield(L, -2, "bad_seq");
  }
  if (s->bad_seq || s->torn_bytes) {
    lua_pushstring(L, s->reason);
    lua_setfield(L, -2, "reason");
  }
  if (s->mark_hash[0]) {
    lua_pushstring(L, s->mark_hash);
    lua_setfield(L, -2, "mark_hash");
  }
  if (s->torn_bytes) {
    lua_pushinteger(L, (lua_Integer)s->torn_bytes);
    lua_setfield(L, -2, "torn_bytes");
    lua_pushstring(L, s->torn_sha256);
    lua_setfield(L, -2, "torn_sha256");
    lua_pushinteger(L, s->count + 1);
    lua_setfield(L, -2, "torn_seq");
  }
}

static const char *open_error(int e) {
  return e == ELOOP ? "a symbolic link; store files are never followed (replace it with the run's own file)"
                    : strerror(e);
}

/* The plan a fold scan builds: freed by the collector should a Lua error
 * (out of memory) cut the scan short */
static int foldscan_gc(lua_State *L) {
  rb_fold_free(luaL_checkudata(L, 1, FOLDSCAN_MT));
  return 0;
}

/* The "fold" mode of scan: items are the events the fold must read, in
 * order (journal_fold.h), and info adds at (each item's seq), skipped (how
 * many events were left out) and actions ({step = n}: the actions left out,
 * by step) for state.fold_scanned. */
/* What a scan reads: the journal file at path, or (path NULL) the lines
 * in text, as the PostgreSQL store hands them over */
struct scan_source {
  const char *path;
  const char *text;
  size_t len;
};

static int run_scan(const struct scan_source *src, const char *key, size_t keylen,
                    lua_Integer mark, rb_event_fn fn, void *ud, struct rb_scan *s) {
  if (src->path)
    return rb_journal_scan(src->path, key, keylen, mark, fn, ud, s);
  rb_journal_verify(src->text, src->len, key, keylen, mark, fn, ud, s);
  return 0;
}

static int scan_fold(lua_State *L, const struct scan_source *src, const char *key, size_t keylen,
                     lua_Integer mark) {
  const char *path = src->path ? src->path : "the journal's text";
  struct rb_fold_plan *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  luaL_setmetatable(L, FOLDSCAN_MT);
  struct rb_scan s;
  if (run_scan(src, key, keylen, mark, rb_fold_note, p, &s) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, open_error(errno));
    return 2;
  }
  if (p->oom)
    return luaL_error(L, "%s: out of memory", path);
  rb_fold_finish(p);
  lua_createtable(L, 64, 0); /* items */
  lua_createtable(L, 64, 0); /* at */
  lua_newtable(L);           /* actions */
  lua_Integer n = 0, skipped = (lua_Integer)p->gone;
  for (size_t i = 0; i < p->n; i++) {
    const struct rb_fold_line *l = &p->lines[i];
    if (l->use == RB_FOLD_DECODE || l->use == RB_FOLD_LAST) {
      if (rb_json_scan(L, l->text, l->len) != 0)
        return luaL_error(L, "%s: seq %I does not decode", path, (lua_Integer)l->seq);
      lua_rawseti(L, -4, ++n);
      lua_pushinteger(L, (lua_Integer)l->seq);
      lua_rawseti(L, -3, n);
    } else if (l->use == RB_FOLD_ACTION) {
      skipped++;
      if (!l->text)
        continue;
      lua_pushlstring(L, l->text, l->len);
      lua_pushvalue(L, -1);
      lua_Integer was = lua_rawget(L, -3) == LUA_TNUMBER ? lua_tointeger(L, -1) : 0;
      lua_pop(L, 1);
      lua_pushinteger(L, was + 1);
      lua_rawset(L, -3);
    }
  }
  push_scan(L, &s);
  lua_insert(L, -3); /* items, info, at, actions */
  lua_setfield(L, -3, "actions");
  lua_setfield(L, -2, "at");
  lua_pushinteger(L, skipped);
  lua_setfield(L, -2, "skipped");
  rb_fold_free(p); /* now, not at the next collection */
  lua_remove(L, -3);
  return 2;
}

static int scan_source(lua_State *L, const struct scan_source *src) {
  static const char *const modes[] = {"events", "lines", "none", "fold", NULL};
  size_t keylen;
  const char *key = opt_key(L, 2, &keylen);
  struct collect c = {L, luaL_checkoption(L, 3, "events", modes), 0};
  lua_Integer mark = luaL_optinteger(L, 4, 0);
  if (c.mode == 3)
    return scan_fold(L, src, key, keylen, mark);
  struct rb_scan s;
  lua_newtable(L);
  if (run_scan(src, key, keylen, mark, collect_event, &c, &s) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", src->path, open_error(errno));
    return 2;
  }
  push_scan(L, &s);
  return 2;
}

/* scan(path [, key [, "events"|"lines"|"none"|"fold" [, mark_seq]]]) -> items, info
 * | nil, message: info.mark_hash is the hash of event mark_seq */
static int f_scan(lua_State *L) {
  struct scan_source src = {luaL_checkstring(L, 1), NULL, 0};
  return scan_source(L, &src);
}

/* scan_text(text [, key [, mode [, mark_seq]]]) -> items, info: the same
 * checks and results as scan over journal lines held in a string (each
 * ending in its newline), for the PostgreSQL store's rows */
static int f_scan_text(lua_State *L) {
  struct scan_source src = {NULL, NULL, 0};
  src.text = luaL_checklstring(L, 1, &src.len);
  return scan_source(L, &src);
}

static lua_Integer field_int(lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  lua_Integer v = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* open(path, run, key_or_nil, scan_info_or_nil, create [, tip_path]) -> Journal
 * | nil, message */
static int f_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *run = luaL_checkstring(L, 2);
  size_t keylen;
  const char *key = opt_key(L, 3, &keylen);
  int create = lua_toboolean(L, 5);
  const char *tip = luaL_optstring(L, 6, NULL);
  struct rb_scan s, *sp = NULL;
  if (lua_istable(L, 4)) {
    memset(&s, 0, sizeof s);
    s.count = field_int(L, 4, "count");
    s.valid_bytes = (off_t)field_int(L, 4, "valid_bytes");
    s.torn_bytes = (off_t)field_int(L, 4, "torn_bytes");
    lua_getfield(L, 4, "hmac");
    s.hmac = lua_toboolean(L, -1);
    lua_getfield(L, 4, "last_hash");
    const char *h = lua_tostring(L, -1);
    luaL_argcheck(L, h && strlen(h) == 64, 4, "scan info without last_hash");
    memcpy(s.last_hash, h, 65);
    lua_pop(L, 2);
    sp = &s;
  }
  struct ljournal *lj = lua_newuserdatauv(L, sizeof *lj, 0);
  lj->j = NULL;
  luaL_setmetatable(L, JOURNAL_MT);
  char err[512];
  lj->j = rb_journal_open(path, run, key, keylen, sp, create, tip, err, sizeof err);
  if (!lj->j) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  return 1;
}

/* attach(handle) -> Journal: a parallel step's state shares the journal */
static int f_attach(lua_State *L) {
  luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
  struct ljournal *lj = lua_newuserdatauv(L, sizeof *lj, 0);
  lj->j = lua_touserdata(L, 1);
  luaL_setmetatable(L, JOURNAL_MT);
  rb_journal_retain(lj->j);
  return 1;
}

/* j:append(type, fields [, lazy]) -> seq ; raises when the event cannot be made
 * durable, since no step may move past an unrecorded event */
static int m_append(lua_State *L) {
  struct rb_journal *j = check_open(L);
  const char *type = luaL_checkstring(L, 2);
  json_t *fields = NULL;
  char err[512];
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    struct rb_jsonopts o = {RB_SECRETS_REDACT, 1};
    fields = rb_lua_to_json(L, 3, &o, err, sizeof err);
    if (!fields) {
      /* the value cannot be recorded; nothing was written */
      rb_push_error(L, "journal", "unencodable", "journal event %s: %s", type, err);
      return lua_error(L);
    }
    if (!json_is_object(fields)) {
      json_decref(fields);
      rb_push_error(L, "journal", "unencodable", "journal event %s: fields must be an object", type);
      return lua_error(L);
    }
  }
  int lazy = lua_toboolean(L, 4);
  long long seq = lazy ? rb_journal_append_lazy(j, type, fields, err, sizeof err)
                       : rb_journal_append(j, type, fields, err, sizeof err);
  json_decref(fields);
  if (seq < 0) {
    /* the journal itself failed: no step may go on */
    rb_push_error(L, "journal", "io", "%s", err);
    return lua_error(L);
  }
  lua_pushinteger(L, seq);
  return 1;
}

/* format(run, seq, prev, type, fields [, key]) -> line, hash: the line
 * (with its newline) the journal would append as event seq after prev, for
 * a store that keeps lines elsewhere; raises like append */
static int f_format(lua_State *L) {
  const char *run = luaL_checkstring(L, 1);
  lua_Integer seq = luaL_checkinteger(L, 2);
  size_t plen;
  const char *prev = luaL_checklstring(L, 3, &plen);
  luaL_argcheck(L, plen == 64, 3, "a 64-digit hash expected");
  const char *type = luaL_checkstring(L, 4);
  size_t keylen;
  const char *key = opt_key(L, 6, &keylen);
  json_t *fields = NULL;
  char err[512];
  if (!lua_isnoneornil(L, 5)) {
    luaL_checktype(L, 5, LUA_TTABLE);
    struct rb_jsonopts o = {RB_SECRETS_REDACT, 1};
    fields = rb_lua_to_json(L, 5, &o, err, sizeof err);
    if (!fields || !json_is_object(fields)) {
      json_decref(fields);
      rb_push_error(L, "journal", "unencodable", "journal event %s: %s", type,
                    fields ? "fields must be an object" : err);
      return lua_error(L);
    }
  }
  char ts[40], hash[65];
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  rb_iso_time((double)now.tv_sec + now.tv_nsec / 1e9, ts, sizeof ts);
  size_t len;
  char *line = rb_journal_format(run, (long long)seq, prev, type, fields, key, keylen, ts, hash,
                                 &len, err, sizeof err);
  json_decref(fields);
  if (!line) {
    rb_push_error(L, "journal", "io", "%s", err);
    return lua_error(L);
  }
  lua_pushlstring(L, line, len);
  free(line);
  lua_pushstring(L, hash);
  return 2;
}

/* check_line(line, seq, prev, want_hmac [, key]) -> hash | nil, reason:
 * verifies one line (with or without its newline) as a scan does */
static int f_check_line(lua_State *L) {
  size_t len, plen;
  const char *line = luaL_checklstring(L, 1, &len);
  lua_Integer seq = luaL_checkinteger(L, 2);
  const char *prev = luaL_checklstring(L, 3, &plen);
  luaL_argcheck(L, plen == 64, 3, "a 64-digit hash expected");
  int want = lua_toboolean(L, 4);
  size_t keylen;
  const char *key = opt_key(L, 5, &keylen);
  if (len > 0 && line[len - 1] == '\n')
    len--;
  char hash[65], reason[256];
  if (rb_journal_check_line(line, len, (long long)seq, prev, want, key, keylen, hash, reason,
                            sizeof reason) != 0 ||
      (rb_json_scan(NULL, line, len) != 0 &&
       snprintf(reason, sizeof reason, "seq %lld is not valid JSON", (long long)seq) > 0)) {
    lua_pushnil(L);
    lua_pushstring(L, reason);
    return 2;
  }
  lua_pushstring(L, hash);
  return 1;
}

/* after_append(seq): the test failpoint RUNBOOK_FAILPOINT=after:N of the
 * file journal, for stores that append elsewhere: stops the process
 * (SIGSTOP) once seq N is durable, so a crash test can SIGKILL it there */
static int f_after_append(lua_State *L) {
  lua_Integer seq = luaL_checkinteger(L, 1);
  const char *fp = getenv("RUNBOOK_FAILPOINT");
  if (fp && strncmp(fp, "after:", 6) == 0 && atoll(fp + 6) == (long long)seq)
    raise(SIGSTOP);
  return 0;
}

/* j:sync(): makes lazy appends durable (nothing to do when none is pending) */
static int m_sync(lua_State *L) {
  char err[256];
  if (rb_journal_sync(check_open(L), err, sizeof err) != 0)
    return luaL_error(L, "%s", err);
  return 0;
}

static int m_seq(lua_State *L) {
  lua_pushinteger(L, rb_journal_seq(check_open(L)));
  return 1;
}

/* j:handle() -> lightuserdata for attach() in another state of this process;
 * valid while this Journal stays open */
static int m_handle(lua_State *L) {
  lua_pushlightuserdata(L, check_open(L));
  return 1;
}

static int m_close(lua_State *L) {
  struct ljournal *lj = luaL_checkudata(L, 1, JOURNAL_MT);
  if (lj->j) {
    rb_journal_release(lj->j);
    lj->j = NULL;
  }
  return 0;
}

static int m_tostring(lua_State *L) {
  struct ljournal *lj = luaL_checkudata(L, 1, JOURNAL_MT);
  lua_pushstring(L, lj->j ? "runbook.Journal" : "runbook.Journal (closed)");
  return 1;
}

/* lock(path) -> Lock | nil, holder_or_error, busy (true when another
 * process holds it; false when the file could not be locked at all) */
static int f_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct llock *lk = lua_newuserdatauv(L, sizeof *lk, 0);
  lk->fd = -1;
  luaL_setmetatable(L, LOCK_MT);
  char holder[1536];
  int busy = 0;
  lk->fd = rb_lock_acquire(path, holder, sizeof holder, &busy);
  if (lk->fd < 0) {
    lua_pushnil(L);
    lua_pushstring(L, holder);
    lua_pushboolean(L, busy);
    return 3;
  }
  return 1;
}

/* tip(path, run [, key]) -> {seq, hash, hmac, verified} | nil, "missing" | "bad", message */
static int f_tip(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *run = luaL_checkstring(L, 2);
  size_t keylen;
  const char *key = opt_key(L, 3, &keylen);
  struct rb_tip t;
  char err[1024];
  int rc = rb_tip_read(path, run, key, keylen, &t, err, sizeof err);
  if (rc <= 0) {
    lua_pushnil(L);
    lua_pushstring(L, rc == 0 ? "missing" : "bad");
    lua_pushstring(L, rc == 0 ? "no tip record" : err);
    return 3;
  }
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, t.seq);
  lua_setfield(L, -2, "seq");
  lua_pushstring(L, t.hash);
  lua_setfield(L, -2, "hash");
  lua_pushboolean(L, t.has_hmac);
  lua_setfield(L, -2, "hmac");
  lua_pushboolean(L, t.verified);
  lua_setfield(L, -2, "verified");
  return 1;
}

/* Reads a journal's first or last complete line alone, decoded; nil when
 * there is none (empty, torn, not JSON, unreadable). Cheap whatever the
 * journal's length, and no reader depends on the writer's field order. */
static int read_edge(lua_State *L, int last) {
  const char *path = luaL_checkstring(L, 1);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    lua_pushnil(L);
    return 1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size == 0) {
    close(fd);
    lua_pushnil(L);
    return 1;
  }
  /* a window at the start or the end, doubled until it holds a whole line
   * or the whole file; the buffer is a userdata, so an error frees it */
  const char *line = NULL;
  size_t len = 0;
  for (off_t window = 65536;; window *= 2) {
    if (window > st.st_size)
      window = st.st_size;
    off_t from = last ? st.st_size - window : 0;
    char *buf = lua_newuserdatauv(L, (size_t)window, 0);
    ssize_t n = pread(fd, buf, (size_t)window, from);
    if (n <= 0)
      break;
    if (!last) {
      char *nl = memchr(buf, '\n', (size_t)n);
      if (nl) {
        line = buf;
        len = (size_t)(nl - buf);
      }
    } else if (buf[n - 1] == '\n') {
      ssize_t i = n - 1;
      while (i > 0 && buf[i - 1] != '\n')
        i--;
      if (i > 0 || from == 0) {
        line = buf + i;
        len = (size_t)(n - 1 - i);
      }
    } else {
      break; /* a torn last line: there is no last complete event */
    }
    if (line || window == st.st_size)
      break;
    lua_pop(L, 1);
  }
  close(fd);
  if (!line || rb_json_scan(L, line, len) != 0 || !lua_istable(L, -1)) {
    lua_pushnil(L);
    return 1;
  }
  return 1;
}

static int f_head(lua_State *L) { return read_edge(L, 0); }
static int f_last(lua_State *L) { return read_edge(L, 1); }

static int log_fclose(lua_State *L) {
  luaL_Stream *p = luaL_checkudata(L, 1, LUA_FILEHANDLE);
  int ok = fclose(p->f) == 0;
  return luaL_fileresult(L, ok, NULL);
}

/* open_log(path) -> file | nil, message: the run log, opened for appending
 * (created 0600, never through a symbolic link), as a Lua file */
static int f_open_log(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  luaL_Stream *p = lua_newuserdatauv(L, sizeof *p, 0);
  p->closef = NULL;
  p->f = NULL;
  luaL_setmetatable(L, LUA_FILEHANDLE);
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, open_error(errno));
    return 2;
  }
  struct stat st;
  if (fstat(fd, &st) == 0 && (st.st_mode & 077) != 0)
    (void)fchmod(fd, 0600);
  p->f = fdopen(fd, "a");
  if (!p->f) {
    close(fd);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  p->closef = log_fclose;
  return 1;
}

static int lock_release(lua_State *L) {
  struct llock *lk = luaL_checkudata(L, 1, LOCK_MT);
  rb_lock_release(lk->fd);
  lk->fd = -1;
  return 0;
}

static const luaL_Reg jmethods[] = {
  {"append", m_append}, {"sync", m_sync}, {"seq", m_seq}, {"handle", m_handle}, {"close", m_close}, {NULL, NULL},
};

static const luaL_Reg jmeta[] = {
  {"__gc", m_close}, {"__close", m_close}, {"__tostring", m_tostring}, {NULL, NULL},
};

static const luaL_Reg lmethods[] = {{"release", lock_release}, {NULL, NULL}};

static const luaL_Reg lmeta[] = {{"__gc", lock_release}, {"__close", lock_release}, {NULL, NULL}};

static const luaL_Reg funcs[] = {
  {"scan", f_scan}, {"scan_text", f_scan_text}, {"open", f_open},         {"attach", f_attach}, {"lock", f_lock},
  {"format", f_format}, {"after_append", f_after_append}, {"check_line", f_check_line},
  {"tip", f_tip},   {"head", f_head},         {"last", f_last},     {"open_log", f_open_log},
  {NULL, NULL},
};

int luaopen_runbook__journal(lua_State *L) {
  luaL_newmetatable(L, JOURNAL_MT);
  luaL_setfuncs(L, jmeta, 0);
  luaL_newlib(L, jmethods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, FOLDSCAN_MT);
  lua_pushcfunction(L, foldscan_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, LOCK_MT);
  luaL_setfuncs(L, lmeta, 0);
  luaL_newlib(L, lmethods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  /* the names the writer lays out itself (seq, ts, ..., hmac), for readers */
  lua_newtable(L);
  for (int i = 0; rb_journal_reserved[i]; i++) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, rb_journal_reserved[i]);
  }
  lua_setfield(L, -2, "RESERVED");
  return 1;
}
