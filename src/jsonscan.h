/* A direct JSON reader for journal lines: onto the Lua stack, or (L NULL)
 * only validated. Returns 0 and pushes one value, or -1 (nothing pushed). */
#ifndef RUNBOOK_JSONSCAN_H
#define RUNBOOK_JSONSCAN_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

int rb_json_scan(lua_State *L, const char *s, size_t len);

/* A top-level member asked for by name, as rb_json_members found it. */
struct rb_json_member {
  const char *name; /* set by the caller */
  size_t namelen;   /* strlen(name): set by the caller, or when 0 by rb_json_members */
  int count;        /* how many times the object holds it (a JSON object may repeat a name) */
  int string;       /* its (last) value is a string */
  int plain;        /* ... one without escapes */
  const char *value; /* the last value's text: a plain string's bytes between its quotes */
  size_t len;
};

struct rb_json_members {
  struct rb_json_member *f;
  int n;
  int object;       /* the text is an object */
  int escaped_keys; /* some top-level name has an escape (its decoded name is not looked at) */
  uint64_t sigs;    /* (rb_json_members' own) */
};

/* Validates exactly as rb_json_scan(NULL, ...) does and, when the text is an
 * object, notes the members m asks for. Returns 0, or -1 when it is not
 * valid JSON. */
int rb_json_members(const char *s, size_t len, struct rb_json_members *m);

#endif
