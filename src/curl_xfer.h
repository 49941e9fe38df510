/*
 * One HTTP transfer for runbook._curl (src/curl_xfer.c): the state a
 * request holds while curl_easy_perform runs, and the callbacks that move
 * its body in and out. Lua callbacks (upload, on_data) live on the calling
 * function's stack at upload_idx / on_data_idx and run under lua_pcall;
 * an error they raise is moved to err_idx and lua_failed is set, for the
 * caller to raise once curl has returned.
 */
#ifndef RUNBOOK_CURL_XFER_H
#define RUNBOOK_CURL_XFER_H

#include <stddef.h>

#include "dl_curl.h"
#include <lua.h>

/* A growing byte buffer, always NUL-terminated. */
struct rb_growbuf {
  char *data;
  size_t len, cap;
};

/* 0, or -1 when out of memory. */
int rb_growbuf_add(struct rb_growbuf *b, const char *p, size_t n);
/* With cleanse, the bytes are wiped first (they held a secret). */
void rb_growbuf_free(struct rb_growbuf *b, int cleanse);

enum rb_xfer_stop { RB_XFER_RUNNING, RB_XFER_INTERRUPTED, RB_XFER_DEADLINE };

struct rb_xfer {
  CURL *easy;
  lua_State *L;
  struct curl_slist *headers;
  char *url;
  struct curl_slist *connect_to; /* CURLOPT_CONNECT_TO, for tls_server_name */
  /* request body: bytes held by a Lua value on the stack, or a Lua function */
  const char *body;
  size_t body_len, body_off;
  int upload_idx, upload_done;
  curl_off_t upload_size, uploaded; /* upload_size -1 when unknown */
  struct rb_growbuf pending;        /* what the upload function gave beyond curl's buffer */
  size_t pending_off;
  int on_data_idx;
  int err_idx; /* stack slot holding a Lua error raised by a callback */
  int lua_failed, aborted, oom, short_upload;
  enum rb_xfer_stop stop;
  double deadline; /* the step's, monotonic; 0 = none */
  struct rb_growbuf resp, hdr;
  char errbuf[CURL_ERROR_SIZE];
};

/* Points e's write, header, progress and (with_body) read and seek
 * callbacks, and its error buffer, at x. */
void rb_xfer_setup(struct rb_xfer *x, CURL *e, int with_body);

/* Wipes and frees the header list, the URL copy and the buffers. */
void rb_xfer_release(struct rb_xfer *x);

/* Frees a header list, wiping each line first (they may hold secrets). */
void rb_xfer_free_headers(struct curl_slist *h);

/* The error code for a curl result: "timeout", "connect", "resolve",
 * "tls", "reset" or "protocol"; and a phrase for it ("could not connect"). */
const char *rb_curl_code(CURLcode rc);
const char *rb_curl_what(const char *code);

/* "1.0", "1.1", "2", "3" for CURLINFO_HTTP_VERSION. */
const char *rb_http_version(long v);

#endif
