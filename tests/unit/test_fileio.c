/* The shared file helpers: the parent directory of every path shape is the
 * one fsync'd (journal.c and pg_sink.c each had a copy, and they disagreed
 * on "/x"), writes are whole, and times have the journal's format. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/fileio.h"
#include "check.h"

int main(void) {
  char dir[] = "/tmp/rb-fileio-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[256];
  snprintf(path, sizeof path, "%s/file", dir);

  CHECK(rb_fsync_parent(path) == 0);   /* "dir/file" -> dir */
  CHECK(rb_fsync_parent("/x") == 0);   /* "/x" -> "/", not "" */
  CHECK(rb_fsync_parent("file") == 0); /* no slash -> "." */
  errno = 0;
  CHECK(rb_fsync_parent("/no/such/dir/file") == -1 && errno == ENOENT);

  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(fd >= 0);
  static char big[1 << 20];
  memset(big, 'x', sizeof big);
  CHECK(rb_write_all(fd, big, sizeof big) == 0);
  close(fd);
  struct stat st;
  CHECK(stat(path, &st) == 0 && st.st_size == (off_t)sizeof big);
  CHECK(rb_write_all(-1, "a", 1) == -1 && errno == EBADF);

  char buf[64];
  rb_iso_time(1795000867.125, buf, sizeof buf);
  CHECK_STR(buf, "2026-11-18T11:21:07.125Z");
  rb_iso_time(0.9999, buf, sizeof buf);
  CHECK_STR(buf, "1970-01-01T00:00:00.999Z");

  unlink(path);
  rmdir(dir);
  return check_report("test_fileio");
}
