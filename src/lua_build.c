/*
 * runbook._build: what this binary was built from and what it runs with,
 * for `runbook version`. Versions are asked of the libraries at run time
 * where they can say (OpenSSL, jansson, libyaml, libcurl, libpq): a
 * packaged binary runs against whatever the system has, not the headers it
 * was built with. libcurl, libpq, hiredis and libmicrohttpd are dlopen'ed (src/dynlib.c),
 * so load(name) loads one on demand and reports the version or the error
 * naming the package to install.
 */
#include <stdio.h>

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <yaml.h>

#include "build_commit.h"
#include "dl_crypto.h"
#include "dl_curl.h"
#include "dl_mhd.h"
#include "dl_pq.h"
#include "dl_redis.h"

static void setstr(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* info() -> {version=, commit=, lua=, openssl=, jansson=, libyaml=,
 *            sonames={curl=, pq=, hiredis=}, packages={...}} */
static int f_info(lua_State *L) {
  lua_createtable(L, 0, 8);
  setstr(L, "version", RUNBOOK_VERSION);
  setstr(L, "commit", RB_BUILD_COMMIT);
  setstr(L, "lua", LUA_RELEASE);
  /* libcrypto is loaded on first use (see dl_crypto.h): this loads it */
  char err[300];
  setstr(L, "openssl", rb_dl_crypto(err, sizeof err) == 0 ? OpenSSL_version(OPENSSL_VERSION) : err);
  setstr(L, "jansson", jansson_version_str());
  setstr(L, "libyaml", yaml_get_version_string());
  lua_createtable(L, 0, 3);
  setstr(L, "curl", RB_SONAME_CURL);
  setstr(L, "pq", RB_SONAME_PQ);
  setstr(L, "hiredis", RB_SONAME_HIREDIS);
  setstr(L, "mhd", RB_SONAME_MHD);
  lua_setfield(L, -2, "sonames");
  lua_createtable(L, 0, 3);
  setstr(L, "curl", RB_PKG_CURL);
  setstr(L, "pq", RB_PKG_PQ);
  setstr(L, "hiredis", RB_PKG_HIREDIS);
  setstr(L, "mhd", RB_PKG_MHD);
  lua_setfield(L, -2, "packages");
  return 1;
}

/* load("curl"|"pq"|"hiredis"|"mhd") -> version string, or nil and the load error */
static int f_load(lua_State *L) {
  static const char *const names[] = {"curl", "pq", "hiredis", "mhd", NULL};
  int which = luaL_checkoption(L, 1, NULL, names);
  char err[300];
  char buf[32];
  switch (which) {
  case 0:
    if (rb_dl_curl(err, sizeof err) != 0)
      break;
    lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
    return 1;
  case 1: {
    if (rb_dl_pq(err, sizeof err) != 0)
      break;
    int v = PQlibVersion(); /* 150005 for 15.5; 90624 for 9.6.24 */
    if (v >= 100000)
      snprintf(buf, sizeof buf, "%d.%d", v / 10000, v % 10000);
    else
      snprintf(buf, sizeof buf, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
    lua_pushstring(L, buf);
    return 1;
  }
  case 3:
    if (rb_dl_mhd(err, sizeof err) != 0)
      break;
    lua_pushstring(L, MHD_get_version());
    return 1;
  default:
    if (rb_dl_redis(err, sizeof err) != 0)
      break;
    /* hiredis has no run-time version call: the headers' is the one the
     * soname promises */
    snprintf(buf, sizeof buf, "%d.%d.%d", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    lua_pushstring(L, buf);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

static const luaL_Reg funcs[] = {
  {"info", f_info},
  {"load", f_load},
  {NULL, NULL},
};

int luaopen_runbook__build(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
