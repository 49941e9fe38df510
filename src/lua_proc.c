/*
 * runbook._proc: child processes as argv (never through a shell), each in
 * its own process group so a timeout kills the whole tree. Output is read
 * while the child runs (so pipes never fill), split into lines for the run
 * log, and the child is reaped in every path, including __gc.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "host.h"
#include "secret.h"

#define PROC_MT "runbook.Proc"

extern char **environ;

struct proc {
  pid_t pid; /* 0 once reaped */
  int in, out, err; /* pipe fds, -1 when closed or not piped */
  int group;
  int status; /* wait status once reaped */
  int detached;
  double started;
};

static struct proc *check_proc(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, PROC_MT);
}

static void close_fd(int *fd) {
  if (*fd >= 0) {
    close(*fd);
    *fd = -1;
  }
}

static int reap(struct proc *p, int block) {
  if (!p->pid)
    return 1;
  int st;
  pid_t r;
  do
    r = waitpid(p->pid, &st, block ? 0 : WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == p->pid || (r < 0 && errno == ECHILD)) {
    p->status = r == p->pid ? st : 0;
    p->pid = 0;
    return 1;
  }
  return 0;
}

static void signal_proc(struct proc *p, int sig) {
  if (p->pid)
    kill(p->group ? -p->pid : p->pid, sig);
}

/* ---- spawn ---------------------------------------------------------------- */

struct strv {
  char **v;
  size_t n, cap;
};

static void strv_free(struct strv *s) {
  for (size_t i = 0; i < s->n; i++)
    free(s->v[i]);
  free(s->v);
}

static int strv_add(struct strv *s, const char *p, size_t len) {
  if (s->n + 2 > s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 16;
    char **v = realloc(s->v, cap * sizeof *v);
    if (!v)
      return -1;
    s->v = v;
    s->cap = cap;
  }
  char *c = malloc(len + 1);
  if (!c)
    return -1;
  memcpy(c, p, len);
  c[len] = '\0';
  s->v[s->n++] = c;
  s->v[s->n] = NULL;
  return 0;
}

static int redirect_mode(lua_State *L, int opts, const char *field, const char *def) {
  static const char *const modes[] = {"pipe", "inherit", "null", "stdout", NULL};
  lua_getfield(L, opts, field);
  int m = luaL_checkoption(L, -1, def, modes);
  lua_pop(L, 1);
  return m;
}

/* spawn{argv=, env=, replace_env=, cwd=, stdin=, stdout=, stderr=, group=}
 *   -> Proc | nil, message, errno */
