/*
 * runbook._curl's WebSockets and port-forwarding: client:websocket opens
 * one (libcurl CONNECT_ONLY with the client's TLS, proxy and timeouts,
 * then ws.c's handshake and framing), client:port_forward starts
 * portfwd.c's threads with a private copy of the client's settings.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "crypto.h"
#include "curl_client.h"
#include "curl_xfer.h"
#include "host.h"
#include "portfwd.h"
#include "secret.h"
#include "ws.h"

#define WS_MT "runbook.curl.WebSocket"
#define FWD_MT "runbook.curl.PortForward"

/* ---- WebSockets ---------------------------------------------------------------------- */

/* A WebSocket owns its own easy handle (CONNECT_ONLY), never the client's. */
struct wsconn {
  CURL *easy; /* NULL once closed */
  struct rb_ws ws;
  struct rb_growbuf msg;
};

static int ws_close(lua_State *L) {
  struct wsconn *w = luaL_checkudata(L, 1, WS_MT);
  if (w->easy) {
    if (!w->ws.sent_close)
      rb_ws_send(&w->ws, RB_WS_CLOSE, "\x03\xe8", 2, rb_ws_now() + 1);
    curl_easy_cleanup(w->easy);
    w->easy = NULL;
  }
  rb_ws_free(&w->ws);
  rb_growbuf_free(&w->msg, 1);
  return 0;
}

static struct wsconn *check_ws(lua_State *L) {
  struct wsconn *w = luaL_checkudata(L, 1, WS_MT);
  if (!w->easy)
    luaL_error(L, "attempt to use a closed WebSocket");
  return w;
}

static int ws_tostring(lua_State *L) {
  struct wsconn *w = luaL_checkudata(L, 1, WS_MT);
  lua_pushfstring(L, "runbook.curl.WebSocket (%s)", w->easy ? w->ws.protocol : "closed");
  return 1;
}

static const char *const ws_ops[] = {"binary", "text", "close", NULL};
static const int ws_op_codes[] = {RB_WS_BINARY, RB_WS_TEXT, RB_WS_CLOSE};

/* ws:send(data [, "binary"|"text"|"close" [, timeout]]) -> true | nil, message */
static int ws_send(lua_State *L) {
  struct wsconn *w = check_ws(L);
  size_t n;
  const char *p = rb_check_bytes(L, 2, &n, NULL);
  int op = ws_op_codes[luaL_checkoption(L, 3, "binary", ws_ops)];
  double timeout = luaL_optnumber(L, 4, 30);
  int r = rb_ws_send(&w->ws, op, p, n, rb_ws_now() + timeout);
  if (r == RB_WS_OK) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, r == RB_WS_TIMEOUT ? "timeout" : w->ws.err);
  return 2;
}

/* ws:recv([timeout]) -> "binary"|"text"|"close", data | nil, "timeout" | nil, message */
static int ws_recv(lua_State *L) {
  struct wsconn *w = check_ws(L);
  double timeout = luaL_optnumber(L, 2, -1);
  int op = 0;
  int r = rb_ws_recv(&w->ws, timeout < 0 ? 0 : rb_ws_now() + timeout, &op, &w->msg);
  if (r != RB_WS_OK) {
    lua_pushnil(L);
    lua_pushstring(L, r == RB_WS_TIMEOUT ? "timeout" : w->ws.err);
    return 2;
  }
  lua_pushstring(L, op == RB_WS_CLOSE ? "close" : op == RB_WS_TEXT ? "text" : "binary");
  lua_pushlstring(L, w->msg.data ? w->msg.data : "", w->msg.len);
  rb_cleanse(w->msg.data, w->msg.len);
  return 2;
}

/* ws:protocol() -> the subprotocol the server chose */
static int ws_protocol(lua_State *L) {
  struct wsconn *w = check_ws(L);
  lua_pushstring(L, w->ws.protocol);
  return 1;
}

/* client:websocket{url=, path=, host=, authorization=, protocols=, timeout=}
 * -> WebSocket | nil, err. url is the server's (https://host:port), path
 * the request target with its query, host the Host header, authorization
 * a string or Secret. A non-101 answer is an "http" error whose details
 * carry status and body. */
