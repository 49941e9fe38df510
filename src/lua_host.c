/*
 * runbook._host: the process around the runbook. Clocks, interruptible
 * sleep, SIGINT, the guarded call that enforces step timeouts, the console
 * (scrubbed, locked), who is running and where, and the terminal.
 */
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "fileio.h"
#include "host.h"
#include "lua_alloc.h"
#include "modules.h"
#include "redact.h"

extern char **environ;

volatile sig_atomic_t rb_interrupted = 0;

#define HOST_KEY "runbook.host"
#define HOST_MT "runbook.Host"
#define GUARD_KEY "runbook.guard"
#define ERROR_MT "runbook.Error"

/* Per-state guard: the deadline of the running guarded call. */
struct guard {
  double deadline; /* monotonic seconds, 0 = none */
  double limit;    /* the timeout in seconds, for the message */
  int armed;
  const char *fired; /* NULL, RB_ERR_INTERRUPTED or RB_ERR_TIMEOUT */
};

/* ---- host lifetime ------------------------------------------------------ */

static void footer_stop(struct rb_host *h);

static int host_gc(lua_State *L) {
  struct rb_host **hp = luaL_checkudata(L, 1, HOST_MT);
  struct rb_host *h = *hp;
  if (!h)
    return 0;
  *hp = NULL;
  pthread_mutex_lock(&h->refs_lock);
  int last = --h->refs == 0;
  pthread_mutex_unlock(&h->refs_lock);
  if (last) {
    footer_stop(h);
    for (struct rb_msg *m = h->head, *next; m; m = next) {
      next = m->next;
      free(m);
    }
    pthread_mutex_destroy(&h->queue_lock);
    rb_redactor_free(h->redactor);
    pthread_cond_destroy(&h->footer.wake);
    pthread_mutex_destroy(&h->console_lock);
    pthread_mutex_destroy(&h->refs_lock);
    free(h);
  }
  return 0;
}

struct rb_host *rb_host_attach(lua_State *L, struct rb_host *shared) {
  struct rb_host *h = shared;
  if (!h) {
    void *ud;
    lua_Alloc alloc = lua_getallocf(L, &ud);
    /* The redactor is shared with worker threads; a pool (lua_alloc.c) is
     * its state's thread's alone, so then the C library's allocator */
    if (alloc == rb_pool_alloc) {
      alloc = NULL;
      ud = NULL;
    }
    h = calloc(1, sizeof *h);
    /* otherwise the state's allocator: the one tests make fail */
    if (!h || !(h->redactor = rb_redactor_new(alloc, ud))) {
      free(h);
      luaL_error(L, "out of memory");
      return NULL; /* not reached: luaL_error raises */
    }
    pthread_mutex_init(&h->console_lock, NULL);
    pthread_mutex_init(&h->refs_lock, NULL);
    pthread_mutex_init(&h->queue_lock, NULL);
    pthread_cond_init(&h->footer.wake, NULL);
  }
  pthread_mutex_lock(&h->refs_lock);
  h->refs++;
  pthread_mutex_unlock(&h->refs_lock);
  struct rb_host **hp = lua_newuserdatauv(L, sizeof *hp, 0);
  *hp = h;
  if (luaL_newmetatable(L, HOST_MT)) {
    lua_pushcfunction(L, host_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, HOST_KEY);

  struct guard *g = lua_newuserdatauv(L, sizeof *g, 0);
  memset(g, 0, sizeof *g);
  lua_setfield(L, LUA_REGISTRYINDEX, GUARD_KEY);
  *(struct guard **)lua_getextraspace(L) = g;
  return h;
}

struct rb_host *rb_host_get(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, HOST_KEY);
  struct rb_host **hp = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!hp || !*hp)
    luaL_error(L, "runbook host not initialised");
  return *hp;
}

static struct guard *get_guard(lua_State *L) {
  return *(struct guard **)lua_getextraspace(L);
}

/* ---- scrubbing and console --------------------------------------------- */

/* Holds the scrubbed copy while Lua copies it, so a memory error raised
 * by lua_pushlstring does not leak it. */
struct scrub_box {
  struct rb_redactor *r;
  char *text;
  size_t len;
};