static int f_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  struct strv argv = {0}, envv = {0};
  int ok = 1;

  if (lua_getfield(L, 1, "argv") != LUA_TTABLE)
    return luaL_error(L, "spawn: argv must be a table of strings");
  lua_Integer argc = (lua_Integer)lua_rawlen(L, -1);
  if (argc < 1)
    return luaL_error(L, "spawn: argv is empty");
  for (lua_Integer i = 1; i <= argc && ok; i++) {
    lua_rawgeti(L, -1, i);
    size_t len;
    const char *a = rb_check_bytes(L, -1, &len, NULL);
    ok = strv_add(&argv, a, len) == 0;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);

  /* env: merged over the parent's unless replace_env */
  lua_getfield(L, 1, "replace_env");
  int replace = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, 1, "env");
  int has_env = lua_istable(L, -1);
  if (has_env) {
    if (!replace) {
      for (char **e = environ; *e && ok; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
          continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        int overridden = lua_rawget(L, -2) != LUA_TNIL;
        lua_pop(L, 1);
        if (!overridden)
          ok = strv_add(&envv, *e, strlen(*e)) == 0;
      }
    }
    lua_pushnil(L);
    while (ok && lua_next(L, -2)) {
      size_t klen, vlen;
      const char *k = lua_tolstring(L, -2, &klen);
      if (lua_type(L, -2) != LUA_TSTRING || memchr(k, '=', klen)) {
        strv_free(&argv);
        strv_free(&envv);
        return luaL_error(L, "spawn: env keys must be strings without '='");
      }
      const char *v = rb_check_bytes(L, -1, &vlen, NULL);
      char *kv = malloc(klen + vlen + 2);
      if (!kv) {
        ok = 0;
        break;
      }
      memcpy(kv, k, klen);
      kv[klen] = '=';
      memcpy(kv + klen + 1, v, vlen);
      ok = strv_add(&envv, kv, klen + vlen + 1) == 0;
      free(kv);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);

  lua_getfield(L, 1, "cwd");
  const char *cwd = lua_tostring(L, -1);
  int in_mode = redirect_mode(L, 1, "stdin", "null");
  int out_mode = redirect_mode(L, 1, "stdout", "pipe");
  int err_mode = redirect_mode(L, 1, "stderr", "pipe");
  lua_getfield(L, 1, "group");
  int group = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
  lua_pop(L, 1);

  struct proc *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  p->in = p->out = p->err = -1;
  luaL_setmetatable(L, PROC_MT);
  if (!ok) {
    strv_free(&argv);
    strv_free(&envv);
    return luaL_error(L, "out of memory");
  }

  int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1}, pexec[2] = {-1, -1};
  int failed = pipe2(pexec, O_CLOEXEC) != 0 || (in_mode == 0 && pipe2(pin, O_CLOEXEC) != 0) ||
               (out_mode == 0 && pipe2(pout, O_CLOEXEC) != 0) ||
               (err_mode == 0 && pipe2(perr, O_CLOEXEC) != 0);
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  pid_t pid = failed || devnull < 0 ? -1 : fork();
  if (pid == 0) {
    /* child: only async-signal-safe calls until exec */
    if (group)
      setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (in_mode == 0)
      dup2(pin[0], 0);
    else if (in_mode == 2)
      dup2(devnull, 0);
    if (out_mode == 0)
      dup2(pout[1], 1);
    else if (out_mode == 2)
      dup2(devnull, 1);
    if (err_mode == 0)
      dup2(perr[1], 2);
    else if (err_mode == 2)
      dup2(devnull, 2);
    else if (err_mode == 3)
      dup2(1, 2);
    if (cwd && chdir(cwd) != 0) {
      int e = errno;
      (void)!write(pexec[1], "c", 1);
      (void)!write(pexec[1], &e, sizeof e);
      _exit(127);
    }
    execvpe(argv.v[0], argv.v, has_env ? envv.v : environ);
    int e = errno;
    (void)!write(pexec[1], "x", 1);
    (void)!write(pexec[1], &e, sizeof e);
    _exit(127);
  }
  int e = errno;
  strv_free(&envv);
  if (devnull >= 0)
    close(devnull);
  close_fd(&pin[0]);
  close_fd(&pout[1]);
  close_fd(&perr[1]);
  close_fd(&pexec[1]);
  if (pid < 0) {
    close_fd(&pin[1]);
    close_fd(&pout[0]);
    close_fd(&perr[0]);
    close_fd(&pexec[0]);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot start %s: %s", argv.v[0], strerror(e));
    lua_pushinteger(L, e);
    strv_free(&argv);
    return 3;
  }
  p->pid = pid;
  p->group = group;
  p->in = pin[1];
  p->out = pout[0];
  p->err = perr[0];
  p->started = rb_monotime();

  /* the exec pipe closes on a successful exec; otherwise it carries errno */
  char what;
  ssize_t n;
  do
    n = read(pexec[0], &what, 1);
  while (n < 0 && errno == EINTR);
  if (n == 1) {
    int ce = 0;
    (void)!read(pexec[0], &ce, sizeof ce);
    close_fd(&pexec[0]);
    reap(p, 1);
    close_fd(&p->in);
    close_fd(&p->out);
    close_fd(&p->err);
    lua_pushnil(L);
    if (what == 'c')
      lua_pushfstring(L, "cannot change directory to %s: %s", cwd, strerror(ce));
    else if (ce == ENOENT)
      lua_pushfstring(L, "%s: command not found (not on PATH)", argv.v[0]);
    else
      lua_pushfstring(L, "cannot run %s: %s", argv.v[0], strerror(ce));
    lua_pushinteger(L, ce);
    strv_free(&argv);
    return 3;
  }
  close_fd(&pexec[0]);
  strv_free(&argv);
  if (p->in >= 0)
    fcntl(p->in, F_SETFL, O_NONBLOCK);
  return 1;
}

