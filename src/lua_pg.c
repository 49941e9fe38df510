/*
 * runbook._pg: PostgreSQL over libpq. Every wait (connecting, a query,
 * COPY) polls the socket in short slices so Ctrl-C and the step's timeout
 * are noticed at once; a stopped query is cancelled on the server and its
 * results drained before the error is raised, so the connection stays
 * usable or is closed, never left mid-protocol.
 *
 * Methods that meet the outside world failing return nil and a structured
 * error; the public module (runbook.pg, in Lua) raises by default.
 *
 * This file: the connection's lifecycle, notices, connecting, queries and
 * the module table. Waiting is in pg_io.c, COPY in pg_copy.c.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <lauxlib.h>
#include "dl_pq.h"
#include <lua.h>

#include "crypto.h"
#include "host.h"
#include "jsonconv.h"
#include "modules.h"
#include "pg_internal.h"
#include "redact.h"
#include "secret.h"

#define NOTICE_KEY "runbook.pg.notice"
#define MAX_NOTICES 1000
#define DEFAULT_CONNECT_TIMEOUT 10.0

/* ---- lifecycle ------------------------------------------------------------- */

static void free_notices(struct rb_pg_conn *c) {
  for (int i = 0; i < c->nnotices; i++)
    free(c->notices[i]);
  c->nnotices = 0;
  c->dropped = 0;
}

static int conn_close(lua_State *L) {
  struct rb_pg_conn *c = luaL_checkudata(L, 1, PG_CONN_MT);
  rb_pg_clear_res(c);
  if (c->pg) {
    PQfinish(c->pg);
    c->pg = NULL;
  }
  free_notices(c);
  free(c->notices);
  c->notices = NULL;
  c->capnotices = 0;
  free(c->buf);
  c->buf = NULL;
  c->buflen = c->bufcap = 0;
  return 0;
}

struct rb_pg_conn *rb_pg_check_conn(lua_State *L, int idx) {
  struct rb_pg_conn *c = luaL_checkudata(L, idx, PG_CONN_MT);
  if (!c->pg)
    luaL_error(L, "attempt to use a closed PostgreSQL connection");
  return c;
}

static int conn_tostring(lua_State *L) {
  struct rb_pg_conn *c = luaL_checkudata(L, 1, PG_CONN_MT);
  if (c->pg)
    lua_pushfstring(L, "runbook.pg.Conn (%s)", c->label);
  else
    lua_pushliteral(L, "runbook.pg.Conn (closed)");
  return 1;
}

/* ---- notices ------------------------------------------------------------------ */

static void on_notice(void *arg, const PGresult *res) {
  struct rb_pg_conn *c = arg;
  if (c->nnotices >= MAX_NOTICES) {
    c->dropped++;
    return;
  }
  if (c->nnotices == c->capnotices) {
    int cap = c->capnotices ? c->capnotices * 2 : 8;
    char **n = realloc(c->notices, (size_t)cap * sizeof *n);
    if (!n)
      return;
    c->notices = n;
    c->capnotices = cap;
  }
  const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  if (!msg)
    return;
  size_t len = strlen(msg) + (sev ? strlen(sev) : 6) + 16;
  char *line = malloc(len);
  if (!line)
    return;
  snprintf(line, len, "%s: %s", sev ? sev : "NOTICE", msg);
  c->notices[c->nnotices++] = line;
}

/* Hands queued notices to the handler runbook.pg installed (it logs them
 * through the audit hub). Called at the end of every operation, after the
 * libpq state is settled; a failing handler is ignored. */
void rb_pg_deliver_notices(lua_State *L, struct rb_pg_conn *c) {
  if (c->nnotices == 0 && c->dropped == 0)
    return;
  int top = lua_gettop(L);
  int have = lua_getfield(L, LUA_REGISTRYINDEX, NOTICE_KEY) == LUA_TFUNCTION;
  for (int i = 0; i < c->nnotices && have; i++) {
    const char *n = c->notices[i];
    lua_pushvalue(L, top + 1);
    lua_pushstring(L, strncmp(n, "WARNING", 7) == 0 ? "warn" : "info");
    lua_pushstring(L, n);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
      lua_pop(L, 1);
  }
  if (have && c->dropped) {
    lua_pushvalue(L, top + 1);
    lua_pushliteral(L, "warn");
    lua_pushfstring(L, "%d more server notices were not logged", c->dropped);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
      lua_pop(L, 1);
  }
  free_notices(c);
  lua_settop(L, top);
}

