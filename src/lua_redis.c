/*
 * runbook._redis: Redis connections over hiredis 0.14 (no TLS, no RESP3).
 * hiredis formats commands and parses replies; the waiting is ours, in
 * poll() slices, so a command is bounded by its timeout and the step's
 * deadline and stops at once on Ctrl-C. A connection whose command did not
 * finish is closed (a late reply would answer the next command).
 *
 * Passwords never become Lua strings: URLs are parsed in C (redis.c), from a string
 * or a Secret, and the password is registered with the redactor.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "crypto.h"
#include "dl_redis.h"
#include <lauxlib.h>
#include <lua.h>

#include "host.h"
#include "redis.h"
#include "redact.h"
#include "resolve.h"
#include "secret.h"

#define CONN_MT "runbook.redis.Conn"
#define KEEPER_MT "runbook.redis.Keeper"
#define BOX_MT "runbook.redis.Reply"

struct conn {
  redisContext *ctx; /* NULL when closed */
  struct rb_redis_target t;
  double timeout; /* per command, seconds; 0 = only the step's deadline */
  int opened;     /* a connection was made once (closed vs never opened) */
  char lost[200]; /* why a failure closed it, "" otherwise */
};

/* ---- talking: our own waits around hiredis's buffers --------------------- */

static double op_deadline(lua_State *L, double timeout) {
  double d = timeout > 0 ? rb_monotime() + timeout : 0;
  double g = rb_deadline(L);
  if (g > 0 && (d == 0 || g < d))
    d = g;
  return d;
}

static void conn_close(struct conn *c) {
  if (c->ctx) {
    redisFree(c->ctx);
    c->ctx = NULL;
  }
  rb_redis_target_free(&c->t);
}

/* pushes the structured error for an error reply to `cmd` */
static void push_reply_error(lua_State *L, const char *cmd, const char *text, size_t len) {
  char code[32];
  rb_redis_error_code(text, len, code, sizeof code);
  rb_push_error(L, "redis", code, "redis %s: %s", cmd, text);
  lua_pushlstring(L, text, len);
  lua_setfield(L, -2, "reply");
  lua_pushstring(L, cmd);
  lua_setfield(L, -2, "command");
}

/* Pushes a reply as Lua values. nil inside an array becomes false (as in
 * Redis's own Lua scripting), so arrays keep their length. */
static void push_reply(lua_State *L, redisReply *r, const char *cmd, int top) {
  luaL_checkstack(L, 4, "redis reply nested too deeply");
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
    lua_pushlstring(L, r->str, r->len);
    break;
  case REDIS_REPLY_INTEGER:
    lua_pushinteger(L, (lua_Integer)r->integer);
    break;
  case REDIS_REPLY_NIL:
    if (top)
      lua_pushnil(L);
    else
      lua_pushboolean(L, 0);
    break;
  case REDIS_REPLY_ERROR:
    push_reply_error(L, cmd, r->str, r->len);
    break;
  case REDIS_REPLY_ARRAY:
    lua_createtable(L, (int)r->elements, 0);
    for (size_t i = 0; i < r->elements; i++) {
      push_reply(L, r->element[i], cmd, 0);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    break;
  default:
    lua_pushnil(L);
  }
}

/* A box that frees replies if a conversion raises (out of memory). */
struct box {
  redisReply **r;
  size_t n;
};

static void box_free(struct box *b) {
  if (b->r) {
    for (size_t i = 0; i < b->n; i++)
      if (b->r[i])
        freeReplyObject(b->r[i]);
    free(b->r);
    b->r = NULL;
  }
}

static int box_gc(lua_State *L) {
  box_free(luaL_checkudata(L, 1, BOX_MT));
  return 0;
}

static struct box *new_box(lua_State *L, size_t n) {
  struct box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->r = NULL;
  b->n = 0;
  luaL_setmetatable(L, BOX_MT);
  b->r = calloc(n ? n : 1, sizeof *b->r);
  if (!b->r)
    luaL_error(L, "out of memory");
  b->n = n;
  return b;
}

static const char *addr_of(struct conn *c, char *buf, size_t cap) {
  snprintf(buf, cap, strchr(c->t.host, ':') ? "[%s]:%d" : "%s:%d", c->t.host, c->t.port);
  return buf;
}

