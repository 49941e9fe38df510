/*
 * The main Lua state's allocator. A start of runbook makes tens of
 * thousands of small allocations (undumping the stdlib's bytecode: strings,
 * prototypes, their debug information; then tables and closures) and
 * lua_close frees each one again: through glibc's malloc and free that was
 * about a sixth of a fresh run's instructions.
 *
 * Lua tells its allocator the old size of every block it frees or resizes,
 * so small blocks need no header: a block of up to MAX_SMALL bytes is taken
 * from the free list of its size class (multiples of GRAIN) or cut from the
 * current 64 KiB chunk; freeing pushes it on its class's list. Bigger
 * blocks come from malloc, so the mmap threshold main.c sets still returns
 * big strings to the system. rb_pool_destroy frees the chunks after
 * lua_close.
 *
 * Lua's contract holds: a failed allocation returns NULL and leaves the
 * block as it was; shrinking never fails (a small block shrunk in place
 * stays where it is and goes, when freed, to the list of its new, smaller
 * class, which it is big enough for).
 *
 * A pool belongs to its state's thread: nothing locks it. Worker threads
 * run their own states (lua_thread.c), and the redactor, shared with them,
 * takes the C library's allocator (lua_host.c).
 *
 * In an AddressSanitizer build the main state allocates with plain
 * realloc/free, so the sanitizer sees every Lua block; the pool itself is
 * exercised there by tests/unit/test_lua_alloc.c, with its free blocks
 * poisoned.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "lua_alloc.h"

#if defined(__SANITIZE_ADDRESS__)
#define RB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RB_ASAN 1
#endif
#endif

#ifdef RB_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define GRAIN 16
#define MAX_SMALL 512
#define NCLASS (MAX_SMALL / GRAIN)
#define CHUNK_SIZE (64 * 1024)
/* a chunk's header, a multiple of GRAIN so blocks stay 16-byte aligned */
#define CHUNK_HEAD GRAIN

struct free_block {
  struct free_block *next;
};

struct chunk {
  struct chunk *next;
};

struct rb_pool {
  struct free_block *free[NCLASS]; /* class c: blocks of (c + 1) * GRAIN bytes */
  char *bump, *end;                /* what is left of the newest chunk */
  struct chunk *chunks;
};

static size_t class_of(size_t n) { return (n - 1) / GRAIN; }

static void *small_alloc(struct rb_pool *p, size_t cls) {
  size_t size = (cls + 1) * GRAIN;
  struct free_block *b = p->free[cls];
  if (b) {
    UNPOISON(b, size);
    p->free[cls] = b->next;
    return b;
  }
  if ((size_t)(p->end - p->bump) < size) {
    struct chunk *c = malloc(CHUNK_SIZE);
    if (!c)
      return NULL;
    c->next = p->chunks;
    p->chunks = c;
    p->bump = (char *)c + CHUNK_HEAD;
    p->end = (char *)c + CHUNK_SIZE;
    POISON(p->bump, (size_t)(p->end - p->bump));
  }
  void *r = p->bump;
  p->bump += size;
  UNPOISON(r, size);
  return r;
}

static void small_free(struct rb_pool *p, void *ptr, size_t osize) {
  size_t cls = class_of(osize);
  struct free_block *b = ptr;
  b->next = p->free[cls];
  p->free[cls] = b;
  /* the link stays readable to the pool; the rest is poisoned */
  POISON((char *)b + sizeof *b, (cls + 1) * GRAIN - sizeof *b);
}

void *rb_pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  struct rb_pool *p = ud;
  if (!ptr) {
    /* osize is then the kind of object, not a size */
    if (nsize == 0)
      return NULL;
    return nsize <= MAX_SMALL ? small_alloc(p, class_of(nsize)) : malloc(nsize);
  }
  if (nsize == 0) {
    if (osize <= MAX_SMALL)
      small_free(p, ptr, osize);
    else
      free(ptr);
    return NULL;
  }
  if (osize <= MAX_SMALL) {
    /* in place when it fits the block it has: shrinking never moves */
    if (nsize <= osize || class_of(nsize) == class_of(osize))
      return ptr;
    void *q = nsize <= MAX_SMALL ? small_alloc(p, class_of(nsize)) : malloc(nsize);
    if (!q)
      return NULL;
    memcpy(q, ptr, osize);
    small_free(p, ptr, osize);
    return q;
  }
  if (nsize > MAX_SMALL)
    return realloc(ptr, nsize);
  /* a big block shrinking to a small one moves into the pool */
  void *q = small_alloc(p, class_of(nsize));
  if (!q) {
    /* Out of memory for a new chunk, and shrinking must not fail: the
     * block stays; freed later as a small block it joins a free list and
     * serves as one (it is bigger), and is not returned to malloc */
    return ptr;
  }
  memcpy(q, ptr, nsize);
  free(ptr);
  return q;
}

struct rb_pool *rb_pool_new(void) { return calloc(1, sizeof(struct rb_pool)); }

void rb_pool_destroy(struct rb_pool *pool) {
  if (!pool)
    return;
  struct chunk *c = pool->chunks;
  while (c) {
    struct chunk *next = c->next;
    UNPOISON(c, CHUNK_SIZE);
    free(c);
    c = next;
  }
  free(pool);
}

#ifdef RB_ASAN
/* lauxlib's allocator, so the sanitizer sees each block of the state */
static void *plain_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}
#endif

/* as lauxlib's: an error outside any protected call */
static int panic(lua_State *L) {
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error object is not a string";
  fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n", msg);
  fflush(stderr);
  return 0; /* Lua then aborts */
}

/* `warn`, as lauxlib sets it up: off until "@on", a message in pieces
 * (tocont) printed as one line */
static void warn_off(void *ud, const char *msg, int tocont);
static void warn_on(void *ud, const char *msg, int tocont);
static void warn_cont(void *ud, const char *msg, int tocont);

static int warn_control(lua_State *L, const char *msg, int tocont) {
  if (tocont || *msg != '@')
    return 0;
  if (strcmp(msg, "@off") == 0)
    lua_setwarnf(L, warn_off, L);
  else if (strcmp(msg, "@on") == 0)
    lua_setwarnf(L, warn_on, L);
  return 1;
}

static void warn_off(void *ud, const char *msg, int tocont) { warn_control(ud, msg, tocont); }

static void warn_cont(void *ud, const char *msg, int tocont) {
  lua_State *L = ud;
  fputs(msg, stderr);
  if (tocont) {
    lua_setwarnf(L, warn_cont, L);
  } else {
    fputs("\n", stderr);
    fflush(stderr);
    lua_setwarnf(L, warn_on, L);
  }
}

static void warn_on(void *ud, const char *msg, int tocont) {
  if (warn_control(ud, msg, tocont))
    return;
  fputs("Lua warning: ", stderr);
  warn_cont(ud, msg, tocont);
}

lua_State *rb_lua_newstate(struct rb_pool **poolp) {
  *poolp = NULL;
#ifdef RB_ASAN
  lua_State *L = lua_newstate(plain_alloc, NULL);
#else
  struct rb_pool *pool = rb_pool_new();
  if (!pool)
    return NULL;
  lua_State *L = lua_newstate(rb_pool_alloc, pool);
  if (!L) {
    rb_pool_destroy(pool);
    return NULL;
  }
  *poolp = pool;
#endif
  if (L) {
    lua_atpanic(L, panic);
    lua_setwarnf(L, warn_off, L);
  }
  return L;
}
