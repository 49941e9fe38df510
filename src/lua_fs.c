/*
 * runbook._fs: the few file-system operations the store and the engine need
 * beyond io.open: directories with modes, listing, stat, durable writes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "fileio.h"
#include "secret.h"

static int push_errno(lua_State *L, const char *what) {
  int e = errno;
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", what, strerror(e));
  lua_pushinteger(L, e);
  return 3;
}

/* mkdir_p(path [, mode=0700]) -> true | nil, message */
static int f_mkdir_p(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mode_t mode = (mode_t)luaL_optinteger(L, 2, 0700);
  char buf[PATH_MAX];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf)
    return luaL_argerror(L, 1, "bad path length");
  memcpy(buf, path, n + 1);
  /* the parent is usually there already: walk from the root only if not */
  if (mkdir(buf, mode) == 0 || errno == EEXIST) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (errno != ENOENT)
    return push_errno(L, buf);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
      return push_errno(L, buf);
    *p = '/';
  }
  if (mkdir(buf, mode) != 0 && errno != EEXIST)
    return push_errno(L, buf);
  lua_pushboolean(L, 1);
  return 1;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* listdir(path) -> sorted names (without . and ..) | nil, message */
static int f_listdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  DIR *d = opendir(path);
  if (!d)
    return push_errno(L, path);
  size_t n = 0, cap = 0;
  char **names = NULL;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 32;
      char **grown = realloc(names, cap * sizeof *names);
      if (!grown)
        break;
      names = grown;
    }
    if (!(names[n] = strdup(e->d_name)))
      break;
    n++;
  }
  closedir(d);
  if (n)
    qsort(names, n, sizeof *names, cmp_names);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
    free(names[i]);
  }
  free(names);
  return 1;
}

/* stat(path [, nofollow]) -> {type=, mode=, size=, mtime=, uid=} | nil,
 * message; with nofollow a symbolic link is described itself (type "link"),
 * not its target */
static int f_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int nofollow = lua_toboolean(L, 2);
  struct stat st;
  if ((nofollow ? lstat(path, &st) : stat(path, &st)) != 0)
    return push_errno(L, path);
  lua_createtable(L, 0, 5);
  const char *type = S_ISREG(st.st_mode)   ? "file"
                     : S_ISDIR(st.st_mode) ? "directory"
                     : S_ISLNK(st.st_mode) ? "link"
                                           : "other";
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, st.st_mode & 07777);
  lua_setfield(L, -2, "mode");
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_setfield(L, -2, "size");
  lua_pushnumber(L, (double)st.st_mtim.tv_sec + st.st_mtim.tv_nsec / 1e9);
  lua_setfield(L, -2, "mtime");
  lua_pushinteger(L, st.st_uid);
  lua_setfield(L, -2, "uid");
  return 1;
}

static int f_chmod(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (chmod(path, (mode_t)luaL_checkinteger(L, 2)) != 0)
    return push_errno(L, path);
  lua_pushboolean(L, 1);
  return 1;
}

static int f_realpath(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char buf[PATH_MAX];
  if (!realpath(path, buf))
    return push_errno(L, path);
  lua_pushstring(L, buf);
  return 1;
}

static int f_cwd(lua_State *L) {
  char buf[PATH_MAX];
  if (!getcwd(buf, sizeof buf))
    return push_errno(L, ".");
  lua_pushstring(L, buf);
  return 1;
}

/* write_file(path, data [, mode=0600]): written to a temporary file, fsync'd
 * and renamed, so readers see the old or the new content, never half */
static int f_write_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t len;
  const char *data = rb_check_bytes(L, 2, &len, NULL);
  mode_t mode = (mode_t)luaL_optinteger(L, 3, 0600);
  const char *tmp = lua_pushfstring(L, "%s.tmp.%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return push_errno(L, tmp);
  if (rb_write_all(fd, data, len) != 0) {
    int e = errno;
    close(fd);
    unlink(tmp);
    errno = e;
    return push_errno(L, tmp);
  }
  if (fchmod(fd, mode) != 0 || fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    errno = e;
    return push_errno(L, path);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* remove(path): a file or an empty directory */
static int f_remove(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (remove(path) != 0)
    return push_errno(L, path);
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg funcs[] = {
  {"mkdir_p", f_mkdir_p}, {"listdir", f_listdir}, {"stat", f_stat},       {"chmod", f_chmod},
  {"realpath", f_realpath}, {"cwd", f_cwd},       {"write_file", f_write_file}, {"remove", f_remove},
  {NULL, NULL},
};

int luaopen_runbook__fs(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
