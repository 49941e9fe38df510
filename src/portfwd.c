/*
 * Port-forwarding threads (see portfwd.h). The protocol, per forwarded
 * port i: data on channel 2i, errors on channel 2i+1, and the server's
 * first message on each channel is just the 2-byte little-endian port.
 * Every thread watches a stop pipe, so closing needs no signal and no
 * cancellation: rb_fwd_stop writes to it and joins.
 */
#include "portfwd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crypto.h"
#include "ws.h"

struct conn {
  struct rb_fwd *f;
  int fd;
  pthread_t thread;
  struct conn *next;
};

struct rb_fwd {
  struct rb_fwd_opts o;
  char *url, *path, *host, *auth;
  int listen_fd, port;
  int stop[2];
  pthread_t acceptor;
  pthread_mutex_t lock;
  struct conn *conns;
  int accepted;
  char last_err[320];
};

static void set_err(struct rb_fwd *f, const char *msg) {
  pthread_mutex_lock(&f->lock);
  snprintf(f->last_err, sizeof f->last_err, "%s", msg);
  pthread_mutex_unlock(&f->lock);
}

static int send_tcp(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* One accepted connection: its WebSocket, then bytes both ways. */
static void *conn_main(void *arg) {
  struct conn *c = arg;
  struct rb_fwd *f = c->f;
  char msgbuf[320];
  CURL *e = curl_easy_init();
  struct rb_ws ws;
  memset(&ws, 0, sizeof ws);
  struct rb_growbuf msg = {0}, body = {0}, extra = {0};
  if (!e)
    goto done;
  f->o.setup(f->o.ctx, e);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(e, CURLOPT_URL, f->url);
  curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
  CURLcode rc = curl_easy_perform(e);
  if (rc != CURLE_OK) {
    snprintf(msgbuf, sizeof msgbuf, "port-forward: cannot connect to %s: %s", f->url, curl_easy_strerror(rc));
    set_err(f, msgbuf);
    goto done;
  }
  curl_socket_t sfd = CURL_SOCKET_BAD;
  curl_easy_getinfo(e, CURLINFO_ACTIVESOCKET, &sfd);
  ws.easy = e;
  ws.fd = (long)sfd;
  if (f->auth && (rb_growbuf_add(&extra, "Authorization: ", 15) || rb_growbuf_add(&extra, f->auth, strlen(f->auth)) ||
                  rb_growbuf_add(&extra, "\r\n", 2)))
    goto done;
  int status = rb_ws_handshake(&ws, f->host, f->path, extra.data, "v4.channel.k8s.io", rb_ws_now() + f->o.timeout,
                               &body);
  if (status != 101) {
    if (status < 0)
      snprintf(msgbuf, sizeof msgbuf, "port-forward: %s", ws.err);
    else
      snprintf(msgbuf, sizeof msgbuf, "port-forward: HTTP %d: %.200s", status, body.data ? body.data : "");
    set_err(f, msgbuf);
    ws.sent_close = 1;
    goto done;
  }
  int seen[2] = {0, 0}; /* the port prefix of channels 0 and 1 came */
  char buf[32768];
  for (;;) {
    if (rb_ws_readable(&ws, 0) == 0) {
      struct pollfd p[3] = {{c->fd, POLLIN, 0}, {(int)ws.fd, POLLIN, 0}, {f->stop[0], POLLIN, 0}};
      if (poll(p, 3, -1) < 0) {
        if (errno == EINTR)
          continue;
        break;
      }
      if (p[2].revents)
        break;
      if (p[0].revents) {
        ssize_t n = recv(c->fd, buf + 1, sizeof buf - 1, 0);
        if (n < 0 && errno == EINTR)
          continue;
        if (n <= 0)
          break;
        buf[0] = 0;
        if (rb_ws_send(&ws, RB_WS_BINARY, buf, (size_t)n + 1, rb_ws_now() + 30) != RB_WS_OK)
          break;
      }
      if (!p[1].revents)
        continue;
    }
    int op = 0;
    if (rb_ws_recv(&ws, rb_ws_now() + 30, &op, &msg) != RB_WS_OK || op == RB_WS_CLOSE)
      break;
    if (msg.len == 0)
      continue;
    unsigned char ch = (unsigned char)msg.data[0];
    if (ch > 1)
      continue;
    if (!seen[ch]) {
      seen[ch] = 1; /* the 2-byte port */
      if (msg.len <= 3)
        continue;
      memmove(msg.data + 1, msg.data + 3, msg.len - 3);
      msg.len -= 2;
    }
    if (ch == 1) {
      snprintf(msgbuf, sizeof msgbuf, "port-forward: %.*s", (int)(msg.len - 1), msg.data + 1);
      set_err(f, msgbuf);
      break;
    }
    if (send_tcp(c->fd, msg.data + 1, msg.len - 1) != 0)
      break;
  }
done:
  if (e) {
    if (ws.easy && !ws.sent_close)
      rb_ws_send(&ws, RB_WS_CLOSE, "\x03\xe8", 2, rb_ws_now() + 1);
    curl_easy_cleanup(e);
  }
  rb_ws_free(&ws);
  rb_growbuf_free(&msg, 1);
  rb_growbuf_free(&body, 0);
  rb_growbuf_free(&extra, 1);
  shutdown(c->fd, SHUT_RDWR);
  close(c->fd);
  c->fd = -1;
  return NULL;
}

static void *accept_main(void *arg) {
  struct rb_fwd *f = arg;
  for (;;) {
    struct pollfd p[2] = {{f->listen_fd, POLLIN, 0}, {f->stop[0], POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (p[1].revents)
      break;
    if (!p[0].revents)
      continue;
    int fd = accept(f->listen_fd, NULL, NULL);
    if (fd < 0)
      continue;
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    c->f = f;
    c->fd = fd;
    if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
      close(fd);
      free(c);
      set_err(f, "port-forward: cannot start a thread for a connection");
      continue;
    }
    pthread_mutex_lock(&f->lock);
    c->next = f->conns;
    f->conns = c;
    f->accepted++;
    pthread_mutex_unlock(&f->lock);
  }
  return NULL;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void fwd_free(struct rb_fwd *f) {
  if (f->listen_fd >= 0)
    close(f->listen_fd);
  if (f->stop[0] >= 0)
    close(f->stop[0]);
  if (f->stop[1] >= 0)
    close(f->stop[1]);
  free(f->url);
  free(f->path);
  free(f->host);
  if (f->auth) {
    rb_cleanse(f->auth, strlen(f->auth));
    free(f->auth);
  }
  if (f->o.free_ctx)
    f->o.free_ctx(f->o.ctx);
  pthread_mutex_destroy(&f->lock);
  free(f);
}

struct rb_fwd *rb_fwd_start(const struct rb_fwd_opts *o, char *err, size_t errlen) {
  struct rb_fwd *f = calloc(1, sizeof *f);
  if (!f) {
    snprintf(err, errlen, "out of memory");
    if (o->free_ctx)
      o->free_ctx(o->ctx);
    return NULL;
  }
  f->o = *o;
  f->listen_fd = f->stop[0] = f->stop[1] = -1;
  pthread_mutex_init(&f->lock, NULL);
  f->url = dup_or_null(o->url);
  f->path = dup_or_null(o->path);
  f->host = dup_or_null(o->host);
  f->auth = dup_or_null(o->auth);
  if (!f->url || !f->path || !f->host || (o->auth && !f->auth)) {
    snprintf(err, errlen, "out of memory");
    fwd_free(f);
    return NULL;
  }
  if (pipe(f->stop) != 0) {
    snprintf(err, errlen, "pipe: %s", strerror(errno));
    fwd_free(f);
    return NULL;
  }
  f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((unsigned short)o->local_port);
  int one = 1;
  if (f->listen_fd >= 0)
    setsockopt(f->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t alen = sizeof a;
  if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(f->listen_fd, 16) != 0 ||
      getsockname(f->listen_fd, (struct sockaddr *)&a, &alen) != 0) {
    snprintf(err, errlen, "cannot listen on 127.0.0.1:%d: %s", o->local_port, strerror(errno));
    fwd_free(f);
    return NULL;
  }
  f->port = ntohs(a.sin_port);
  if (pthread_create(&f->acceptor, NULL, accept_main, f) != 0) {
    snprintf(err, errlen, "cannot start the port-forward thread");
    fwd_free(f);
    return NULL;
  }
  return f;
}

int rb_fwd_port(const struct rb_fwd *f) { return f->port; }

int rb_fwd_status(struct rb_fwd *f, char *err, size_t errlen) {
  pthread_mutex_lock(&f->lock);
  int n = f->accepted;
  snprintf(err, errlen, "%s", f->last_err);
  pthread_mutex_unlock(&f->lock);
  return n;
}

void rb_fwd_stop(struct rb_fwd *f) {
  if (write(f->stop[1], "x", 1) < 0) {
    /* a pipe with room for one byte cannot fail here; nothing to do */
  }
  pthread_join(f->acceptor, NULL);
  struct conn *c = f->conns;
  while (c) {
    struct conn *next = c->next;
    pthread_join(c->thread, NULL);
    free(c);
    c = next;
  }
  fwd_free(f);
}
