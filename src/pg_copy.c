/*
 * Part of the runbook._pg binding (it takes a lua_State): COPY. FROM STDIN takes its data from a string, a list or a
 * function; TO STDOUT hands whole rows to a function in chunks; copy_pipe
 * streams one connection's COPY TO into another's COPY FROM row by row in
 * C. Every wait is interruptible; an error on one side (or in a Lua
 * callback) ends the COPY on the other, so no half COPY is committed.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include "dl_pq.h"
#include <lua.h>
#include <poll.h>

#include "host.h"
#include "pg_internal.h"

/* Sends a COPY statement and waits for the server to enter copy state
 * `want`. Returns 0, or leaves nil, err pushed and returns 2 (or raises on
 * a stop). */
static int start_copy(lua_State *L, struct rb_pg_conn *c, const char *sql, ExecStatusType want) {
  if (!PQsendQuery(c->pg, sql))
    return rb_pg_push_lost(L, c);
  int why = rb_pg_flush(c->pg, rb_deadline(L));
  if (why == 0) {
    rb_pg_clear_res(c);
    c->res = rb_pg_next_result(c->pg, rb_deadline(L), &why);
  }
  if (why == RB_PG_STOP) {
    rb_pg_cancel(c);
    return rb_pg_raise_stop(L, c);
  }
  if (why)
    return rb_pg_push_lost(L, c);
  if (c->res && PQresultStatus(c->res) == want) {
    rb_pg_clear_res(c);
    return 0;
  }
  if (c->res && !rb_pg_is_error(PQresultStatus(c->res))) {
    /* not a COPY in the expected direction: finish it, then complain */
    rb_pg_clear_res(c);
    rb_pg_drain(c);
    lua_pushnil(L);
    rb_push_error(L, "pg", "0A000", "%s", want == PGRES_COPY_OUT ? "copy_out() needs a COPY ... TO STDOUT statement"
                                                                 : "copy_in() needs a COPY ... FROM STDIN statement");
    rb_pg_deliver_notices(L, c);
    return 2;
  }
  /* an error: rb_pg_collect the remaining results (the final NULL) */
  PGresult *err = c->res;
  c->res = NULL;
  rb_pg_collect_l(L, c);
  rb_pg_clear_res(c);
  c->res = err;
  return rb_pg_push_failed(L, c);
}

/* waits for the final result of a COPY and pushes its row count */
static int end_copy(lua_State *L, struct rb_pg_conn *c, lua_Integer bytes) {
  int why = rb_pg_collect_l(L, c);
  if (why == RB_PG_STOP)
    return rb_pg_raise_stop(L, c);
  if (why)
    return rb_pg_push_lost(L, c);
  if (!c->res || rb_pg_is_error(PQresultStatus(c->res)))
    return rb_pg_push_failed(L, c);
  const char *aff = PQcmdTuples(c->res);
  lua_pushinteger(L, (lua_Integer)strtoll(aff ? aff : "0", NULL, 10));
  lua_pushinteger(L, bytes);
  rb_pg_clear_res(c);
  rb_pg_deliver_notices(L, c);
  return 2;
}

static int buf_append(struct rb_pg_conn *c, const char *p, size_t n) {
  if (c->buflen + n > c->bufcap) {
    size_t cap = c->bufcap ? c->bufcap : 65536;
    while (cap < c->buflen + n)
      cap *= 2;
    char *b = realloc(c->buf, cap);
    if (!b)
      return -1;
    c->buf = b;
    c->bufcap = cap;
  }
  memcpy(c->buf + c->buflen, p, n);
  c->buflen += n;
  return 0;
}

/* calls fn(chunk) with the aggregated rows; on an error in fn the COPY is
 * cancelled and the error re-raised */
static void deliver_chunk(lua_State *L, struct rb_pg_conn *c, int fn) {
  if (c->buflen == 0)
    return;
  lua_pushvalue(L, fn);
  lua_pushlstring(L, c->buf, c->buflen);
  c->buflen = 0;
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    rb_pg_cancel(c);
    rb_pg_deliver_notices(L, c);
    lua_error(L);
  }
}

/* c:_copy_out(sql, fn [, chunk_bytes]) -> rows, bytes | nil, err
 * Streams COPY ... TO STDOUT to fn in chunks of whole rows. */
