/*
 * The main Lua state's allocator: small blocks from per-size free lists
 * carved out of 64 KiB chunks, bigger ones from the C library. See
 * lua_alloc.c for why and for what it promises.
 */
#ifndef RB_LUA_ALLOC_H
#define RB_LUA_ALLOC_H

#include <stddef.h>

#include <lua.h>

struct rb_pool;

/* A new Lua state whose allocator is a fresh pool (the pool in *poolp, to
 * give to rb_pool_destroy after lua_close), with a panic function and the
 * `warn` control of lauxlib's luaL_newstate. NULL when out of memory. */
lua_State *rb_lua_newstate(struct rb_pool **poolp);

/* An empty pool, for lua_newstate(rb_pool_alloc, pool); NULL when out of
 * memory. */
struct rb_pool *rb_pool_new(void);

/* Frees every chunk of the pool: after lua_close of its state. */
void rb_pool_destroy(struct rb_pool *pool);

/* The lua_Alloc of a pool, for comparing with lua_getallocf: a pool
 * belongs to the thread of its state; code that allocates from other
 * threads must not take it. */
void *rb_pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

#endif
