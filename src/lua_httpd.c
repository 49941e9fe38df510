/*
 * runbook._httpd: a small HTTP server over libmicrohttpd, for `runbook
 * serve`. MHD runs in its external-polling mode: no thread of its own; the
 * Lua main thread waits on MHD's epoll descriptor in srv:run() and calls
 * MHD_run, which calls the access handler, which calls the Lua handler
 * under lua_pcall. So Lua only ever runs on the thread that owns the state,
 * and a Lua error never unwinds through libmicrohttpd.
 *
 *   local httpd = require "runbook._httpd"
 *   httpd.parse_address("127.0.0.1:8080") -> {host=, port=, family=, loopback=} | nil, message
 *   local srv = httpd.listen { host = "127.0.0.1", port = 0, handler = function(req)
 *     -- req: method, path, version, remote, query, headers (lowercased), cookies
 *     return 200, { ["Content-Type"] = "text/plain" }, "body"
 *   end }                                 -> runbook.httpd.Server | nil, err
 *   srv:port()  srv:run(seconds) -> requests answered   srv:close()
 *
 * Request bodies are read and dropped: the server is read-only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "clock.h"
#include "dl_mhd.h"
#include "host.h"

#define SERVER_MT "runbook.httpd.Server"

struct server {
  struct MHD_Daemon *d; /* NULL once closed */
  lua_State *L;         /* the state inside srv:run(), NULL outside it */
  int port;
  int answered;         /* requests answered by the current srv:run() */
};

/* ------------------------------------------------------------------ */
/* addresses */

struct addr {
  union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
  } u;
  socklen_t len;
  int loopback;
  char host[INET6_ADDRSTRLEN];
};

/* "A.B.C.D:PORT" or "[V6]:PORT"; 0 or -1 with a message in err */
static int parse_address(const char *s, struct addr *a, char *err, size_t errlen) {
  char host[INET6_ADDRSTRLEN + 2];
  const char *colon, *h = s;
  size_t hl;
  memset(a, 0, sizeof *a);
  if (*s == '[') {
    const char *close = strchr(s, ']');
    if (!close || close[1] != ':') {
      snprintf(err, errlen, "'%s' is not [IPV6]:PORT", s);
      return -1;
    }
    h = s + 1;
    hl = (size_t)(close - h);
    colon = close + 1;
  } else {
    colon = strrchr(s, ':');
    if (!colon) {
      snprintf(err, errlen, "'%s' has no port (ADDRESS:PORT, such as 127.0.0.1:8080)", s);
      return -1;
    }
    hl = (size_t)(colon - s);
  }
  if (hl == 0 || hl >= sizeof host) {
    snprintf(err, errlen, "'%s' has no address (ADDRESS:PORT, such as 127.0.0.1:8080)", s);
    return -1;
  }
  memcpy(host, h, hl);
  host[hl] = 0;
  char *end;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (colon[1] == 0 || *end || errno || port < 0 || port > 65535) {
    snprintf(err, errlen, "'%s': the port must be a number from 0 to 65535", s);
    return -1;
  }
  if (inet_pton(AF_INET, host, &a->u.in4.sin_addr) == 1) {
    a->u.in4.sin_family = AF_INET;
    a->u.in4.sin_port = htons((uint16_t)port);
    a->len = sizeof a->u.in4;
    a->loopback = (ntohl(a->u.in4.sin_addr.s_addr) >> 24) == 127;
  } else if (inet_pton(AF_INET6, host, &a->u.in6.sin6_addr) == 1) {
    a->u.in6.sin6_family = AF_INET6;
    a->u.in6.sin6_port = htons((uint16_t)port);
    a->len = sizeof a->u.in6;
    const struct in6_addr *x = &a->u.in6.sin6_addr;
    a->loopback = IN6_IS_ADDR_LOOPBACK(x) ||
                  (IN6_IS_ADDR_V4MAPPED(x) && x->s6_addr[12] == 127);
  } else {
    snprintf(err, errlen, "'%s' is not a numeric IPv4 or IPv6 address", host);
    return -1;
  }
  inet_ntop(a->u.sa.sa_family, a->u.sa.sa_family == AF_INET ? (void *)&a->u.in4.sin_addr
                                                            : (void *)&a->u.in6.sin6_addr,
            a->host, sizeof a->host);
  return 0;
}

