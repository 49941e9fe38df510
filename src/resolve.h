/*
 * Name resolution with a timeout. getaddrinfo has none of its own: a
 * resolver that does not answer holds it for resolv.conf's timeout times
 * its attempts. So it runs on a detached thread and the caller waits only
 * until its deadline, in short slices so Ctrl-C is seen at once. The
 * request is shared by reference count: whichever of the caller and the
 * thread lets go last frees it, so an abandoned lookup finishes on its
 * own and leaks nothing. Used by runbook._net and runbook._redis.
 */
#ifndef RUNBOOK_RESOLVE_H
#define RUNBOOK_RESOLVE_H

#include <netdb.h>

enum { LK_OK, LK_TIMEOUT, LK_INTERRUPTED, LK_FAILED };

/* Resolves name (SOCK_STREAM, AI_CANONNAME) for family (AF_UNSPEC, ...)
 * until deadline (monotonic seconds, 0 = none) or Ctrl-C. On LK_OK *res is
 * the caller's to freeaddrinfo; on LK_FAILED *rc and *err say why
 * (getaddrinfo's code and errno). */
int rb_resolve(const char *name, int family, double deadline, struct addrinfo **res, int *rc, int *err);

#endif
