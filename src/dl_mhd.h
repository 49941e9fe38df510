/* libmicrohttpd, called through pointers loaded on first use (see dynlib.h):
 * only `runbook serve` needs it, and with GnuTLS behind it it would double
 * the libraries every other command maps. */
#ifndef RUNBOOK_DL_MHD_H
#define RUNBOOK_DL_MHD_H

#include <sys/socket.h>
#include <microhttpd.h>

#include "dynlib.h"

#define RB_MHD_FUNCS(X)                                                                            \
  X(MHD_start_daemon) X(MHD_stop_daemon) X(MHD_run) X(MHD_get_daemon_info)                         \
  X(MHD_get_timeout) X(MHD_get_connection_values) X(MHD_get_connection_info)                        \
  X(MHD_create_response_from_buffer) X(MHD_add_response_header) X(MHD_queue_response)             \
  X(MHD_destroy_response) X(MHD_get_version)

#define RB_DL_FIELD(name) __typeof__(name) *name;
struct rb_mhd_api {
  RB_MHD_FUNCS(RB_DL_FIELD)
};
#undef RB_DL_FIELD
extern struct rb_mhd_api rb_mhd;

#ifndef RB_DL_DEFINE
#define MHD_start_daemon (rb_mhd.MHD_start_daemon)
#define MHD_stop_daemon (rb_mhd.MHD_stop_daemon)
#define MHD_run (rb_mhd.MHD_run)
#define MHD_get_daemon_info (rb_mhd.MHD_get_daemon_info)
#define MHD_get_timeout (rb_mhd.MHD_get_timeout)
#define MHD_get_connection_values (rb_mhd.MHD_get_connection_values)
#define MHD_get_connection_info (rb_mhd.MHD_get_connection_info)
#define MHD_create_response_from_buffer (rb_mhd.MHD_create_response_from_buffer)
#define MHD_add_response_header (rb_mhd.MHD_add_response_header)
#define MHD_queue_response (rb_mhd.MHD_queue_response)
#define MHD_destroy_response (rb_mhd.MHD_destroy_response)
#define MHD_get_version (rb_mhd.MHD_get_version)
#endif

#endif
