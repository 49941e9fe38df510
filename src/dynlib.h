/*
 * The network libraries (libcurl, libpq, hiredis) are loaded with dlopen
 * the first time a runbook requires the module that needs them, not at
 * process start: with their dependencies (LDAP, Kerberos, GnuTLS, ...) they
 * are most of the process's resident memory, (libcrypto likewise: only
 * sealing a secret needs it) and a runbook that never
 * touches the network should not pay for them. Code calls them by their
 * usual names; dl_curl.h, dl_pq.h and dl_redis.h map each name to a
 * pointer filled here.
 */
#ifndef RUNBOOK_DYNLIB_H
#define RUNBOOK_DYNLIB_H

#include <stddef.h>

/* 0 when the library is loaded (or was), -1 with a message in err. */
int rb_dl_curl(char *err, size_t errlen);
/* libcrypto, for AES-GCM (sealed secrets) only */
int rb_dl_crypto(char *err, size_t errlen);
int rb_dl_pq(char *err, size_t errlen);
int rb_dl_redis(char *err, size_t errlen);
int rb_dl_mhd(char *err, size_t errlen); /* libmicrohttpd, for runbook serve */

#endif