int rb_curl_websocket(lua_State *L) {
  struct client *c = rb_curl_check_client(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_getfield(L, 2, "url");
  const char *url = luaL_checkstring(L, -1);
  lua_getfield(L, 2, "path");
  const char *path = luaL_checkstring(L, -1);
  lua_getfield(L, 2, "host");
  const char *hostport = luaL_checkstring(L, -1);
  lua_getfield(L, 2, "protocols");
  const char *protocols = luaL_checkstring(L, -1);
  lua_getfield(L, 2, "timeout");
  double timeout = luaL_optnumber(L, -1, c->timeout > 0 ? c->timeout : 30);
  lua_getfield(L, 2, "authorization"); /* 8 */
  size_t alen = 0;
  const char *auth = rb_opt_bytes(L, 8, &alen, NULL);
  if (auth && (memchr(auth, '\r', alen) || memchr(auth, '\n', alen) || memchr(auth, '\0', alen)))
    return luaL_error(L, "websocket: authorization holds a line break or NUL");

  struct wsconn *w = lua_newuserdatauv(L, sizeof *w, 0); /* 9 */
  memset(w, 0, sizeof *w);
  luaL_setmetatable(L, WS_MT);
  w->easy = curl_easy_init();
  if (!w->easy)
    return luaL_error(L, "out of memory");
  char errbuf[CURL_ERROR_SIZE] = "";
  rb_curl_apply_client(c, w->easy);
  curl_easy_setopt(w->easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(w->easy, CURLOPT_URL, url);
  curl_easy_setopt(w->easy, CURLOPT_CONNECT_ONLY, 1L);
  curl_easy_setopt(w->easy, CURLOPT_ERRORBUFFER, errbuf);
  if (c->connect_timeout > 0)
    curl_easy_setopt(w->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->connect_timeout * 1000));
  double deadline = rb_ws_now() + timeout;
  CURLcode rc = curl_easy_perform(w->easy);
  curl_easy_setopt(w->easy, CURLOPT_ERRORBUFFER, NULL);
  if (rc != CURLE_OK) {
    rb_curl_push_request_error(L, "http", rb_curl_code(rc), rc, "GET", url, errbuf);
    lua_pushnil(L);
    lua_insert(L, -2);
    w->ws.sent_close = 1;
    lua_pushcfunction(L, ws_close);
    lua_pushvalue(L, 9);
    lua_call(L, 1, 0);
    return 2;
  }
  curl_socket_t fd = CURL_SOCKET_BAD;
  curl_easy_getinfo(w->easy, CURLINFO_ACTIVESOCKET, &fd);
  w->ws.easy = w->easy;
  w->ws.fd = (long)fd;
  struct rb_growbuf extra = {0}, body = {0};
  if (auth && (rb_growbuf_add(&extra, "Authorization: ", 15) || rb_growbuf_add(&extra, auth, alen) ||
               rb_growbuf_add(&extra, "\r\n", 2))) {
    rb_growbuf_free(&extra, 1);
    return luaL_error(L, "out of memory");
  }
  int status = rb_ws_handshake(&w->ws, hostport, path, extra.data, protocols, deadline, &body);
  rb_growbuf_free(&extra, 1);
  if (status == 101) {
    lua_settop(L, 9);
    return 1;
  }
  lua_pushnil(L); /* 10 */
  if (status < 0)
    rb_push_error(L, "http", "protocol", "GET %s%s: %s", url, path, w->ws.err);
  else
    rb_push_error(L, "http", "status", "GET %s%s: HTTP %d", url, path, status);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  lua_pushlstring(L, body.data ? body.data : "", body.len);
  lua_setfield(L, -2, "body");
  lua_setfield(L, -2, "details");
  rb_growbuf_free(&body, 0);
  w->ws.sent_close = 1;
  lua_pushcfunction(L, ws_close);
  lua_pushvalue(L, 9);
  lua_call(L, 1, 0);
  return 2;
}

static const luaL_Reg ws_methods[] = {
  {"send", ws_send},
  {"recv", ws_recv},
  {"protocol", ws_protocol},
  {"close", ws_close},
  {NULL, NULL},
};

static const luaL_Reg ws_metamethods[] = {
  {"__gc", ws_close},
  {"__close", ws_close},
  {"__tostring", ws_tostring},
  {NULL, NULL},
};

/* ---- port-forwarding ----------------------------------------------------------------- */

/* The forwarder's threads set up their handles from a private copy of the
 * client's options: the Lua client may be closed or collected meanwhile. */
static void blob_copy(struct blob *dst, const struct blob *src, int *oom) {
  dst->data = NULL;
  dst->len = 0;
  if (!src->data)
    return;
  dst->data = malloc(src->len ? src->len : 1);
  if (!dst->data) {
    *oom = 1;
    return;
  }
  memcpy(dst->data, src->data, src->len);
  dst->len = src->len;
}

static char *str_copy(const char *s, int *oom) {
  if (!s)
    return NULL;
  char *d = strdup(s);
  if (!d)
    *oom = 1;
  return d;
}

static void fwd_setup(void *ctx, CURL *e) {
  struct client *c = ctx;
  rb_curl_apply_client(c, e);
  if (c->connect_timeout > 0)
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->connect_timeout * 1000));
}

static void fwd_free_ctx(void *ctx) {
  rb_curl_client_release(ctx);
  free(ctx);
}

struct fwdbox {
  struct rb_fwd *f; /* NULL once closed */
};

static int fwd_close(lua_State *L) {
  struct fwdbox *b = luaL_checkudata(L, 1, FWD_MT);
  if (b->f) {
    rb_fwd_stop(b->f);
    b->f = NULL;
  }
  return 0;
}