/* After a failed round trip: closes the connection (its state is unknown),
 * raises for Ctrl-C or the step's deadline, else pushes nil, err. */
static int io_failure(lua_State *L, struct conn *c, int r, const char *cmd, double timeout) {
  char addr[300], why[160];
  addr_of(c, addr, sizeof addr);
  if (r == RB_IO_TIMEOUT)
    snprintf(why, sizeof why, "no reply to %s within %g s", cmd, timeout);
  else if (r == RB_IO_INTERRUPTED)
    snprintf(why, sizeof why, "interrupted during %s", cmd);
  else
    snprintf(why, sizeof why, "connection lost during %s: %s", cmd,
             c->ctx && c->ctx->errstr[0] ? c->ctx->errstr : strerror(errno));
  snprintf(c->lost, sizeof c->lost, "%s", why);
  conn_close(c); /* the host, port and db stay for messages and info() */
  rb_check_interrupt(L); /* raises for Ctrl-C and the step's own deadline */
  lua_pushnil(L);
  rb_push_error(L, "redis", r == RB_IO_TIMEOUT ? "timeout" : "io", "redis %s: %s; the connection was closed",
                addr, why);
  return 2;
}

static struct conn *check_conn(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, CONN_MT);
}

/* an open connection, or nil, err (lost earlier) pushed and NULL returned */
static struct conn *open_conn(lua_State *L, int idx) {
  struct conn *c = check_conn(L, idx);
  if (c->ctx)
    return c;
  if (!c->lost[0])
    luaL_error(L, "attempt to use a closed redis connection");
  char addr[300];
  lua_pushnil(L);
  rb_push_error(L, "redis", "closed", "redis %s: the connection was closed after an earlier failure (%s); connect again",
                addr_of(c, addr, sizeof addr), c->lost);
  return NULL;
}

/* Appends one command from the Lua table or arguments; returns its name. */
static void append_argv(lua_State *L, redisContext *ctx, int first, int last, char *name, size_t namecap) {
  int argc = last - first + 1;
  const char **argv = malloc((size_t)argc * sizeof *argv);
  size_t *lens = malloc((size_t)argc * sizeof *lens);
  if (!argv || !lens) {
    free(argv);
    free(lens);
    luaL_error(L, "out of memory");
  }
  for (int i = 0; i < argc; i++) {
    int t = lua_type(L, first + i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER && !rb_secret_test(L, first + i, NULL)) {
      free(argv);
      free(lens);
      luaL_error(L, "redis: argument %d must be a string, number or secret, got %s", i + 1,
                 luaL_typename(L, first + i));
    }
    argv[i] = rb_check_bytes(L, first + i, &lens[i], NULL);
  }
  size_t k = 0;
  for (; k < lens[0] && k + 1 < namecap; k++) {
    char ch = argv[0][k];
    name[k] = ch >= 'a' && ch <= 'z' ? (char)(ch - 32) : ch;
  }
  name[k] = '\0';
  int rc = redisAppendCommandArgv(ctx, argc, argv, lens);
  free(argv);
  free(lens);
  if (rc != REDIS_OK)
    luaL_error(L, "out of memory");
}

/* c:command(name, args...) -> reply | nil, err (error replies: err.reply set) */
static int m_command(lua_State *L) {
  int top = lua_gettop(L);
  struct conn *c = open_conn(L, 1);
  if (!c)
    return 2;
  luaL_argcheck(L, top >= 2, 2, "command name expected");
  char cmd[64];
  append_argv(L, c->ctx, 2, top, cmd, sizeof cmd);
  struct box *b = new_box(L, 1);
  int r = rb_redis_roundtrip(c->ctx, op_deadline(L, c->timeout), b->r, 1);
  if (r != RB_IO_OK)
    return io_failure(L, c, r, cmd, c->timeout);
  if (b->r[0]->type == REDIS_REPLY_ERROR) {
    lua_pushnil(L);
    push_reply_error(L, cmd, b->r[0]->str, b->r[0]->len);
  } else {
    push_reply(L, b->r[0], cmd, 1);
    lua_pushnil(L);
  }
  box_free(b);
  return 2;
}

