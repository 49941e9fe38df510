/*
 * libcurl, libpq, hiredis and libmicrohttpd loaded with dlopen the first time a runbook
 * uses them (dynlib.h, dl_*.h), so a runbook that never talks HTTP,
 * PostgreSQL or Redis starts without them; a library that is missing is
 * reported once, naming the Debian package that ships it.
 */
#define RB_DL_DEFINE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "dl_crypto.h"
#include "dl_curl.h"
#include "dl_mhd.h"
#include "dl_pq.h"
#include "dl_redis.h"
#include "dynlib.h"

struct rb_crypto_api rb_crypto;
struct rb_curl_api rb_curl;
struct rb_pq_api rb_pq;
struct rb_redis_api rb_redis;
struct rb_mhd_api rb_mhd;

/* One library: its soname (from the build, see CMakeLists.txt), the
 * package that ships it, and the outcome of the one attempt to load it. */
struct lib {
  const char *soname, *package;
  pthread_once_t once;
  int rc;
  char err[256];
};

#define LOAD_SYM(api, name)                                                                        \
  if (rc == 0 && !((api).name = (__typeof__((api).name))dlsym(h, #name))) {                        \
    snprintf(l->err, sizeof l->err, "%s has no symbol %s (too old?)", l->soname, #name);           \
    rc = -1;                                                                                       \
  }

static void *open_lib(struct lib *l) {
  void *h = dlopen(l->soname, RTLD_NOW | RTLD_LOCAL);
  if (!h)
    snprintf(l->err, sizeof l->err, "cannot load %s (install the Debian package %s): %s", l->soname,
             l->package, dlerror());
  return h;
}

static struct lib crypto_lib = {RB_SONAME_CRYPTO, RB_PKG_CRYPTO, PTHREAD_ONCE_INIT, 0, ""};
static struct lib curl_lib = {RB_SONAME_CURL, RB_PKG_CURL, PTHREAD_ONCE_INIT, 0, ""};
static struct lib pq_lib = {RB_SONAME_PQ, RB_PKG_PQ, PTHREAD_ONCE_INIT, 0, ""};
static struct lib redis_lib = {RB_SONAME_HIREDIS, RB_PKG_HIREDIS, PTHREAD_ONCE_INIT, 0, ""};
static struct lib mhd_lib = {RB_SONAME_MHD, RB_PKG_MHD, PTHREAD_ONCE_INIT, 0, ""};

static void load_crypto(void) {
  struct lib *l = &crypto_lib;
  void *h = open_lib(l);
  int rc = h ? 0 : -1;
#define X(name) LOAD_SYM(rb_crypto, name)
  if (h) {
    RB_CRYPTO_FUNCS(X)
  }
#undef X
  l->rc = rc;
}

static void load_curl(void) {
  struct lib *l = &curl_lib;
  void *h = open_lib(l);
  int rc = h ? 0 : -1;
#define X(name) LOAD_SYM(rb_curl, name)
  if (h) {
    RB_CURL_FUNCS(X)
  }
#undef X
  l->rc = rc;
}

static void load_pq(void) {
  struct lib *l = &pq_lib;
  void *h = open_lib(l);
  int rc = h ? 0 : -1;
#define X(name) LOAD_SYM(rb_pq, name)
  if (h) {
    RB_PQ_FUNCS(X)
  }
#undef X
  l->rc = rc;
}

static void load_redis(void) {
  struct lib *l = &redis_lib;
  void *h = open_lib(l);
  int rc = h ? 0 : -1;
#define X(name) LOAD_SYM(rb_redis, name)
  if (h) {
    RB_REDIS_FUNCS(X)
  }
#undef X
  l->rc = rc;
}

static void load_mhd(void) {
  struct lib *l = &mhd_lib;
  void *h = open_lib(l);
  int rc = h ? 0 : -1;
#define X(name) LOAD_SYM(rb_mhd, name)
  if (h) {
    RB_MHD_FUNCS(X)
  }
#undef X
  l->rc = rc;
}

static int result(struct lib *l, char *err, size_t errlen) {
  if (l->rc != 0)
    snprintf(err, errlen, "%s", l->err);
  return l->rc;
}

int rb_dl_crypto(char *err, size_t errlen) {
  pthread_once(&crypto_lib.once, load_crypto);
  return result(&crypto_lib, err, errlen);
}

int rb_dl_curl(char *err, size_t errlen) {
  pthread_once(&curl_lib.once, load_curl);
  return result(&curl_lib, err, errlen);
}

int rb_dl_pq(char *err, size_t errlen) {
  pthread_once(&pq_lib.once, load_pq);
  return result(&pq_lib, err, errlen);
}

int rb_dl_redis(char *err, size_t errlen) {
  pthread_once(&redis_lib.once, load_redis);
  return result(&redis_lib, err, errlen);
}

int rb_dl_mhd(char *err, size_t errlen) {
  pthread_once(&mhd_lib.once, load_mhd);
  return result(&mhd_lib, err, errlen);
}