static int scrub_box_gc(lua_State *L) {
  struct scrub_box *b = lua_touserdata(L, 1);
  if (b->text)
    rb_redactor_free_text(b->r, b->text, b->len);
  b->text = NULL;
  return 0;
}

/* Out of memory inside the redactor means the text cannot be checked: it
 * is withheld whole, never shown as it was. */
void rb_push_scrubbed(lua_State *L, const char *s, size_t len) {
  struct rb_redactor *r = rb_host_get(L)->redactor;
  struct scrub_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->r = r;
  b->text = NULL;
  if (luaL_newmetatable(L, "runbook.ScrubBox")) {
    lua_pushcfunction(L, scrub_box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  int rc = rb_redactor_scrub(r, s, len, &b->text, &b->len);
  if (rc == RB_SCRUB_CLEAN)
    lua_pushlstring(L, s, len);
  else if (rc == RB_SCRUB_NOMEM)
    lua_pushliteral(L, RB_REDACTED);
  else
    lua_pushlstring(L, b->text, b->len);
  if (b->text)
    rb_redactor_free_text(r, b->text, b->len);
  b->text = NULL;
  lua_remove(L, -2);
}

void rb_console_write(lua_State *L, int fd, const char *s, size_t len) {
  struct rb_host *h = rb_host_get(L);
  pthread_mutex_lock(&h->console_lock);
  while (len > 0) {
    ssize_t n = write(fd, s, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      break; /* a closed console must not fail the run */
    }
    s += n;
    len -= (size_t)n;
  }
  pthread_mutex_unlock(&h->console_lock);
}

/* host.write(fd, text): scrubbed, under the console lock */
static int l_write(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, fd == 1 || fd == 2, 1, "1 or 2 expected");
  rb_push_scrubbed(L, s, len);
  s = lua_tolstring(L, -1, &len);
  rb_console_write(L, fd, s, len);
  return 0;
}

static int l_scrub(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  rb_push_scrubbed(L, s, len);
  return 1;
}

/* ---- the checklist's clock ---------------------------------------------- */

/* The console redraws the checklist on every event, log line and progress
 * report, but a step can sit in one C call (a migration, a wait, a
 * download) for minutes. While the checklist is on screen, a thread
 * rewrites its last line once a second so the run's elapsed time keeps
 * moving. It touches no Lua state: only the footer's text, under the
 * console lock that every console write takes. */

static void format_elapsed(char *buf, size_t n, double secs) {
  long ms = (long)(secs * 1000);
  if (ms < 1000)
    snprintf(buf, n, "%ldms", ms < 0 ? 0 : ms);
  else if (ms < 60000)
    snprintf(buf, n, "%.1fs", (double)ms / 1000);
  else
    snprintf(buf, n, "%ldm%02lds", ms / 60000, (ms / 1000) % 60);
}

/* With console_lock held: the cursor is just below the footer line. */
static void footer_paint(struct rb_footer *f) {
  char t[32];
  format_elapsed(t, sizeof t, rb_monotime() - f->t0);
  size_t n = strlen(f->before) + strlen(t) + strlen(f->after) + 16;
  char *line = malloc(n);
  if (!line)
    return;
  int len = snprintf(line, n, "\033[1A\r\033[K%s%s%s\n", f->before, t, f->after);
  for (const char *p = line; len > 0;) {
    ssize_t w = write(f->fd, p, (size_t)len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      break;
    p += w;
    len -= (int)w;
  }
  free(line);
}

static void *footer_main(void *arg) {
  struct rb_host *h = arg;
  pthread_mutex_lock(&h->console_lock);
  while (!h->footer.stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&h->footer.wake, &h->console_lock, &ts);
    if (!h->footer.stop && h->footer.shown)
      footer_paint(&h->footer);
  }
  pthread_mutex_unlock(&h->console_lock);
  return NULL;
}

static void footer_stop(struct rb_host *h) {
  pthread_mutex_lock(&h->console_lock);
  int started = h->footer.started;
  h->footer.stop = 1;
  h->footer.shown = 0;
  pthread_cond_signal(&h->footer.wake);
  pthread_mutex_unlock(&h->console_lock);
  if (started)
    pthread_join(h->footer.thread, NULL);
  free(h->footer.before);
  free(h->footer.after);
  h->footer.before = h->footer.after = NULL;
  h->footer.started = 0;
}

/* host.footer(fd, before, t0, after): the line just written last to fd is
 * before .. elapsed(now - t0) .. after; keep it current.
 * host.footer(): it is no longer the last line (the console is about to
 * erase or write above it). */
static int l_footer(lua_State *L) {
  struct rb_host *h = rb_host_get(L);
  if (lua_isnoneornil(L, 1)) {
    pthread_mutex_lock(&h->console_lock);
    h->footer.shown = 0;
    pthread_mutex_unlock(&h->console_lock);
    return 0;
  }
  int fd = (int)luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd == 1 || fd == 2, 1, "1 or 2 expected");
  const char *before = luaL_checkstring(L, 2);
  double t0 = luaL_checknumber(L, 3);
  const char *after = luaL_checkstring(L, 4);
  char *b = strdup(before), *a = strdup(after);
  if (!b || !a) {
    free(b);
    free(a);
    return luaL_error(L, "out of memory");
  }
  pthread_mutex_lock(&h->console_lock);
  free(h->footer.before);
  free(h->footer.after);
  h->footer.before = b;
  h->footer.after = a;
  h->footer.t0 = t0;
  h->footer.fd = fd;
  h->footer.shown = 1;
  int err = 0;
  if (!h->footer.started && !h->footer.stop) {
    /* signals stay with the main thread, whose blocking calls they must interrupt */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = pthread_create(&h->footer.thread, NULL, footer_main, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    h->footer.started = err == 0;
  }
  pthread_mutex_unlock(&h->console_lock);
  (void)err; /* without the thread the checklist still updates on each event */
  return 0;
}

/* ---- errors -------------------------------------------------------------- */

static int error_tostring(lua_State *L) {
  if (lua_getfield(L, 1, "message") != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushliteral(L, "error");
  }
  return 1;
}

static void push_error_mt(lua_State *L) {
  if (luaL_newmetatable(L, ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
}

void rb_push_error(lua_State *L, const char *kind, const char *code, const char *fmt, ...) {
  va_list ap;
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  if (code) {
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
  }
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_setfield(L, -2, "message");
  push_error_mt(L);
  lua_setmetatable(L, -2);
}

void rb_error_normalize(lua_State *L, int idx, const char *kind, int level) {
  idx = lua_absindex(L, idx);
  int t = lua_type(L, idx);
  if (t == LUA_TTABLE && lua_getfield(L, idx, "message") == LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
  } else {
    if (t == LUA_TTABLE)
      lua_pop(L, 1);
    const char *msg = lua_tostring(L, idx);
    int pushed = 0;
    if (!msg) {
      pushed = 1;
      int has = luaL_callmeta(L, idx, "__tostring");
      if (!has || lua_type(L, -1) != LUA_TSTRING) {
        if (has)
          lua_pop(L, 1);
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
      }
      msg = lua_tostring(L, -1);
    }
    rb_push_error(L, kind, NULL, "%s", msg);
    if (pushed)
      lua_remove(L, -2);
  }
  if (level > 0) {
    if (lua_getfield(L, -1, "traceback") == LUA_TNIL) {
      lua_pop(L, 1);
      luaL_traceback(L, L, NULL, level);
      lua_setfield(L, -2, "traceback");
    } else {
      lua_pop(L, 1);
    }
  }
}

/* host.error_of(e, kind [, traceback]) -> the structured error for any
 * error value (rb_error_normalize); the traceback, unless traceback is
 * false, starts at the function that raised, skipping the handler. */
static int l_error_of(lua_State *L) {
  const char *kind = luaL_checkstring(L, 2);
  int tb = lua_isnone(L, 3) || lua_toboolean(L, 3);
  lua_settop(L, 2);
  rb_error_normalize(L, 1, kind, tb ? 2 : 0);
  return 1;
}

/* ---- clocks and sleep ------------------------------------------------------ */

double rb_monotime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double rb_walltime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double rb_opt_seconds(lua_State *L, int t, const char *name, double def, const char *who) {
  if (lua_type(L, t) != LUA_TTABLE)
    return def;
  double v = def;
  if (lua_getfield(L, t, name) != LUA_TNIL) {
    int ok;
    v = lua_tonumberx(L, -1, &ok);
    if (!ok || v < 0 || v != v)
      luaL_error(L, "%s: %s must be a number of seconds >= 0", who, name);
  }
  lua_pop(L, 1);
  return v;
}

double rb_deadline(lua_State *L) {
  struct guard *g = get_guard(L);
  return g && g->armed ? g->deadline : 0;
}

int rb_sleep(lua_State *L, double seconds) {
  double end = rb_monotime() + (seconds > 0 ? seconds : 0);
  double deadline = rb_deadline(L);
  for (;;) {
    if (rb_interrupted)
      return -1;
    double now = rb_monotime();
    if (deadline > 0 && now >= deadline)
      return -2;
    if (now >= end)
      return 0;
    double slice = end - now;
    if (deadline > 0 && deadline - now < slice)
      slice = deadline - now;
    if (slice > 0.05)
      slice = 0.05; /* wake often enough to notice Ctrl-C at once */
    struct timespec ts = {(time_t)slice, (long)((slice - (time_t)slice) * 1e9)};
    nanosleep(&ts, NULL);
  }
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, rb_walltime());
  return 1;
}

static int l_monotime(lua_State *L) {
  lua_pushnumber(L, rb_monotime());
  return 1;
}

/* host.iso_time([t]) -> "2026-11-22T10:41:07.113Z" */
static int l_iso_time(lua_State *L) {
  char buf[64];
  rb_iso_time(luaL_optnumber(L, 1, rb_walltime()), buf, sizeof buf);
  lua_pushstring(L, buf);
  return 1;
}

/* host.sleep(seconds) -> true, or raises the interrupt/timeout error */
static int l_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  int r = rb_sleep(L, s);
  if (r != 0)
    rb_check_interrupt(L);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- the guard: step timeouts and Ctrl-C --------------------------------- */

static void raise_guard(lua_State *L, struct guard *g) {
  if (g->fired == NULL || strcmp(g->fired, RB_ERR_INTERRUPTED) == 0)
    rb_push_error(L, RB_ERR_INTERRUPTED, NULL, "interrupted");
  else
    rb_push_error(L, RB_ERR_TIMEOUT, NULL, "timed out after %d s", (int)(g->limit + 0.5));
  lua_error(L);
}

/* True when the running function is the standard library's. */
static int in_stdlib(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "S", ar) || !ar->source)
    return 0;
  return strncmp(ar->source, "@runbook/", 9) == 0 || strstr(ar->source, "/stdlib/runbook/") != NULL;
}

