/*
 * Redis plumbing without Lua: URL parsing, round trips over hiredis's
 * buffers with our own waits, and the lock keeper thread (redis.h).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "crypto.h"
#include "redis.h"

/* Compare-and-PEXPIRE and compare-and-DEL: only the holder of the token
 * may renew or release a lock. Exported to Lua so there is one copy. */
const char RB_REDIS_RENEW_SCRIPT[] =
  "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
  "else return 0 end";
const char RB_REDIS_RELEASE_SCRIPT[] =
  "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) "
  "else return 0 end";

/* where and how to connect; user and pass are malloc'd */
const char *rb_redis_addr(const struct rb_redis_target *t) {
  return t->ip[0] ? t->ip : t->host;
}

void rb_redis_target_free(struct rb_redis_target *t) {
  if (t->pass) {
    rb_cleanse(t->pass, t->passlen);
    free(t->pass);
  }
  free(t->user);
  t->pass = t->user = NULL;
  t->passlen = 0;
}

/* ---- URL parsing ---------------------------------------------------------- */

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/* percent-decodes s[0..n) into a new buffer; NULL on a bad escape */
static char *pct_decode(const char *s, size_t n, size_t *outlen) {
  char *out = malloc(n + 1);
  size_t k = 0;
  if (!out)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    if (s[i] != '%') {
      out[k++] = s[i];
      continue;
    }
    int a = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
    int b = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
    if (a < 0 || b < 0) {
      rb_cleanse(out, k);
      free(out);
      return NULL;
    }
    out[k++] = (char)(a * 16 + b);
    i += 2;
  }
  out[k] = '\0';
  *outlen = k;
  return out;
}

/* Parses redis://[[user]:password@]host[:port][/db] (userinfo without ':'
 * is a password, as redis-cli reads it). Returns NULL or a message that
 * never quotes the URL, which may hold the password. */
const char *rb_redis_parse_url(const char *u, size_t n, struct rb_redis_target *t) {
  memset(t, 0, sizeof *t);
  t->port = 6379;
  if (n >= 9 && strncasecmp(u, "rediss://", 9) == 0)
    return "rediss:// (TLS) is not supported: this build's hiredis 0.14 has no TLS";
  if (n < 8 || strncasecmp(u, "redis://", 8) != 0)
    return "the URL must start with redis://";
  const char *p = u + 8, *end = u + n;
  const char *auth_end = p;
  while (auth_end < end && *auth_end != '/' && *auth_end != '?' && *auth_end != '#')
    auth_end++;
  /* the last '@' ends the userinfo, so a raw '@' in a password still works */
  const char *at = NULL;
  for (const char *q = p; q < auth_end; q++)
    if (*q == '@')
      at = q;
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    const char *pw = p;
    if (colon) {
      if (colon > p) {
        size_t ul;
        t->user = pct_decode(p, (size_t)(colon - p), &ul);
        if (!t->user)
          return "bad %-escape in the user name";
      }
      pw = colon + 1;
    }
    t->pass = pct_decode(pw, (size_t)(at - pw), &t->passlen);
    if (!t->pass)
      return "bad %-escape in the password";
    if (t->passlen == 0) {
      free(t->pass);
      t->pass = NULL;
    }
    p = at + 1;
  }
  const char *h = p, *hend;
  if (p < auth_end && *p == '[') {
    hend = memchr(p, ']', (size_t)(auth_end - p));
    if (!hend)
      return "unterminated [ in the host";
    h = p + 1;
    p = hend + 1;
  } else {
    hend = p;
    while (hend < auth_end && *hend != ':')
      hend++;
    p = hend;
  }
  if (hend == h)
    return "the URL names no host";
  if ((size_t)(hend - h) >= sizeof t->host)
    return "the host name is too long";
  memcpy(t->host, h, (size_t)(hend - h));
  t->host[hend - h] = '\0';
  if (p < auth_end) {
    if (*p != ':')
      return "unexpected text after the host";
    p++;
    long port = 0;
    if (p == auth_end)
      return "the port is empty";
    for (; p < auth_end; p++) {
      if (*p < '0' || *p > '9' || port > 65535)
        return "the port must be a number from 1 to 65535";
      port = port * 10 + (*p - '0');
    }
    if (port < 1 || port > 65535)
      return "the port must be a number from 1 to 65535";
    t->port = (int)port;
  }
  p = auth_end;
  if (p < end && *p == '/') {
    p++;
    long db = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
      db = db * 10 + (*p - '0');
      if (db > 1000000)
        return "the database number is too large";
    }
    if (p < end && *p != '?' && *p != '#')
      return "the path must be a database number (redis://host:port/0)";
    t->db = db;
  }
  if (p < end && *p == '?')
    return "query parameters are not supported (give timeouts as options)";
  return NULL;
}


