/*
 * The floor the store benchmark prints beside runbook's PostgreSQL figures:
 * what the same durable commits cost a libpq client doing nothing else.
 *
 *   pg_floor CONNINFO SYNC LAZY   one process: load libpq (linked as
 *                                 runbook loads it), connect, then SYNC + LAZY
 *                                 single-row INSERTs of a 500-byte event into
 *                                 a table with runbook_events' UNIQUE (run,
 *                                 seq), each its own transaction: the first
 *                                 2 * LAZY alternate lazy (synchronous_commit
 *                                 off for that transaction, flushed by the
 *                                 next synchronous one) and synchronous, the
 *                                 rest synchronous; then disconnect
 *
 * That is a fresh run's journal writes on the PostgreSQL store with
 * nothing of runbook around them: no Lua, no hashing, no tip row, no lock,
 * no run row, no choosing of a run. Timed as a whole process, so process
 * start, libpq's loading and the backend's start are in it, as they are in
 * every `runbook` command on that store.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int check(PGconn *c, PGresult *r, ExecStatusType want) {
  int ok = PQresultStatus(r) == want;
  if (!ok)
    fprintf(stderr, "pg_floor: %s", PQerrorMessage(c));
  PQclear(r);
  return ok;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: pg_floor CONNINFO SYNC LAZY\n");
    return 2;
  }
  long sync = strtol(argv[2], NULL, 10), lazy = strtol(argv[3], NULL, 10);
  PGconn *c = PQconnectdb(argv[1]);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "pg_floor: %s", PQerrorMessage(c));
    return 1;
  }
  /* the session as runbook's: synchronous commits whatever the server's
   * default, and a table made once (the benchmark creates it before timing) */
  if (!check(c, PQexec(c, "SET synchronous_commit = on"), PGRES_COMMAND_OK))
    return 1;
  static const char *sync_sql = "INSERT INTO floor_events (run, seq, body) VALUES ($1, $2, $3)";
  static const char *lazy_sql = "INSERT INTO floor_events (run, seq, body) SELECT $1, $2, $3"
                                " WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL";
  char run[64], seqtext[24], body[501];
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  snprintf(run, sizeof run, "floor-%ld-%ld-%ld", (long)getpid(), (long)now.tv_sec, now.tv_nsec);
  memset(body, 'x', 500);
  body[500] = '\0';
  for (long i = 0; i < sync + lazy; i++) {
    snprintf(seqtext, sizeof seqtext, "%ld", i + 1);
    const char *params[3] = { run, seqtext, body };
    int is_lazy = i < 2 * lazy && i % 2 == 1;
    if (!check(c, PQexecParams(c, is_lazy ? lazy_sql : sync_sql, 3, NULL, params, NULL, NULL, 0),
               PGRES_COMMAND_OK))
      return 1;
  }
  PQfinish(c);
  return 0;
}