/* c:pipeline({ {cmd, args...}, ... }) -> { reply or error value, ..., n = N } */
static int m_pipeline(lua_State *L) {
  struct conn *c = open_conn(L, 1);
  if (!c)
    return 2;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  if (n == 0) {
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "n");
    return 1;
  }
  /* command names, kept for the error messages */
  lua_createtable(L, (int)n, 0);
  int names = lua_gettop(L);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
      return luaL_error(L, "redis pipeline: command %d is not a table", (int)i);
    int cmdt = lua_gettop(L);
    int argc = (int)lua_rawlen(L, cmdt);
    if (argc < 1)
      return luaL_error(L, "redis pipeline: command %d is empty", (int)i);
    luaL_checkstack(L, argc, "too many arguments");
    for (int k = 1; k <= argc; k++)
      lua_rawgeti(L, cmdt, k);
    char cmd[64];
    append_argv(L, c->ctx, cmdt + 1, cmdt + argc, cmd, sizeof cmd);
    lua_settop(L, cmdt - 1);
    lua_pushstring(L, cmd);
    lua_rawseti(L, names, i);
  }
  struct box *b = new_box(L, (size_t)n);
  int r = rb_redis_roundtrip(c->ctx, op_deadline(L, c->timeout), b->r, (size_t)n);
  if (r != RB_IO_OK)
    return io_failure(L, c, r, "a pipeline", c->timeout);
  lua_createtable(L, (int)n, 1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, names, i);
    const char *cmd = lua_tostring(L, -1);
    redisReply *rep = b->r[i - 1];
    if (rep->type == REDIS_REPLY_NIL)
      lua_pushboolean(L, 0);
    else
      push_reply(L, rep, cmd, 0);
    lua_rawseti(L, -3, i);
    lua_pop(L, 1);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  box_free(b);
  return 1;
}

/* ---- connecting ------------------------------------------------------------ */

/* one handshake command on a fresh connection; the reply goes in the box */
static int handshake(struct conn *c, struct box *b, double deadline, int argc, const char **argv,
                     const size_t *lens) {
  if (b->r[0]) {
    freeReplyObject(b->r[0]);
    b->r[0] = NULL;
  }
  if (redisAppendCommandArgv(c->ctx, argc, argv, lens) != REDIS_OK)
    return RB_IO_ERROR;
  return rb_redis_roundtrip(c->ctx, deadline, b->r, 1);
}

static const char *opt_string(lua_State *L, int opts, const char *name) {
  lua_getfield(L, opts, name);
  const char *s = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);
  lua_pop(L, 1); /* still anchored in the opts table */
  return s;
}

/* connect(url_or_secret [, {connect_timeout=, timeout=, password=, user=, db=}])
 *   -> Conn | nil, err */