static int f_parse_address(lua_State *L) {
  struct addr a;
  char err[200];
  if (parse_address(luaL_checkstring(L, 1), &a, err, sizeof err) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_createtable(L, 0, 4);
  lua_pushstring(L, a.host);
  lua_setfield(L, -2, "host");
  lua_pushinteger(L, ntohs(a.u.sa.sa_family == AF_INET ? a.u.in4.sin_port : a.u.in6.sin6_port));
  lua_setfield(L, -2, "port");
  lua_pushstring(L, a.u.sa.sa_family == AF_INET ? "ipv4" : "ipv6");
  lua_setfield(L, -2, "family");
  lua_pushboolean(L, a.loopback);
  lua_setfield(L, -2, "loopback");
  return 1;
}

/* ------------------------------------------------------------------ */
/* one request */

/* A request's headers, query arguments and cookies, gathered in C first
 * (the strings are MHD's, alive while the request is answered), so no Lua
 * allocation, and no error, happens inside MHD's iteration. */
struct kv {
  enum MHD_ValueKind kind;
  const char *k, *v;
};
struct kvs {
  struct kv *items;
  size_t n, cap;
  int failed;
};

static enum MHD_Result gather(void *cls, enum MHD_ValueKind kind, const char *k, const char *v) {
  struct kvs *c = cls;
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 32;
    struct kv *p = realloc(c->items, cap * sizeof *p);
    if (!p) {
      c->failed = 1;
      return MHD_NO;
    }
    c->items = p;
    c->cap = cap;
  }
  c->items[c->n++] = (struct kv){kind, k, v ? v : ""};
  return MHD_YES;
}

struct request {
  struct MHD_Connection *c;
  const char *url, *method, *version;
  struct kvs kv;
};

static void push_lower(lua_State *L, const char *s) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (; *s; s++)
    luaL_addchar(&b, (*s >= 'A' && *s <= 'Z') ? (char)(*s + 32) : *s);
  luaL_pushresult(&b);
}

/* protected: (handler, request*) -> status, headers, body */
static int call_handler(lua_State *L) {
  struct request *r = lua_touserdata(L, 2);
  lua_settop(L, 1);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, r->method);
  lua_setfield(L, -2, "method");
  lua_pushstring(L, r->url);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, r->version);
  lua_setfield(L, -2, "version");
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (ci && ci->client_addr) {
    char buf[INET6_ADDRSTRLEN] = "";
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
      inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf, sizeof buf);
    else if (sa->sa_family == AF_INET6)
      inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf, sizeof buf);
    lua_pushstring(L, buf);
    lua_setfield(L, -2, "remote");
  }
  static const struct {
    enum MHD_ValueKind kind;
    const char *field;
  } kinds[] = {{MHD_HEADER_KIND, "headers"}, {MHD_GET_ARGUMENT_KIND, "query"}, {MHD_COOKIE_KIND, "cookies"}};
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    lua_newtable(L);
    for (size_t i = 0; i < r->kv.n; i++) {
      const struct kv *e = &r->kv.items[i];
      if (e->kind != kinds[k].kind)
        continue;
      if (e->kind == MHD_HEADER_KIND)
        push_lower(L, e->k);
      else
        lua_pushstring(L, e->k);
      lua_pushstring(L, e->v);
      lua_rawset(L, -3); /* the last of a repeated name wins */
    }
    lua_setfield(L, -2, kinds[k].field);
  }
  lua_call(L, 1, 3);
  return 3;
}

static int bad_header_text(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] == '\r' || s[i] == '\n' || s[i] == 0)
      return 1;
  return n == 0;
}

static enum MHD_Result send_plain(struct MHD_Connection *c, unsigned int status, const char *text) {
  struct MHD_Response *res =
    MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
  if (!res)
    return MHD_NO;
  MHD_add_response_header(res, "Content-Type", "text/plain; charset=utf-8");
  MHD_add_response_header(res, "Cache-Control", "no-store");
  enum MHD_Result rc = MHD_queue_response(c, status, res);
  MHD_destroy_response(res);
  return rc;
}

