/*
 * Port-forwarding from a loopback TCP port to a pod over the Kubernetes
 * API's WebSocket port-forward protocol, served by C threads that never
 * touch Lua: one accepting, one per accepted connection, each with its own
 * WebSocket (its own libcurl CONNECT_ONLY handle, set up by the caller's
 * setup function so TLS, client certificates and proxy match its client).
 */
#ifndef RUNBOOK_PORTFWD_H
#define RUNBOOK_PORTFWD_H

#include "dl_curl.h"

struct rb_fwd;

struct rb_fwd_opts {
  const char *url, *path, *host, *auth; /* auth: the Authorization value or NULL */
  int local_port;                       /* 0: any free port */
  double timeout;                       /* for each connection's connect and handshake */
  void (*setup)(void *ctx, CURL *e);    /* TLS and the rest, from the client */
  void *ctx;                            /* owned by the forwarder from then on */
  void (*free_ctx)(void *ctx);
};

/* Starts listening and forwarding; NULL with err set on failure. */
struct rb_fwd *rb_fwd_start(const struct rb_fwd_opts *o, char *err, size_t errlen);

int rb_fwd_port(const struct rb_fwd *f);

/* Connections accepted so far, and the last error of one (empty if none). */
int rb_fwd_status(struct rb_fwd *f, char *err, size_t errlen);

/* Stops accepting, ends every connection, joins the threads, frees f. */
void rb_fwd_stop(struct rb_fwd *f);

#endif
