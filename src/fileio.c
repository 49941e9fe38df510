/*
 * File helpers shared by the durable writers (fileio.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h"

int rb_write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

int rb_fsync_parent(const char *path) {
  char dir[4096];
  const char *slash = strrchr(path, '/');
  size_t len = slash ? (size_t)(slash - path) : 0;
  if (!slash)
    strcpy(dir, ".");
  else if (len == 0)
    strcpy(dir, "/");
  else if (len < sizeof dir) {
    memcpy(dir, path, len);
    dir[len] = '\0';
  } else {
    errno = ENAMETOOLONG;
    return -1;
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  int r = fsync(fd);
  int e = errno;
  close(fd);
  errno = e;
  return r;
}

void rb_iso_time(double t, char *buf, size_t n) {
  time_t secs = (time_t)t;
  int ms = (int)((t - (double)secs) * 1000.0);
  if (ms > 999)
    ms = 999;
  if (ms < 0)
    ms = 0;
  struct tm tm;
  gmtime_r(&secs, &tm);
  size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + k, n - k, ".%03dZ", ms);
}