int rb_pg_copy_out(lua_State *L) {
  struct rb_pg_conn *c = rb_pg_check_conn(L, 1);
  const char *sql = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  size_t chunk = (size_t)luaL_optinteger(L, 4, 262144);
  rb_check_interrupt(L);
  if (start_copy(L, c, sql, PGRES_COPY_OUT))
    return 2;
  lua_Integer bytes = 0;
  c->buflen = 0;
  for (;;) {
    char *row;
    int n = PQgetCopyData(c->pg, &row, 1);
    if (n > 0) {
      int bad = buf_append(c, row, (size_t)n);
      PQfreemem(row);
      if (bad) {
        rb_pg_cancel(c);
        return luaL_error(L, "out of memory");
      }
      bytes += n;
      if (c->buflen >= chunk)
        deliver_chunk(L, c, 3);
    } else if (n == 0) {
      int ev = rb_pg_wait(c->pg, POLLIN, 50, rb_deadline(L));
      if (ev == RB_PG_STOP) {
        rb_pg_cancel(c);
        return rb_pg_raise_stop(L, c);
      }
      if (ev == RB_PG_BROKEN || (ev && !PQconsumeInput(c->pg)))
        return rb_pg_push_lost(L, c);
    } else {
      break; /* -1: done (the final result says how), -2: error, ditto */
    }
  }
  deliver_chunk(L, c, 3);
  return end_copy(L, c, bytes);
}

/* queues data for COPY FROM STDIN, waiting while libpq's buffer is full.
 * 0 ok, or a WAIT_ code */
static int put_data(lua_State *L, PGconn *pg, const char *p, size_t n) {
  while (n > 0) {
    int part = n > (1 << 30) ? (1 << 30) : (int)n;
    int r;
    while ((r = PQputCopyData(pg, p, part)) == 0) {
      int ev = rb_pg_wait(pg, POLLOUT, 50, rb_deadline(L));
      if (ev < 0)
        return ev;
      if (PQflush(pg) < 0)
        return RB_PG_BROKEN;
    }
    if (r < 0)
      return RB_PG_BROKEN;
    p += part;
    n -= (size_t)part;
  }
  return 0;
}

static int end_copy_in(lua_State *L, PGconn *pg, const char *errmsg) {
  int r;
  while ((r = PQputCopyEnd(pg, errmsg)) == 0) {
    int ev = rb_pg_wait(pg, POLLOUT, 50, rb_deadline(L));
    if (ev < 0)
      return ev;
  }
  return r < 0 ? RB_PG_BROKEN : 0;
}

/* c:_copy_in(sql, source) -> rows, bytes | nil, err
 * source: a string, an array of strings, or a function returning the next
 * chunk (nil at the end). An error in the source aborts the COPY. */
int rb_pg_copy_in(lua_State *L) {
  struct rb_pg_conn *c = rb_pg_check_conn(L, 1);
  const char *sql = luaL_checkstring(L, 2);
  int kind = lua_type(L, 3);
  luaL_argexpected(L, kind == LUA_TSTRING || kind == LUA_TTABLE || kind == LUA_TFUNCTION, 3,
                   "string, table or function");
  lua_settop(L, 3);
  rb_check_interrupt(L);
  if (start_copy(L, c, sql, PGRES_COPY_IN))
    return 2;
  lua_Integer bytes = 0, i = 0;
  int why = 0;
  for (;;) {
    size_t n;
    const char *p;
    if (kind == LUA_TSTRING) {
      if (i++ > 0)
        break;
      p = lua_tolstring(L, 3, &n);
    } else if (kind == LUA_TTABLE) {
      if (lua_rawgeti(L, 3, ++i) == LUA_TNIL) {
        lua_pop(L, 1);
        break;
      }
      p = lua_tolstring(L, -1, &n);
    } else {
      lua_pushvalue(L, 3);
      if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
        end_copy_in(L, c->pg, "the data source failed");
        rb_pg_cancel(c);
        rb_pg_deliver_notices(L, c);
        return lua_error(L);
      }
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        break;
      }
      p = lua_tolstring(L, -1, &n);
    }
    if (!p) {
      end_copy_in(L, c->pg, "bad chunk");
      rb_pg_drain(c);
      return luaL_error(L, "copy_in: chunks must be strings");
    }
    why = put_data(L, c->pg, p, n);
    if (kind != LUA_TSTRING)
      lua_pop(L, 1);
    if (why)
      break;
    bytes += (lua_Integer)n;
  }
  if (!why)
    why = end_copy_in(L, c->pg, NULL);
  if (why == RB_PG_STOP) {
    end_copy_in(L, c->pg, "interrupted by runbook");
    rb_pg_cancel(c);
    return rb_pg_raise_stop(L, c);
  }
  if (why)
    return rb_pg_push_lost(L, c);
  return end_copy(L, c, bytes);
}