static struct fwdbox *check_fwd(lua_State *L) {
  struct fwdbox *b = luaL_checkudata(L, 1, FWD_MT);
  if (!b->f)
    luaL_error(L, "attempt to use a closed port-forward");
  return b;
}

/* fwd:port() -> the local port */
static int fwd_port(lua_State *L) {
  lua_pushinteger(L, rb_fwd_port(check_fwd(L)->f));
  return 1;
}

/* fwd:status() -> connections accepted, the last error or nil */
static int fwd_status(lua_State *L) {
  char err[320];
  lua_pushinteger(L, rb_fwd_status(check_fwd(L)->f, err, sizeof err));
  if (err[0])
    rb_push_scrubbed(L, err, strlen(err));
  else
    lua_pushnil(L);
  return 2;
}

static int fwd_tostring(lua_State *L) {
  struct fwdbox *b = luaL_checkudata(L, 1, FWD_MT);
  if (b->f)
    lua_pushfstring(L, "runbook.curl.PortForward (127.0.0.1:%d)", rb_fwd_port(b->f));
  else
    lua_pushliteral(L, "runbook.curl.PortForward (closed)");
  return 1;
}

/* client:port_forward{url=, path=, host=, authorization=, local_port=, timeout=}
 * -> PortForward | raises. path is the portforward subresource with its
 * ports= query; each accepted connection gets its own WebSocket. */
int rb_curl_port_forward(lua_State *L) {
  struct client *c = rb_curl_check_client(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_getfield(L, 2, "url");
  lua_getfield(L, 2, "path");
  lua_getfield(L, 2, "host");
  lua_getfield(L, 2, "local_port");
  lua_getfield(L, 2, "timeout");
  lua_getfield(L, 2, "authorization"); /* 8 */
  struct rb_fwd_opts o;
  memset(&o, 0, sizeof o);
  o.url = luaL_checkstring(L, 3);
  o.path = luaL_checkstring(L, 4);
  o.host = luaL_checkstring(L, 5);
  lua_Integer lp = luaL_optinteger(L, 6, 0);
  if (lp < 0 || lp > 65535)
    return luaL_error(L, "port_forward: local_port must be 0..65535");
  o.local_port = (int)lp;
  o.timeout = luaL_optnumber(L, 7, c->timeout > 0 ? c->timeout : 30);
  size_t alen = 0;
  const char *auth = rb_opt_bytes(L, 8, &alen, NULL);
  if (auth && (memchr(auth, '\r', alen) || memchr(auth, '\n', alen) || memchr(auth, '\0', alen)))
    return luaL_error(L, "port_forward: authorization holds a line break or NUL");
  char *authz = NULL;
  if (auth) {
    authz = rb_curl_dup_bytes(L, auth, alen);
  }
  o.auth = authz;
  struct fwdbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->f = NULL;
  luaL_setmetatable(L, FWD_MT);
  struct client *copy = calloc(1, sizeof *copy);
  int oom = copy == NULL;
  if (copy) {
    *copy = *c;
    copy->easy = NULL;
    copy->multi = NULL;
    copy->tls_server_name = str_copy(c->tls_server_name, &oom);
    copy->ca_file = str_copy(c->ca_file, &oom);
    copy->cert_file = str_copy(c->cert_file, &oom);
    copy->key_file = str_copy(c->key_file, &oom);
    copy->user_agent = str_copy(c->user_agent, &oom);
    copy->proxy = str_copy(c->proxy, &oom);
    blob_copy(&copy->ca_data, &c->ca_data, &oom);
    blob_copy(&copy->cert_data, &c->cert_data, &oom);
    blob_copy(&copy->key_data, &c->key_data, &oom);
  }
  if (oom) {
    if (copy)
      fwd_free_ctx(copy);
    if (authz) {
      rb_cleanse(authz, alen);
      free(authz);
    }
    return luaL_error(L, "out of memory");
  }
  o.setup = fwd_setup;
  o.ctx = copy;
  o.free_ctx = fwd_free_ctx;
  char err[256];
  b->f = rb_fwd_start(&o, err, sizeof err);
  if (authz) {
    rb_cleanse(authz, alen);
    free(authz);
  }
  if (!b->f)
    return luaL_error(L, "port_forward: %s", err);
  return 1;
}

static const luaL_Reg fwd_methods[] = {
  {"port", fwd_port},
  {"status", fwd_status},
  {"close", fwd_close},
  {NULL, NULL},
};

static const luaL_Reg fwd_metamethods[] = {
  {"__gc", fwd_close},
  {"__close", fwd_close},
  {"__tostring", fwd_tostring},
  {NULL, NULL},
};

void rb_curl_ws_register(lua_State *L) {
  if (luaL_newmetatable(L, FWD_MT)) {
    luaL_setfuncs(L, fwd_metamethods, 0);
    luaL_newlib(L, fwd_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, WS_MT)) {
    luaL_setfuncs(L, ws_metamethods, 0);
    luaL_newlib(L, ws_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}
