/*
 * Name resolution with a timeout on a detached thread (see resolve.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "clock.h"
#include "resolve.h"

struct lookup {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int refs; /* 2 while the caller and the thread both hold it */
  int done;
  int rc, err;
  int family;
  struct addrinfo *res;
  char name[];
};

static void lookup_release(struct lookup *q) {
  pthread_mutex_lock(&q->mu);
  int last = --q->refs == 0;
  pthread_mutex_unlock(&q->mu);
  if (!last)
    return;
  if (q->res)
    freeaddrinfo(q->res);
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->cv);
  free(q);
}

static void *lookup_main(void *arg) {
  struct lookup *q = arg;
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = q->family;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_CANONNAME;
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(q->name, NULL, &hints, &res);
  int e = errno;
  pthread_mutex_lock(&q->mu);
  q->rc = rc;
  q->err = e;
  q->res = res;
  q->done = 1;
  pthread_cond_signal(&q->cv);
  pthread_mutex_unlock(&q->mu);
  lookup_release(q);
  return NULL;
}

int rb_resolve(const char *name, int family, double deadline, struct addrinfo **res, int *rc, int *err) {
  *res = NULL;
  size_t n = strlen(name);
  struct lookup *q = calloc(1, sizeof *q + n + 1);
  if (!q) {
    *rc = EAI_MEMORY;
    return LK_FAILED;
  }
  memcpy(q->name, name, n + 1);
  q->family = family;
  q->refs = 2;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, &ca);
  pthread_condattr_destroy(&ca);

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t th;
  int started = pthread_create(&th, &attr, lookup_main, q) == 0;
  pthread_attr_destroy(&attr);
  if (!started) {
    q->refs = 1;
    lookup_release(q);
    *rc = EAI_SYSTEM;
    *err = EAGAIN;
    return LK_FAILED;
  }

  int outcome = LK_OK;
  pthread_mutex_lock(&q->mu);
  while (!q->done) {
    if (rb_interrupted) {
      outcome = LK_INTERRUPTED;
      break;
    }
    double now = rb_monotime();
    if (deadline > 0 && now >= deadline) {
      outcome = LK_TIMEOUT;
      break;
    }
    double until = now + 0.05;
    if (deadline > 0 && deadline < until)
      until = deadline;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double at = (double)ts.tv_sec + ts.tv_nsec / 1e9 + (until - now);
    ts.tv_sec = (time_t)at;
    ts.tv_nsec = (long)((at - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&q->cv, &q->mu, &ts);
  }
  if (q->done) {
    outcome = q->rc == 0 ? LK_OK : LK_FAILED;
    *rc = q->rc;
    *err = q->err;
    *res = q->res;
    q->res = NULL;
  }
  pthread_mutex_unlock(&q->mu);
  lookup_release(q);
  return outcome;
}

