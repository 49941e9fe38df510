/* A direct JSON reader for journal lines: onto the Lua stack, or (L NULL)
 * only validated. Returns 0 and pushes one value, or -1 (nothing pushed). */
#ifndef RUNBOOK_JSONSCAN_H
#define RUNBOOK_JSONSCAN_H

#include <stddef.h>

#include <lua.h>

int rb_json_scan(lua_State *L, const char *s, size_t len);

#endif