static int f_connect(lua_State *L) {
  size_t ulen;
  const char *url = rb_check_bytes(L, 1, &ulen, NULL);
  lua_settop(L, 2);
  int opts = 2;
  if (lua_isnil(L, opts)) {
    lua_newtable(L);
    lua_replace(L, opts);
  }
  luaL_checktype(L, opts, LUA_TTABLE);
  double connect_timeout = rb_opt_seconds(L, opts, "connect_timeout", 5, "redis.connect");
  double timeout = rb_opt_seconds(L, opts, "timeout", 10, "redis.connect");
  const char *user = opt_string(L, opts, "user");
  lua_getfield(L, opts, "password");
  size_t pwlen = 0;
  const char *pw = rb_opt_bytes(L, -1, &pwlen, NULL);
  lua_pop(L, 1);
  lua_getfield(L, opts, "db");
  int has_db = !lua_isnil(L, -1);
  lua_Integer db = has_db ? luaL_checkinteger(L, -1) : 0;
  lua_pop(L, 1);
  luaL_argcheck(L, connect_timeout > 0, 2, "connect_timeout must be positive");
  luaL_argcheck(L, timeout >= 0, 2, "timeout must not be negative");
  luaL_argcheck(L, db >= 0, 2, "db must not be negative");

  /* created closed first: __gc frees whatever the steps below leave */
  struct conn *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, CONN_MT);
  c->timeout = timeout;
  const char *bad = rb_redis_parse_url(url, ulen, &c->t);
  if (bad) {
    rb_redis_target_free(&c->t);
    lua_pushnil(L);
    rb_push_error(L, "redis", "url", "redis: invalid URL: %s", bad);
    return 2;
  }
  if (pw) {
    char *copy = malloc(pwlen + 1);
    if (!copy)
      return luaL_error(L, "out of memory");
    memcpy(copy, pw, pwlen);
    copy[pwlen] = '\0';
    if (c->t.pass) {
      rb_cleanse(c->t.pass, c->t.passlen);
      free(c->t.pass);
    }
    c->t.pass = copy;
    c->t.passlen = pwlen;
  }
  if (user) {
    free(c->t.user);
    c->t.user = strdup(user);
  }
  if (has_db)
    c->t.db = (long)db;
  if (c->t.pass)
    rb_secret_register(L, c->t.pass, c->t.passlen, 0);

  char addr[300];
  addr_of(c, addr, sizeof addr);
  double deadline = op_deadline(L, connect_timeout);
  double left = deadline - rb_monotime();
  if (left <= 0)
    rb_check_interrupt(L);
  /* hiredis would resolve a name with a plain getaddrinfo, which a hung
   * resolver holds past any timeout: resolve it here, bounded */
  unsigned char bin[sizeof(struct in6_addr)];
  if (inet_pton(AF_INET, c->t.host, bin) != 1 && inet_pton(AF_INET6, c->t.host, bin) != 1) {
    struct addrinfo *res = NULL;
    int rc = 0, eno = 0;
    int lk = rb_resolve(c->t.host, AF_UNSPEC, deadline, &res, &rc, &eno);
    if (lk != LK_OK) {
      char why[160], t[32];
      snprintf(t, sizeof t, "%g", connect_timeout);
      if (lk == LK_FAILED)
        snprintf(why, sizeof why, "%s", rc == EAI_SYSTEM ? strerror(eno) : gai_strerror(rc));
      else
        snprintf(why, sizeof why, "no answer within %s s", t);
      rb_redis_target_free(&c->t);
      rb_check_interrupt(L);
      lua_pushnil(L);
      rb_push_error(L, "redis", lk == LK_FAILED ? "connect" : "timeout", "redis %s: cannot resolve %s: %s", addr,
                    c->t.host, why);
      return 2;
    }
    const struct sockaddr *sa = res->ai_addr;
    if (sa->sa_family == AF_INET)
      inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, c->t.ip, sizeof c->t.ip);
    else if (sa->sa_family == AF_INET6)
      inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, c->t.ip, sizeof c->t.ip);
    freeaddrinfo(res);
    left = deadline - rb_monotime();
  }
  redisContext *ctx = redisConnectWithTimeout(rb_redis_addr(&c->t), c->t.port, rb_redis_tv(left > 0 ? left : 0.001));
  if (!ctx)
    return luaL_error(L, "out of memory");
  if (ctx->err) {
    char why[128];
    snprintf(why, sizeof why, "%s", ctx->errstr);
    redisFree(ctx);
    rb_redis_target_free(&c->t);
    rb_check_interrupt(L);
    lua_pushnil(L);
    rb_push_error(L, "redis", "connect", "redis %s: cannot connect: %s", addr, why);
    return 2;
  }
  c->ctx = ctx;
  c->opened = 1;
  if (timeout > 0)
    redisSetTimeout(ctx, rb_redis_tv(timeout)); /* a backstop for blocking writes */

  struct box *b = new_box(L, 1);
  const char *argv[3];
  size_t lens[3];
  int r;
  if (c->t.pass) {
    int argc = 0;
    argv[argc] = "AUTH";
    lens[argc++] = 4;
    if (c->t.user) {
      argv[argc] = c->t.user;
      lens[argc++] = strlen(c->t.user);
    }
    argv[argc] = c->t.pass;
    lens[argc++] = c->t.passlen;
    if ((r = handshake(c, b, deadline, argc, argv, lens)) != RB_IO_OK)
      return io_failure(L, c, r, "AUTH", connect_timeout);
    if (b->r[0]->type == REDIS_REPLY_ERROR) {
      lua_pushnil(L);
      rb_push_error(L, "redis", "auth", "redis %s: authentication failed: %s", addr, b->r[0]->str);
      box_free(b);
      conn_close(c);
      return 2;
    }
  }
  if (c->t.db != 0) {
    char dbs[24];
    snprintf(dbs, sizeof dbs, "%ld", c->t.db);
    argv[0] = "SELECT";
    lens[0] = 6;
    argv[1] = dbs;
    lens[1] = strlen(dbs);
    if ((r = handshake(c, b, deadline, 2, argv, lens)) != RB_IO_OK)
      return io_failure(L, c, r, "SELECT", connect_timeout);
  } else if (!c->t.pass) {
    argv[0] = "PING";
    lens[0] = 4;
    if ((r = handshake(c, b, deadline, 1, argv, lens)) != RB_IO_OK)
      return io_failure(L, c, r, "PING", connect_timeout);
  }
  if (b->r[0] && b->r[0]->type == REDIS_REPLY_ERROR) {
    char code[32];
    rb_redis_error_code(b->r[0]->str, b->r[0]->len, code, sizeof code);
    lua_pushnil(L);
    if (strcmp(code, "NOAUTH") == 0)
      rb_push_error(L, "redis", "auth", "redis %s: the server requires a password and none was given (%s)", addr,
                    b->r[0]->str);
    else if (c->t.db != 0)
      rb_push_error(L, "redis", code, "redis %s: cannot select database %d: %s", addr, (int)c->t.db, b->r[0]->str);
    else
      rb_push_error(L, "redis", code, "redis %s: %s", addr, b->r[0]->str);
    box_free(b);
    conn_close(c);
    return 2;
  }
  box_free(b);
  lua_pop(L, 1); /* the box */
  return 1;
}