static void guard_hook(lua_State *L, lua_Debug *ar) {
  struct guard *g = get_guard(L);
  if (!g->armed)
    return;
  if (!g->fired) {
    if (rb_interrupted)
      g->fired = RB_ERR_INTERRUPTED;
    else if (g->deadline > 0 && rb_monotime() >= g->deadline)
      g->fired = RB_ERR_TIMEOUT;
    else
      return;
    /* From now on raise at every line, so a pcall in the runbook cannot
     * swallow the stop and carry on. */
    lua_sethook(L, guard_hook, LUA_MASKLINE | LUA_MASKCOUNT, 1);
  } else if (in_stdlib(L, ar)) {
    /* the library's own cleanup (a rollback, closing a connection) may
     * run; the stop is raised again at the runbook's next line */
    return;
  }
  raise_guard(L, g);
}

void rb_check_interrupt(lua_State *L) {
  struct guard *g = get_guard(L);
  if (!g->fired) {
    const char *kind = NULL;
    if (rb_interrupted)
      kind = RB_ERR_INTERRUPTED;
    else if (g->armed && g->deadline > 0 && rb_monotime() >= g->deadline)
      kind = RB_ERR_TIMEOUT;
    if (!kind)
      return;
    if (g->armed) {
      /* as in guard_hook: a stop raised from C must not be swallowed by a
       * pcall in the runbook either, so raise at every line from now on */
      g->fired = kind;
      lua_sethook(L, guard_hook, LUA_MASKLINE | LUA_MASKCOUNT, 1);
    }
  }
  raise_guard(L, g);
}