int rb_redis_wait_fd(int fd, short events, double deadline) {
  for (;;) {
    if (rb_interrupted)
      return RB_IO_INTERRUPTED;
    double now = rb_monotime();
    if (deadline > 0 && now >= deadline)
      return RB_IO_TIMEOUT;
    int ms = 50; /* short slices so Ctrl-C is seen at once */
    if (deadline > 0 && (deadline - now) * 1000.0 < ms)
      ms = (int)((deadline - now) * 1000.0) + 1;
    struct pollfd p = {fd, events, 0};
    int r = poll(&p, 1, ms);
    if (r > 0)
      return RB_IO_OK;
    if (r < 0 && errno != EINTR)
      return RB_IO_ERROR;
  }
}

/* Sends everything appended so far, then reads `count` replies into out[]. */
int rb_redis_roundtrip(redisContext *ctx, double deadline, redisReply **out, size_t count) {
  int done = 0, r;
  while (!done) {
    if ((r = rb_redis_wait_fd(ctx->fd, POLLOUT, deadline)) != RB_IO_OK)
      return r;
    if (redisBufferWrite(ctx, &done) != REDIS_OK)
      return RB_IO_ERROR;
  }
  for (size_t i = 0; i < count; i++) {
    void *rep = NULL;
    for (;;) {
      if (redisGetReplyFromReader(ctx, &rep) != REDIS_OK)
        return RB_IO_ERROR;
      if (rep)
        break;
      if ((r = rb_redis_wait_fd(ctx->fd, POLLIN, deadline)) != RB_IO_OK)
        return r;
      if (redisBufferRead(ctx) != REDIS_OK)
        return RB_IO_ERROR;
    }
    out[i] = rep;
  }
  return RB_IO_OK;
}

/* The code of an error reply: its first word when that is a Redis code
 * (WRONGTYPE, NOAUTH, ...), else ERR. */
void rb_redis_error_code(const char *s, size_t n, char *code, size_t cap) {
  size_t k = 0;
  while (k < n && k + 1 < cap && ((s[k] >= 'A' && s[k] <= 'Z') || s[k] == '_'))
    k++;
  if (k == 0 || (k < n && s[k] != ' ')) {
    strcpy(code, "ERR");
    return;
  }
  memcpy(code, s, k);
  code[k] = '\0';
}

struct timeval rb_redis_tv(double s) {
  struct timeval tv;
  if (s < 0.001)
    s = 0.001;
  tv.tv_sec = (time_t)s;
  tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
  return tv;
}



static void keeper_disconnect(redisContext **ctx) {
  if (*ctx) {
    redisFree(*ctx);
    *ctx = NULL;
  }
}

/* one command on the keeper's own blocking connection */
static redisReply *keeper_cmd(redisContext *ctx, int argc, const char **argv, const size_t *lens) {
  return redisCommandArgv(ctx, argc, argv, lens);
}

