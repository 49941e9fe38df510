/*
 * runbook._thread: the steps of a parallel group run on threads, each in
 * its own lua_State (Lua states are not shared between threads). A worker
 * state shares the process host (redactor, console lock, message queue)
 * and the run's journal with the main state; it loads the runbook itself
 * and runs `require("runbook._engine.worker").worker(payload, journal, key)`.
 * Workers report events, logs and progress through the host's queue,
 * which the main thread drains to keep its state and console current.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "crypto.h"
#include "host.h"
#include "journal.h"
#include "modules.h"
#include "secret.h"

#define THREAD_MT "runbook.Thread"

struct job {
  pthread_mutex_t lock;
  struct rb_host *host;
  void *journal; /* the struct rb_journal of the main state, kept open by it */
  char *payload;
  size_t plen;
  char *key;
  size_t keylen;
  char *result; /* the worker's returned string, or its error message */
  size_t rlen;
  int ok, done, refs;
};

struct lthread {
  struct job *job;
  pthread_t tid;
  int started, joined;
};

static void job_release(struct job *j) {
  pthread_mutex_lock(&j->lock);
  int last = --j->refs == 0;
  pthread_mutex_unlock(&j->lock);
  if (!last)
    return;
  free(j->payload);
  if (j->key) {
    rb_cleanse(j->key, j->keylen);
    free(j->key);
  }
  free(j->result);
  pthread_mutex_destroy(&j->lock);
  free(j);
}

static int worker_main(lua_State *L) {
  struct job *j = lua_touserdata(L, 1);
  luaL_openlibs(L);
  rb_host_attach(L, j->host);
  rb_open_modules(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "runbook._engine.worker");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "worker");
  lua_pushlstring(L, j->payload, j->plen);
  if (j->journal)
    lua_pushlightuserdata(L, j->journal);
  else
    lua_pushnil(L);
  rb_secret_push(L, j->key, j->keylen);
  lua_call(L, 3, 1);
  return 1;
}

static int worker_msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg && luaL_callmeta(L, 1, "__tostring"))
    msg = lua_tostring(L, -1);
  luaL_traceback(L, L, msg ? msg : "(error object)", 1);
  return 1;
}

static void *worker(void *arg) {
  struct job *j = arg;
  /* Ctrl-C is the main thread's: workers see it through rb_interrupted */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  lua_State *L = luaL_newstate();
  int ok = 0;
  char *res = NULL;
  size_t rlen = 0;
  if (L) {
    lua_pushcfunction(L, worker_msgh);
    lua_pushcfunction(L, worker_main);
    lua_pushlightuserdata(L, j);
    ok = lua_pcall(L, 1, 1, 1) == LUA_OK;
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (!s) {
      s = ok ? "" : "(no message)";
      n = strlen(s);
    }
    res = malloc(n + 1);
    if (res) {
      memcpy(res, s, n);
      res[n] = '\0';
      rlen = n;
    }
    lua_close(L);
  }
  pthread_mutex_lock(&j->lock);
  j->ok = ok && res;
  j->result = res ? res : strdup("out of memory");
  j->rlen = res ? rlen : strlen("out of memory");
  j->done = 1;
  pthread_mutex_unlock(&j->lock);
  job_release(j);
  return NULL;
}

/* spawn(payload, journal_handle, key_secret) -> Thread */
static int f_spawn(lua_State *L) {
  size_t plen, klen;
  const char *payload = luaL_checklstring(L, 1, &plen);
  if (!lua_isnil(L, 2)) /* nil: the store gives each worker its own writer */
    luaL_checktype(L, 2, LUA_TLIGHTUSERDATA);
  const char *key = rb_secret_test(L, 3, &klen);
  luaL_argexpected(L, key != NULL, 3, "secret");
  struct lthread *t = lua_newuserdatauv(L, sizeof *t, 0);
  memset(t, 0, sizeof *t);
  luaL_setmetatable(L, THREAD_MT);
  struct job *j = calloc(1, sizeof *j);
  if (!j)
    return luaL_error(L, "out of memory");
  pthread_mutex_init(&j->lock, NULL);
  j->host = rb_host_get(L);
  j->journal = lua_touserdata(L, 2);
  j->payload = malloc(plen);
  j->key = malloc(klen);
  if (!j->payload || !j->key) {
    free(j->payload);
    free(j->key);
    free(j);
    return luaL_error(L, "out of memory");
  }
  memcpy(j->payload, payload, plen);
  j->plen = plen;
  memcpy(j->key, key, klen);
  j->keylen = klen;
  j->refs = 2; /* the handle and the thread */
  t->job = j;
  if (pthread_create(&t->tid, NULL, worker, j) != 0) {
    j->refs = 1;
    return luaL_error(L, "cannot start a thread for a parallel step");
  }
  t->started = 1;
  return 1;
}

/* t:join([wait]) -> nil while running (when not waiting) | ok, result */
static int m_join(lua_State *L) {
  struct lthread *t = luaL_checkudata(L, 1, THREAD_MT);
  int wait = lua_toboolean(L, 2);
  if (!t->job)
    return luaL_error(L, "thread already joined");
  pthread_mutex_lock(&t->job->lock);
  int done = t->job->done;
  pthread_mutex_unlock(&t->job->lock);
  if (!done && !wait) {
    lua_pushnil(L);
    return 1;
  }
  if (t->started && !t->joined) {
    pthread_join(t->tid, NULL);
    t->joined = 1;
  }
  lua_pushboolean(L, t->job->ok);
  lua_pushlstring(L, t->job->result, t->job->rlen);
  job_release(t->job);
  t->job = NULL;
  return 2;
}

static int m_gc(lua_State *L) {
  struct lthread *t = luaL_checkudata(L, 1, THREAD_MT);
  if (t->started && !t->joined) {
    pthread_join(t->tid, NULL); /* a worker uses the journal: never outlive it */
    t->joined = 1;
  }
  if (t->job) {
    job_release(t->job);
    t->job = NULL;
  }
  return 0;
}

/* post(json_text): a worker's message for the main thread */
static int f_post(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  struct rb_host *h = rb_host_get(L);
  struct rb_msg *m = malloc(sizeof *m + len + 1);
  if (!m)
    return luaL_error(L, "out of memory");
  m->next = NULL;
  m->len = len;
  memcpy(m->data, s, len);
  m->data[len] = '\0';
  pthread_mutex_lock(&h->queue_lock);
  if (h->tail)
    h->tail->next = m;
  else
    h->head = m;
  h->tail = m;
  pthread_mutex_unlock(&h->queue_lock);
  return 0;
}

/* drain() -> list of the queued messages, oldest first */
static int f_drain(lua_State *L) {
  struct rb_host *h = rb_host_get(L);
  pthread_mutex_lock(&h->queue_lock);
  struct rb_msg *m = h->head;
  h->head = h->tail = NULL;
  pthread_mutex_unlock(&h->queue_lock);
  lua_newtable(L);
  lua_Integer i = 0;
  while (m) {
    struct rb_msg *next = m->next;
    lua_pushlstring(L, m->data, m->len);
    lua_rawseti(L, -2, ++i);
    free(m);
    m = next;
  }
  return 1;
}

static const luaL_Reg methods[] = {{"join", m_join}, {NULL, NULL}};
static const luaL_Reg funcs[] = {{"spawn", f_spawn}, {"post", f_post}, {"drain", f_drain}, {NULL, NULL}};

int luaopen_runbook__thread(lua_State *L) {
  luaL_newmetatable(L, THREAD_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, m_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