/* copy_pipe(src, out_sql, dst, in_sql) -> rows, bytes | nil, err
 * Streams COPY ... TO STDOUT on src into COPY ... FROM STDIN on dst, row by
 * row in C. dst's COPY is aborted (its transaction keeps nothing) when src
 * fails. Errors say which side failed. */
int rb_pg_copy_pipe(lua_State *L) {
  struct rb_pg_conn *src = rb_pg_check_conn(L, 1);
  const char *out_sql = luaL_checkstring(L, 2);
  struct rb_pg_conn *dst = rb_pg_check_conn(L, 3);
  const char *in_sql = luaL_checkstring(L, 4);
  luaL_argcheck(L, src != dst, 3, "source and target must be different connections");
  rb_check_interrupt(L);
  if (start_copy(L, dst, in_sql, PGRES_COPY_IN))
    return 2;
  if (start_copy(L, src, out_sql, PGRES_COPY_OUT)) {
    end_copy_in(L, dst->pg, "the source failed");
    rb_pg_drain(dst);
    return 2;
  }
  lua_Integer bytes = 0;
  int why = 0, src_failed = 0;
  for (;;) {
    char *row;
    int n = PQgetCopyData(src->pg, &row, 1);
    if (n > 0) {
      why = put_data(L, dst->pg, row, (size_t)n);
      PQfreemem(row);
      if (why)
        break;
      bytes += n;
    } else if (n == 0) {
      if (PQflush(dst->pg) < 0) {
        why = RB_PG_BROKEN;
        break;
      }
      int ev = rb_pg_wait(src->pg, POLLIN, 50, rb_deadline(L));
      if (ev == RB_PG_STOP || ev == RB_PG_BROKEN) {
        why = ev;
        src_failed = ev == RB_PG_BROKEN;
        break;
      }
      if (ev && !PQconsumeInput(src->pg)) {
        why = RB_PG_BROKEN;
        src_failed = 1;
        break;
      }
    } else {
      break;
    }
  }
  if (why == RB_PG_STOP) {
    rb_pg_cancel(src);
    end_copy_in(L, dst->pg, "interrupted by runbook");
    rb_pg_drain(dst);
    rb_pg_deliver_notices(L, dst);
    return rb_pg_raise_stop(L, src);
  }
  if (why) {
    /* one side's connection broke: stop the other cleanly */
    if (src_failed) {
      end_copy_in(L, dst->pg, "the source failed");
      rb_pg_drain(dst);
      return rb_pg_push_lost(L, src);
    }
    rb_pg_cancel(src);
    return rb_pg_push_lost(L, dst);
  }
  /* the source's final result: an error there must abort the target */
  why = rb_pg_collect_l(L, src);
  if (why == RB_PG_STOP) {
    end_copy_in(L, dst->pg, "interrupted by runbook");
    rb_pg_drain(dst);
    return rb_pg_raise_stop(L, src);
  }
  if (why || !src->res || rb_pg_is_error(PQresultStatus(src->res))) {
    end_copy_in(L, dst->pg, "the source failed");
    rb_pg_drain(dst);
    return why ? rb_pg_push_lost(L, src) : rb_pg_push_failed(L, src);
  }
  rb_pg_clear_res(src);
  rb_pg_deliver_notices(L, src);
  why = end_copy_in(L, dst->pg, NULL);
  if (why == RB_PG_STOP) {
    rb_pg_cancel(dst);
    return rb_pg_raise_stop(L, dst);
  }
  if (why)
    return rb_pg_push_lost(L, dst);
  return end_copy(L, dst, bytes);
}