/* builds and queues the response from status, headers, body at the top of L */
static enum MHD_Result send_result(lua_State *L, struct MHD_Connection *c) {
  int isnum;
  lua_Integer status = lua_tointegerx(L, -3, &isnum);
  if (!isnum || status < 100 || status > 599 || !lua_istable(L, -2) || lua_type(L, -1) != LUA_TSTRING)
    return send_plain(c, 500, "internal error: the handler's answer is not status, headers, body\n");
  size_t blen;
  const char *body = lua_tolstring(L, -1, &blen);
  struct MHD_Response *res = MHD_create_response_from_buffer(blen, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (!res)
    return MHD_NO;
  lua_pushnil(L);
  while (lua_next(L, -3) != 0) {
    size_t kl, vl;
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &kl) : NULL;
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &vl) : NULL;
    if (!k || !v || bad_header_text(k, kl) || (vl > 0 && bad_header_text(v, vl)) ||
        MHD_add_response_header(res, k, v) != MHD_YES) {
      MHD_destroy_response(res);
      lua_pop(L, 2);
      return send_plain(c, 500, "internal error: a response header is not a plain name and value\n");
    }
    lua_pop(L, 1);
  }
  enum MHD_Result rc = MHD_queue_response(c, (unsigned int)status, res);
  MHD_destroy_response(res);
  return rc;
}

static char first_call; /* *con_cls for a request whose headers have been seen */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  struct server *s = cls;
  if (*con_cls == NULL) {
    *con_cls = &first_call;
    return MHD_YES;
  }
  if (*upload_data_size != 0) { /* a body: read and dropped */
    *upload_data_size = 0;
    return MHD_YES;
  }
  lua_State *L = s->L;
  if (!L)
    return MHD_NO;
  struct request r = {c, url, method, version, {NULL, 0, 0, 0}};
  MHD_get_connection_values(c, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND | MHD_COOKIE_KIND, gather, &r.kv);
  enum MHD_Result rc;
  if (r.kv.failed) {
    rc = send_plain(c, 503, "out of memory\n");
  } else if (!lua_checkstack(L, 8)) {
    rc = send_plain(c, 503, "out of memory\n");
  } else {
    int top = lua_gettop(L);
    lua_pushcfunction(L, call_handler);
    lua_getiuservalue(L, 1, 1); /* srv:run's self is at 1: its handler */
    lua_pushlightuserdata(L, &r);
    if (lua_pcall(L, 2, 3, 0) == LUA_OK)
      rc = send_result(L, c);
    else
      rc = send_plain(c, 500, "internal error\n");
    lua_settop(L, top);
  }
  free(r.kv.items);
  s->answered++;
  return rc;
}

/* ------------------------------------------------------------------ */
/* the server */

static struct server *check_server(lua_State *L) {
  struct server *s = luaL_checkudata(L, 1, SERVER_MT);
  if (!s->d)
    luaL_error(L, "attempt to use a closed HTTP server");
  return s;
}

static int srv_close(lua_State *L) {
  struct server *s = luaL_checkudata(L, 1, SERVER_MT);
  if (s->L)
    return luaL_error(L, "cannot close the HTTP server from inside its own handler");
  if (s->d) {
    MHD_stop_daemon(s->d); /* closes the listening socket too */
    s->d = NULL;
  }
  return 0;
}

static int srv_port(lua_State *L) {
  lua_pushinteger(L, check_server(L)->port);
  return 1;
}

/* srv:run(seconds): waits up to `seconds` for activity, answers what is
 * ready, returns the number of requests answered (0 on a timeout). Returns
 * early on Ctrl-C (the caller checks host.interrupted()). */