/* ---- talking to the child --------------------------------------------------- */

/* Splits data (after the partial line kept in parts[stream]) into lines and
 * calls cb(stream, line) for each; at eof the remainder is a line too. All
 * state lives in Lua values, so an error in cb leaks nothing. */
static void emit_lines(lua_State *L, int cb, int parts, const char *stream, const char *data,
                       size_t n, int eof) {
  if (!cb)
    return;
  lua_getfield(L, parts, stream);
  size_t plen;
  const char *prev = lua_tolstring(L, -1, &plen);
  if (plen) {
    lua_pushlstring(L, data, n);
    lua_concat(L, 2);
  } else {
    lua_pop(L, 1);
    lua_pushlstring(L, data, n);
  }
  (void)prev;
  size_t len;
  const char *all = lua_tolstring(L, -1, &len);
  int allidx = lua_gettop(L);
  size_t start = 0;
  for (size_t i = 0; i < len; i++) {
    if (all[i] != '\n')
      continue;
    lua_pushvalue(L, cb);
    lua_pushstring(L, stream);
    lua_pushlstring(L, all + start, i - start);
    lua_call(L, 2, 0);
    start = i + 1;
  }
  if (eof && start < len) {
    lua_pushvalue(L, cb);
    lua_pushstring(L, stream);
    lua_pushlstring(L, all + start, len - start);
    lua_call(L, 2, 0);
    start = len;
  }
  lua_pushlstring(L, all + start, len - start);
  lua_setfield(L, parts, stream);
  lua_settop(L, allidx - 1);
}

static void concat_chunks(lua_State *L, int tab, lua_Integer n) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, tab, i);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
}

/* p:communicate{input=, timeout=, grace=, on_line=function(stream, line), capture=true}
 *   -> {code=, signal=, stdout=, stderr=, timed_out=, interrupted=, duration=} */