/* Raises the interrupt or timeout after a stopped wait; the caller has
 * cancelled and drained already. */
int rb_pg_raise_stop(lua_State *L, struct rb_pg_conn *c) {
  rb_pg_clear_res(c);
  rb_pg_deliver_notices(L, c);
  rb_check_interrupt(L);
  rb_push_error(L, RB_ERR_INTERRUPTED, NULL, "interrupted");
  return lua_error(L);
}

/* nil, err for a wait that failed (RB_PG_BROKEN) */
int rb_pg_push_lost(lua_State *L, struct rb_pg_conn *c) {
  rb_pg_clear_res(c);
  rb_pg_deliver_notices(L, c);
  lua_pushnil(L);
  rb_pg_push_conn_error(L, "lost the connection to", c->label, c->pg ? PQerrorMessage(c->pg) : "");
  return 2;
}

/* nil, err for a failed result held in c->res */
int rb_pg_push_failed(lua_State *L, struct rb_pg_conn *c) {
  lua_pushnil(L);
  rb_pg_push_result_error(L, c->res, c->pg ? PQerrorMessage(c->pg) : "");
  rb_pg_clear_res(c);
  rb_pg_deliver_notices(L, c);
  return 2;
}


int rb_pg_collect_l(lua_State *L, struct rb_pg_conn *c) {
  int why = rb_pg_collect(c, rb_deadline(L));
  if (why == RB_PG_COPY_OUT) {
    rb_pg_deliver_notices(L, c);
    rb_push_error(L, "pg", "0A000", "COPY TO STDOUT needs copy_out()");
    return lua_error(L);
  }
  return why;
}


static int f_on_notice(lua_State *L) {
  if (!lua_isnoneornil(L, 1))
    luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, NOTICE_KEY);
  return 0;
}

/* ---- connecting ------------------------------------------------------------------ */

/* Registers the password of a postgres:// URL as it is written (percent-
 * encoded), since libpq decodes it and the raw form would not be scrubbed. */
static void register_url_password(lua_State *L, const char *ci) {
  const char *p = strstr(ci, "://");
  if (!p || strncmp(ci, "postgres", 8) != 0)
    return;
  p += 3;
  const char *end = p + strcspn(p, "/?");
  const char *at = NULL;
  for (const char *s = p; s < end; s++)
    if (*s == '@')
      at = s;
  if (!at)
    return;
  const char *colon = memchr(p, ':', (size_t)(at - p));
  if (colon && at - colon - 1 >= RB_REDACT_MIN)
    rb_secret_register(L, colon + 1, (size_t)(at - colon - 1), 1);
}

/* libpq may quote parts of a bad connection string in its message; drop
 * every quoted part rather than risk echoing a password */
static void push_parse_error(lua_State *L, const char *msg) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  int inq = 0;
  for (const char *s = msg ? msg : ""; *s && *s != '\n'; s++) {
    if (*s == '"') {
      luaL_addstring(&b, inq ? "\"" : "\"...");
      inq = !inq;
    } else if (!inq) {
      luaL_addchar(&b, *s);
    }
  }
  luaL_pushresult(&b);
  rb_push_error(L, "pg", "08P01", "invalid PostgreSQL connection string: %s", lua_tostring(L, -1));
  lua_remove(L, -2);
}

static void set_label(struct rb_pg_conn *c) {
  const char *host = PQhost(c->pg), *port = PQport(c->pg), *db = PQdb(c->pg), *user = PQuser(c->pg);
  snprintf(c->label, sizeof c->label, "%s:%s (database \"%s\", user \"%s\")", host && *host ? host : "localhost",
           port && *port ? port : "5432", db ? db : "", user ? user : "");
}

/* nil, err for a connection attempt that failed; the handle is closed */
static int connect_failed(lua_State *L, struct rb_pg_conn *c, const char *msg) {
  set_label(c);
  lua_pushnil(L);
  rb_pg_push_conn_error(L, "cannot connect to", c->label, msg);
  PQfinish(c->pg);
  c->pg = NULL;
  return 2;
}

/* connect(conninfo_or_secret [, {connect_timeout=s, statement_timeout=s,
 * application_name=}]) -> Conn | nil, err */
