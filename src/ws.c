/*
 * WebSocket client framing and handshake (RFC 6455) over a libcurl
 * CONNECT_ONLY connection; see ws.h.
 */
#include "ws.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "crypto.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MAX_MESSAGE (64u * 1024 * 1024)

/* SHA-1 (FIPS 180-4), only for Sec-WebSocket-Accept, which RFC 6455
 * defines with it; libcrypto is not loaded for this. */
static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const unsigned char *p) {
  uint32_t w[80];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 80; i++)
    w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (int i = 0; i < 80; i++) {
    uint32_t f, k;
    if (i < 20) {
      f = (b & c) | (~b & d);
      k = 0x5A827999;
    } else if (i < 40) {
      f = b ^ c ^ d;
      k = 0x6ED9EBA1;
    } else if (i < 60) {
      f = (b & c) | (b & d) | (c & d);
      k = 0x8F1BBCDC;
    } else {
      f = b ^ c ^ d;
      k = 0xCA62C1D6;
    }
    uint32_t t = rol(a, 5) + f + e + k + w[i];
    e = d;
    d = c;
    c = rol(b, 30);
    b = a;
    a = t;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
}

static void sha1(const void *data, size_t n, unsigned char out[20]) {
  uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  const unsigned char *p = data;
  size_t left = n;
  for (; left >= 64; left -= 64, p += 64)
    sha1_block(h, p);
  unsigned char last[128] = {0};
  memcpy(last, p, left);
  last[left] = 0x80;
  size_t total = left + 9 > 64 ? 128 : 64;
  unsigned long long bits = (unsigned long long)n * 8;
  for (int i = 0; i < 8; i++)
    last[total - 1 - i] = (unsigned char)(bits >> (8 * i));
  sha1_block(h, last);
  if (total == 128)
    sha1_block(h, last + 64);
  for (int i = 0; i < 20; i++)
    out[i] = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
}

double rb_ws_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(struct rb_ws *w, const char *fmt, const char *arg) {
  snprintf(w->err, sizeof w->err, fmt, arg ? arg : "");
  return RB_WS_ERROR;
}

static int wait_fd(struct rb_ws *w, short events, double deadline) {
  for (;;) {
    int ms = -1;
    if (deadline > 0) {
      double left = deadline - rb_ws_now();
      if (left <= 0)
        return RB_WS_TIMEOUT;
      ms = (int)(left * 1000) + 1;
    }
    struct pollfd p = {(int)w->fd, events, 0};
    int rc = poll(&p, 1, ms);
    if (rc > 0)
      return RB_WS_OK;
    if (rc < 0 && errno != EINTR)
      return fail(w, "poll: %s", strerror(errno));
  }
}

static int send_all(struct rb_ws *w, const unsigned char *p, size_t n, double deadline) {
  while (n > 0) {
    size_t sent = 0;
    CURLcode rc = curl_easy_send(w->easy, p, n, &sent);
    if (rc == CURLE_AGAIN) {
      int r = wait_fd(w, POLLOUT, deadline);
      if (r != RB_WS_OK)
        return r;
      continue;
    }
    if (rc != CURLE_OK)
      return fail(w, "send: %s", curl_easy_strerror(rc));
    p += sent;
    n -= sent;
  }
  return RB_WS_OK;
}

/* Reads what is available into rx (at least one byte unless it times out). */
static int fill(struct rb_ws *w, double deadline) {
  char buf[16384];
  for (;;) {
    size_t got = 0;
    CURLcode rc = curl_easy_recv(w->easy, buf, sizeof buf, &got);
    if (rc == CURLE_AGAIN) {
      int r = wait_fd(w, POLLIN, deadline);
      if (r != RB_WS_OK)
        return r;
      continue;
    }
    if (rc != CURLE_OK)
      return fail(w, "receive: %s", curl_easy_strerror(rc));
    if (got == 0)
      return fail(w, "the server closed the connection%s", NULL);
    if (w->rx_off > 0 && w->rx_off == w->rx.len)
      w->rx.len = w->rx_off = 0;
    if (rb_growbuf_add(&w->rx, buf, got) != 0)
      return fail(w, "out of memory%s", NULL);
    return RB_WS_OK;
  }
}

static size_t avail(struct rb_ws *w) { return w->rx.len - w->rx_off; }

int rb_ws_readable(struct rb_ws *w, double timeout) {
  if (avail(w) > 0)
    return 1;
  char buf[16384];
  size_t got = 0;
  CURLcode rc = curl_easy_recv(w->easy, buf, sizeof buf, &got);
  if (rc == CURLE_OK) {
    if (got > 0 && rb_growbuf_add(&w->rx, buf, got) != 0)
      return 1;
    return 1; /* data, or the end of the stream: either way a read will not block */
  }
  if (rc != CURLE_AGAIN)
    return 1;
  struct pollfd p = {(int)w->fd, POLLIN, 0};
  return poll(&p, 1, timeout < 0 ? -1 : (int)(timeout * 1000)) > 0;
}

