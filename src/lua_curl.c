/*
 * runbook._curl: the shared HTTP(S) core over libcurl, used by runbook.http,
 * runbook.s3 and the Kubernetes client.
 *
 * A Client is one CURL easy handle reused across requests, so connections
 * (and HTTP/2 when the server offers it) are kept between them. Options are
 * re-applied on every request after curl_easy_reset, which keeps the live
 * connections, the DNS cache and the TLS session cache.
 *
 * Lua callbacks (on_data, upload) run under lua_pcall inside the curl
 * callbacks: an error never longjmps through libcurl. It is kept, the
 * transfer is aborted, and it is raised again once curl has returned and
 * everything the request holds has been released (the request state is a
 * to-be-closed userdata, so that happens on every path). The transfer
 * itself (state and callbacks) is in curl_xfer.c; WebSockets and
 * port-forwarding (client:websocket, client:port_forward) in curl_ws.c.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"
#include "dl_curl.h"
#include <lauxlib.h>
#include <lua.h>

#include "curl_xfer.h"
#include "host.h"
#include "modules.h"
#include "secret.h"
#include "curl_client.h"

#define REQ_MT "runbook.curl.Request"

/* ---- client lifecycle ------------------------------------------------------ */

static void blob_free(struct blob *b) {
  if (b->data) {
    rb_cleanse(b->data, b->len);
    free(b->data);
  }
  b->data = NULL;
  b->len = 0;
}

static void client_release(struct client *c) {
  if (c->multi) {
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
  }
  if (c->easy) {
    curl_easy_cleanup(c->easy);
    c->easy = NULL;
  }
  if (c->share) { /* after every handle using it */
    curl_share_cleanup(c->share);
    c->share = NULL;
  }
  free(c->ca_file);
  free(c->cert_file);
  free(c->key_file);
  free(c->user_agent);
  free(c->proxy);
  free(c->tls_server_name);
  c->ca_file = c->cert_file = c->key_file = c->user_agent = c->proxy = c->tls_server_name = NULL;
  blob_free(&c->ca_data);
  blob_free(&c->cert_data);
  blob_free(&c->key_data);
}

static struct client *check_client(lua_State *L, int idx) {
  struct client *c = luaL_checkudata(L, idx, CLIENT_MT);
  if (!c->easy)
    luaL_error(L, "attempt to use a closed HTTP client");
  return c;
}

static int client_close(lua_State *L) {
  struct client *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (c->busy)
    return luaL_error(L, "cannot close an HTTP client while its request is running");
  client_release(c);
  return 0;
}

static int client_gc(lua_State *L) {
  struct client *c = luaL_checkudata(L, 1, CLIENT_MT);
  client_release(c);
  return 0;
}

static int client_tostring(lua_State *L) {
  struct client *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (c->easy)
    lua_pushfstring(L, "runbook.curl.Client (%p)", (void *)c);
  else
    lua_pushliteral(L, "runbook.curl.Client (closed)");
  return 1;
}

static char *dup_bytes(lua_State *L, const char *p, size_t n) {
  char *d = malloc(n + 1);
  if (!d)
    luaL_error(L, "out of memory");
  memcpy(d, p, n);
  d[n] = '\0';
  return d;
}

/* Copies the string field `name` of the table at 1 into *dst (NULL when absent). */
static void opt_string_field(lua_State *L, const char *name, char **dst) {
  if (lua_getfield(L, 1, name) != LUA_TNIL) {
    size_t n;
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "curl.client: %s must be a string, got %s", name, luaL_typename(L, -1));
    const char *s = lua_tolstring(L, -1, &n);
    *dst = dup_bytes(L, s, n);
  }
  lua_pop(L, 1);
}

/* Like opt_string_field for PEM data, which may be a Secret (a private key). */
static void opt_blob_field(lua_State *L, const char *name, struct blob *dst) {
  if (lua_getfield(L, 1, name) != LUA_TNIL) {
    size_t n;
    const char *s = rb_secret_test(L, -1, &n);
    if (!s && lua_type(L, -1) == LUA_TSTRING)
      s = lua_tolstring(L, -1, &n);
    if (!s)
      luaL_error(L, "curl.client: %s must be a string or secret, got %s", name, luaL_typename(L, -1));
    dst->data = dup_bytes(L, s, n);
    dst->len = n;
  }
  lua_pop(L, 1);
}

static int opt_bool_field(lua_State *L, int t, const char *name, int def) {
  int v = def;
  int ty = lua_getfield(L, t, name);
  if (ty != LUA_TNIL)
    v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* curl.client{ca_file=, ca_data=, cert_file=, cert_data=, key_file=, key_data=,
 *             insecure=, timeout=, connect_timeout=, http2=, user_agent=, proxy=,
 *             tls_server_name=}
 * tls_server_name: the name the server's certificate is checked against (and
 * sent as SNI) while connecting to the URL's host, as kubeconfig's
 * tls-server-name and Go's tls.Config.ServerName do. */
