/*
 * Results and errors of runbook._pg as Lua values. Rows come back as text
 * and are typed here by the column's OID, so a runbook gets integers,
 * floats, booleans, decoded JSON and raw bytea instead of strings, and SQL
 * NULL as the JSON null sentinel (distinct from a missing column).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>

#include "crypto.h"
#include "host.h"
#include "jsonconv.h"
#include "pg_internal.h"

/* type OIDs from pg_type.dat; stable across server versions */
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_OID 26
#define OID_JSON 114
#define OID_FLOAT4 700
#define OID_FLOAT8 701
#define OID_JSONB 3802

#define JSON_GUARD_MT "runbook.pg.json"

/* a decoded JSON value held while it is converted, so a memory error in
 * the conversion does not leak it */
static int json_guard_gc(lua_State *L) {
  json_t **j = lua_touserdata(L, 1);
  if (j && *j) {
    json_decref(*j);
    *j = NULL;
  }
  return 0;
}

/* bytea in the text protocol is "\x" followed by hex (bytea_output=hex, the
 * default since 9.0); anything else is passed through unchanged */
static void push_bytea(lua_State *L, const char *v, size_t len) {
  if (len < 2 || v[0] != '\\' || v[1] != 'x' || (len - 2) % 2 != 0) {
    lua_pushlstring(L, v, len);
    return;
  }
  size_t n = (len - 2) / 2;
  luaL_Buffer b;
  char *dst = luaL_buffinitsize(L, &b, n);
  for (size_t i = 0; i < n; i++) {
    int hi = rb_hexval((unsigned char)v[2 + 2 * i]), lo = rb_hexval((unsigned char)v[3 + 2 * i]);
    if (hi < 0 || lo < 0) {
      luaL_pushresultsize(&b, 0);
      lua_pop(L, 1);
      lua_pushlstring(L, v, len);
      return;
    }
    dst[i] = (char)(hi << 4 | lo);
  }
  luaL_pushresultsize(&b, n);
}

