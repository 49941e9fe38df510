/*
 * The protocol side of runbook._pg, without Lua: the connection record and
 * waiting on its socket in slices, so Ctrl-C and a deadline are noticed
 * during any wait; cancelling a stopped command and draining what the
 * server still sends. Functions return codes; the binding (lua_pg.c,
 * pg_copy.c) turns them into Lua values and errors.
 */
#ifndef RUNBOOK_PG_IO_H
#define RUNBOOK_PG_IO_H

#include <stddef.h>

#include "dl_pq.h"

/* a runbook.pg.Conn userdata's payload */
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

/* The wait functions return 0, or one of these. `deadline` is a
 * rb_monotime() instant (0 for none); Ctrl-C (rb_interrupted) stops too. */
#define RB_PG_STOP (-1)     /* Ctrl-C or the deadline */
#define RB_PG_BROKEN (-2)   /* the connection failed */
#define RB_PG_COPY_OUT (-3) /* a plain query started COPY TO STDOUT; drained */

/* the revents seen within one slice of slice_ms (0 when none), or a code */
int rb_pg_wait(PGconn *pg, short events, int slice_ms, double deadline);
/* sends everything queued (non-blocking mode) */
int rb_pg_flush(PGconn *pg, double deadline);
/* the next result, or NULL when the command is complete (*why = 0) */
PGresult *rb_pg_next_result(PGconn *pg, double deadline, int *why);
/* bounded drain after a cancel: 0 idle again, -1 the connection was closed */
int rb_pg_drain(struct rb_pg_conn *c);
/* PQcancel, then drain */
void rb_pg_cancel(struct rb_pg_conn *c);
/* collects the results of the command sent: first error or last result in
 * c->res; on RB_PG_STOP the command was cancelled and drained */
int rb_pg_collect(struct rb_pg_conn *c, double deadline);
int rb_pg_is_error(ExecStatusType st);

#endif
