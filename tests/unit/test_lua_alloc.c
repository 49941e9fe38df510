/* The main state's pool allocator (src/lua_alloc.c): a long random mix of
 * allocations, resizes across and within the size classes and frees, each
 * live block filled with its own byte, every block checked for its bytes
 * (a block handed out twice, or contents lost by a move, shows as a wrong
 * byte) and its alignment; then real Lua work on a pool state and a state
 * made by rb_lua_newstate. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "check.h"
#include "lua_alloc.h"

#define SLOTS 3000

struct slot {
  unsigned char *p;
  size_t size;
  unsigned char fill;
};

static struct slot slots[SLOTS];
static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* mostly small sizes, around the class edges, sometimes big */
static size_t random_size(void) {
  uint64_t r = next() % 100;
  if (r < 70)
    return 1 + next() % 512;
  if (r < 85)
    return 16 * (1 + next() % 32) + (next() % 3) - 1; /* 15, 16, 17, ... */
  return 513 + next() % 20000;
}

static int intact(const struct slot *s) {
  for (size_t i = 0; i < s->size; i++)
    if (s->p[i] != s->fill)
      return 0;
  return 1;
}

static void test_random_mix(void) {
  struct rb_pool *pool = rb_pool_new();
  CHECK(pool != NULL);
  long bad = 0, misaligned = 0;
  for (long op = 0; op < 400000; op++) {
    struct slot *s = &slots[next() % SLOTS];
    if (!s->p) {
      size_t n = random_size();
      /* a new block: osize is Lua's kind of object, not a size */
      s->p = rb_pool_alloc(pool, NULL, next() % 9, n);
      CHECK(s->p != NULL);
      s->size = n;
    } else if (next() % 3 == 0) {
      bad += !intact(s);
      CHECK(rb_pool_alloc(pool, s->p, s->size, 0) == NULL);
      s->p = NULL;
      continue;
    } else {
      bad += !intact(s);
      size_t n = random_size();
      unsigned char *q = rb_pool_alloc(pool, s->p, s->size, n);
      CHECK(q != NULL);
      /* what the block held survives the resize */
      size_t keep = n < s->size ? n : s->size;
      for (size_t i = 0; i < keep; i++)
        if (q[i] != s->fill) {
          bad++;
          break;
        }
      s->p = q;
      s->size = n;
    }
    misaligned += ((uintptr_t)s->p % 16) != 0;
    s->fill = (unsigned char)next();
    memset(s->p, s->fill, s->size);
  }
  for (int i = 0; i < SLOTS; i++) {
    if (slots[i].p) {
      bad += !intact(&slots[i]);
      rb_pool_alloc(pool, slots[i].p, slots[i].size, 0);
      slots[i].p = NULL;
    }
  }
  CHECK(bad == 0);
  CHECK(misaligned == 0);
  rb_pool_destroy(pool);
}

static const char *script =
  "local t, s = {}, 0\n"
  "for round = 1, 30 do\n"
  "  for i = 1, 2000 do t[i] = { i, tostring(i) .. string.rep('x', i % 70), { i } } end\n"
  "  for i = 1, 2000, 2 do t[i] = nil end\n"
  "  collectgarbage()\n"
  "  for i = 2, 2000, 2 do s = s + t[i][1] + #t[i][2] + t[i][3][1] end\n"
  "end\n"
  "local parts = {}\n"
  "for i = 1, 500 do parts[#parts + 1] = string.format('%05d', i) end\n"
  "return s, table.concat(parts):sub(-10)\n";

static void run_script(lua_State *L) {
  luaL_openlibs(L);
  CHECK(luaL_dostring(L, script) == LUA_OK);
  /* sum over 30 rounds of the even i: 2 i + #(tostring(i) .. rep) */
  long long want = 0;
  for (int i = 2; i <= 2000; i += 2) {
    char buf[16];
    want += 2 * i + snprintf(buf, sizeof buf, "%d", i) + i % 70;
  }
  CHECK(lua_tointeger(L, -2) == 30 * want);
  CHECK_STR(lua_tostring(L, -1), "0049900500");
}

static void test_lua_on_pool(void) {
  struct rb_pool *pool = rb_pool_new();
  lua_State *L = lua_newstate(rb_pool_alloc, pool);
  CHECK(L != NULL);
  run_script(L);
  lua_close(L);
  rb_pool_destroy(pool);
}

static void test_newstate(void) {
  struct rb_pool *pool;
  lua_State *L = rb_lua_newstate(&pool);
  CHECK(L != NULL);
  void *ud;
  lua_Alloc f = lua_getallocf(L, &ud);
#if defined(__SANITIZE_ADDRESS__)
  /* the sanitizer build allocates with the C library, block by block */
  CHECK(f != rb_pool_alloc && pool == NULL);
#else
  CHECK(f == rb_pool_alloc && ud == pool && pool != NULL);
#endif
  run_script(L);
  lua_close(L);
  rb_pool_destroy(pool);
}

int main(void) {
  test_random_mix();
  test_lua_on_pool();
  test_newstate();
  return check_report("test_lua_alloc");
}
