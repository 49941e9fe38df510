/*
 * The few file helpers every durable writer shares (journal, run files,
 * backup sinks), Lua-free, so there is one definition of "written",
 * "durable in its directory" and "the time in the journal's format".
 */
#ifndef RUNBOOK_FILEIO_H
#define RUNBOOK_FILEIO_H

#include <stddef.h>

/* Writes all n bytes, retrying short writes and EINTR. 0, or -1 with errno. */
int rb_write_all(int fd, const void *p, size_t n);

/* fsyncs the directory holding path ("a/b" -> "a", "/x" -> "/", "x" ->
 * "."), so a create or rename in it is durable. 0, or -1 with errno. */
int rb_fsync_parent(const char *path);

/* t (seconds since the epoch, UTC) as "2026-11-22T10:41:07.113Z"; buf
 * holds at least 32 bytes. */
void rb_iso_time(double t, char *buf, size_t n);

#endif