/* message handler: keeps structured errors, wraps anything else, and adds
 * a traceback (rb_error_normalize) */
static int guard_msgh(lua_State *L) {
  rb_error_normalize(L, 1, "error", 1);
  return 1;
}

/*
 * host.guarded(timeout_or_nil, fn, ...) -> true, results... | false, err
 * Runs fn with a count hook that raises on Ctrl-C or when timeout seconds
 * pass. Arming, the call and disarming all happen here in C, so no line of
 * Lua runs between the error and the disarm. err is always a table with
 * kind, message and traceback.
 */
static int l_guarded(lua_State *L) {
  double limit = luaL_optnumber(L, 1, 0);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  struct guard *g = get_guard(L);
  struct guard saved = *g;
  lua_Hook oldhook = lua_gethook(L);
  int oldmask = lua_gethookmask(L), oldcount = lua_gethookcount(L);

  g->armed = 1;
  g->fired = NULL;
  g->limit = limit;
  g->deadline = limit > 0 ? rb_monotime() + limit : 0;
  /* an enclosing deadline still applies */
  if (saved.armed && saved.deadline > 0 && (g->deadline == 0 || saved.deadline < g->deadline)) {
    g->deadline = saved.deadline;
    g->limit = saved.limit;
  }
  lua_sethook(L, guard_hook, LUA_MASKCOUNT, 1000);

  int nargs = lua_gettop(L) - 2;
  lua_pushcfunction(L, guard_msgh);
  lua_insert(L, 2);
  int status = lua_pcall(L, nargs, LUA_MULTRET, 2);

  lua_sethook(L, oldhook, oldmask, oldcount);
  *g = saved;

  if (status != LUA_OK) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  int nres = lua_gettop(L) - 2;
  lua_pushboolean(L, 1);
  lua_insert(L, 3);
  return nres + 1;
}

