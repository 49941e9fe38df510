/*
 * Shared between the three files of runbook._pg: lua_pg.c (connections,
 * queries, COPY), pg_result.c (results and errors as Lua values) and
 * pg_sink.c (the durable file sink and the streaming sha256 for backups).
 */
#ifndef RUNBOOK_PG_INTERNAL_H
#define RUNBOOK_PG_INTERNAL_H

#include <libpq-fe.h>
#include <lua.h>

#define PG_CONN_MT "runbook.pg.Conn"

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
