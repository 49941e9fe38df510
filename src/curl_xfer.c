/*
 * Part of the runbook._curl binding (it takes a lua_State). One transfer:
 * the request state and libcurl's callbacks (body in and out, headers,
 * progress), with the Lua callbacks they call run under lua_pcall so an
 * error never longjmps through curl. lua_curl.c builds the request and turns
 * the outcome into Lua values.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "crypto.h"
#include "curl_xfer.h"
#include "host.h"
#include "secret.h"

int rb_growbuf_add(struct rb_growbuf *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
      return -1;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

void rb_growbuf_free(struct rb_growbuf *b, int cleanse) {
  if (b->data && cleanse)
    rb_cleanse(b->data, b->cap);
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* Wipes header lines before freeing them: they may hold revealed secrets. */
void rb_xfer_free_headers(struct curl_slist *h) {
  for (struct curl_slist *p = h; p; p = p->next)
    if (p->data)
      rb_cleanse(p->data, strlen(p->data));
  curl_slist_free_all(h);
}

/* ---- curl callbacks ------------------------------------------------------------- */

/* Runs under lua_pcall from write_cb with (on_data, pointer, length, status):
 * on_data(chunk, status) -> continue? (only false stops). The status lets a
 * caller keep an error body out of the file it is writing. */
static int call_on_data(lua_State *L) {
  const char *p = lua_touserdata(L, 2);
  size_t n = (size_t)lua_tointeger(L, 3);
  lua_settop(L, 4);
  lua_pushvalue(L, 1);
  lua_pushlstring(L, p, n);
  lua_pushvalue(L, 4);
  lua_call(L, 2, 1);
  lua_pushboolean(L, !(lua_isboolean(L, -1) && !lua_toboolean(L, -1)));
  return 1;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *ud) {
  struct rb_xfer *r = ud;
  size_t n = size * nmemb;
  if (r->on_data_idx) {
    lua_State *L = r->L;
    if (!lua_checkstack(L, 6)) {
      r->oom = 1;
      return CURL_WRITEFUNC_ERROR;
    }
    /* write_cb runs inside m_request's frame: its stack indexes hold */
    lua_pushcfunction(L, call_on_data);
    lua_pushvalue(L, r->on_data_idx);
    lua_pushlightuserdata(L, p);
    lua_pushinteger(L, (lua_Integer)n);
    long status = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    lua_pushinteger(L, (lua_Integer)status);
    if (lua_pcall(L, 4, 1, 0) != LUA_OK) {
      lua_replace(L, r->err_idx);
      r->lua_failed = 1;
      return CURL_WRITEFUNC_ERROR;
    }
    int go_on = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!go_on) {
      r->aborted = 1;
      return CURL_WRITEFUNC_ERROR;
    }
    return n;
  }
  if (rb_growbuf_add(&r->resp, p, n) != 0) {
    r->oom = 1;
    return CURL_WRITEFUNC_ERROR;
  }
  return n;
}

/* Keeps the header block of the last response only (after redirects and
 * 100 Continue, a new status line starts a new block). */
static size_t header_cb(char *p, size_t size, size_t nmemb, void *ud) {
  struct rb_xfer *r = ud;
  size_t n = size * nmemb;
  if (n >= 5 && memcmp(p, "HTTP/", 5) == 0)
    r->hdr.len = 0;
  if (rb_growbuf_add(&r->hdr, p, n) != 0) {
    r->oom = 1;
    return 0;
  }
  return n;
}

/* Runs under lua_pcall from read_cb with (request, upload, max):
 * upload(max) -> chunk | nil; an empty chunk asks again */
static int call_upload(lua_State *L) {
  struct rb_xfer *r = lua_touserdata(L, 1);
  lua_Integer max = lua_tointeger(L, 3);
  for (;;) {
    lua_settop(L, 3);
    lua_pushvalue(L, 2);
    lua_pushinteger(L, max);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
      r->upload_done = 1;
      return 0;
    }
    size_t n;
    const char *s = rb_secret_test(L, -1, &n);
    if (!s) {
      if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "upload function must return a string, a secret or nil, got %s",
                          luaL_typename(L, -1));
      s = lua_tolstring(L, -1, &n);
    }
    if (n > 0) {
      r->pending.len = 0;
      r->pending_off = 0;
      if (rb_growbuf_add(&r->pending, s, n) != 0)
        return luaL_error(L, "out of memory");
      return 0;
    }
    lua_pop(L, 1);
    if (rb_interrupted)
      return 0; /* the progress callback stops the transfer */
  }
}

