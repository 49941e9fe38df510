/*
 * The Lua side of the fuzz targets. libFuzzer sees coverage only of code
 * compiled with it, and the Lua VM (Debian's liblua5.4) and the stdlib's
 * bytecode are not; so a line hook turns every (previous line, line) pair
 * executed in Lua into a libFuzzer extra counter, the way AFL hashes edges.
 * Targets written in Lua (the template engine, the SQL splitter, the
 * kubeconfig loader) then get guided fuzzing, not blind mutation.
 *
 * One state per process, with the embedded stdlib as the binary ships it;
 * a driver chunk returns the function called once per input.
 */
#ifndef RUNBOOK_FUZZ_LUA_H
#define RUNBOOK_FUZZ_LUA_H

#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

/* Loads driver (a chunk returning function(data)) into a new state with the
 * runbook stdlib preloaded and the C functions of globals (NULL or a
 * luaL_Reg list) as globals; exits the process when it does not load. */
lua_State *rbf_lua_open(const char *driver, const char *name, const luaL_Reg *globals);

/* Calls the driver's function with data. The driver raises only for a bug
 * (an unexpected error, a broken invariant): that prints the traceback and
 * aborts, which libFuzzer records as a crash. */
void rbf_lua_run(lua_State *L, const uint8_t *data, size_t size);

#endif