static int f_connect(lua_State *L) {
  size_t len;
  const char *ci = rb_check_bytes(L, 1, &len, NULL);
  if (strlen(ci) != len)
    return luaL_argerror(L, 1, "connection string contains a NUL byte");
  double timeout = DEFAULT_CONNECT_TIMEOUT;
  const char *appname = NULL;
  lua_settop(L, 2);
  if (lua_type(L, 2) == LUA_TTABLE && lua_getfield(L, 2, "application_name") != LUA_TNIL)
    appname = luaL_checkstring(L, 3);
  lua_settop(L, 3);

  struct rb_pg_conn *c = lua_newuserdatauv(L, sizeof *c, 0); /* index 4 */
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, PG_CONN_MT);

  /* the password is copied out of libpq's options so it is registered
   * (which may raise) only after they are freed; it is no longer than ci */
  char *pw = lua_newuserdatauv(L, len + 1, 0); /* index 5 */
  size_t pwlen = 0;
  int has_pw = 0;

  char *perr = NULL;
  PQconninfoOption *opts = PQconninfoParse(ci, &perr);
  if (!opts) {
    lua_pushnil(L);
    push_parse_error(L, perr);
    PQfreemem(perr);
    return 2;
  }
  for (PQconninfoOption *o = opts; o->keyword; o++) {
    if (!o->val || !*o->val)
      continue;
    if (strcmp(o->keyword, "password") == 0 && (pwlen = strlen(o->val)) <= len) {
      memcpy(pw, o->val, pwlen);
      has_pw = 1;
    } else if (strcmp(o->keyword, "connect_timeout") == 0 && atof(o->val) > 0)
      timeout = atof(o->val);
  }
  PQconninfoFree(opts);
  if (has_pw) {
    rb_secret_register(L, pw, pwlen, 0);
    rb_cleanse(pw, pwlen);
  }
  lua_remove(L, 5);
  register_url_password(L, ci);
  timeout = rb_opt_seconds(L, 2, "connect_timeout", timeout, "pg.connect");
  double stmt_timeout = rb_opt_seconds(L, 2, "statement_timeout", 0, "pg.connect");

  /* keywords before dbname are defaults the connection string may override */
  const char *kw[5], *val[5];
  int k = 0;
  kw[k] = "client_encoding", val[k++] = "UTF8";
  kw[k] = appname ? "application_name" : "fallback_application_name", val[k++] = appname ? appname : "runbook";
  kw[k] = "dbname", val[k++] = ci;
  kw[k] = NULL, val[k] = NULL;
  rb_check_interrupt(L);
  c->pg = PQconnectStartParams(kw, val, 1);
  if (!c->pg)
    return luaL_error(L, "out of memory");
  set_label(c);
  if (PQstatus(c->pg) == CONNECTION_BAD)
    return connect_failed(L, c, PQerrorMessage(c->pg));
  double end = rb_monotime() + timeout;
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (st != PGRES_POLLING_OK) {
    if (st == PGRES_POLLING_FAILED)
      return connect_failed(L, c, PQerrorMessage(c->pg));
    if (rb_monotime() >= end) {
      char msg[64];
      snprintf(msg, sizeof msg, "timeout after %g s (connect_timeout)", timeout);
      return connect_failed(L, c, msg);
    }
    int ev = rb_pg_wait(c->pg, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 50, rb_deadline(L));
    if (ev == RB_PG_STOP) {
      set_label(c);
      PQfinish(c->pg);
      c->pg = NULL;
      rb_check_interrupt(L);
      rb_push_error(L, RB_ERR_INTERRUPTED, NULL, "interrupted while connecting to %s", c->label);
      return lua_error(L);
    }
    if (ev != 0)
      st = PQconnectPoll(c->pg);
  }
  set_label(c);
  PQsetnonblocking(c->pg, 1);
  PQsetNoticeReceiver(c->pg, on_notice, c);
  if (stmt_timeout > 0) {
    char sql[64];
    snprintf(sql, sizeof sql, "SET statement_timeout = %lld", (long long)llround(stmt_timeout * 1000.0));
    if (!PQsendQuery(c->pg, sql)) {
      lua_pushnil(L);
      rb_pg_push_conn_error(L, "lost the connection to", c->label, PQerrorMessage(c->pg));
      return 2;
    }
    int why = rb_pg_collect_l(L, c);
    if (why == RB_PG_STOP)
      return rb_pg_raise_stop(L, c);
    if (why)
      return rb_pg_push_lost(L, c);
    if (rb_pg_is_error(PQresultStatus(c->res)))
      return rb_pg_push_failed(L, c);
    rb_pg_clear_res(c);
  }
  lua_settop(L, 4);
  return 1;
}