/* 1 renewed, 0 no longer ours, -1 could not tell (err says why) */
static int keeper_renew(struct rb_redis_keeper *k, redisContext **ctx, char *err, size_t cap) {
  struct timeval tv = rb_redis_tv(k->interval < 2 ? k->interval : 2);
  if (!*ctx) {
    *ctx = redisConnectWithTimeout(rb_redis_addr(&k->t), k->t.port, tv);
    if (!*ctx || (*ctx)->err) {
      snprintf(err, cap, "cannot connect: %s", *ctx ? (*ctx)->errstr : "out of memory");
      keeper_disconnect(ctx);
      return -1;
    }
    redisSetTimeout(*ctx, tv);
    const char *argv[3];
    size_t lens[3];
    int argc = 0;
    redisReply *r = NULL;
    if (k->t.pass) {
      argv[argc] = "AUTH";
      lens[argc++] = 4;
      if (k->t.user) {
        argv[argc] = k->t.user;
        lens[argc++] = strlen(k->t.user);
      }
      argv[argc] = k->t.pass;
      lens[argc++] = k->t.passlen;
      r = keeper_cmd(*ctx, argc, argv, lens);
      if (!r || r->type == REDIS_REPLY_ERROR) {
        snprintf(err, cap, "authentication failed: %s", r ? r->str : (*ctx)->errstr);
        if (r)
          freeReplyObject(r);
        keeper_disconnect(ctx);
        return -1;
      }
      freeReplyObject(r);
    }
    if (k->t.db) {
      char dbs[24];
      snprintf(dbs, sizeof dbs, "%ld", k->t.db);
      argv[0] = "SELECT";
      lens[0] = 6;
      argv[1] = dbs;
      lens[1] = strlen(dbs);
      r = keeper_cmd(*ctx, 2, argv, lens);
      if (!r || r->type == REDIS_REPLY_ERROR) {
        snprintf(err, cap, "cannot select database %ld: %s", k->t.db, r ? r->str : (*ctx)->errstr);
        if (r)
          freeReplyObject(r);
        keeper_disconnect(ctx);
        return -1;
      }
      freeReplyObject(r);
    }
  }
  char ttl[24];
  snprintf(ttl, sizeof ttl, "%ld", k->ttl_ms);
  const char *argv[6] = {"EVAL", RB_REDIS_RENEW_SCRIPT, "1", k->key, k->val, ttl};
  size_t lens[6] = {4, sizeof RB_REDIS_RENEW_SCRIPT - 1, 1, k->keylen, k->vallen, strlen(ttl)};
  redisReply *r = keeper_cmd(*ctx, 6, argv, lens);
  if (!r) {
    snprintf(err, cap, "%s", (*ctx)->errstr);
    keeper_disconnect(ctx);
    return -1;
  }
  int res = -1;
  if (r->type == REDIS_REPLY_INTEGER)
    res = r->integer == 1 ? 1 : 0;
  else
    snprintf(err, cap, "%s", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
  freeReplyObject(r);
  return res;
}

static void *keeper_main(void *arg) {
  struct rb_redis_keeper *k = arg;
  redisContext *ctx = NULL;
  double last_ok = rb_monotime();
  pthread_mutex_lock(&k->mu);
  while (!k->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double at = (double)ts.tv_sec + ts.tv_nsec / 1e9 + k->interval;
    ts.tv_sec = (time_t)at;
    ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
    int rc = 0;
    while (!k->stop && rc != ETIMEDOUT)
      rc = pthread_cond_timedwait(&k->cv, &k->mu, &ts);
    if (k->stop)
      break;
    pthread_mutex_unlock(&k->mu);
    char err[160] = "";
    int res = keeper_renew(k, &ctx, err, sizeof err);
    double now = rb_monotime();
    pthread_mutex_lock(&k->mu);
    if (res == 1) {
      last_ok = now;
      k->renewals++;
    } else if (res == 0) {
      k->lost = 1;
      snprintf(k->why, sizeof k->why, "the lock is no longer held by this process (it expired or was taken over)");
      break;
    } else if ((now - last_ok) * 1000.0 >= (double)k->ttl_ms) {
      k->lost = 1;
      snprintf(k->why, sizeof k->why, "the lock could not be renewed for %ld ms and has expired: %s", k->ttl_ms, err);
      break;
    }
  }
  pthread_mutex_unlock(&k->mu);
  keeper_disconnect(&ctx);
  return NULL;
}

void rb_redis_keeper_stop(struct rb_redis_keeper *k) {
  if (k->running) {
    pthread_mutex_lock(&k->mu);
    k->stop = 1;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->th, NULL);
    k->running = 0;
  }
  rb_redis_target_free(&k->t);
  free(k->key);
  free(k->val);
  k->key = k->val = NULL;
}


int rb_redis_keeper_start(struct rb_redis_keeper *k) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&k->mu, NULL);
  pthread_cond_init(&k->cv, &ca);
  pthread_condattr_destroy(&ca);
  k->inited = 1;
  int e = pthread_create(&k->th, NULL, keeper_main, k);
  if (e == 0)
    k->running = 1;
  return e;
}
