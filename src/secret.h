/*
 * Secret values: opaque userdata ("runbook.Secret") holding bytes that print
 * as [REDACTED] and are revealed only by an explicit :reveal(). Creating one
 * registers it, with its encoded forms, in the process redactor.
 */
#ifndef RUNBOOK_SECRET_H
#define RUNBOOK_SECRET_H

#include <stddef.h>

#include <lua.h>

#define RB_SECRET_MT "runbook.Secret"

/* Pushes a new Secret holding a copy of data. */
void rb_secret_push(lua_State *L, const char *data, size_t len);

/* Registers bytes with the process redactor (literal: exactly these, no
 * derived forms). Raises when the redactor is out of memory, so the value
 * is never used unprotected; warns once when it is short. */
void rb_secret_register(lua_State *L, const char *data, size_t len, int literal);

/* The bytes of the Secret at idx, or NULL when the value is not a Secret. */
const char *rb_secret_test(lua_State *L, int idx, size_t *len);

/* Accepts a string or a Secret (for connection strings, passwords, keys
 * and bodies). *is_secret tells which; raises on any other type. */
const char *rb_check_bytes(lua_State *L, int idx, size_t *len, int *is_secret);

/* Like rb_check_bytes, but nil/none gives NULL. */
const char *rb_opt_bytes(lua_State *L, int idx, size_t *len, int *is_secret);

#endif
