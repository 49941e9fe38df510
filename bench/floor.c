/*
 * The physical floor the engine benchmark prints beside runbook's figures:
 * what the same durable work costs with nothing else around it.
 *
 *   floor append FILE N          N appends of 100 bytes to FILE, each
 *                                fdatasync'd (a fresh run's journal events)
 *   floor resume JOURNAL FILE N  read JOURNAL and SHA-256 it, then N synced
 *                                appends (a resume's new events)
 *   floor none                   nothing: an empty process start
 *
 * Timed as a whole process by hyperfine, so each figure includes its own
 * process start. The SHA-256 is runbook's (src/sha256.c, SHA-NI where the
 * processor has it; as fast as OpenSSL's on this machine), hashed over the
 * file in one pass: less work than a per-line chain, so a strict floor.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sha256.h"

static int appends(const char *path, long n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    perror(path);
    return 1;
  }
  char line[100];
  memset(line, 'x', sizeof line);
  line[99] = '\n';
  for (long i = 0; i < n; i++)
    if (write(fd, line, sizeof line) != (ssize_t)sizeof line || fdatasync(fd) != 0) {
      perror(path);
      return 1;
    }
  return close(fd) != 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "none") == 0)
    return 0;
  if (argc == 4 && strcmp(argv[1], "append") == 0)
    return appends(argv[2], atol(argv[3]));
  if (argc == 5 && strcmp(argv[1], "resume") == 0) {
    int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      perror(argv[2]);
      return 1;
    }
    static unsigned char buf[1 << 16];
    struct rb_sha256_ctx c;
    rb_sha256_init(&c);
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0)
      rb_sha256_update(&c, buf, (size_t)r);
    close(fd);
    unsigned char d[32];
    rb_sha256_final(&c, d);
    if (d[0] == 0 && d[1] == 0 && d[2] == 0 && d[3] == 0)
      fputs("", stderr); /* keep the digest used */
    return appends(argv[3], atol(argv[4]));
  }
  fprintf(stderr, "usage: floor append FILE N | resume JOURNAL FILE N | none\n");
  return 2;
}