static int f_client(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  /* created closed, as liolib does, so a failure below leaves nothing open */
  struct client *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, CLIENT_MT);

  opt_string_field(L, "ca_file", &c->ca_file);
  opt_string_field(L, "cert_file", &c->cert_file);
  opt_string_field(L, "key_file", &c->key_file);
  opt_string_field(L, "user_agent", &c->user_agent);
  opt_string_field(L, "proxy", &c->proxy);
  opt_string_field(L, "tls_server_name", &c->tls_server_name);
  if (c->tls_server_name &&
      (!*c->tls_server_name || strpbrk(c->tls_server_name, "/:@[]?# \t\r\n")))
    return luaL_error(L, "curl.client: tls_server_name must be a host name or an IPv4 address, got '%s'",
                      c->tls_server_name);
  opt_blob_field(L, "ca_data", &c->ca_data);
  opt_blob_field(L, "cert_data", &c->cert_data);
  opt_blob_field(L, "key_data", &c->key_data);
  c->insecure = opt_bool_field(L, 1, "insecure", 0);
  c->http2 = opt_bool_field(L, 1, "http2", 1);
  c->timeout = rb_opt_seconds(L, 1, "timeout", 30, "curl.client");
  c->connect_timeout = rb_opt_seconds(L, 1, "connect_timeout", 10, "curl.client");
  if (!c->user_agent)
    c->user_agent = dup_bytes(L, "runbook/" RUNBOOK_VERSION, strlen("runbook/" RUNBOOK_VERSION));

  c->easy = curl_easy_init();
  if (!c->easy)
    return luaL_error(L, "curl.client: curl_easy_init failed");
  /* a connection after the first resumes its TLS session (no certificate to
   * send, parse and verify again); one thread uses the client, so no locks */
  c->share = curl_share_init();
  if (c->share)
    curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  return 1;
}

/* ---- the request state ---------------------------------------------------------- */

/* A request: the transfer, and the client it runs on (NULL once closed). */
struct req {
  struct client *c;
  struct rb_xfer x;
};

static int req_close(lua_State *L) {
  struct req *r = luaL_checkudata(L, 1, REQ_MT);
  if (r->c) {
    if (r->c->easy)
      curl_easy_reset(r->c->easy); /* drop pointers into what is freed below */
    r->c->busy = 0;
    r->c = NULL;
  }
  rb_xfer_release(&r->x);
  return 0;
}

/* ---- building the request ------------------------------------------------------- */

static int valid_token(const char *s, size_t n) {
  if (n == 0)
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch <= 32 || ch >= 127 || strchr("\"(),/:;<=>?@[\\]{}", ch))
      return 0;
  }
  return 1;
}

/* Appends "Name: value" for the pair at stack -2 (name) and -1 (value). */
static void add_header(lua_State *L, struct rb_xfer *r, int *has_expect) {
  size_t nlen, vlen;
  if (lua_type(L, -2) != LUA_TSTRING)
    luaL_error(L, "request: header names must be strings");
  const char *name = lua_tolstring(L, -2, &nlen);
  if (!valid_token(name, nlen))
    luaL_error(L, "request: invalid header name '%s'", name);
  const char *value = rb_secret_test(L, -1, &vlen);
  if (!value) {
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "request: header %s must be a string or secret, got %s", name,
                 luaL_typename(L, -1));
    value = lua_tolstring(L, -1, &vlen);
  }
  if (memchr(value, '\r', vlen) || memchr(value, '\n', vlen) || memchr(value, '\0', vlen))
    luaL_error(L, "request: header %s holds a line break or NUL", name);
  if (nlen == 6 && strncasecmp(name, "expect", 6) == 0)
    *has_expect = 1;
  char *line = malloc(nlen + vlen + 3);
  if (!line)
    luaL_error(L, "out of memory");
  memcpy(line, name, nlen);
  /* "Name;" is curl's way to send a header with an empty value */
  if (vlen == 0) {
    line[nlen] = ';';
    line[nlen + 1] = '\0';
  } else {
    memcpy(line + nlen, ": ", 2);
    memcpy(line + nlen + 2, value, vlen);
    line[nlen + 2 + vlen] = '\0';
  }
  struct curl_slist *h = curl_slist_append(r->headers, line);
  rb_cleanse(line, nlen + vlen + 2);
  free(line);
  if (!h)
    luaL_error(L, "out of memory");
  r->headers = h;
}

/* headers = { {"Name", "value"}, ... } or { Name = "value" } */
static void build_headers(lua_State *L, int t, struct rb_xfer *r) {
  int has_expect = 0;
  if (lua_getfield(L, t, "headers") != LUA_TNIL) {
    int h = lua_gettop(L);
    luaL_argexpected(L, lua_istable(L, h), 2, "headers as a table");
    if (lua_rawlen(L, h) > 0) {
      for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, h); i++) {
        if (lua_rawgeti(L, h, i) != LUA_TTABLE)
          luaL_error(L, "request: headers[%d] must be a {name, value} pair", (int)i);
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        add_header(L, r, &has_expect);
        lua_pop(L, 3);
      }
    } else {
      lua_pushnil(L);
      while (lua_next(L, h)) {
        add_header(L, r, &has_expect);
        lua_pop(L, 1);
      }
    }
  }
  lua_pop(L, 1);
  /* no 100-continue round trip unless asked: not every server answers it */
  if (!has_expect) {
    struct curl_slist *h = curl_slist_append(r->headers, "Expect:");
    if (!h)
      luaL_error(L, "out of memory");
    r->headers = h;
  }
}