static int m_communicate(lua_State *L) {
  struct proc *p = check_proc(L, 1);
  size_t inlen = 0, inoff = 0;
  const char *input = NULL;
  double timeout = 0, grace = 5;
  int cb = 0, capture = 1;
  lua_settop(L, 2);
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "input");
    input = rb_opt_bytes(L, -1, &inlen, NULL); /* anchored in the opts table */
    lua_pop(L, 1);
    lua_getfield(L, 2, "timeout");
    timeout = luaL_optnumber(L, -1, 0);
    lua_getfield(L, 2, "grace");
    grace = luaL_optnumber(L, -1, 5);
    lua_getfield(L, 2, "capture");
    if (!lua_isnil(L, -1))
      capture = lua_toboolean(L, -1);
    lua_pop(L, 3);
  }
  if (lua_istable(L, 2) && lua_getfield(L, 2, "on_line") == LUA_TFUNCTION)
    cb = lua_gettop(L);
  else {
    lua_settop(L, 2);
    lua_pushnil(L);
  }
  /* 3: on_line, 4: stdout chunks, 5: stderr chunks, 6: partial lines */
  lua_newtable(L);
  lua_newtable(L);
  lua_newtable(L);
  lua_Integer outn = 0, errn = 0;
  if (p->in >= 0 && !input)
    close_fd(&p->in);

  double start = p->started, guard_deadline = rb_deadline(L);
  double deadline = timeout > 0 ? rb_monotime() + timeout : 0;
  if (guard_deadline > 0 && (deadline == 0 || guard_deadline < deadline))
    deadline = guard_deadline;
  int timed_out = 0, interrupted = 0;
  double kill_at = 0;
  char buf[16384];

  while (p->out >= 0 || p->err >= 0 || p->pid) {
    double now = rb_monotime();
    if (!kill_at && (rb_interrupted || (deadline > 0 && now >= deadline))) {
      interrupted = rb_interrupted != 0;
      timed_out = !interrupted;
      signal_proc(p, SIGTERM);
      kill_at = now + grace;
    }
    if (kill_at && now >= kill_at) {
      signal_proc(p, SIGKILL);
      kill_at = now + 3600; /* once */
    }
    struct pollfd fds[3];
    int nf = 0, io = -1, oo = -1, eo = -1;
    if (p->in >= 0 && inoff < inlen) {
      io = nf;
      fds[nf++] = (struct pollfd){p->in, POLLOUT, 0};
    }
    if (p->out >= 0) {
      oo = nf;
      fds[nf++] = (struct pollfd){p->out, POLLIN, 0};
    }
    if (p->err >= 0) {
      eo = nf;
      fds[nf++] = (struct pollfd){p->err, POLLIN, 0};
    }
    if (nf == 0) {
      if (reap(p, 0))
        break;
      struct timespec ts = {0, 5 * 1000 * 1000};
      nanosleep(&ts, NULL);
      continue;
    }
    int r = poll(fds, (nfds_t)nf, 50);
    if (r < 0 && errno != EINTR)
      break;
    if (r <= 0)
      continue;
    if (io >= 0 && fds[io].revents) {
      ssize_t w = write(p->in, input + inoff, inlen - inoff);
      if (w > 0)
        inoff += (size_t)w;
      if (w < 0 && errno != EAGAIN && errno != EINTR)
        inoff = inlen; /* the child closed its stdin */
      if (inoff >= inlen)
        close_fd(&p->in);
    }
    for (int k = 0; k < 2; k++) {
      int slot = k == 0 ? oo : eo;
      int *fd = k == 0 ? &p->out : &p->err;
      const char *name = k == 0 ? "stdout" : "stderr";
      if (slot < 0 || !fds[slot].revents)
        continue;
      ssize_t n = read(*fd, buf, sizeof buf);
      if (n > 0) {
        if (capture) {
          lua_pushlstring(L, buf, (size_t)n);
          lua_rawseti(L, k == 0 ? 4 : 5, k == 0 ? ++outn : ++errn);
        }
        emit_lines(L, cb, 6, name, buf, (size_t)n, 0);
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        emit_lines(L, cb, 6, name, buf, 0, 1);
        close_fd(fd);
      }
    }
  }
  close_fd(&p->in);
  reap(p, 1);

  lua_createtable(L, 0, 8);
  concat_chunks(L, 4, outn);
  lua_setfield(L, -2, "stdout");
  concat_chunks(L, 5, errn);
  lua_setfield(L, -2, "stderr");
  if (WIFEXITED(p->status)) {
    lua_pushinteger(L, WEXITSTATUS(p->status));
    lua_setfield(L, -2, "code");
  } else if (WIFSIGNALED(p->status)) {
    lua_pushinteger(L, WTERMSIG(p->status));
    lua_setfield(L, -2, "signal");
  }
  lua_pushboolean(L, timed_out);
  lua_setfield(L, -2, "timed_out");
  lua_pushboolean(L, interrupted);
  lua_setfield(L, -2, "interrupted");
  lua_pushnumber(L, rb_monotime() - start);
  lua_setfield(L, -2, "duration");
  return 1;
}

/* p:read(max [, timeout]) -> data | "" on timeout | nil at end of output */
static int m_read(lua_State *L) {
  struct proc *p = check_proc(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, 65536);
  double timeout = luaL_optnumber(L, 3, -1);
  luaL_argcheck(L, max > 0, 2, "positive size expected");
  if (p->out < 0) {
    lua_pushnil(L);
    return 1;
  }
  double end = timeout >= 0 ? rb_monotime() + timeout : 0;
  for (;;) {
    rb_check_interrupt(L);
    struct pollfd fd = {p->out, POLLIN, 0};
    int r = poll(&fd, 1, 50);
    if (r > 0) {
      luaL_Buffer b;
      char *dst = luaL_buffinitsize(L, &b, (size_t)max);
      ssize_t n;
      do
        n = read(p->out, dst, (size_t)max);
      while (n < 0 && errno == EINTR);
      if (n <= 0) {
        close_fd(&p->out);
        lua_pushnil(L);
        return 1;
      }
      luaL_pushresultsize(&b, (size_t)n);
      return 1;
    }
    if (end > 0 && rb_monotime() >= end) {
      lua_pushliteral(L, "");
      return 1;
    }
  }
}

