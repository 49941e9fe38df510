/*
 * Part of the runbook._pg binding (it takes a lua_State). The local end of a
 * backup stream: a file sink that hashes what it writes, keeps it under
 * "<path>.partial" until finish() has fsync'd it, then renames it into place
 * (and fsyncs the directory), so a crash or a failed dump never leaves a
 * file that looks complete. And a streaming sha256 for any other writer
 * (object storage) to use.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "crypto.h"
#include "fileio.h"
#include "pg_internal.h"
#include "sha256.h"

#define SINK_MT "runbook.pg.FileSink"
#define HASHER_MT "runbook.pg.Hasher"

struct sink {
  int fd; /* -1 once finished or aborted */
  struct rb_sha256_ctx md;
  long long size;
  char *path, *partial;
};

struct hasher {
  struct rb_sha256_ctx md;
  int done; /* hex holds the digest */
  long long size;
  char hex[65];
};

static void sink_release(struct sink *s, int unlink_partial) {
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
    if (unlink_partial && s->partial)
      unlink(s->partial);
  }
  free(s->path);
  free(s->partial);
  s->path = s->partial = NULL;
}

static int sink_gc(lua_State *L) {
  sink_release(luaL_checkudata(L, 1, SINK_MT), 1);
  return 0;
}

static int push_errno(lua_State *L, const char *what, const char *path) {
  int e = errno;
  lua_pushnil(L);
  lua_pushfstring(L, "%s %s: %s", what, path, strerror(e));
  return 2;
}

/* file_sink(path [, mode=0600]) -> sink | nil, message */
static int f_file_sink(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mode_t mode = (mode_t)luaL_optinteger(L, 2, 0600);
  struct sink *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  s->fd = -1;
  luaL_setmetatable(L, SINK_MT);
  size_t n = strlen(path);
  s->path = strdup(path);
  s->partial = malloc(n + 9);
  rb_sha256_init(&s->md);
  if (!s->path || !s->partial)
    return luaL_error(L, "out of memory");
  memcpy(s->partial, path, n);
  memcpy(s->partial + n, ".partial", 9);
  s->fd = open(s->partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (s->fd < 0)
    return push_errno(L, "cannot create", s->partial);
  return 1;
}

static struct sink *check_open_sink(lua_State *L) {
  struct sink *s = luaL_checkudata(L, 1, SINK_MT);
  if (s->fd < 0)
    luaL_error(L, "the file sink is already finished or aborted");
  return s;
}

/* sink:write(data) -> true | nil, message */
static int sink_write(lua_State *L) {
  struct sink *s = check_open_sink(L);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  rb_sha256_update(&s->md, p, len);
  if (rb_write_all(s->fd, p, len) != 0)
    return push_errno(L, "cannot write", s->partial);
  s->size += (long long)len;
  lua_pushboolean(L, 1);
  return 1;
}

/* sink:finish() -> {size=, sha256=, location=} | nil, message */
static int sink_finish(lua_State *L) {
  struct sink *s = check_open_sink(L);
  if (fsync(s->fd) != 0) {
    lua_settop(L, 1);
    push_errno(L, "cannot fsync", s->partial);
    sink_release(s, 1);
    return 2;
  }
  int fd = s->fd;
  s->fd = -1;
  if (close(fd) != 0 || rename(s->partial, s->path) != 0) {
    push_errno(L, "cannot complete", s->path);
    unlink(s->partial);
    sink_release(s, 0);
    return 2;
  }
  rb_fsync_parent(s->path);
  unsigned char d[RB_SHA256_LEN];
  rb_sha256_final(&s->md, d);
  char hex[65];
  rb_hex(d, sizeof d, hex, 0);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, s->size);
  lua_setfield(L, -2, "size");
  lua_pushstring(L, hex);
  lua_setfield(L, -2, "sha256");
  lua_pushstring(L, s->path);
  lua_setfield(L, -2, "location");
  sink_release(s, 0);
  return 1;
}

/* sink:abort(): removes the partial file; safe to call twice */
static int sink_abort(lua_State *L) {
  sink_release(luaL_checkudata(L, 1, SINK_MT), 1);
  return 0;
}

static int sink_size(lua_State *L) {
  lua_pushinteger(L, ((struct sink *)luaL_checkudata(L, 1, SINK_MT))->size);
  return 1;
}

/* ---- hasher ------------------------------------------------------------------------ */

/* hasher() -> h with h:update(data), h:hex() (final; repeatable), h:size() */
static int f_hasher(lua_State *L) {
  struct hasher *h = lua_newuserdatauv(L, sizeof *h, 0);
  memset(h, 0, sizeof *h);
  luaL_setmetatable(L, HASHER_MT);
  rb_sha256_init(&h->md);
  return 1;
}

static int hasher_update(lua_State *L) {
  struct hasher *h = luaL_checkudata(L, 1, HASHER_MT);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  if (h->done)
    return luaL_error(L, "hasher already finished");
  rb_sha256_update(&h->md, p, len);
  h->size += (long long)len;
  lua_settop(L, 1);
  return 1;
}

static int hasher_hex(lua_State *L) {
  struct hasher *h = luaL_checkudata(L, 1, HASHER_MT);
  if (!h->done) {
    unsigned char d[RB_SHA256_LEN];
    rb_sha256_final(&h->md, d);
    rb_hex(d, sizeof d, h->hex, 0);
    h->done = 1;
  }
  lua_pushstring(L, h->hex);
  return 1;
}

static int hasher_size(lua_State *L) {
  lua_pushinteger(L, ((struct hasher *)luaL_checkudata(L, 1, HASHER_MT))->size);
  return 1;
}

static const luaL_Reg sink_methods[] = {
  {"write", sink_write}, {"finish", sink_finish}, {"abort", sink_abort}, {"size", sink_size}, {NULL, NULL},
};

static const luaL_Reg hasher_methods[] = {
  {"update", hasher_update}, {"hex", hasher_hex}, {"size", hasher_size}, {NULL, NULL},
};

static void new_type(lua_State *L, const char *name, const luaL_Reg *m, lua_CFunction gc) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, m, 0);
  lua_setfield(L, -2, "__index");
  if (gc) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
}

void rb_pg_open_sink(lua_State *L) {
  new_type(L, SINK_MT, sink_methods, sink_gc);
  new_type(L, HASHER_MT, hasher_methods, NULL); /* holds no resource */
  lua_pushcfunction(L, f_file_sink);
  lua_setfield(L, -2, "file_sink");
  lua_pushcfunction(L, f_hasher);
  lua_setfield(L, -2, "hasher");
}