/* ---- connection methods ------------------------------------------------------ */

static int m_close(lua_State *L) {
  conn_close(check_conn(L, 1));
  return 0;
}

static int m_tostring(lua_State *L) {
  struct conn *c = check_conn(L, 1);
  char addr[300];
  if (c->ctx)
    lua_pushfstring(L, "runbook.redis.Conn (%s/%d)", addr_of(c, addr, sizeof addr), (int)c->t.db);
  else
    lua_pushliteral(L, "runbook.redis.Conn (closed)");
  return 1;
}

/* c:set_timeout(seconds): the per-command timeout (0: only the step's deadline) */
static int m_set_timeout(lua_State *L) {
  struct conn *c = check_conn(L, 1);
  double t = luaL_checknumber(L, 2);
  luaL_argcheck(L, t >= 0, 2, "timeout must not be negative");
  if (!c->ctx)
    return luaL_error(L, "attempt to use a closed redis connection");
  c->timeout = t;
  if (t > 0)
    redisSetTimeout(c->ctx, rb_redis_tv(t));
  return 0;
}

/* c:info() -> {host=, port=, db=, timeout=, open=, lost=} (never the password) */
static int m_info(lua_State *L) {
  struct conn *c = check_conn(L, 1);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, c->t.host);
  lua_setfield(L, -2, "host");
  lua_pushinteger(L, c->t.port);
  lua_setfield(L, -2, "port");
  lua_pushinteger(L, c->t.db);
  lua_setfield(L, -2, "db");
  lua_pushnumber(L, c->timeout);
  lua_setfield(L, -2, "timeout");
  lua_pushboolean(L, c->ctx != NULL);
  lua_setfield(L, -2, "open");
  if (c->lost[0]) {
    lua_pushstring(L, c->lost);
    lua_setfield(L, -2, "lost");
  }
  return 1;
}

/* ---- the keeper: renews a lock from a thread while a long step runs --------- */

static int k_stop(lua_State *L) {
  rb_redis_keeper_stop(luaL_checkudata(L, 1, KEEPER_MT));
  return 0;
}

static int k_gc(lua_State *L) {
  struct rb_redis_keeper *k = luaL_checkudata(L, 1, KEEPER_MT);
  rb_redis_keeper_stop(k);
  if (k->inited) {
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    k->inited = 0;
  }
  return 0;
}

/* k:status() -> {lost=, why=, renewals=, running=} */
static int k_status(lua_State *L) {
  struct rb_redis_keeper *k = luaL_checkudata(L, 1, KEEPER_MT);
  lua_createtable(L, 0, 4);
  if (k->inited)
    pthread_mutex_lock(&k->mu);
  lua_pushboolean(L, k->lost);
  lua_setfield(L, -2, "lost");
  if (k->lost) {
    lua_pushstring(L, k->why);
    lua_setfield(L, -2, "why");
  }
  lua_pushinteger(L, k->renewals);
  lua_setfield(L, -2, "renewals");
  lua_pushboolean(L, k->running && !k->lost);
  lua_setfield(L, -2, "running");
  if (k->inited)
    pthread_mutex_unlock(&k->mu);
  return 1;
}

