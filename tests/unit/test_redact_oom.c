/*
 * The redactor under memory failure, the way test_yaml_oom.c does it: every
 * allocation from the first to the last of an operation is made to fail in
 * turn. A secret must never come out because memory ran short: adding one
 * fails with an error (in Lua, a raised error, so the value is never handed
 * back), and scrubbing that cannot finish withholds the whole text as
 * [REDACTED]. Under the sanitizer build, no run leaves anything behind.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "check.h"
#include "crypto.h"
#include "host.h"
#include "modules.h"
#include "redact.h"

static long budget = -1; /* allocations left before failing; -1: no limit */
static int one_shot = 0;  /* only that one allocation fails, the later ones succeed */
static int fired = 0;     /* an allocation was refused */

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  /* Lua requires shrinking to succeed; fail only new blocks and growth */
  if (budget >= 0 && (ptr == NULL || nsize > osize)) {
    if (budget == 0) {
      fired = 1;
      if (one_shot)
        budget = -1;
      return NULL;
    }
    budget--;
  }
  return realloc(ptr, nsize);
}

/* a quote and a slash, so the URL and JSON forms are registered too */
static const char SECRET[] = "oom-S3cret/+\"value";
#define LIMIT 100000

static int holds_secret(const char *s, size_t n) {
  return memmem(s, n, SECRET, strlen(SECRET)) != NULL;
}

/* ---- the redactor alone ----------------------------------------------------- */

static void sweep_add(void) {
  long n = 0;
  int failed = 0;
  for (;; n++) {
    struct rb_redactor *r = rb_redactor_new(limited_alloc, NULL);
    CHECK(r != NULL);
    budget = n;
    int rc = rb_redactor_add(r, SECRET, strlen(SECRET), NULL);
    budget = -1;
    CHECK(rc == 0 || rc == -1);
    if (rc == -1) {
      failed++;
      /* once memory is back, the same call completes what was left */
      CHECK(rb_redactor_add(r, SECRET, strlen(SECRET), NULL) == 0);
    }
    char *out = NULL;
    size_t olen = 0;
    const char *text = "x oom-S3cret%2F%2B%22value y";
    CHECK(rb_redactor_scrub(r, text, strlen(text), &out, &olen) == RB_SCRUB_CHANGED);
    CHECK(out && strcmp(out, "x [REDACTED] y") == 0);
    rb_redactor_free_text(r, out, olen);
    rb_redactor_free(r);
    if (rc == 0)
      break;
    if (n > LIMIT) {
      CHECK(!"rb_redactor_add never completed");
      break;
    }
  }
  CHECK(failed > 0);
  printf("add: completed with %ld allocations, each failure before that reported\n", n);

  budget = 0;
  CHECK(rb_redactor_new(limited_alloc, NULL) == NULL);
  budget = -1;
}

static void sweep_scrub(void) {
  struct rb_redactor *r = rb_redactor_new(limited_alloc, NULL);
  CHECK(rb_redactor_add(r, SECRET, strlen(SECRET), NULL) == 0);
  char hex[64], text[256];
  rb_hex((const uint8_t *)SECRET, strlen(SECRET), hex, 1);
  snprintf(text, sizeof text, "a %s b %s c oom-S3cret%%2f%%2b%%22value d", SECRET, hex);
  const char *want = "a [REDACTED] b [REDACTED] c [REDACTED] d";
  long n = 0;
  int withheld = 0;
  for (;; n++) {
    char *out = NULL;
    size_t olen = 0;
    budget = n;
    int rc = rb_redactor_scrub(r, text, strlen(text), &out, &olen);
    budget = -1;
    if (rc == RB_SCRUB_NOMEM) {
      CHECK(out == NULL);
      withheld++;
      continue;
    }
    CHECK(rc == RB_SCRUB_CHANGED);
    CHECK(out && !holds_secret(out, olen) && strcmp(out, want) == 0);
    rb_redactor_free_text(r, out, olen);
    break;
  }
  CHECK(withheld > 0);
  printf("scrub: completed with %ld allocations, withheld the text before that\n", n);
  rb_redactor_free(r);
}

/* ---- through the Lua bindings ------------------------------------------------ */

static int setup(lua_State *L) {
  luaL_openlibs(L);
  rb_host_attach(L, NULL);
  luaL_requiref(L, "host", luaopen_runbook__host, 1);
  luaL_requiref(L, "secret", luaopen_runbook__secret, 1);
  luaL_requiref(L, "json", luaopen_runbook__json, 1);
  lua_settop(L, 0);
  lua_pushstring(L, SECRET);
  lua_setglobal(L, "SECRET");
  return 0;
}