static void push_json(lua_State *L, const char *v, size_t len) {
  json_error_t err;
  json_t *j = json_loadb(v, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
  if (!j) {
    lua_pushlstring(L, v, len); /* cannot happen for server output; keep the text */
    return;
  }
  json_t **guard = lua_newuserdatauv(L, sizeof *guard, 0);
  *guard = j;
  if (luaL_newmetatable(L, JSON_GUARD_MT)) {
    lua_pushcfunction(L, json_guard_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  rb_json_to_lua(L, j);
  json_decref(j);
  *guard = NULL;
  lua_remove(L, -2);
}

static void push_value(lua_State *L, const PGresult *res, int row, int col, Oid type) {
  if (PQgetisnull(res, row, col)) {
    rb_push_null(L);
    return;
  }
  const char *v = PQgetvalue(res, row, col);
  size_t len = (size_t)PQgetlength(res, row, col);
  char *end;
  switch (type) {
  case OID_INT2:
  case OID_INT4:
  case OID_INT8:
  case OID_OID:
    lua_pushinteger(L, (lua_Integer)strtoll(v, &end, 10));
    return;
  case OID_FLOAT4:
  case OID_FLOAT8:
    lua_pushnumber(L, (lua_Number)strtod(v, &end)); /* strtod reads NaN and [-]Infinity */
    return;
  case OID_BOOL:
    lua_pushboolean(L, v[0] == 't');
    return;
  case OID_JSON:
  case OID_JSONB:
    push_json(L, v, len);
    return;
  case OID_BYTEA:
    push_bytea(L, v, len);
    return;
  default: /* numeric, text, dates, arrays...: the server's text form */
    lua_pushlstring(L, v, len);
  }
}

static void set_command(lua_State *L, const PGresult *res) {
  const char *tag = PQcmdStatus((PGresult *)res);
  if (tag && *tag) {
    size_t n = strcspn(tag, " ");
    lua_pushlstring(L, tag, n);
    lua_setfield(L, -2, "command");
  }
  const char *aff = PQcmdTuples((PGresult *)res);
  if (aff && *aff) {
    lua_pushinteger(L, (lua_Integer)strtoll(aff, NULL, 10));
    lua_setfield(L, -2, "affected");
  }
}

void rb_pg_push_info(lua_State *L, const PGresult *res) {
  lua_createtable(L, 0, 4);
  set_command(L, res);
  int nf = PQnfields(res);
  lua_createtable(L, nf, 0);
  for (int i = 0; i < nf; i++) {
    lua_pushstring(L, PQfname(res, i));
    lua_rawseti(L, -2, i + 1);
  }
  rb_mark_array(L, -1);
  lua_setfield(L, -2, "fields");
  lua_createtable(L, nf, 0);
  for (int i = 0; i < nf; i++) {
    lua_pushinteger(L, (lua_Integer)PQftype(res, i));
    lua_rawseti(L, -2, i + 1);
  }
  rb_mark_array(L, -1);
  lua_setfield(L, -2, "types");
}

void rb_pg_push_rows(lua_State *L, const PGresult *res) {
  int nrows = PQntuples(res), nf = PQnfields(res);
  luaL_checkstack(L, nf + 8, "too many columns");
  int names = lua_gettop(L) + 1;
  for (int c = 0; c < nf; c++)
    lua_pushstring(L, PQfname(res, c));
  Oid *types = lua_newuserdatauv(L, (size_t)(nf > 0 ? nf : 1) * sizeof *types, 0);
  for (int c = 0; c < nf; c++)
    types[c] = PQftype(res, c);
  lua_createtable(L, nrows, 0);
  for (int r = 0; r < nrows; r++) {
    lua_createtable(L, 0, nf);
    for (int c = 0; c < nf; c++) {
      lua_pushvalue(L, names + c);
      push_value(L, res, r, c, types[c]);
      lua_rawset(L, -3);
    }
    lua_rawseti(L, -2, r + 1);
  }
  rb_mark_array(L, -1);
  /* drop the names and the type array, keep the rows */
  lua_replace(L, names);
  lua_settop(L, names);
  rb_pg_push_info(L, res);
}

static void set_field(lua_State *L, const PGresult *res, int code, const char *name) {
  const char *v = PQresultErrorField(res, code);
  if (v && *v) {
    lua_pushstring(L, v);
    lua_setfield(L, -2, name);
  }
}

void rb_pg_push_result_error(lua_State *L, const PGresult *res, const char *fallback) {
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  if (!state || !primary) {
    /* no server error: the connection broke or libpq refused */
    char line[512];
    rb_pg_one_line(res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : fallback, line, sizeof line);
    rb_push_error(L, "pg", "08006", "%s", line[0] ? line : "the connection to the server was lost");
    return;
  }
  rb_push_error(L, "pg", state, "%s (SQLSTATE %s)", primary, state);
  lua_createtable(L, 0, 8);
  lua_pushstring(L, primary);
  lua_setfield(L, -2, "primary");
  set_field(L, res, PG_DIAG_SEVERITY_NONLOCALIZED, "severity");
  set_field(L, res, PG_DIAG_MESSAGE_DETAIL, "detail");
  set_field(L, res, PG_DIAG_MESSAGE_HINT, "hint");
  set_field(L, res, PG_DIAG_CONTEXT, "where");
  set_field(L, res, PG_DIAG_SCHEMA_NAME, "schema");
  set_field(L, res, PG_DIAG_TABLE_NAME, "table");
  set_field(L, res, PG_DIAG_COLUMN_NAME, "column");
  set_field(L, res, PG_DIAG_DATATYPE_NAME, "datatype");
  set_field(L, res, PG_DIAG_CONSTRAINT_NAME, "constraint");
  set_field(L, res, PG_DIAG_INTERNAL_QUERY, "internal_query");
  const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
  if (pos && *pos) {
    lua_pushinteger(L, strtol(pos, NULL, 10));
    lua_setfield(L, -2, "position");
  }
  pos = PQresultErrorField(res, PG_DIAG_INTERNAL_POSITION);
  if (pos && *pos) {
    lua_pushinteger(L, strtol(pos, NULL, 10));
    lua_setfield(L, -2, "internal_position");
  }
  lua_setfield(L, -2, "details");
}

void rb_pg_one_line(const char *msg, char *out, size_t outlen) {
  if (!msg)
    msg = "";
  /* libpq prefixes each attempt with `connection to server at "h" (a), port p failed: ` */
  const char *p = msg;
  const char *nl = strchr(p, '\n');
  size_t linelen = nl ? (size_t)(nl - p) : strlen(p);
  const char *f = NULL;
  for (const char *s = p; s + 8 <= p + linelen; s++)
    if (strncmp(s, "failed: ", 8) == 0)
      f = s + 8;
  if (f) {
    linelen -= (size_t)(f - p);
    p = f;
  }
  /* a failed attempt with the reason on the next line (older libpq) */
  if (linelen == 0 && nl) {
    p = nl + 1;
    nl = strchr(p, '\n');
    linelen = nl ? (size_t)(nl - p) : strlen(p);
  }
  static const char *const prefixes[] = {"FATAL:  ", "ERROR:  ", "FATAL: ", "ERROR: ", NULL};
  for (int i = 0; prefixes[i]; i++) {
    size_t n = strlen(prefixes[i]);
    if (linelen >= n && strncmp(p, prefixes[i], n) == 0) {
      p += n;
      linelen -= n;
      break;
    }
  }
  while (linelen > 0 && (p[linelen - 1] == ' ' || p[linelen - 1] == '\r' || p[linelen - 1] == '\t'))
    linelen--;
  if (linelen >= outlen)
    linelen = outlen - 1;
  memcpy(out, p, linelen);
  out[linelen] = '\0';
}

/* the SQLSTATE a server would have sent, recognised from the text libpq
 * keeps for failed connections (it has no PGresult to carry one) */
static const char *conn_code(const char *line, const char **reason) {
  static const struct {
    const char *needle, *also, *code, *reason;
  } known[] = {
    {"password authentication failed", NULL, "28P01", "authentication"},
    {"no password supplied", NULL, "28P01", "authentication"},
    {"no pg_hba.conf entry", NULL, "28000", "authentication"},
    {"role \"", "does not exist", "28000", "authentication"},
    {"database \"", "does not exist", "3D000", "no-database"},
    {"the database system is starting up", NULL, "57P03", "starting"},
    {"the database system is shutting down", NULL, "57P03", "starting"},
    {"too many clients", NULL, "53300", "too-many-connections"},
    {"Connection refused", NULL, "08001", "refused"},
    {"timeout", NULL, "08001", "timeout"},
    {"could not translate host name", NULL, "08001", "dns"},
    {NULL, NULL, NULL, NULL},
  };
  for (int i = 0; known[i].needle; i++)
    if (strstr(line, known[i].needle) && (!known[i].also || strstr(line, known[i].also))) {
      *reason = known[i].reason;
      return known[i].code;
    }
  *reason = "unreachable";
  return "08001";
}

void rb_pg_push_conn_error(lua_State *L, const char *what, const char *label, const char *libpq_msg) {
  char line[512];
  rb_pg_one_line(libpq_msg, line, sizeof line);
  const char *reason;
  const char *code = conn_code(line, &reason);
  size_t len = strlen(line);
  /* the server's texts start lower-case; libpq's socket errors do not */
  if (len > 0 && line[0] >= 'A' && line[0] <= 'Z' && (len < 2 || (line[1] >= 'a' && line[1] <= 'z')))
    line[0] = (char)(line[0] - 'A' + 'a');
  /* the text may echo parts of the connection string: scrub it */
  rb_push_scrubbed(L, line, strlen(line));
  const char *clean = lua_tostring(L, -1);
  rb_push_error(L, "pg", code, "%s PostgreSQL at %s: %s", what, label, clean);
  lua_createtable(L, 0, 2);
  lua_pushstring(L, reason);
  lua_setfield(L, -2, "reason");
  lua_pushstring(L, label);
  lua_setfield(L, -2, "server");
  lua_setfield(L, -2, "details");
  lua_remove(L, -2);
}
