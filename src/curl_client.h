/*
 * The HTTP client of runbook._curl as its two files share it: lua_curl.c
 * (the module, requests) and curl_ws.c (WebSockets and port-forwarding
 * on the client's TLS settings).
 */
#ifndef RUNBOOK_CURL_CLIENT_H
#define RUNBOOK_CURL_CLIENT_H

#include <stddef.h>

#include "dl_curl.h"
#include <lua.h>

#define CLIENT_MT "runbook.curl.Client"

struct blob {
  char *data;
  size_t len;
};

struct client {
  CURL *easy;   /* NULL while closed */
  CURLM *multi; /* request_many's transfers and their connections, made on first use */
  CURLSH *share; /* TLS sessions, shared by easy and request_many's transfers (not websockets) */
  int busy;   /* a request is running (callbacks must not close or reuse it) */
  char *ca_file, *cert_file, *key_file, *user_agent, *proxy, *tls_server_name;
  struct blob ca_data, cert_data, key_data;
  int insecure, http2;
  double timeout, connect_timeout;
};

/* lua_curl.c */
void rb_curl_apply_client(struct client *c, CURL *e);
void rb_curl_client_release(struct client *c);
struct client *rb_curl_check_client(lua_State *L, int idx);
char *rb_curl_dup_bytes(lua_State *L, const char *p, size_t n);
void rb_curl_push_request_error(lua_State *L, const char *kind, const char *code, CURLcode rc, const char *method,
                                const char *url, const char *detail);

/* curl_ws.c: client:websocket, client:port_forward and their handles */
int rb_curl_websocket(lua_State *L);
int rb_curl_port_forward(lua_State *L);
void rb_curl_ws_register(lua_State *L);

#endif