enum outcome { FAILED, WITHHELD, DONE };

/* Runs `chunk` with the allocator failing after n allocations. The chunk
 * sets OUT on success; `done` is what OUT must be when nothing failed,
 * `withheld` what it may be when the redactor ran short (NULL: never). */
static enum outcome run_with_budget(const char *prelude, const char *chunk, long n, const char *done,
                                    const char *withheld, const char *oom_message, int *saw_message) {
  lua_State *L = lua_newstate(limited_alloc, NULL);
  if (!L) {
    fprintf(stderr, "cannot create a Lua state\n");
    exit(2);
  }
  lua_pushcfunction(L, setup);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK || luaL_dostring(L, prelude) != LUA_OK ||
      luaL_loadstring(L, chunk) != LUA_OK) {
    fprintf(stderr, "setup: %s\n", lua_tostring(L, -1));
    exit(2);
  }
  budget = n;
  int ok = lua_pcall(L, 0, 0, 0) == LUA_OK;
  budget = -1;
  enum outcome res = FAILED;
  if (ok) {
    size_t len;
    lua_getglobal(L, "OUT");
    const char *out = lua_tolstring(L, -1, &len);
    CHECK(out != NULL);
    if (out && holds_secret(out, len)) {
      fprintf(stderr, "budget %ld: the secret came out: %s\n", n, out);
      CHECK(!"a secret came out");
    } else if (out && strcmp(out, done) == 0) {
      res = DONE;
    } else if (out && withheld && strcmp(out, withheld) == 0) {
      res = WITHHELD;
    } else {
      fprintf(stderr, "budget %ld: unexpected result: %s\n", n, out ? out : "(nil)");
      CHECK(!"unexpected result");
      res = DONE;
    }
  } else {
    const char *msg = lua_tostring(L, -1);
    CHECK(msg != NULL); /* a clean error, with a message */
    if (msg && oom_message && strstr(msg, oom_message)) {
      *saw_message = 1;
      /* a failed registration hands nothing back */
      lua_getglobal(L, "S");
      CHECK(lua_isnil(L, -1));
    }
  }
  lua_close(L);
  return res;
}

static void sweep(const char *name, const char *prelude, const char *chunk, const char *done, const char *withheld,
                  const char *oom_message) {
  long n = 0, seen_withheld = 0;
  int saw_message = 0;
  /* until the failure point lies past the chunk's last allocation */
  for (;; n++) {
    fired = 0;
    enum outcome o = run_with_budget(prelude, chunk, n, done, withheld, oom_message, &saw_message);
    seen_withheld += o == WITHHELD;
    if (!fired) {
      CHECK(o == DONE);
      break;
    }
    if (n > LIMIT) {
      CHECK(!"never completed");
      return;
    }
  }
  /* only when the allocations after the failing one succeed can the
   * redactor's own error or the withheld text reach the chunk */
  if (withheld && one_shot)
    CHECK(seen_withheld > 0);
  if (oom_message && one_shot)
    CHECK(saw_message);
  printf("%s%s: completed with %ld allocations, each failure before that closed\n", name,
         one_shot ? " (one failure)" : "", n);
}

static void sweeps(void) {
  /* secret.new / register: the redactor's failure raises its own error;
   * the scrub after it may withhold its text */
  sweep("secret.new", "OUT = false", "S = secret.new(SECRET); OUT = host.scrub('<' .. SECRET .. '>')",
        "<[REDACTED]>", "[REDACTED]", "out of memory while registering a secret with the redactor");
  sweep("secret.register", "OUT = false", "secret.register(SECRET); OUT = host.scrub('<' .. SECRET .. '>')",
        "<[REDACTED]>", "[REDACTED]", "out of memory while registering a secret with the redactor");
  /* scrubbing: the whole text withheld; "[REDACTED]" is held by the chunk
   * so pushing it needs no allocation */
  const char *registered = "OUT = false; secret.register(SECRET); TEXT = 'a ' .. SECRET .. ' b'; host.scrub(TEXT)"
                           "; json.encode({TEXT}, {scrub = true})";
  sweep("host.scrub", registered, "local R = '[REDACTED]'; OUT = host.scrub(TEXT)", "a [REDACTED] b", "[REDACTED]",
        NULL);
  sweep("json.encode scrub", registered, "local R = '[REDACTED]'; OUT = json.encode({TEXT}, {scrub = true})",
        "[\"a [REDACTED] b\"]", "[\"[REDACTED]\"]", NULL);
}

int main(void) {
  sweep_add();
  sweep_scrub();
  sweeps();
  one_shot = 1;
  sweeps();
  return check_report("test_redact_oom");
}
