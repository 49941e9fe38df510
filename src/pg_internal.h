/*
 * Shared between the Lua-facing files of runbook._pg: lua_pg.c (connections,
 * queries, the module), pg_copy.c
 * (COPY in, out and between connections), pg_result.c (results and errors
 * as Lua values) and pg_sink.c (the durable file sink and the streaming
 * sha256 for backups). The socket waits are pg_io.c's, Lua-free (pg_io.h).
 */
#ifndef RUNBOOK_PG_INTERNAL_H
#define RUNBOOK_PG_INTERNAL_H

#include <lua.h>

#include "pg_io.h"

#define PG_CONN_MT "runbook.pg.Conn"

/* lua_pg.c */
struct rb_pg_conn *rb_pg_check_conn(lua_State *L, int idx);
/* Hands queued server notices to the handler runbook.pg installed. */
void rb_pg_deliver_notices(lua_State *L, struct rb_pg_conn *c);

/* lua_pg.c: the binding's side of a stopped or failed wait */
/* raises the interrupt or timeout (after pg_io cancelled) */
int rb_pg_raise_stop(lua_State *L, struct rb_pg_conn *c);
/* push nil, err and return 2: the connection broke / c->res holds an error */
int rb_pg_push_lost(lua_State *L, struct rb_pg_conn *c);
int rb_pg_push_failed(lua_State *L, struct rb_pg_conn *c);
/* rb_pg_collect with the step's deadline, its codes turned into Lua: 0
 * collected (c->res), RB_PG_STOP/RB_PG_BROKEN as from pg_io; raises for
 * COPY TO STDOUT started by a plain query */
int rb_pg_collect_l(lua_State *L, struct rb_pg_conn *c);

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