/* p:write(data) -> true | nil, message (blocking; for streaming into stdin) */
static int m_write(lua_State *L) {
  struct proc *p = check_proc(L, 1);
  size_t len, off = 0;
  const char *data = rb_check_bytes(L, 2, &len, NULL);
  if (p->in < 0)
    return luaL_error(L, "the process's stdin is not a pipe or is closed");
  while (off < len) {
    struct pollfd fd = {p->in, POLLOUT, 0};
    if (poll(&fd, 1, 50) <= 0) {
      rb_check_interrupt(L);
      continue;
    }
    ssize_t n = write(p->in, data + off, len - off);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (n < 0) {
      lua_pushnil(L);
      lua_pushstring(L, strerror(errno));
      return 2;
    }
    off += (size_t)n;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int m_close_stdin(lua_State *L) {
  close_fd(&check_proc(L, 1)->in);
  return 0;
}

static void push_status(lua_State *L, struct proc *p) {
  if (WIFEXITED(p->status)) {
    lua_pushinteger(L, WEXITSTATUS(p->status));
    lua_pushnil(L);
  } else {
    lua_pushnil(L);
    lua_pushinteger(L, WIFSIGNALED(p->status) ? WTERMSIG(p->status) : 0);
  }
}

/* p:wait([timeout]) -> code, signal | nil, nil, "timeout" */
static int m_wait(lua_State *L) {
  struct proc *p = check_proc(L, 1);
  double timeout = luaL_optnumber(L, 2, -1);
  double end = timeout >= 0 ? rb_monotime() + timeout : 0;
  while (!reap(p, 0)) {
    if (end > 0 && rb_monotime() >= end) {
      lua_pushnil(L);
      lua_pushnil(L);
      lua_pushliteral(L, "timeout");
      return 3;
    }
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  close_fd(&p->in);
  push_status(L, p);
  return 2;
}

/* p:stopped([timeout]) -> true once the child is stopped (SIGSTOP), for tests */
static int m_stopped(lua_State *L) {
  struct proc *p = check_proc(L, 1);
  double timeout = luaL_optnumber(L, 2, 10);
  double end = rb_monotime() + timeout;
  while (p->pid) {
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG | WUNTRACED);
    if (r == p->pid) {
      if (WIFSTOPPED(st)) {
        lua_pushboolean(L, 1);
        return 1;
      }
      p->status = st;
      p->pid = 0;
      break;
    }
    if (rb_monotime() >= end)
      break;
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  lua_pushboolean(L, 0);
  return 1;
}

static int m_kill(lua_State *L) {
  static const char *const names[] = {"TERM", "KILL", "INT", "STOP", "CONT", "HUP", NULL};
  static const int sigs[] = {SIGTERM, SIGKILL, SIGINT, SIGSTOP, SIGCONT, SIGHUP};
  struct proc *p = check_proc(L, 1);
  int sig = sigs[luaL_checkoption(L, 2, "TERM", names)];
  if (p->pid)
    kill(lua_toboolean(L, 3) && p->group ? -p->pid : p->pid, sig);
  return 0;
}

static int m_pid(lua_State *L) {
  struct proc *p = check_proc(L, 1);
  if (p->pid)
    lua_pushinteger(L, p->pid);
  else
    lua_pushnil(L);
  return 1;
}

static int m_detach(lua_State *L) {
  check_proc(L, 1)->detached = 1;
  return 0;
}

/* a forgotten child is killed and reaped, never left running or a zombie */
static int m_gc(lua_State *L) {
  struct proc *p = check_proc(L, 1);
  close_fd(&p->in);
  close_fd(&p->out);
  close_fd(&p->err);
  if (p->pid && !p->detached) {
    signal_proc(p, SIGKILL);
    reap(p, 1);
  }
  return 0;
}

static const luaL_Reg methods[] = {
  {"communicate", m_communicate},
  {"read", m_read},
  {"write", m_write},
  {"close_stdin", m_close_stdin},
  {"wait", m_wait},
  {"stopped", m_stopped},
  {"kill", m_kill},
  {"pid", m_pid},
  {"detach", m_detach},
  {NULL, NULL},
};

static const luaL_Reg funcs[] = {{"spawn", f_spawn}, {NULL, NULL}};

int luaopen_runbook__proc(lua_State *L) {
  luaL_newmetatable(L, PROC_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, m_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, m_gc);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