/* host.guard_coroutine(co): a coroutine made inside a guarded call inherits the guard */
static int l_guard_coroutine(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co != NULL, 1, "thread");
  if (get_guard(L)->armed)
    lua_sethook(co, guard_hook, LUA_MASKCOUNT, 1000);
  return 0;
}

static void on_signal(int sig) {
  (void)sig;
  if (rb_interrupted) {
    /* a second Ctrl-C means now */
    signal(SIGINT, SIG_DFL);
    raise(SIGINT);
  }
  rb_interrupted = 1;
}

static int l_trap_signals(lua_State *L) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  return 0;
}

static int l_interrupted(lua_State *L) {
  lua_pushboolean(L, rb_interrupted);
  return 1;
}

static int l_clear_interrupt(lua_State *L) {
  rb_interrupted = 0;
  return 0;
}

static int l_check_interrupt(lua_State *L) {
  rb_check_interrupt(L);
  return 0;
}

/* ---- who and where ------------------------------------------------------ */

static int l_user(lua_State *L) {
  const char *u = NULL;
  struct passwd pw, *res = NULL;
  char buf[1024];
  if (getpwuid_r(geteuid(), &pw, buf, sizeof buf, &res) == 0 && res)
    u = res->pw_name;
  if (!u)
    u = getenv("USER");
  lua_pushstring(L, u ? u : "unknown");
  return 1;
}

static int l_hostname(lua_State *L) {
  char buf[HOST_NAME_MAX + 1];
  if (gethostname(buf, sizeof buf) != 0)
    strcpy(buf, "unknown");
  buf[HOST_NAME_MAX] = '\0';
  lua_pushstring(L, buf);
  return 1;
}

static int l_pid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

/* pid_alive(pid) -> false only when no process of that pid exists on this
 * machine (kill 0 says ESRCH); a process of another user counts as alive */
static int l_pid_alive(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  luaL_argcheck(L, pid > 0 && pid <= INT_MAX, 1, "a pid expected");
  lua_pushboolean(L, kill((pid_t)pid, 0) == 0 || errno != ESRCH);
  return 1;
}

/* ---- terminal ------------------------------------------------------------- */

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

static int l_term_width(lua_State *L) {
  struct winsize ws;
  int fd = (int)luaL_optinteger(L, 1, 1);
  if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    lua_pushinteger(L, ws.ws_col);
  else
    lua_pushinteger(L, 80);
  return 1;
}

/* Reads one line from the terminal with echo off. Returns the line, or nil
 * and a message when there is no terminal. Used by secret.prompt only; the
 * caller wraps the result in a Secret at once. */
