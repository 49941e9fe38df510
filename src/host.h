/*
 * Process-wide host state shared by every Lua state of one runbook process.
 * Parallel steps run in their own lua_State on their own thread; they share
 * the redactor and the console lock through this struct, whose pointer each
 * state keeps in its registry under "runbook.host".
 */
#ifndef RUNBOOK_HOST_H
#define RUNBOOK_HOST_H

#include <pthread.h>
#include <signal.h>
#include <stddef.h>

#include <lua.h>

#include "clock.h"

struct rb_redactor;

/* A message from a parallel step's thread to the main thread (an event,
 * a log line, progress), queued on the host. */
struct rb_msg {
  struct rb_msg *next;
  size_t len;
  char data[]; /* JSON text */
};

struct rb_host {
  struct rb_redactor *redactor;
  pthread_mutex_t console_lock;
  pthread_mutex_t refs_lock;
  int refs;
  pthread_mutex_t queue_lock;
  struct rb_msg *head, *tail;
  /* the live checklist's last line, kept current by a ticker thread while
   * the terminal shows it (host.footer); under console_lock */
  struct rb_footer {
    char *before, *after; /* the text around the elapsed time */
    double t0;            /* monotonic start of the clock */
    int fd, shown, stop, started;
    pthread_t thread;
    pthread_cond_t wake;
  } footer;
};

/* Creates the host for a new process, or attaches an existing one to a new
 * state (parallel step). Stored in the registry; released when L closes. */
struct rb_host *rb_host_attach(lua_State *L, struct rb_host *shared);
struct rb_host *rb_host_get(lua_State *L);

/* Pushes s with every registered secret form replaced by [REDACTED]. */
void rb_push_scrubbed(lua_State *L, const char *s, size_t len);

/* Writes already-scrubbed text to fd 1 or 2 under the console lock. */
void rb_console_write(lua_State *L, int fd, const char *s, size_t len);

/* The deadline of the guarded call running in L (0 when none), so C
 * primitives can bound their own blocking calls (curl, libpq, hiredis). */
double rb_deadline(lua_State *L);

/* Sleeps up to `seconds`, waking early on SIGINT or the guarded call's
 * deadline. Returns 0 when the full time elapsed, -1 when interrupted,
 * -2 when the deadline passed. */
int rb_sleep(lua_State *L, double seconds);

/* Raises the interrupt or timeout error if one is pending for L. For C loops. */
void rb_check_interrupt(lua_State *L);

/* Pushes a structured error: a table {kind=, code=, message=} with the
 * "runbook.Error" metatable (whose __tostring gives the message). `code` may
 * be NULL. Callers add fields (details, ...) before raising or returning it. */
void rb_push_error(lua_State *L, const char *kind, const char *code, const char *fmt, ...);

/* A time option in seconds, read from field `name` of the table at index t
 * (the default when t is not a table or the field is nil). Raises
 * "<who>: <name> must be a number of seconds >= 0" for anything else. */
double rb_opt_seconds(lua_State *L, int t, const char *name, double def, const char *who);

/* The one error normaliser: pushes the structured error for the error
 * value at idx. A table with a string `message` is kept as it is; any other
 * value becomes {kind=kind, message=tostring(v)} (its __tostring, or "(error
 * object is a T value)"). With level > 0, a traceback from that level is
 * added as `traceback` when the error has none. Message handlers (main.c,
 * the step guard) and Lua's (host.error_of: cli, loader, engine) use it. */
void rb_error_normalize(lua_State *L, int idx, const char *kind, int level);

/* The kinds the guard raises; the engine tells them from step failures. */
#define RB_ERR_INTERRUPTED "interrupted"
#define RB_ERR_TIMEOUT "timeout"

#endif