/* conninfo_parse(conninfo) -> {keyword=value...} (password as a Secret) | nil, err */
static int f_conninfo_parse(lua_State *L) {
  const char *ci = rb_check_bytes(L, 1, NULL, NULL);
  char *perr = NULL;
  PQconninfoOption *opts = PQconninfoParse(ci, &perr);
  if (!opts) {
    lua_pushnil(L);
    push_parse_error(L, perr);
    PQfreemem(perr);
    return 2;
  }
  lua_newtable(L);
  for (PQconninfoOption *o = opts; o->keyword; o++) {
    if (!o->val)
      continue;
    if (strcmp(o->keyword, "password") == 0)
      rb_secret_push(L, o->val, strlen(o->val));
    else
      lua_pushstring(L, o->val);
    lua_setfield(L, -2, o->keyword);
  }
  PQconninfoFree(opts);
  register_url_password(L, ci);
  return 1;
}

/* ---- queries ---------------------------------------------------------------------- */

/* Converts the arguments from index `first` on into text (or binary, for
 * strings holding NUL bytes) parameters. The strings stay on the stack
 * until the query is sent. */
static int build_params(lua_State *L, int first, const char ***values, int **lengths, int **formats) {
  int n = lua_gettop(L) - first + 1;
  if (n <= 0)
    return 0;
  if (n > 65535)
    luaL_error(L, "too many query parameters (%d)", n);
  luaL_checkstack(L, n + 8, "too many query parameters");
  *values = lua_newuserdatauv(L, (size_t)n * sizeof **values, 0);
  *lengths = lua_newuserdatauv(L, (size_t)n * sizeof **lengths, 0);
  *formats = lua_newuserdatauv(L, (size_t)n * sizeof **formats, 0);
  for (int i = 0; i < n; i++) {
    int idx = first + i;
    const char *v = NULL;
    size_t len = 0;
    int fmt = 0;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
      break;
    case LUA_TBOOLEAN:
      v = lua_toboolean(L, idx) ? "true" : "false";
      len = strlen(v);
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        v = lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
      } else {
        double d = lua_tonumber(L, idx);
        char buf[40];
        if (isnan(d))
          strcpy(buf, "NaN");
        else if (isinf(d))
          strcpy(buf, d > 0 ? "Infinity" : "-Infinity");
        else
          snprintf(buf, sizeof buf, "%.17g", d);
        v = lua_pushstring(L, buf);
      }
      len = strlen(v);
      break;
    case LUA_TSTRING:
      v = lua_tolstring(L, idx, &len);
      fmt = memchr(v, '\0', len) != NULL; /* bytea with NULs goes binary */
      break;
    case LUA_TTABLE: {
      char err[200];
      struct rb_jsonopts o = {RB_SECRETS_REVEAL, 0};
      json_t *j = rb_lua_to_json(L, idx, &o, err, sizeof err);
      if (!j)
        luaL_error(L, "query parameter $%d: %s", i + 1, err);
      char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
      json_decref(j);
      if (!s)
        luaL_error(L, "out of memory");
      lua_pushstring(L, s);
      free(s);
      v = lua_tolstring(L, -1, &len);
      break;
    }
    default:
      if (rb_is_null(L, idx))
        break;
      v = rb_secret_test(L, idx, &len);
      if (!v)
        luaL_error(L, "query parameter $%d: %s cannot be sent to PostgreSQL", i + 1, luaL_typename(L, idx));
    }
    (*values)[i] = v;
    (*lengths)[i] = (int)len;
    (*formats)[i] = fmt;
  }
  return n;
}

/* common tail: the command was sent; rb_pg_collect and push the outcome */
static int finish(lua_State *L, struct rb_pg_conn *c, int rows) {
  int why = rb_pg_collect_l(L, c);
  if (why == RB_PG_STOP)
    return rb_pg_raise_stop(L, c);
  if (why)
    return rb_pg_push_lost(L, c);
  if (!c->res || rb_pg_is_error(PQresultStatus(c->res)))
    return rb_pg_push_failed(L, c);
  if (rows) {
    rb_pg_push_rows(L, c->res);
  } else {
    rb_pg_push_info(L, c->res);
  }
  rb_pg_clear_res(c);
  rb_pg_deliver_notices(L, c);
  return rows ? 2 : 1;
}

