/*
 * runbook._pg: waiting on a connection's socket in slices of 50 ms, so
 * Ctrl-C and the step's deadline are noticed during any wait; cancelling a
 * stopped command on the server and draining what it still sends, so the
 * connection is left idle (or closed), never mid-protocol.
 */
#include <errno.h>
#include <poll.h>

#include <lauxlib.h>
#include "dl_pq.h"
#include <lua.h>

#include "host.h"
#include "pg_internal.h"

#define DRAIN_SECONDS 5.0

static int stop_requested(lua_State *L) {
  if (rb_interrupted)
    return 1;
  double d = rb_deadline(L);
  return d > 0 && rb_monotime() >= d;
}

/* Waits up to one slice for events on the connection's socket. Returns the
 * revents (0 when the slice passed), RB_PG_STOP on Ctrl-C or the step's
 * deadline, RB_PG_BROKEN when the socket is gone. */
int rb_pg_wait(lua_State *L, PGconn *pg, short events, int slice_ms) {
  if (stop_requested(L))
    return RB_PG_STOP;
  int fd = PQsocket(pg);
  if (fd < 0)
    return RB_PG_BROKEN;
  struct pollfd p = {fd, events, 0};
  int r = poll(&p, 1, slice_ms);
  if (r < 0)
    return errno == EINTR ? 0 : RB_PG_BROKEN;
  return r == 0 ? 0 : (p.revents ? p.revents : 0);
}

/* Sends everything queued (non-blocking mode). 0 done, or a WAIT_ code. */
int rb_pg_flush(lua_State *L, PGconn *pg) {
  int r;
  while ((r = PQflush(pg)) == 1) {
    int ev = rb_pg_wait(L, pg, POLLOUT | POLLIN, 50);
    if (ev < 0)
      return ev;
    if ((ev & POLLIN) && !PQconsumeInput(pg))
      return RB_PG_BROKEN;
  }
  return r == 0 ? 0 : RB_PG_BROKEN;
}

/* The next result, or NULL when the command is complete (*why = 0), was
 * stopped (RB_PG_STOP) or the connection failed (RB_PG_BROKEN). */
PGresult *rb_pg_next_result(lua_State *L, PGconn *pg, int *why) {
  *why = 0;
  while (PQisBusy(pg)) {
    int ev = rb_pg_wait(L, pg, POLLIN, 50);
    if (ev < 0) {
      *why = ev;
      return NULL;
    }
    if (ev && !PQconsumeInput(pg)) {
      *why = RB_PG_BROKEN;
      return NULL;
    }
  }
  return PQgetResult(pg);
}

/* Bounded, uninterruptible drain after a cancel: reads and drops whatever
 * the server still sends for the current command. Returns 0 when the
 * connection is back to idle, -1 when it had to be closed. */
int rb_pg_drain(struct rb_pg_conn *c) {
  double end = rb_monotime() + DRAIN_SECONDS;
  PGconn *pg = c->pg;
  for (;;) {
    if (rb_monotime() > end)
      goto lost;
    PQflush(pg);
    if (PQisBusy(pg)) {
      struct pollfd p = {PQsocket(pg), POLLIN, 0};
      if (p.fd < 0 || poll(&p, 1, 50) < 0 || (p.revents && !PQconsumeInput(pg)))
        goto lost;
      continue;
    }
    PGresult *r = PQgetResult(pg);
    if (!r)
      return 0;
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    if (st == PGRES_COPY_IN) {
      if (PQputCopyEnd(pg, "interrupted by runbook") < 0)
        goto lost;
    } else if (st == PGRES_COPY_OUT) {
      char *row;
      int n;
      while ((n = PQgetCopyData(pg, &row, 1)) != -1) {
        if (n > 0) {
          PQfreemem(row);
          continue;
        }
        if (n == -2 || rb_monotime() > end)
          goto lost;
        struct pollfd p = {PQsocket(pg), POLLIN, 0};
        if (poll(&p, 1, 50) < 0 || (p.revents && !PQconsumeInput(pg)))
          goto lost;
      }
    }
  }
lost:
  PQfinish(pg);
  c->pg = NULL;
  return -1;
}

void rb_pg_cancel(struct rb_pg_conn *c) {
  if (!c->pg)
    return;
  char err[256];
  PGcancel *cn = PQgetCancel(c->pg);
  if (cn) {
    PQcancel(cn, err, sizeof err);
    PQfreeCancel(cn);
  }
  rb_pg_drain(c);
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

int rb_pg_is_error(ExecStatusType st) {
  return st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR;
}

/* Collects the results of the command just sent: keeps the first error,
 * or else the last result, in c->res. Returns 0, or a WAIT_ code (the
 * command was cancelled and drained on RB_PG_STOP). COPY started by a plain
 * query is refused by ending it at once. */
int rb_pg_collect(lua_State *L, struct rb_pg_conn *c) {
  int why = rb_pg_flush(L, c->pg);
  if (why == RB_PG_STOP) {
    rb_pg_cancel(c);
    return why;
  }
  if (why)
    return why;
  for (;;) {
    PGresult *r = rb_pg_next_result(L, c->pg, &why);
    if (!r) {
      if (why == RB_PG_STOP)
        rb_pg_cancel(c);
      return why;
    }
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COPY_IN) {
      PQclear(r);
      PQputCopyEnd(c->pg, "COPY FROM STDIN needs copy_in()");
      if ((why = rb_pg_flush(L, c->pg)) != 0)
        return why;
      continue;
    }
    if (st == PGRES_COPY_OUT) {
      PQclear(r);
      rb_pg_drain(c);
      rb_push_error(L, "pg", "0A000", "COPY TO STDOUT needs copy_out()");
      return lua_error(L);
    }
    if (c->res && rb_pg_is_error(PQresultStatus(c->res))) {
      PQclear(r); /* keep the first error */
      continue;
    }
    rb_pg_clear_res(c);
    c->res = r;
  }
}