static void apply_client(struct client *c, CURL *e) {
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                   c->http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
  if (c->proxy)
    curl_easy_setopt(e, CURLOPT_PROXY, c->proxy);
  if (c->insecure) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  } else {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  }
  if (c->ca_file)
    curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
  if (c->ca_data.data) {
    struct curl_blob b = {c->ca_data.data, c->ca_data.len, CURL_BLOB_NOCOPY};
    curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &b);
  }
  if (c->cert_file) {
    curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert_file);
    curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
  }
  if (c->cert_data.data) {
    struct curl_blob b = {c->cert_data.data, c->cert_data.len, CURL_BLOB_NOCOPY};
    curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &b);
    curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
  }
  if (c->key_file) {
    curl_easy_setopt(e, CURLOPT_SSLKEY, c->key_file);
    curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
  }
  if (c->key_data.data) {
    struct curl_blob b = {c->key_data.data, c->key_data.len, CURL_BLOB_NOCOPY};
    curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &b);
    curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
  }
}

/* ---- results and errors ------------------------------------------------------------ */

/* Pushes the structured error {kind, code, message, details={curl_code, url}}.
 * The message is scrubbed of every registered secret. */
/* Pushes {kind=, code=, message="METHOD url: cause", details={curl_code=,
 * url=, cause=}}: callers that word their own message (the Kubernetes
 * client) read details.cause instead of parsing the message. */
static void push_request_error(lua_State *L, const char *kind, const char *code, CURLcode rc,
                               const char *method, const char *url, const char *detail) {
  if (!detail || !*detail)
    detail = rb_curl_what(code);
  rb_push_scrubbed(L, detail, strlen(detail));
  int cause = lua_gettop(L);
  lua_pushfstring(L, "%s %s: %s", method, url, detail);
  size_t n;
  const char *m = lua_tolstring(L, -1, &n);
  rb_push_scrubbed(L, m, n);
  rb_push_error(L, kind, code, "%s", lua_tostring(L, -1));
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)rc);
  lua_setfield(L, -2, "curl_code");
  lua_pushstring(L, url);
  lua_setfield(L, -2, "url");
  lua_pushvalue(L, cause);
  lua_setfield(L, -2, "cause");
  lua_setfield(L, -2, "details");
  lua_replace(L, cause);
  lua_settop(L, cause);
}

static void trim_line(const char **s, size_t *n) {
  while (*n > 0 && isspace((unsigned char)(*s)[*n - 1]))
    (*n)--;
  while (*n > 0 && isspace((unsigned char)**s)) {
    (*s)++;
    (*n)--;
  }
}

/* Fills res.headers (lowercased names, last wins) and res.header_list. */
static void push_headers(lua_State *L, int res, struct rb_growbuf *h) {
  lua_newtable(L);
  int map = lua_gettop(L);
  lua_newtable(L);
  int list = lua_gettop(L);
  int k = 0;
  const char *p = h->data ? h->data : "", *end = p + h->len;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *next = eol ? eol + 1 : end;
    const char *line = p;
    size_t n = (size_t)((eol ? eol : end) - p);
    p = next;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0)
      continue;
    const char *colon = memchr(line, ':', n);
    if (!colon)
      continue;
    const char *name = line, *value = colon + 1;
    size_t nlen = (size_t)(colon - line), vlen = n - nlen - 1;
    trim_line(&name, &nlen);
    trim_line(&value, &vlen);
    if (nlen == 0)
      continue;
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, name, nlen);
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, value, vlen);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, list, ++k);
    luaL_Buffer b;
    char *lower = luaL_buffinitsize(L, &b, nlen);
    for (size_t i = 0; i < nlen; i++)
      lower[i] = (char)tolower((unsigned char)name[i]);
    luaL_pushresultsize(&b, nlen);
    lua_pushlstring(L, value, vlen);
    lua_rawset(L, map);
  }
  lua_setfield(L, res, "header_list");
  lua_setfield(L, res, "headers");
}

static void debug_line(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  rb_push_scrubbed(L, s, n);
  s = lua_tolstring(L, -1, &n);
  rb_console_write(L, 2, s, n);
  lua_pop(L, 2);
}

static int debug_enabled(void) {
  const char *d = getenv("RUNBOOK_HTTP_DEBUG");
  return d && *d && strcmp(d, "0") != 0;
}

/* With tls_server_name, curl is given a URL naming that host (so SNI and the
 * certificate check use it), CONNECT_TO pointing it at the URL's real host
 * and port, and a Host header with the real authority, which is what Go
 * sends when tls.Config.ServerName is set. Replaces x->url; returns 0, or -1
 * when the URL has no scheme://authority to rewrite. */