int rb_ws_handshake(struct rb_ws *w, const char *hostport, const char *path, const char *extra,
                    const char *protocols, double deadline, struct rb_growbuf *body) {
  unsigned char nonce[16];
  char key[32], expect[64];
  if (rb_random(nonce, sizeof nonce) != 0)
    return fail(w, "no random bytes for the WebSocket key%s", NULL);
  rb_base64_to(nonce, sizeof nonce, 0, 1, key);
  char both[96];
  snprintf(both, sizeof both, "%s%s", key, WS_GUID);
  unsigned char sha[20];
  sha1(both, strlen(both), sha);
  rb_base64_to(sha, sizeof sha, 0, 1, expect);

  struct rb_growbuf req = {0};
  char head[1024];
  snprintf(head, sizeof head,
           " HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n",
           hostport, key, protocols);
  /* the path may be long: added on its own */
  if (rb_growbuf_add(&req, "GET ", 4) || rb_growbuf_add(&req, path, strlen(path)) ||
      rb_growbuf_add(&req, head, strlen(head)) || (extra && rb_growbuf_add(&req, extra, strlen(extra))) ||
      rb_growbuf_add(&req, "\r\n", 2)) {
    rb_growbuf_free(&req, 1);
    return fail(w, "out of memory%s", NULL);
  }
  int r = send_all(w, (unsigned char *)req.data, req.len, deadline);
  rb_growbuf_free(&req, 1); /* it held the Authorization header */
  if (r != RB_WS_OK)
    return r == RB_WS_TIMEOUT ? fail(w, "timed out sending the upgrade request%s", NULL) : RB_WS_ERROR;

  /* the response head */
  char *end;
  for (;;) {
    end = w->rx.data ? strstr(w->rx.data + w->rx_off, "\r\n\r\n") : NULL;
    if (end)
      break;
    if (avail(w) > 65536)
      return fail(w, "the upgrade response's headers are too long%s", NULL);
    r = fill(w, deadline);
    if (r == RB_WS_TIMEOUT)
      return fail(w, "timed out waiting for the upgrade response%s", NULL);
    if (r != RB_WS_OK)
      return r;
  }
  size_t head_len = (size_t)(end - (w->rx.data + w->rx_off)) + 4;
  char *h = strndup(w->rx.data + w->rx_off, head_len);
  if (!h)
    return fail(w, "out of memory%s", NULL);
  w->rx_off += head_len;
  int status = 0;
  if (sscanf(h, "HTTP/%*s %d", &status) != 1) {
    free(h);
    return fail(w, "not an HTTP response to the upgrade request%s", NULL);
  }
  int accept_ok = 0, upgrade_ok = 0;
  long content_length = -1;
  w->protocol[0] = '\0';
  for (char *line = strstr(h, "\r\n"); line && line[2] && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
    char *name = line + 2, *colon = strchr(name, ':'), *eol = strstr(name, "\r\n");
    if (!colon || !eol || colon > eol)
      continue;
    char *val = colon + 1;
    while (*val == ' ' || *val == '\t')
      val++;
    size_t vlen = (size_t)(eol - val), nlen = (size_t)(colon - name);
    while (vlen > 0 && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t'))
      vlen--;
#define IS(hn) (nlen == sizeof hn - 1 && strncasecmp(name, hn, nlen) == 0)
    if (IS("Sec-WebSocket-Accept"))
      accept_ok = vlen == strlen(expect) && memcmp(val, expect, vlen) == 0;
    else if (IS("Upgrade"))
      upgrade_ok = vlen == 9 && strncasecmp(val, "websocket", 9) == 0;
    else if (IS("Sec-WebSocket-Protocol") && vlen < sizeof w->protocol) {
      memcpy(w->protocol, val, vlen);
      w->protocol[vlen] = '\0';
    } else if (IS("Content-Length"))
      content_length = strtol(val, NULL, 10);
#undef IS
  }
  free(h);
  if (status != 101) {
    /* the error's body, for its Status */
    while (content_length < 0 || avail(w) < (size_t)content_length) {
      if (avail(w) > 1024 * 1024 || fill(w, deadline) != RB_WS_OK)
        break;
    }
    size_t n = avail(w);
    if (content_length >= 0 && n > (size_t)content_length)
      n = (size_t)content_length;
    if (body && rb_growbuf_add(body, w->rx.data + w->rx_off, n) != 0)
      return fail(w, "out of memory%s", NULL);
    w->rx_off += n;
    return status;
  }
  if (!upgrade_ok)
    return fail(w, "the server answered 101 without Upgrade: websocket%s", NULL);
  if (!accept_ok)
    return fail(w, "the server's Sec-WebSocket-Accept does not match the key%s", NULL);
  if (protocols && *protocols && !w->protocol[0])
    return fail(w, "the server chose none of the subprotocols %s", protocols);
  return 101;
}

int rb_ws_send(struct rb_ws *w, int op, const void *p, size_t n, double deadline) {
  unsigned char hdr[14], mask[4];
  size_t hl = 0;
  hdr[hl++] = (unsigned char)(0x80 | (op & 0x0f));
  if (n < 126)
    hdr[hl++] = (unsigned char)(0x80 | n);
  else if (n <= 0xffff) {
    hdr[hl++] = 0x80 | 126;
    hdr[hl++] = (unsigned char)(n >> 8);
    hdr[hl++] = (unsigned char)n;
  } else {
    hdr[hl++] = 0x80 | 127;
    for (int i = 7; i >= 0; i--)
      hdr[hl++] = (unsigned char)((unsigned long long)n >> (8 * i));
  }
  if (rb_random(mask, 4) != 0)
    return fail(w, "no random bytes for a frame mask%s", NULL);
  memcpy(hdr + hl, mask, 4);
  hl += 4;
  unsigned char *frame = malloc(hl + n);
  if (!frame)
    return fail(w, "out of memory%s", NULL);
  memcpy(frame, hdr, hl);
  const unsigned char *src = p;
  for (size_t i = 0; i < n; i++)
    frame[hl + i] = src[i] ^ mask[i & 3];
  int r = send_all(w, frame, hl + n, deadline);
  rb_cleanse(frame, hl + n); /* stdin may be a secret */
  free(frame);
  if (op == RB_WS_CLOSE && r == RB_WS_OK)
    w->sent_close = 1;
  return r;
}

/* Waits for n buffered bytes. */
static int need(struct rb_ws *w, size_t n, double deadline) {
  while (avail(w) < n) {
    int r = fill(w, deadline);
    if (r != RB_WS_OK)
      return r;
  }
  return RB_WS_OK;
}

int rb_ws_recv(struct rb_ws *w, double deadline, int *op, struct rb_growbuf *msg) {
  if (!w->partial_op)
    msg->len = 0;
  for (;;) {
    int r = need(w, 2, deadline);
    if (r != RB_WS_OK)
      return r;
    const unsigned char *b = (unsigned char *)w->rx.data + w->rx_off;
    int fin = b[0] & 0x80, fop = b[0] & 0x0f, masked = b[1] & 0x80;
    unsigned long long len = b[1] & 0x7f;
    size_t hl = 2;
    if (len == 126)
      hl = 4;
    else if (len == 127)
      hl = 10;
    if (masked)
      hl += 4;
    if ((r = need(w, hl, deadline)) != RB_WS_OK)
      return r;
    b = (unsigned char *)w->rx.data + w->rx_off;
    if (len == 126)
      len = ((unsigned)b[2] << 8) | b[3];
    else if (len == 127) {
      len = 0;
      for (int i = 0; i < 8; i++)
        len = (len << 8) | b[2 + i];
    }
    if (len > MAX_MESSAGE || msg->len + len > MAX_MESSAGE)
      return fail(w, "a WebSocket message is larger than 64 MiB%s", NULL);
    if ((r = need(w, hl + (size_t)len, deadline)) != RB_WS_OK)
      return r;
    unsigned char *payload = (unsigned char *)w->rx.data + w->rx_off + hl;
    if (masked)
      for (size_t i = 0; i < len; i++)
        payload[i] ^= ((unsigned char *)w->rx.data + w->rx_off + hl - 4)[i & 3];
    w->rx_off += hl + (size_t)len;
    if (fop == RB_WS_PING) {
      if ((r = rb_ws_send(w, RB_WS_PONG, payload, (size_t)len, deadline)) != RB_WS_OK)
        return r;
      continue;
    }
    if (fop == RB_WS_PONG)
      continue;
    if (fop == RB_WS_CLOSE) {
      msg->len = 0;
      w->partial_op = 0;
      if (rb_growbuf_add(msg, (char *)payload, (size_t)len) != 0)
        return fail(w, "out of memory%s", NULL);
      if (!w->sent_close)
        rb_ws_send(w, RB_WS_CLOSE, payload, len >= 2 ? 2 : 0, deadline);
      *op = RB_WS_CLOSE;
      return RB_WS_OK;
    }
    if (fop == RB_WS_CONT) {
      if (!w->partial_op)
        return fail(w, "a continuation frame without a message%s", NULL);
    } else if (fop == RB_WS_TEXT || fop == RB_WS_BINARY) {
      if (w->partial_op)
        return fail(w, "a new message inside a fragmented one%s", NULL);
      w->partial_op = fop;
    } else {
      return fail(w, "unknown WebSocket opcode%s", NULL);
    }
    if (rb_growbuf_add(msg, (char *)payload, (size_t)len) != 0)
      return fail(w, "out of memory%s", NULL);
    if (fin) {
      *op = w->partial_op;
      w->partial_op = 0;
      if (msg->data == NULL && rb_growbuf_add(msg, "", 0) != 0)
        return fail(w, "out of memory%s", NULL);
      return RB_WS_OK;
    }
  }
}

void rb_ws_free(struct rb_ws *w) {
  rb_growbuf_free(&w->rx, 1);
  w->rx_off = 0;
}