/* c:_query(sql, ...) -> rows, info | nil, err (one statement, $n parameters) */
static int m_query(lua_State *L) {
  struct rb_pg_conn *c = rb_pg_check_conn(L, 1);
  const char *sql = luaL_checkstring(L, 2);
  const char **values = NULL;
  int *lengths = NULL, *formats = NULL;
  rb_check_interrupt(L);
  int n = build_params(L, 3, &values, &lengths, &formats);
  if (!PQsendQueryParams(c->pg, sql, n, NULL, values, lengths, formats, 0))
    return rb_pg_push_lost(L, c);
  return finish(L, c, 1);
}

/* c:_prepare(name, sql) -> info | nil, err: the statement is parsed and
 * planned once on this session, for _query_prepared (types inferred) */
static int m_prepare(lua_State *L) {
  struct rb_pg_conn *c = rb_pg_check_conn(L, 1);
  const char *name = luaL_checkstring(L, 2);
  const char *sql = luaL_checkstring(L, 3);
  rb_check_interrupt(L);
  if (!PQsendPrepare(c->pg, name, sql, 0, NULL))
    return rb_pg_push_lost(L, c);
  return finish(L, c, 0);
}

/* c:_query_prepared(name, ...) -> rows, info | nil, err (a statement
 * _prepare made on this session, with its $n parameters) */
static int m_query_prepared(lua_State *L) {
  struct rb_pg_conn *c = rb_pg_check_conn(L, 1);
  const char *name = luaL_checkstring(L, 2);
  const char **values = NULL;
  int *lengths = NULL, *formats = NULL;
  rb_check_interrupt(L);
  int n = build_params(L, 3, &values, &lengths, &formats);
  if (!PQsendQueryPrepared(c->pg, name, n, values, lengths, formats, 0))
    return rb_pg_push_lost(L, c);
  return finish(L, c, 1);
}

/* c:_exec(sql) -> info | nil, err (simple protocol: several statements allowed) */
static int m_exec(lua_State *L) {
  struct rb_pg_conn *c = rb_pg_check_conn(L, 1);
  const char *sql = luaL_checkstring(L, 2);
  rb_check_interrupt(L);
  if (!PQsendQuery(c->pg, sql))
    return rb_pg_push_lost(L, c);
  return finish(L, c, 0);
}

/* ---- small methods ------------------------------------------------------------------ */