static int srv_run(lua_State *L) {
  struct server *s = check_server(L);
  double seconds = luaL_optnumber(L, 2, 1.0);
  if (s->L)
    return luaL_error(L, "srv:run called from inside its own handler");
  lua_settop(L, 1);
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_EPOLL_FD);
  if (!di)
    return luaL_error(L, "libmicrohttpd gives no epoll descriptor");
  int wait = seconds <= 0 ? 0 : (int)(seconds * 1000.0);
  MHD_UNSIGNED_LONG_LONG to;
  if (MHD_get_timeout(s->d, &to) == MHD_YES && to < (MHD_UNSIGNED_LONG_LONG)wait)
    wait = (int)to;
  struct pollfd p = {di->epoll_fd, POLLIN, 0};
  if (!rb_interrupted)
    poll(&p, 1, wait); /* EINTR on a signal is fine: MHD_run finds nothing */
  s->L = L;
  s->answered = 0;
  MHD_run(s->d);
  s->L = NULL;
  lua_pushinteger(L, s->answered);
  return 1;
}

static int srv_tostring(lua_State *L) {
  struct server *s = luaL_checkudata(L, 1, SERVER_MT);
  if (s->d)
    lua_pushfstring(L, "runbook.httpd.Server (port %d)", s->port);
  else
    lua_pushliteral(L, "runbook.httpd.Server (closed)");
  return 1;
}

static int listen_socket(const struct addr *a, char *err, size_t errlen) {
  int fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    snprintf(err, errlen, "socket: %s", strerror(errno));
    return -1;
  }
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (a->u.sa.sa_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
  if (bind(fd, &a->u.sa, a->len) != 0 || listen(fd, 64) != 0) {
    snprintf(err, errlen, "%s", strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

/* listen{host=, port=, handler=} -> Server | nil, err */
static int f_listen(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "host");
  const char *h = luaL_optstring(L, -1, "127.0.0.1");
  lua_getfield(L, 1, "port");
  lua_Integer port = luaL_optinteger(L, -1, 8080);
  lua_getfield(L, 1, "handler");
  luaL_argexpected(L, lua_isfunction(L, -1), 1, "handler function");
  luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port must be 0 to 65535");
  char spec[INET6_ADDRSTRLEN + 16], err[256];
  snprintf(spec, sizeof spec, strchr(h, ':') ? "[%s]:%d" : "%s:%d", h, (int)port);
  struct addr a;
  if (parse_address(spec, &a, err, sizeof err) != 0)
    return luaL_argerror(L, 1, err);

  struct server *s = lua_newuserdatauv(L, sizeof *s, 1);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, SERVER_MT);
  lua_pushvalue(L, -2);
  lua_setiuservalue(L, -2, 1);

  int fd = listen_socket(&a, err, sizeof err);
  if (fd < 0) {
    rb_push_error(L, "serve", "listen", "cannot listen on %s: %s", spec, err);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  union {
    struct sockaddr sa;
    struct sockaddr_in6 in6;
  } bound;
  socklen_t bl = sizeof bound;
  getsockname(fd, &bound.sa, &bl);
  s->port = ntohs(bound.sa.sa_family == AF_INET ? ((struct sockaddr_in *)(void *)&bound)->sin_port : bound.in6.sin6_port);
  unsigned int flags = MHD_USE_EPOLL | (a.u.sa.sa_family == AF_INET6 ? MHD_USE_IPv6 : 0);
  s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                          MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30,
                          MHD_OPTION_CONNECTION_LIMIT, (unsigned int)128,
                          MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
                          MHD_OPTION_END);
  if (!s->d) {
    close(fd);
    rb_push_error(L, "serve", "listen", "cannot start the HTTP server on %s", spec);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  return 1;
}

static int f_version(lua_State *L) {
  lua_pushstring(L, MHD_get_version());
  return 1;
}

static const luaL_Reg funcs[] = {
  {"listen", f_listen},
  {"parse_address", f_parse_address},
  {"version", f_version},
  {NULL, NULL},
};

static const luaL_Reg methods[] = {
  {"run", srv_run},
  {"port", srv_port},
  {"close", srv_close},
  {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
  {"__gc", srv_close},
  {"__close", srv_close},
  {"__tostring", srv_tostring},
  {NULL, NULL},
};

int luaopen_runbook__httpd(lua_State *L) {
  char err[300];
  if (rb_dl_mhd(err, sizeof err) != 0)
    return luaL_error(L, "runbook._httpd: %s", err);
  if (luaL_newmetatable(L, SERVER_MT)) {
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