static int apply_server_name(lua_State *L, struct rb_xfer *x, const char *sn) {
  const char *u = x->url;
  const char *sep = strstr(u, "://");
  if (!sep)
    return -1;
  const char *auth = sep + 3, *end = auth + strcspn(auth, "/?#");
  if (memchr(auth, '@', (size_t)(end - auth)))
    return -1; /* userinfo: not a Kubernetes server URL */
  const char *host = auth, *host_end, *port = NULL;
  if (*host == '[') {
    host_end = memchr(host, ']', (size_t)(end - host));
    if (!host_end)
      return -1;
    host_end++;
    if (host_end < end && *host_end == ':')
      port = host_end + 1;
  } else {
    host_end = memchr(host, ':', (size_t)(end - host));
    if (host_end)
      port = host_end + 1;
    else
      host_end = end;
  }
  if (host_end == host)
    return -1;
  int https = (size_t)(sep - u) == 5 && strncasecmp(u, "https", 5) == 0;
  char portbuf[16];
  size_t plen = port ? (size_t)(end - port) : 0;
  if (!port || plen == 0 || plen >= sizeof portbuf) {
    if (port && plen >= sizeof portbuf)
      return -1;
    snprintf(portbuf, sizeof portbuf, "%s", https ? "443" : "80");
  } else {
    memcpy(portbuf, port, plen);
    portbuf[plen] = '\0';
  }
  luaL_Buffer b;
  /* HOST:PORT:CONNECT-TO-HOST:CONNECT-TO-PORT */
  luaL_buffinit(L, &b);
  luaL_addstring(&b, sn);
  luaL_addchar(&b, ':');
  luaL_addstring(&b, portbuf);
  luaL_addchar(&b, ':');
  luaL_addlstring(&b, host, (size_t)(host_end - host));
  luaL_addchar(&b, ':');
  luaL_addstring(&b, portbuf);
  luaL_pushresult(&b);
  struct curl_slist *ct = curl_slist_append(x->connect_to, lua_tostring(L, -1));
  lua_pop(L, 1);
  if (!ct)
    return luaL_error(L, "out of memory");
  x->connect_to = ct;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "Host: ");
  luaL_addlstring(&b, auth, (size_t)(end - auth));
  luaL_pushresult(&b);
  struct curl_slist *h = curl_slist_append(x->headers, lua_tostring(L, -1));
  lua_pop(L, 1);
  if (!h)
    return luaL_error(L, "out of memory");
  x->headers = h;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, u, (size_t)(auth - u));
  luaL_addstring(&b, sn);
  luaL_addchar(&b, ':');
  luaL_addstring(&b, portbuf);
  luaL_addstring(&b, end);
  luaL_pushresult(&b);
  size_t n;
  const char *nu = lua_tolstring(L, -1, &n);
  char *copy = malloc(n + 1);
  if (!copy)
    return luaL_error(L, "out of memory");
  memcpy(copy, nu, n + 1);
  lua_pop(L, 1);
  rb_cleanse(x->url, strlen(x->url));
  free(x->url);
  x->url = copy;
  return 0;
}

/* ---- Client:request ------------------------------------------------------------------ */

#define ARG_REQ 2
#define SLOT_ERR 3
#define SLOT_REQ 4
#define SLOT_URL 5

/* c:request{method=, url=, display_url=, headers=, body=, upload=, upload_size=, on_data=,
 *           timeout=, connect_timeout=, follow=, max_redirs=, low_speed_time=,
 *           low_speed_limit=, path_as_is=} -> res | nil, err */
