/*
 * Lua <-> JSON conversion shared by runbook.json, runbook.yaml and the
 * journal. Conventions:
 *  - JSON null is a unique sentinel userdata (json.null), distinct from nil;
 *  - an empty Lua table encodes as {}; a table carrying the array metatable
 *    (json.array{}) encodes as [], and decoded arrays that are empty get it,
 *    so [] and {} both round-trip;
 *  - Lua integers are JSON integers (64-bit), Lua floats are JSON reals;
 *  - a Secret encodes per the secrets mode: error, "[REDACTED]" or revealed.
 */
#ifndef RUNBOOK_JSONCONV_H
#define RUNBOOK_JSONCONV_H

#include <jansson.h>
#include <lua.h>

/* One nesting limit for JSON and YAML, reading and writing, the journal's
 * own reader included: arrays and objects (sequences and mappings) nested
 * deeper than this are refused everywhere, so a value one side accepts the
 * others accept too (what decodes re-encodes; a journal line that was
 * written can be read back). A collection at the top is level 1. */
#define RB_JSON_MAX_DEPTH 512

enum rb_secret_mode { RB_SECRETS_ERROR, RB_SECRETS_REDACT, RB_SECRETS_REVEAL };

struct rb_jsonopts {
  enum rb_secret_mode secrets;
  int scrub; /* pass every string through the process redactor */
};

/* Converts the value at idx. Returns NULL with a message in err on failure
 * (a function, a cycle, a sparse array, invalid UTF-8, NaN, a secret in
 * error mode). Never raises, so callers can free what they hold first. */
json_t *rb_lua_to_json(lua_State *L, int idx, const struct rb_jsonopts *o, char *err, size_t errlen);

/* Pushes the Lua value for j. */
void rb_json_to_lua(lua_State *L, json_t *j);

void rb_push_null(lua_State *L);
int rb_is_null(lua_State *L, int idx);
/* Gives the table at idx the array metatable. */
void rb_mark_array(lua_State *L, int idx);
int rb_is_marked_array(lua_State *L, int idx);

#endif