/* PQescapeLiteral and PQescapeIdentifier share a signature and a contract */
static int escape_with(lua_State *L, char *(*esc)(PGconn *, const char *, size_t), const char *what) {
  struct rb_pg_conn *c = rb_pg_check_conn(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  char *e = esc(c->pg, s, len);
  if (!e)
    return luaL_error(L, "%s: %s", what, PQerrorMessage(c->pg));
  lua_pushstring(L, e);
  PQfreemem(e);
  return 1;
}

static int m_escape_literal(lua_State *L) { return escape_with(L, PQescapeLiteral, "escape_literal"); }

static int m_escape_identifier(lua_State *L) { return escape_with(L, PQescapeIdentifier, "escape_identifier"); }

/* c:encrypt_password(user, password [, algorithm]) -> verifier: the hashed
 * form ALTER ROLE ... PASSWORD takes, made here (libpq's
 * PQencryptPasswordConn, the server's password_encryption when algorithm is
 * nil), so the clear password never reaches the server or its logs. The
 * password is a string or a Secret; the verifier is a plain string. */
static int m_encrypt_password(lua_State *L) {
  struct rb_pg_conn *c = rb_pg_check_conn(L, 1);
  const char *user = luaL_checkstring(L, 2);
  size_t len;
  int is_secret;
  const char *pw = rb_check_bytes(L, 3, &len, &is_secret);
  const char *alg = luaL_optstring(L, 4, NULL);
  if (memchr(pw, 0, len))
    return luaL_error(L, "encrypt_password: the password holds a NUL byte");
  char *copy = malloc(len + 1);
  if (!copy)
    return luaL_error(L, "encrypt_password: out of memory");
  memcpy(copy, pw, len);
  copy[len] = 0;
  char *v = PQencryptPasswordConn(c->pg, copy, user, alg);
  explicit_bzero(copy, len);
  free(copy);
  if (!v)
    return luaL_error(L, "encrypt_password: %s", PQerrorMessage(c->pg));
  lua_pushstring(L, v);
  PQfreemem(v);
  return 1;
}

/* c:status() -> "idle" | "active" | "transaction" | "failed-transaction" | "closed" | "broken" */
static int m_status(lua_State *L) {
  struct rb_pg_conn *c = luaL_checkudata(L, 1, PG_CONN_MT);
  if (!c->pg) {
    lua_pushliteral(L, "closed");
    return 1;
  }
  if (PQstatus(c->pg) != CONNECTION_OK) {
    lua_pushliteral(L, "broken");
    return 1;
  }
  switch (PQtransactionStatus(c->pg)) {
  case PQTRANS_IDLE:
    lua_pushliteral(L, "idle");
    break;
  case PQTRANS_ACTIVE:
    lua_pushliteral(L, "active");
    break;
  case PQTRANS_INTRANS:
    lua_pushliteral(L, "transaction");
    break;
  case PQTRANS_INERROR:
    lua_pushliteral(L, "failed-transaction");
    break;
  default:
    lua_pushliteral(L, "broken");
  }
  return 1;
}

/* c:info() -> {host=, port=, database=, user=, server_version=, backend_pid=} */
static int m_info(lua_State *L) {
  struct rb_pg_conn *c = rb_pg_check_conn(L, 1);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, PQhost(c->pg));
  lua_setfield(L, -2, "host");
  lua_pushstring(L, PQport(c->pg));
  lua_setfield(L, -2, "port");
  lua_pushstring(L, PQdb(c->pg));
  lua_setfield(L, -2, "database");
  lua_pushstring(L, PQuser(c->pg));
  lua_setfield(L, -2, "user");
  lua_pushinteger(L, PQserverVersion(c->pg));
  lua_setfield(L, -2, "server_version");
  lua_pushinteger(L, PQbackendPID(c->pg));
  lua_setfield(L, -2, "backend_pid");
  lua_pushstring(L, c->label);
  lua_setfield(L, -2, "label");
  return 1;
}

static int m_is_closed(lua_State *L) {
  struct rb_pg_conn *c = luaL_checkudata(L, 1, PG_CONN_MT);
  lua_pushboolean(L, c->pg == NULL);
  return 1;
}

static int f_is_conn(lua_State *L) {
  lua_pushboolean(L, luaL_testudata(L, 1, PG_CONN_MT) != NULL);
  return 1;
}

static const luaL_Reg methods[] = {
  {"_query", m_query},
  {"_exec", m_exec},
  {"_prepare", m_prepare},
  {"_query_prepared", m_query_prepared},
  {"_copy_out", rb_pg_copy_out},
  {"_copy_in", rb_pg_copy_in},
  {"escape_literal", m_escape_literal},
  {"escape_identifier", m_escape_identifier},
  {"encrypt_password", m_encrypt_password},
  {"status", m_status},
  {"info", m_info},
  {"is_closed", m_is_closed},
  {"close", conn_close},
  {NULL, NULL},
};

static const luaL_Reg meta[] = {
  {"__gc", conn_close},
  {"__close", conn_close},
  {"__tostring", conn_tostring},
  {NULL, NULL},
};

static const luaL_Reg funcs[] = {
  {"connect", f_connect},
  {"conninfo_parse", f_conninfo_parse},
  {"copy_pipe", rb_pg_copy_pipe},
  {"is_conn", f_is_conn},
  {"on_notice", f_on_notice},
  {NULL, NULL},
};

int luaopen_runbook__pg(lua_State *L) {
  char err[300];
  if (rb_dl_pq(err, sizeof err) != 0)
    return luaL_error(L, "runbook.pg: %s", err);
  /* backups pipe into pg_dump/pg_restore, which may close their end early
   * (pg_restore --list reads only the table of contents): a write there
   * must fail with EPIPE, not kill the process */
  signal(SIGPIPE, SIG_IGN);
  luaL_newmetatable(L, PG_CONN_MT);
  luaL_setfuncs(L, meta, 0);
  luaL_newlib(L, methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  lua_remove(L, -2);
  luaL_newlib(L, funcs);
  lua_insert(L, -2);
  lua_setfield(L, -2, "methods"); /* runbook.pg adds its Lua methods here */
  lua_pushinteger(L, PQlibVersion());
  lua_setfield(L, -2, "libpq_version");
  rb_pg_open_sink(L);
  return 1;
}