static int m_request(lua_State *L) {
  struct client *c = check_client(L, 1);
  luaL_checktype(L, ARG_REQ, LUA_TTABLE);
  if (c->busy)
    return luaL_error(L, "this HTTP client is already running a request (from a callback?)");
  lua_settop(L, ARG_REQ);
  lua_pushnil(L); /* SLOT_ERR: a Lua error raised inside a callback */

  struct req *r = lua_newuserdatauv(L, sizeof *r, 0); /* SLOT_REQ */
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, REQ_MT);
  lua_toclose(L, SLOT_REQ);
  struct rb_xfer *x = &r->x;
  x->L = L;
  x->err_idx = SLOT_ERR;

  /* method and url */
  lua_getfield(L, ARG_REQ, "url"); /* SLOT_URL */
  size_t ulen;
  const char *url = rb_check_bytes(L, SLOT_URL, &ulen, NULL);
  if (ulen == 0 || memchr(url, '\0', ulen))
    return luaL_error(L, "request: url must be a non-empty string without NUL bytes");
  /* a Secret's bytes need not end in NUL: curl gets its own copy */
  x->url = malloc(ulen + 1);
  if (!x->url)
    return luaL_error(L, "out of memory");
  memcpy(x->url, url, ulen);
  x->url[ulen] = '\0';
  url = x->url;
  int mty = lua_getfield(L, ARG_REQ, "method");
  const char *method = mty == LUA_TNIL ? "GET" : mty == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  if (!method || !valid_token(method, strlen(method)))
    return luaL_error(L, "request: method must be an HTTP method name such as \"GET\"");
  /* the URL shown in messages: display_url, else the url scrubbed */
  if (lua_getfield(L, ARG_REQ, "display_url") == LUA_TNIL) {
    lua_pop(L, 1);
    if (rb_secret_test(L, SLOT_URL, NULL))
      lua_pushliteral(L, "[REDACTED]");
    else
      rb_push_scrubbed(L, url, ulen);
  } else if (lua_type(L, -1) != LUA_TSTRING) {
    return luaL_error(L, "request: display_url must be a string");
  }
  int display_idx = lua_gettop(L);
  const char *display = lua_tostring(L, display_idx);

  build_headers(L, ARG_REQ, x);
  if (c->tls_server_name && apply_server_name(L, x, c->tls_server_name) != 0)
    return luaL_error(L, "request: cannot use tls_server_name with the URL %s", display);
  url = x->url; /* the old copy is gone */

  /* body: string | Secret | nil; upload: function */
  lua_getfield(L, ARG_REQ, "body");
  int body_idx = lua_gettop(L);
  int has_body = !lua_isnil(L, body_idx);
  if (has_body)
    x->body = rb_check_bytes(L, body_idx, &x->body_len, NULL);
  lua_getfield(L, ARG_REQ, "upload");
  if (!lua_isnil(L, -1)) {
    luaL_argexpected(L, lua_isfunction(L, -1), ARG_REQ, "upload as a function");
    if (has_body)
      return luaL_error(L, "request: give either body or upload, not both");
    x->upload_idx = lua_gettop(L);
    has_body = 1;
  }
  x->upload_size = -1;
  if (lua_getfield(L, ARG_REQ, "upload_size") != LUA_TNIL) {
    int isint;
    lua_Integer sz = lua_tointegerx(L, -1, &isint);
    if (!isint || sz < 0)
      return luaL_error(L, "request: upload_size must be an integer >= 0");
    x->upload_size = (curl_off_t)sz;
  }
  lua_getfield(L, ARG_REQ, "on_data");
  if (!lua_isnil(L, -1)) {
    luaL_argexpected(L, lua_isfunction(L, -1), ARG_REQ, "on_data as a function");
    x->on_data_idx = lua_gettop(L);
  }
  double timeout = rb_opt_seconds(L, ARG_REQ, "timeout", c->timeout, "request");
  double ctimeout = rb_opt_seconds(L, ARG_REQ, "connect_timeout", c->connect_timeout, "request");
  double low_time = rb_opt_seconds(L, ARG_REQ, "low_speed_time", 0, "request");
  double low_limit = rb_opt_seconds(L, ARG_REQ, "low_speed_limit", 1, "request");
  int follow = opt_bool_field(L, ARG_REQ, "follow", 0);
  int path_as_is = opt_bool_field(L, ARG_REQ, "path_as_is", 0);
  lua_Integer max_redirs = 5;
  if (lua_getfield(L, ARG_REQ, "max_redirs") != LUA_TNIL)
    max_redirs = luaL_checkinteger(L, -1);
  lua_pop(L, 1);

  /* the step's deadline bounds the transfer too */
  x->deadline = rb_deadline(L);
  int deadline_bound = 0;
  if (x->deadline > 0) {
    double left = x->deadline - rb_monotime();
    if (rb_interrupted || left <= 0) {
      int intr = rb_interrupted != 0;
      push_request_error(L, intr ? RB_ERR_INTERRUPTED : RB_ERR_TIMEOUT,
                         intr ? "interrupted" : "timeout", CURLE_ABORTED_BY_CALLBACK, method,
                         display, intr ? "interrupted" : "the step's time limit ran out");
      lua_pushnil(L);
      lua_insert(L, -2);
      return 2;
    }
    if (timeout <= 0 || left < timeout) {
      timeout = left;
      deadline_bound = 1;
    }
  }

  /* everything the handle points at lives until req_close */
  CURL *e = c->easy;
  c->busy = 1;
  r->c = c;
  x->easy = e;
  curl_easy_reset(e);
  apply_client(c, e);
  if (c->share)
    curl_easy_setopt(e, CURLOPT_SHARE, c->share);
  curl_easy_setopt(e, CURLOPT_URL, x->url);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
  if (x->connect_to)
    curl_easy_setopt(e, CURLOPT_CONNECT_TO, x->connect_to);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000 + (timeout > 0 ? 1 : 0)));
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(ctimeout * 1000));
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)max_redirs);
  if (path_as_is)
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L); /* signed paths must go out unchanged */
  if (low_time > 0) {
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)(low_time + 0.5));
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, (long)(low_limit > 0 ? low_limit : 1));
  }
  int is_head = strcmp(method, "HEAD") == 0;
  /* POST, PUT and PATCH without a body still send Content-Length: 0 */
  if (!has_body && (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                    strcmp(method, "PATCH") == 0)) {
    x->body = "";
    x->body_len = 0;
    has_body = 1;
  }
  if (is_head) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else if (has_body) {
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_off_t size = x->upload_idx ? x->upload_size : (curl_off_t)x->body_len;
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, size);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  } else if (strcmp(method, "GET") != 0) {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  }

  rb_xfer_setup(x, e, has_body && !is_head);

  int debug = debug_enabled();
  if (debug)
    debug_line(L, "http> %s %s\n", method, display);

  CURLcode rc = curl_easy_perform(e);

  if (x->lua_failed) {
    lua_pushvalue(L, SLOT_ERR);
    return lua_error(L); /* req_close runs first: it is to-be-closed */
  }
  if (x->oom)
    return luaL_error(L, "out of memory during %s %s", method, display);

  long status = 0, version = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version);
  curl_off_t total_us = 0;
  curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &total_us);

  if (x->short_upload || (rc == CURLE_OK && x->upload_idx && x->upload_size >= 0 &&
                          x->uploaded != x->upload_size)) {
    char detail[160];
    snprintf(detail, sizeof detail, "the upload function gave %lld bytes, upload_size said %lld",
             (long long)x->uploaded, (long long)x->upload_size);
    if (debug)
      debug_line(L, "http< %s %s: %s\n", method, display, detail);
    push_request_error(L, "http", "protocol", rc, method, display, detail);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  if (rc != CURLE_OK) {
    const char *kind = "http", *code = rb_curl_code(rc);
    char detail[CURL_ERROR_SIZE + 128];
    const char *why = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
    if (x->stop == RB_XFER_INTERRUPTED) {
      kind = RB_ERR_INTERRUPTED;
      code = "interrupted";
      snprintf(detail, sizeof detail, "interrupted");
    } else if (x->stop == RB_XFER_DEADLINE ||
               (rc == CURLE_OPERATION_TIMEDOUT && deadline_bound &&
                rb_monotime() >= x->deadline - 0.05)) {
      kind = RB_ERR_TIMEOUT;
      code = "timeout";
      snprintf(detail, sizeof detail, "the step's time limit ran out (%s)", why);
    } else if (x->aborted) {
      code = "aborted";
      snprintf(detail, sizeof detail, "aborted: on_data returned false");
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
      snprintf(detail, sizeof detail, "timed out after %g s (%s)", timeout, why);
    } else {
      snprintf(detail, sizeof detail, "%s: %s", rb_curl_what(code), why);
    }
    if (debug)
      debug_line(L, "http< %s %s: %s\n", method, display, detail);
    push_request_error(L, kind, code, rc, method, display, detail);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }

  const char *vname = rb_http_version(version);
  if (debug) {
    char secs[32];
    snprintf(secs, sizeof secs, "%.3f", (double)total_us / 1e6);
    debug_line(L, "http< %d HTTP/%s %s %s (%s s)\n", (int)status, vname, method, display, secs);
  }

  lua_createtable(L, 0, 8);
  int res = lua_gettop(L);
  lua_pushinteger(L, status);
  lua_setfield(L, res, "status");
  push_headers(L, res, &x->hdr);
  if (!x->on_data_idx) {
    lua_pushlstring(L, x->resp.data ? x->resp.data : "", x->resp.len);
    lua_setfield(L, res, "body");
  }
  lua_pushstring(L, vname);
  lua_setfield(L, res, "http_version");
  char *eff = NULL;
  curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &eff);
  /* under tls_server_name curl's URL names that host, not the server */
  lua_pushstring(L, x->connect_to ? display : eff ? eff : url);
  lua_setfield(L, res, "effective_url");
  lua_pushnumber(L, (double)total_us / 1e6);
  lua_setfield(L, res, "time");
  return 1;
}

