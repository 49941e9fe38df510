/*
 * Redis plumbing shared by the runbook._redis core and its lock keeper:
 * URL parsing, bounded and interruptible round trips over hiredis's
 * buffers, and the thread that keeps a lock alive. No Lua here, so the
 * keeper thread can use it too.
 */
#ifndef RUNBOOK_REDIS_H
#define RUNBOOK_REDIS_H

#include <pthread.h>
#include <stddef.h>
#include <sys/time.h>

#include "dl_redis.h"

/* Compare-and-PEXPIRE and compare-and-DEL on a lock key (KEYS[1]) holding
 * a value (ARGV[1]); the renewal takes the ttl in ms as ARGV[2]. */
extern const char RB_REDIS_RENEW_SCRIPT[];
extern const char RB_REDIS_RELEASE_SCRIPT[];

/* where and how to connect; user and pass are malloc'd */
struct rb_redis_target {
  char host[256];
  char ip[64]; /* host resolved with a timeout before connecting; "" = use host */
  int port;
  long db;
  char *user;
  char *pass;
  size_t passlen;
};


/* The address to hand to hiredis: the resolved ip, else the host. */
const char *rb_redis_addr(const struct rb_redis_target *t);

/* Frees user and pass (the password wiped); host, port and db stay. */
void rb_redis_target_free(struct rb_redis_target *t);

/* Parses redis://[[user]:password@]host[:port][/db] into t. Returns NULL,
 * or a message that never quotes the URL (it may hold the password). */
const char *rb_redis_parse_url(const char *u, size_t n, struct rb_redis_target *t);

enum { RB_IO_OK, RB_IO_TIMEOUT, RB_IO_INTERRUPTED, RB_IO_ERROR };

/* Waits for events on fd in short slices, until the deadline (monotonic
 * seconds, 0 = none) or Ctrl-C. Returns an RB_IO_ code. */
int rb_redis_wait_fd(int fd, short events, double deadline);

/* Sends everything appended to ctx, then reads count replies into out[]
 * (the caller frees them, also on failure). Returns an RB_IO_ code. */
int rb_redis_roundtrip(redisContext *ctx, double deadline, redisReply **out, size_t count);

/* The code of an error reply ("WRONGTYPE", "NOAUTH", else "ERR"). */
void rb_redis_error_code(const char *s, size_t n, char *code, size_t cap);

struct timeval rb_redis_tv(double seconds);

/* A thread renewing one lock on a connection of its own. Fill t, key,
 * val, ttl_ms and interval, then start; stop joins the thread and frees
 * what the struct owns. The mutex guards stop, lost, why and renewals. */
struct rb_redis_keeper {
  pthread_t th;
  int running, inited;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop, lost;
  char why[256];
  long renewals;
  struct rb_redis_target t;
  char *key, *val;
  size_t keylen, vallen;
  long ttl_ms;
  double interval;
};

/* Starts the thread; 0 on success, else an errno. */
int rb_redis_keeper_start(struct rb_redis_keeper *k);
void rb_redis_keeper_stop(struct rb_redis_keeper *k);

#endif