static size_t read_cb(char *buf, size_t size, size_t nitems, void *ud) {
  struct rb_xfer *r = ud;
  size_t max = size * nitems, n = 0;
  if (!r->upload_idx) {
    n = r->body_len - r->body_off;
    if (n > max)
      n = max;
    memcpy(buf, r->body + r->body_off, n);
    r->body_off += n;
    return n;
  }
  if (r->pending_off >= r->pending.len && !r->upload_done) {
    lua_State *L = r->L;
    if (!lua_checkstack(L, 6)) {
      r->oom = 1;
      return CURL_READFUNC_ABORT;
    }
    lua_pushcfunction(L, call_upload);
    lua_pushlightuserdata(L, r);
    lua_pushvalue(L, r->upload_idx);
    lua_pushinteger(L, (lua_Integer)max);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
      lua_replace(L, r->err_idx);
      r->lua_failed = 1;
      return CURL_READFUNC_ABORT;
    }
  }
  if (r->pending_off >= r->pending.len && r->upload_done && r->upload_size >= 0 &&
      r->uploaded < r->upload_size) {
    /* the server would wait for bytes that never come: stop now */
    r->short_upload = 1;
    return CURL_READFUNC_ABORT;
  }
  if (r->pending_off < r->pending.len) {
    n = r->pending.len - r->pending_off;
    if (n > max)
      n = max;
    memcpy(buf, r->pending.data + r->pending_off, n);
    r->pending_off += n;
  }
  r->uploaded += (curl_off_t)n;
  return n;
}

/* Only a string body can be sent again (curl rewinds for redirects and auth). */
static int seek_cb(void *ud, curl_off_t offset, int origin) {
  struct rb_xfer *r = ud;
  if (r->upload_idx || origin != SEEK_SET || offset < 0 || (size_t)offset > r->body_len)
    return CURL_SEEKFUNC_CANTSEEK;
  r->body_off = (size_t)offset;
  return CURL_SEEKFUNC_OK;
}

static int xferinfo_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
  struct rb_xfer *r = ud;
  if (rb_interrupted) {
    r->stop = RB_XFER_INTERRUPTED;
    return 1;
  }
  if (r->deadline > 0 && rb_monotime() >= r->deadline) {
    r->stop = RB_XFER_DEADLINE;
    return 1;
  }
  return 0;
}

void rb_xfer_setup(struct rb_xfer *r, CURL *e, int with_body) {
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
  curl_easy_setopt(e, CURLOPT_XFERINFODATA, r);
  if (with_body) {
    curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(e, CURLOPT_READDATA, r);
    curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_cb);
    curl_easy_setopt(e, CURLOPT_SEEKDATA, r);
  }
}

void rb_xfer_release(struct rb_xfer *r) {
  rb_xfer_free_headers(r->headers);
  r->headers = NULL;
  if (r->url) {
    rb_cleanse(r->url, strlen(r->url));
    free(r->url);
    r->url = NULL;
  }
  curl_slist_free_all(r->connect_to);
  r->connect_to = NULL;
  rb_growbuf_free(&r->pending, 1);
  rb_growbuf_free(&r->resp, 0);
  rb_growbuf_free(&r->hdr, 0);
}

/* ---- naming outcomes ------------------------------------------------------------- */

const char *rb_curl_code(CURLcode rc) {
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    return "timeout";
  case CURLE_COULDNT_CONNECT:
    return "connect";
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return "resolve";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CLIENTCERT:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_USE_SSL_FAILED:
    return "tls";
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_HTTP2_STREAM:
    return "reset";
  default:
    return "protocol";
  }
}

const char *rb_curl_what(const char *code) {
  if (strcmp(code, "timeout") == 0)
    return "timed out";
  if (strcmp(code, "connect") == 0)
    return "could not connect";
  if (strcmp(code, "resolve") == 0)
    return "could not resolve the host";
  if (strcmp(code, "tls") == 0)
    return "TLS failure";
  if (strcmp(code, "reset") == 0)
    return "the connection was reset or closed early";
  return "protocol error";
}

const char *rb_http_version(long v) {
  switch (v) {
  case CURL_HTTP_VERSION_1_0:
    return "1.0";
  case CURL_HTTP_VERSION_1_1:
    return "1.1";
  case CURL_HTTP_VERSION_2_0:
    return "2";
  case CURL_HTTP_VERSION_3:
    return "3";
  default:
    return "unknown";
  }
}