/* ---- Client:request_many ------------------------------------------------------------ */

/* The transfers of one request_many call, to-be-closed so an error raised
 * halfway (out of memory, a bad argument) still frees every handle. */
struct batch {
  struct client *c;
  int n;
  CURL **easy;
  struct rb_xfer *x;
  char *added; /* easy[i] is in the multi handle */
};

static int batch_close(lua_State *L) {
  struct batch *b = lua_touserdata(L, 1);
  for (int i = 0; i < b->n; i++) {
    if (b->easy && b->easy[i]) {
      if (b->added[i])
        curl_multi_remove_handle(b->c->multi, b->easy[i]);
      curl_easy_cleanup(b->easy[i]);
      b->easy[i] = NULL;
    }
    if (b->x)
      rb_xfer_release(&b->x[i]);
  }
  free(b->easy);
  free(b->x);
  free(b->added);
  b->easy = NULL;
  b->x = NULL;
  b->added = NULL;
  b->n = 0;
  if (b->c)
    b->c->busy = 0;
  b->c = NULL;
  return 0;
}

/* Pushes the response table of a finished transfer (as m_request does). */
static void push_response(lua_State *L, CURL *e, struct rb_xfer *x) {
  long status = 0, version = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version);
  curl_off_t total_us = 0;
  curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &total_us);
  lua_createtable(L, 0, 6);
  int res = lua_gettop(L);
  lua_pushinteger(L, status);
  lua_setfield(L, res, "status");
  push_headers(L, res, &x->hdr);
  lua_pushlstring(L, x->resp.data ? x->resp.data : "", x->resp.len);
  lua_setfield(L, res, "body");
  lua_pushstring(L, rb_http_version(version));
  lua_setfield(L, res, "http_version");
  lua_pushnumber(L, (double)total_us / 1e6);
  lua_setfield(L, res, "time");
}

/* Whether a header list sets `name` (case-insensitive). */
static int has_header(const struct curl_slist *h, const char *name) {
  size_t n = strlen(name);
  for (; h; h = h->next)
    if (strncasecmp(h->data, name, n) == 0 && (h->data[n] == ':' || h->data[n] == ';'))
      return 1;
  return 0;
}

