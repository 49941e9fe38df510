/*
 * What C code without Lua needs from the host: the SIGINT flag and the
 * clocks (defined in lua_host.c). Protocol files (pg_io.c, redis.c,
 * resolve.c) include this instead of host.h, so they stay Lua-free.
 */
#ifndef RUNBOOK_CLOCK_H
#define RUNBOOK_CLOCK_H

#include <signal.h>

/* Set by the SIGINT handler; the only C global, because signals have no state. */
extern volatile sig_atomic_t rb_interrupted;

/* Seconds on the monotonic and wall clocks. */
double rb_monotime(void);
double rb_walltime(void);

#endif