static int l_read_password(lua_State *L) {
  const char *prompt = luaL_optstring(L, 1, "Password: ");
  FILE *tty = fopen("/dev/tty", "r+");
  if (!tty) {
    lua_pushnil(L);
    lua_pushstring(L, "no terminal to prompt on");
    return 2;
  }
  struct termios old, quiet;
  int fd = fileno(tty);
  if (tcgetattr(fd, &old) != 0) {
    fclose(tty);
    lua_pushnil(L);
    lua_pushstring(L, "no terminal to prompt on");
    return 2;
  }
  quiet = old;
  quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
  fputs(prompt, tty);
  fflush(tty);
  tcsetattr(fd, TCSAFLUSH, &quiet);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  int c;
  while ((c = fgetc(tty)) != EOF && c != '\n')
    luaL_addchar(&b, (char)c);
  tcsetattr(fd, TCSAFLUSH, &old);
  fputc('\n', tty);
  fclose(tty);
  luaL_pushresult(&b);
  return 1;
}

/* host.read_line(prompt) -> line or nil at end of input (for confirmations) */
static int l_read_line(lua_State *L) {
  size_t plen;
  const char *prompt = luaL_optlstring(L, 1, "", &plen);
  rb_console_write(L, 2, prompt, plen);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char c;
  ssize_t n;
  int any = 0;
  while ((n = read(0, &c, 1)) == 1 || (n < 0 && errno == EINTR && !rb_interrupted)) {
    if (n < 0)
      continue;
    any = 1;
    if (c == '\n')
      break;
    luaL_addchar(&b, c);
  }
  if (!any) {
    lua_pushnil(L);
    return 1;
  }
  luaL_pushresult(&b);
  return 1;
}

/* environ([prefix]) -> {NAME = value, ...}: for options read from
 * RUNBOOK_PARAM_<NAME>; with prefix, only the variables whose name starts
 * with it (filtered here: most of the environment is not that, and copying
 * it all into a table was a measurable part of a start) */
static int l_environ(lua_State *L) {
  size_t plen = 0;
  const char *prefix = luaL_optlstring(L, 1, "", &plen);
  lua_newtable(L);
  for (char **e = environ; *e; e++) {
    if (plen && strncmp(*e, prefix, plen) != 0)
      continue;
    const char *eq = strchr(*e, '=');
    if (!eq)
      continue;
    lua_pushlstring(L, *e, (size_t)(eq - *e));
    lua_pushstring(L, eq + 1);
    lua_rawset(L, -3);
  }
  return 1;
}

static int l_version(lua_State *L) {
  lua_pushstring(L, RUNBOOK_VERSION);
  return 1;
}

static int l_source_stdlib(lua_State *L) {
  lua_pushstring(L, RUNBOOK_SOURCE_STDLIB);
  return 1;
}

static int l_redactor_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)rb_redactor_count(rb_host_get(L)->redactor));
  return 1;
}

static const luaL_Reg funcs[] = {
  {"write", l_write},
  {"footer", l_footer},
  {"scrub", l_scrub},
  {"now", l_now},
  {"monotime", l_monotime},
  {"iso_time", l_iso_time},
  {"sleep", l_sleep},
  {"guarded", l_guarded},
  {"error_of", l_error_of},
  {"guard_coroutine", l_guard_coroutine},
  {"trap_signals", l_trap_signals},
  {"interrupted", l_interrupted},
  {"clear_interrupt", l_clear_interrupt},
  {"check_interrupt", l_check_interrupt},
  {"user", l_user},
  {"hostname", l_hostname},
  {"pid", l_pid},
  {"pid_alive", l_pid_alive},
  {"isatty", l_isatty},
  {"term_width", l_term_width},
  {"read_password", l_read_password},
  {"read_line", l_read_line},
  {"version", l_version},
  {"environ", l_environ},
  {"source_stdlib", l_source_stdlib},
  {"redactor_count", l_redactor_count},
  {NULL, NULL},
};

int luaopen_runbook__host(lua_State *L) {
  luaL_newlib(L, funcs);
  push_error_mt(L);
  lua_setfield(L, -2, "error_mt");
  return 1;
}
