/*
 * WebSocket (RFC 6455) client over a libcurl connection opened with
 * CURLOPT_CONNECT_ONLY: curl has done the TCP connect, the proxy and TLS
 * (client certificates, CA); this file does the HTTP/1.1 Upgrade handshake
 * and the framing with curl_easy_send / curl_easy_recv. No Lua here, so a
 * thread with no Lua state can use it too.
 */
#ifndef RUNBOOK_WS_H
#define RUNBOOK_WS_H

#include <stddef.h>

#include "curl_xfer.h"
#include "dl_curl.h"

enum { RB_WS_CONT = 0, RB_WS_TEXT = 1, RB_WS_BINARY = 2, RB_WS_CLOSE = 8, RB_WS_PING = 9, RB_WS_PONG = 10 };

/* results of rb_ws_recv and rb_ws_send */
enum { RB_WS_OK = 0, RB_WS_TIMEOUT = 1, RB_WS_ERROR = -1 };

struct rb_ws {
  CURL *easy;       /* owned by the caller */
  long fd;          /* CURLINFO_ACTIVESOCKET */
  struct rb_growbuf rx; /* bytes received and not yet consumed */
  size_t rx_off;
  char protocol[64]; /* the subprotocol the server chose */
  int sent_close;
  int partial_op; /* a fragmented message's opcode while its rest is awaited, else 0 */
  char err[256];
};

/* Sends the Upgrade request for path (with the Host header hostport, extra
 * header lines each ending in CRLF, and the offered subprotocols, comma
 * separated) and reads the answer. Returns the HTTP status (101 on success,
 * the protocol checked), or -1 with w->err set. For another status the
 * response body (by Content-Length, or up to the connection's end) is in
 * *body. deadline is monotonic seconds. */
int rb_ws_handshake(struct rb_ws *w, const char *hostport, const char *path, const char *extra,
                    const char *protocols, double deadline, struct rb_growbuf *body);

/* One message (fragments joined) into *msg, its opcode in *op: TEXT,
 * BINARY or CLOSE (msg then holds the close payload). Pings are answered
 * on the way. After a timeout, call again with the same msg: fragments
 * already read are kept in it (a fresh message resets it). */
int rb_ws_recv(struct rb_ws *w, double deadline, int *op, struct rb_growbuf *msg);

/* One masked frame. */
int rb_ws_send(struct rb_ws *w, int op, const void *p, size_t n, double deadline);

/* Waits until w has bytes to read (buffered or on the socket) or the
 * timeout (seconds; <0 forever) passes: 1 readable, 0 not. */
int rb_ws_readable(struct rb_ws *w, double timeout);

void rb_ws_free(struct rb_ws *w);

double rb_ws_now(void);

#endif