#define MANY_REQS 2
#define MANY_RES 4
#define MANY_ERR 5

/* c:request_many(reqs [, concurrency=8]) -> results, errors
 * Runs simple requests ({method=, url=, headers=, body=, timeout=}: no
 * upload or on_data functions, no redirects) concurrently on at most
 * `concurrency` kept-alive connections (HTTP/2 streams on one connection
 * where the server speaks it), and returns, by index, each response in
 * results or its error in errors. Connections stay open for the next call. */
static int m_request_many(lua_State *L) {
  struct client *c = check_client(L, 1);
  luaL_checktype(L, MANY_REQS, LUA_TTABLE);
  lua_Integer conc = luaL_optinteger(L, 3, 8);
  luaL_argcheck(L, conc >= 1 && conc <= 64, 3, "concurrency must be 1 to 64");
  if (c->busy)
    return luaL_error(L, "this HTTP client is already running a request (from a callback?)");
  lua_settop(L, 3);
  int n = (int)lua_rawlen(L, MANY_REQS);
  lua_createtable(L, n, 0); /* MANY_RES */
  lua_createtable(L, 0, 0); /* MANY_ERR */
  struct batch *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, batch_close);
  lua_setfield(L, -2, "__close");
  lua_setmetatable(L, -2);
  lua_toclose(L, -1);
  if (n == 0)
    return 2;
  if (!c->multi) {
    c->multi = curl_multi_init();
    if (!c->multi)
      return luaL_error(L, "out of memory");
    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  }
  curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conc);
  curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)conc); /* kept alive between calls */
  b->easy = calloc((size_t)n, sizeof *b->easy);
  b->x = calloc((size_t)n, sizeof *b->x);
  b->added = calloc((size_t)n, 1);
  if (!b->easy || !b->x || !b->added)
    return luaL_error(L, "out of memory");
  b->n = n;
  b->c = c;
  c->busy = 1;

  /* set every transfer up first: argument errors raise before anything is sent */
  for (int i = 0; i < n; i++) {
    struct rb_xfer *x = &b->x[i];
    if (lua_rawgeti(L, MANY_REQS, i + 1) != LUA_TTABLE)
      return luaL_error(L, "request_many: reqs[%d] must be a table", i + 1);
    int t = lua_gettop(L);
    size_t ulen;
    lua_getfield(L, t, "url");
    const char *url = rb_check_bytes(L, -1, &ulen, NULL);
    if (ulen == 0 || memchr(url, '\0', ulen))
      return luaL_error(L, "request_many: reqs[%d].url must be a non-empty string", i + 1);
    x->url = malloc(ulen + 1);
    if (!x->url)
      return luaL_error(L, "out of memory");
    memcpy(x->url, url, ulen);
    x->url[ulen] = '\0';
    lua_pop(L, 1);
    int mty = lua_getfield(L, t, "method");
    const char *method = mty == LUA_TNIL ? "GET" : mty == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (!method || !valid_token(method, strlen(method)))
      return luaL_error(L, "request_many: reqs[%d].method must be an HTTP method name", i + 1);
    build_headers(L, t, x);
    lua_getfield(L, t, "body"); /* the body stays referenced by reqs[i] */
    int has_body = !lua_isnil(L, -1);
    if (has_body)
      x->body = rb_check_bytes(L, -1, &x->body_len, NULL);
    lua_pop(L, 1);
    double timeout = rb_opt_seconds(L, t, "timeout", c->timeout, "request_many");
    CURL *e = curl_easy_init();
    if (!e)
      return luaL_error(L, "out of memory");
    b->easy[i] = e;
    x->easy = e;
    apply_client(c, e);
    if (c->share)
      curl_easy_setopt(e, CURLOPT_SHARE, c->share);
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000 + (timeout > 0 ? 1 : 0)));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->connect_timeout * 1000));
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L); /* wait to multiplex rather than open more */
    if (!has_body && (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                      strcmp(method, "PATCH") == 0)) {
      x->body = "";
      x->body_len = 0;
      has_body = 1;
    }
    int postfields = has_body && x->body_len > 0;
    if (postfields && !has_header(x->headers, "Content-Type")) {
      /* curl would name a POSTFIELDS body form data; an upload names none */
      struct curl_slist *h = curl_slist_append(x->headers, "Content-Type:");
      if (!h)
        return luaL_error(L, "out of memory");
      x->headers = h;
      curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    }
    if (postfields) {
      /* the body goes out with the request head, in one write (one TLS record)
       * while it is small; an upload through the read callback is always a
       * second write, and a second read for the server. It stays referenced
       * by reqs[i] until the call returns, so curl need not copy it. */
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body);
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (has_body) {
      curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->body_len);
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") != 0) {
      curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)(intptr_t)i);
    x->deadline = rb_deadline(L);
    rb_xfer_setup(x, e, has_body && !postfields);
    lua_settop(L, t - 1);
  }

  int next = 0, running = 0, done = 0;
  while (done < n) {
    while (next < n && running < conc) {
      if (curl_multi_add_handle(c->multi, b->easy[next]) != CURLM_OK)
        return luaL_error(L, "request_many: cannot start a transfer");
      b->added[next++] = 1;
      running++;
    }
    int still = 0;
    if (curl_multi_perform(c->multi, &still) != CURLM_OK)
      return luaL_error(L, "request_many: curl_multi_perform failed");
    CURLMsg *m;
    int left, finished = 0;
    while ((m = curl_multi_info_read(c->multi, &left))) {
      if (m->msg != CURLMSG_DONE)
        continue;
      CURL *e = m->easy_handle;
      CURLcode rc = m->data.result;
      void *priv = NULL;
      curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
      int i = (int)(intptr_t)priv;
      struct rb_xfer *x = &b->x[i];
      if (x->oom)
        return luaL_error(L, "out of memory during a request");
      if (rc == CURLE_OK) {
        push_response(L, e, x);
        lua_rawseti(L, MANY_RES, i + 1);
      } else {
        const char *kind = "http", *code = rb_curl_code(rc);
        char detail[CURL_ERROR_SIZE + 64];
        if (x->stop == RB_XFER_INTERRUPTED) {
          kind = RB_ERR_INTERRUPTED;
          code = "interrupted";
          snprintf(detail, sizeof detail, "interrupted");
        } else if (x->stop == RB_XFER_DEADLINE) {
          kind = RB_ERR_TIMEOUT;
          code = "timeout";
          snprintf(detail, sizeof detail, "the step's time limit ran out");
        } else {
          snprintf(detail, sizeof detail, "%s: %s", rb_curl_what(code),
                   x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
        }
        rb_push_scrubbed(L, x->url, strlen(x->url));
        push_request_error(L, kind, code, rc, "request", lua_tostring(L, -1), detail);
        lua_rawseti(L, MANY_ERR, i + 1);
        lua_pop(L, 1);
        lua_pushboolean(L, 0);
        lua_rawseti(L, MANY_RES, i + 1);
      }
      curl_multi_remove_handle(c->multi, e);
      b->added[i] = 0;
      curl_easy_cleanup(e);
      b->easy[i] = NULL;
      rb_xfer_release(x);
      running--;
      done++;
      finished++;
    }
    /* a transfer that finished frees a place: start the next one at once
     * (waiting first would sit out the poll's timeout whenever every transfer
     * in flight had finished in this round) */
    if (done < n && !(finished && next < n))
      curl_multi_poll(c->multi, NULL, 0, 100, NULL);
  }
  lua_pushvalue(L, MANY_RES);
  lua_pushvalue(L, MANY_ERR);
  return 2;
}

