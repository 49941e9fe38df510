/*
 * Shared between the files of runbook._pg: lua_pg.c (connections, queries,
 * the module), pg_io.c (interruptible waits, cancel and drain), pg_copy.c
 * (COPY in, out and between connections), pg_result.c (results and errors
 * as Lua values) and pg_sink.c (the durable file sink and the streaming
 * sha256 for backups).
 */
#ifndef RUNBOOK_PG_INTERNAL_H
#define RUNBOOK_PG_INTERNAL_H

#include "dl_pq.h"
#include <lua.h>

#define PG_CONN_MT "runbook.pg.Conn"

/* a runbook.pg.Conn userdata */
struct rb_pg_conn {
  PGconn *pg;     /* NULL once closed */
  PGresult *res;  /* the result being converted; freed by close if a raise intervenes */
  char label[320];
  char **notices; /* server notices waiting to be logged */
  int nnotices, capnotices, dropped;
  char *buf; /* COPY TO aggregation */
  size_t buflen, bufcap;
};

static inline void rb_pg_clear_res(struct rb_pg_conn *c) {
  if (c->res) {
    PQclear(c->res);
    c->res = NULL;
  }
}

/* lua_pg.c */
struct rb_pg_conn *rb_pg_check_conn(lua_State *L, int idx);
/* Hands queued server notices to the handler runbook.pg installed. */
void rb_pg_deliver_notices(lua_State *L, struct rb_pg_conn *c);

/* pg_io.c: waiting on the socket. The wait functions return 0, or
 * RB_PG_STOP on Ctrl-C or the step's deadline, or RB_PG_BROKEN when the
 * connection failed. */
#define RB_PG_STOP (-1)
#define RB_PG_BROKEN (-2)
/* the revents seen within one slice of slice_ms (0 when none), or a code */
int rb_pg_wait(lua_State *L, PGconn *pg, short events, int slice_ms);
/* sends everything queued (non-blocking mode) */
int rb_pg_flush(lua_State *L, PGconn *pg);
/* the next result, or NULL when the command is complete (*why = 0) */
PGresult *rb_pg_next_result(lua_State *L, PGconn *pg, int *why);
/* bounded drain after a cancel: 0 idle again, -1 the connection was closed */
int rb_pg_drain(struct rb_pg_conn *c);
/* PQcancel, then drain */
void rb_pg_cancel(struct rb_pg_conn *c);
/* collects the results of the command sent: first error or last result in c->res */
int rb_pg_collect(lua_State *L, struct rb_pg_conn *c);
int rb_pg_is_error(ExecStatusType st);
/* raises the interrupt or timeout (after the caller cancelled) */
int rb_pg_raise_stop(lua_State *L, struct rb_pg_conn *c);
/* push nil, err and return 2: the connection broke / c->res holds an error */
int rb_pg_push_lost(lua_State *L, struct rb_pg_conn *c);
int rb_pg_push_failed(lua_State *L, struct rb_pg_conn *c);

/* pg_copy.c: the COPY methods and copy_pipe */
int rb_pg_copy_out(lua_State *L);
int rb_pg_copy_in(lua_State *L);
int rb_pg_copy_pipe(lua_State *L);

/* Pushes rows (an array of tables keyed by column name, values typed by
 * the column's OID) and an info table {command=, affected=, fields=}.
 * May raise only on memory errors; the caller holds res in a guard. */
void rb_pg_push_rows(lua_State *L, const PGresult *res);

/* Pushes the info table alone (for commands that return no rows). */
void rb_pg_push_info(lua_State *L, const PGresult *res);

/* Pushes a structured error {kind="pg", code=SQLSTATE, message=, details=}
 * for a failed result. `fallback` is the connection's error message, used
 * when the result carries none (a lost connection). */
void rb_pg_push_result_error(lua_State *L, const PGresult *res, const char *fallback);

/* Pushes a structured error for a connection that failed or was lost.
 * `what` is "cannot connect to" or similar, `label` names host, port,
 * database and user; the libpq message is reduced to one line. */
void rb_pg_push_conn_error(lua_State *L, const char *what, const char *label, const char *libpq_msg);

/* Reduces a libpq message to its first meaningful line, without the
 * "connection to server at ... failed:" and "FATAL:" prefixes. Writes into
 * out (NUL-terminated, truncated to outlen). */
void rb_pg_one_line(const char *msg, char *out, size_t outlen);

/* Adds file_sink() and hasher() to the module table on top of the stack. */
void rb_pg_open_sink(lua_State *L);

#endif
