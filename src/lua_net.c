/*
 * runbook._net: name resolution with a timeout (resolve.c) and TCP
 * connect checks, non-blocking and interruptible.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "host.h"
#include "resolve.h"

static double deadline_of(lua_State *L, double timeout) {
  double d = timeout > 0 ? rb_monotime() + timeout : 0;
  double g = rb_deadline(L);
  if (g > 0 && (d == 0 || g < d))
    d = g;
  return d;
}

static int family_opt(lua_State *L, int idx) {
  static const char *const names[] = {"any", "inet", "inet6", NULL};
  static const int fams[] = {AF_UNSPEC, AF_INET, AF_INET6};
  return fams[luaL_checkoption(L, idx, "any", names)];
}

static const char *gai_code(int rc) {
  switch (rc) {
  case EAI_NONAME:
    return "not-found";
#ifdef EAI_NODATA
  case EAI_NODATA:
    return "no-address";
#endif
  case EAI_AGAIN:
    return "temporary";
  default:
    return "failed";
  }
}

static void push_gai_error(lua_State *L, const char *name, int rc, int err) {
  const char *why = rc == EAI_SYSTEM ? strerror(err) : gai_strerror(rc);
  rb_push_error(L, "dns", gai_code(rc), "dns: cannot resolve %s: %s", name, why);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "name");
}

/* lua_pushfstring has no %g: seconds as text for messages */
static const char *secs(double s, char *buf, size_t cap) {
  snprintf(buf, cap, "%g", s);
  return buf;
}

static void addr_text(const struct sockaddr *sa, char *buf, size_t cap) {
  if (sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)cap);
  else if (sa->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)cap);
  else
    snprintf(buf, cap, "?");
}

/* after LK_TIMEOUT/LK_INTERRUPTED: raises for Ctrl-C or the step's deadline */
static void check_stop(lua_State *L) {
  rb_check_interrupt(L);
}

/* resolve(name [, {timeout=, family=}]) -> {addresses={...}, canonical=} | nil, err */
static int f_resolve(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  double timeout = 5;
  int family = AF_UNSPEC;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "timeout");
    timeout = luaL_optnumber(L, -1, 5);
    lua_getfield(L, 2, "family");
    family = family_opt(L, -1);
    lua_pop(L, 2);
  }
  luaL_argcheck(L, timeout > 0, 2, "timeout must be positive");
  luaL_argcheck(L, *name != '\0', 1, "empty name");
  struct addrinfo *res;
  int rc = 0, err = 0;
  int r = rb_resolve(name, family, deadline_of(L, timeout), &res, &rc, &err);
  if (r == LK_TIMEOUT || r == LK_INTERRUPTED) {
    check_stop(L);
    lua_pushnil(L);
    char t[32];
    rb_push_error(L, "dns", "timeout", "dns: cannot resolve %s: no answer within %s s", name, secs(timeout, t, sizeof t));
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    return 2;
  }
  if (r == LK_FAILED) {
    lua_pushnil(L);
    push_gai_error(L, name, rc, err);
    return 2;
  }
  lua_createtable(L, 0, 2);
  lua_newtable(L);
  lua_newtable(L); /* seen, for de-duplication */
  int n = 0;
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    char buf[INET6_ADDRSTRLEN];
    addr_text(a->ai_addr, buf, sizeof buf);
    if (lua_getfield(L, -1, buf) != LUA_TNIL) {
      lua_pop(L, 1);
      continue;
    }
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, buf);
    lua_pushstring(L, buf);
    lua_rawseti(L, -3, ++n);
  }
  lua_pop(L, 1);
  lua_setfield(L, -2, "addresses");
  if (res && res->ai_canonname) {
    lua_pushstring(L, res->ai_canonname);
    lua_setfield(L, -2, "canonical");
  }
  freeaddrinfo(res);
  return 1;
}

/* Tries one address until the deadline: 0 connected, else an errno
 * (ETIMEDOUT at the deadline, EINTR on Ctrl-C). */