/* ---- for curl_ws.c ------------------------------------------------------------------- */

void rb_curl_apply_client(struct client *c, CURL *e) { apply_client(c, e); }
void rb_curl_client_release(struct client *c) { client_release(c); }
struct client *rb_curl_check_client(lua_State *L, int idx) { return check_client(L, idx); }
char *rb_curl_dup_bytes(lua_State *L, const char *p, size_t n) { return dup_bytes(L, p, n); }
void rb_curl_push_request_error(lua_State *L, const char *kind, const char *code, CURLcode rc, const char *method,
                                const char *url, const char *detail) {
  push_request_error(L, kind, code, rc, method, url, detail);
}

/* ---- module ------------------------------------------------------------------------------ */

/* curl.version() -> "7.88.1", {http2=true, ssl="OpenSSL/3.0.x"} */
static int f_version(lua_State *L) {
  curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
  lua_pushstring(L, v->version);
  lua_createtable(L, 0, 2);
  lua_pushboolean(L, (v->features & CURL_VERSION_HTTP2) != 0);
  lua_setfield(L, -2, "http2");
  lua_pushstring(L, v->ssl_version ? v->ssl_version : "");
  lua_setfield(L, -2, "ssl");
  return 2;
}

static const luaL_Reg funcs[] = {
  {"client", f_client},
  {"version", f_version},
  {NULL, NULL},
};

static const luaL_Reg methods[] = {
  {"request", m_request},
  {"websocket", rb_curl_websocket},
  {"port_forward", rb_curl_port_forward},
  {"request_many", m_request_many},
  {"close", client_close},
  {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
  {"__gc", client_gc},
  {"__close", client_close},
  {"__tostring", client_tostring},
  {NULL, NULL},
};

/* libcurl's global state starts here, once, the first time any state
 * (parallel steps have their own) loads the core: not at process start, so
 * runbooks that never touch the network do not pay for TLS initialisation */
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_init_rc;
static void curl_init(void) { curl_init_rc = (int)curl_global_init(CURL_GLOBAL_DEFAULT); }

int luaopen_runbook__curl(lua_State *L) {
  char err[300];
  if (rb_dl_curl(err, sizeof err) != 0)
    return luaL_error(L, "runbook._curl: %s", err);
  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK)
    return luaL_error(L, "cannot initialise libcurl (code %d)", curl_init_rc);
  if (luaL_newmetatable(L, CLIENT_MT)) {
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, REQ_MT)) {
    lua_pushcfunction(L, req_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, req_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  rb_curl_ws_register(L);
  luaL_newlib(L, funcs);
  return 1;
}
