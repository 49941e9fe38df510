/*
 * PostgreSQL protocol waits, without Lua (pg_io.h): a connection's socket
 * polled in slices of 50 ms, so Ctrl-C and a deadline are noticed during
 * any wait; a stopped command cancelled on the server and what it still
 * sends drained, so the connection is left idle (or closed), never
 * mid-protocol. Returns codes; the binding raises.
 */
#include <errno.h>
#include <poll.h>

#include "clock.h"
#include "pg_io.h"

#define DRAIN_SECONDS 5.0

static int stop_requested(double deadline) {
  if (rb_interrupted)
    return 1;
  return deadline > 0 && rb_monotime() >= deadline;
}

/* Waits up to one slice for events on the connection's socket. Returns the
 * revents (0 when the slice passed), RB_PG_STOP on Ctrl-C or the step's
 * deadline, RB_PG_BROKEN when the socket is gone. */
int rb_pg_wait(PGconn *pg, short events, int slice_ms, double deadline) {
  if (stop_requested(deadline))
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

/* Sends everything queued (non-blocking mode). 0 done, or an RB_PG_ code. */
int rb_pg_flush(PGconn *pg, double deadline) {
  int r;
  while ((r = PQflush(pg)) == 1) {
    int ev = rb_pg_wait(pg, POLLOUT | POLLIN, 50, deadline);
    if (ev < 0)
      return ev;
    if ((ev & POLLIN) && !PQconsumeInput(pg))
      return RB_PG_BROKEN;
  }
  return r == 0 ? 0 : RB_PG_BROKEN;
}

/* The next result, or NULL when the command is complete (*why = 0), was
 * stopped (RB_PG_STOP) or the connection failed (RB_PG_BROKEN). */
PGresult *rb_pg_next_result(PGconn *pg, double deadline, int *why) {
  *why = 0;
  while (PQisBusy(pg)) {
    int ev = rb_pg_wait(pg, POLLIN, 50, deadline);
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

int rb_pg_is_error(ExecStatusType st) {
  return st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR;
}

/* Collects the results of the command just sent: keeps the first error,
 * or else the last result, in c->res. Returns 0, or an RB_PG_ code (the
 * command was cancelled and drained on RB_PG_STOP). COPY started by a plain
 * query is refused: COPY FROM by ending it at once, COPY TO by draining it
 * and returning RB_PG_COPY_OUT. */
int rb_pg_collect(struct rb_pg_conn *c, double deadline) {
  int why = rb_pg_flush(c->pg, deadline);
  if (why == RB_PG_STOP) {
    rb_pg_cancel(c);
    return why;
  }
  if (why)
    return why;
  for (;;) {
    PGresult *r = rb_pg_next_result(c->pg, deadline, &why);
    if (!r) {
      if (why == RB_PG_STOP)
        rb_pg_cancel(c);
      return why;
    }
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COPY_IN) {
      PQclear(r);
      PQputCopyEnd(c->pg, "COPY FROM STDIN needs copy_in()");
      if ((why = rb_pg_flush(c->pg, deadline)) != 0)
        return why;
      continue;
    }
    if (st == PGRES_COPY_OUT) {
      PQclear(r);
      rb_pg_clear_res(c);
      return rb_pg_drain(c) == 0 ? RB_PG_COPY_OUT : RB_PG_BROKEN;
    }
    if (c->res && rb_pg_is_error(PQresultStatus(c->res))) {
      PQclear(r); /* keep the first error */
      continue;
    }
    rb_pg_clear_res(c);
    c->res = r;
  }
}