static int try_connect(const struct addrinfo *a, int port, double deadline) {
  struct sockaddr_storage ss;
  memcpy(&ss, a->ai_addr, a->ai_addrlen);
  if (ss.ss_family == AF_INET)
    ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return errno;
  int e = 0;
  if (connect(fd, (struct sockaddr *)&ss, a->ai_addrlen) != 0) {
    e = errno;
    if (e == EINPROGRESS) {
      e = ETIMEDOUT;
      for (;;) {
        if (rb_interrupted) {
          e = EINTR;
          break;
        }
        double now = rb_monotime();
        if (deadline > 0 && now >= deadline)
          break;
        int ms = 50;
        if (deadline > 0 && (deadline - now) * 1000.0 < ms)
          ms = (int)((deadline - now) * 1000.0) + 1;
        struct pollfd p = {fd, POLLOUT, 0};
        int r = poll(&p, 1, ms);
        if (r > 0) {
          socklen_t len = sizeof e;
          if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0)
            e = errno;
          break;
        }
        if (r < 0 && errno != EINTR) {
          e = errno;
          break;
        }
      }
    }
  }
  close(fd);
  return e;
}

static const char *errno_code(int e) {
  switch (e) {
  case ECONNREFUSED:
    return "refused";
  case ETIMEDOUT:
    return "timeout";
  case ENETUNREACH:
  case EHOSTUNREACH:
    return "unreachable";
  default:
    return "failed";
  }
}

/* tcp_connect(host, port [, timeout]) -> "addr:port" | nil, err
 * Connects and closes at once: a readiness check, nothing is sent. */
static int f_tcp_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  double timeout = luaL_optnumber(L, 3, 5);
  luaL_argcheck(L, port >= 1 && port <= 65535, 2, "port must be from 1 to 65535");
  luaL_argcheck(L, timeout > 0, 3, "timeout must be positive");
  double deadline = deadline_of(L, timeout);
  struct addrinfo *res;
  int rc = 0, err = 0;
  int r = rb_resolve(host, AF_UNSPEC, deadline, &res, &rc, &err);
  if (r == LK_TIMEOUT || r == LK_INTERRUPTED) {
    check_stop(L);
    lua_pushnil(L);
    char t[32];
    rb_push_error(L, "net", "timeout", "tcp %s:%d: cannot resolve %s within %s s", host, (int)port, host,
                  secs(timeout, t, sizeof t));
    return 2;
  }
  if (r == LK_FAILED) {
    lua_pushnil(L);
    push_gai_error(L, host, rc, err);
    return 2;
  }
  int e = ENOENT;
  char buf[INET6_ADDRSTRLEN] = "";
  for (struct addrinfo *a = res; a; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6)
      continue;
    addr_text(a->ai_addr, buf, sizeof buf);
    e = try_connect(a, (int)port, deadline);
    if (e == 0 || e == EINTR || e == ETIMEDOUT)
      break;
  }
  freeaddrinfo(res);
  if (e == EINTR || (e == ETIMEDOUT && rb_deadline(L) > 0 && rb_monotime() >= rb_deadline(L)))
    check_stop(L);
  if (e == 0) {
    lua_pushfstring(L, strchr(buf, ':') ? "[%s]:%d" : "%s:%d", buf, (int)port);
    return 1;
  }
  lua_pushnil(L);
  char t[32];
  if (e == ETIMEDOUT)
    rb_push_error(L, "net", "timeout", "tcp %s:%d: no connection within %s s", host, (int)port, secs(timeout, t, sizeof t));
  else
    rb_push_error(L, "net", errno_code(e), "tcp %s:%d: %s", host, (int)port, strerror(e));
  return 2;
}

static const luaL_Reg funcs[] = {
  {"resolve", f_resolve},
  {"tcp_connect", f_tcp_connect},
  {NULL, NULL},
};

int luaopen_runbook__net(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