static char *dup_bytes(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

/* keeper(conn, key, value, ttl_ms, interval_s) -> Keeper, renewing every
 * interval on its own connection until stopped or the lock is lost */
static int f_keeper(lua_State *L) {
  struct conn *c = check_conn(L, 1);
  size_t klen, vlen;
  const char *key = luaL_checklstring(L, 2, &klen);
  const char *val = luaL_checklstring(L, 3, &vlen);
  lua_Integer ttl = luaL_checkinteger(L, 4);
  double interval = luaL_checknumber(L, 5);
  luaL_argcheck(L, ttl > 0, 4, "positive ttl expected");
  luaL_argcheck(L, interval > 0, 5, "positive interval expected");
  if (!c->ctx)
    return luaL_error(L, "attempt to use a closed redis connection");
  struct rb_redis_keeper *k = lua_newuserdatauv(L, sizeof *k, 0);
  memset(k, 0, sizeof *k);
  luaL_setmetatable(L, KEEPER_MT);
  memcpy(k->t.host, c->t.host, sizeof k->t.host);
  memcpy(k->t.ip, c->t.ip, sizeof k->t.ip);
  k->t.port = c->t.port;
  k->t.db = c->t.db;
  k->ttl_ms = (long)ttl;
  k->interval = interval;
  k->key = dup_bytes(key, klen);
  k->keylen = klen;
  k->val = dup_bytes(val, vlen);
  k->vallen = vlen;
  int ok = k->key && k->val;
  if (ok && c->t.user)
    ok = (k->t.user = strdup(c->t.user)) != NULL;
  if (ok && c->t.pass) {
    ok = (k->t.pass = dup_bytes(c->t.pass, c->t.passlen)) != NULL;
    k->t.passlen = c->t.passlen;
  }
  if (!ok)
    return luaL_error(L, "out of memory");
  int e = rb_redis_keeper_start(k);
  if (e != 0)
    return luaL_error(L, "cannot start the lock keeper thread: %s", strerror(e));
  return 1;
}

/* ---- registration ------------------------------------------------------------ */

static const luaL_Reg conn_methods[] = {
  {"_command", m_command},
  {"_pipeline", m_pipeline},
  {"close", m_close},
  {"set_timeout", m_set_timeout},
  {"info", m_info},
  {NULL, NULL},
};

static const luaL_Reg conn_meta[] = {
  {"__gc", m_close},
  {"__close", m_close},
  {"__tostring", m_tostring},
  {NULL, NULL},
};

static const luaL_Reg keeper_methods[] = {
  {"stop", k_stop},
  {"status", k_status},
  {NULL, NULL},
};

static const luaL_Reg keeper_meta[] = {
  {"__gc", k_gc},
  {"__close", k_stop},
  {NULL, NULL},
};

static const luaL_Reg funcs[] = {
  {"connect", f_connect},
  {"keeper", f_keeper},
  {NULL, NULL},
};

int luaopen_runbook__redis(lua_State *L) {
  char err[300];
  if (rb_dl_redis(err, sizeof err) != 0)
    return luaL_error(L, "runbook.redis: %s", err);
  luaL_newmetatable(L, BOX_MT);
  lua_pushcfunction(L, box_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);

  luaL_newmetatable(L, KEEPER_MT);
  luaL_setfuncs(L, keeper_meta, 0);
  luaL_newlib(L, keeper_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  luaL_newlib(L, funcs);
  luaL_newmetatable(L, CONN_MT);
  luaL_setfuncs(L, conn_meta, 0);
  luaL_newlib(L, conn_methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  /* the public module adds its Lua methods (call, pcall, lock...) here */
  lua_setfield(L, -3, "methods");
  lua_pop(L, 1);
  lua_pushstring(L, RB_REDIS_RENEW_SCRIPT);
  lua_setfield(L, -2, "RENEW_SCRIPT");
  lua_pushstring(L, RB_REDIS_RELEASE_SCRIPT);
  lua_setfield(L, -2, "RELEASE_SCRIPT");
  return 1;
}
