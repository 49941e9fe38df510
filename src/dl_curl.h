/* libcurl, called through pointers loaded on first use (see dynlib.h). */
#ifndef RUNBOOK_DL_CURL_H
#define RUNBOOK_DL_CURL_H

#define CURL_DISABLE_TYPECHECK /* its checking macros would hide our names */
#include <curl/curl.h>

#include "dynlib.h"

#define RB_CURL_FUNCS(X)                                                                           \
  X(curl_easy_cleanup) X(curl_easy_getinfo) X(curl_easy_init) X(curl_easy_perform) X(curl_easy_recv) X(curl_easy_send)                \
  X(curl_easy_reset) X(curl_easy_setopt) X(curl_easy_strerror) X(curl_global_init)                 \
  X(curl_slist_append) X(curl_slist_free_all) X(curl_version_info) X(curl_multi_init)              \
  X(curl_multi_cleanup) X(curl_multi_add_handle) X(curl_multi_remove_handle)                       \
  X(curl_multi_perform) X(curl_multi_poll) X(curl_multi_info_read) X(curl_multi_setopt)             \
  X(curl_share_init) X(curl_share_setopt) X(curl_share_cleanup)

#define RB_DL_FIELD(name) __typeof__(name) *name;
struct rb_curl_api {
  RB_CURL_FUNCS(RB_DL_FIELD)
};
#undef RB_DL_FIELD
extern struct rb_curl_api rb_curl;

/* dynlib.c defines RB_DL_DEFINE to fill the table under the real names */
#ifndef RB_DL_DEFINE
/* curl.h wraps these two in argument-counting macros */
#undef curl_easy_getinfo
#undef curl_easy_setopt
#define curl_easy_cleanup (rb_curl.curl_easy_cleanup)
#define curl_easy_getinfo (rb_curl.curl_easy_getinfo)
#define curl_easy_init (rb_curl.curl_easy_init)
#define curl_easy_perform (rb_curl.curl_easy_perform)
#define curl_easy_recv (rb_curl.curl_easy_recv)
#define curl_easy_reset (rb_curl.curl_easy_reset)
#define curl_easy_send (rb_curl.curl_easy_send)
#define curl_easy_setopt (rb_curl.curl_easy_setopt)
#define curl_easy_strerror (rb_curl.curl_easy_strerror)
#define curl_global_init (rb_curl.curl_global_init)
#define curl_slist_append (rb_curl.curl_slist_append)
#define curl_slist_free_all (rb_curl.curl_slist_free_all)
#define curl_version_info (rb_curl.curl_version_info)
#undef curl_multi_setopt
#define curl_multi_init (rb_curl.curl_multi_init)
#define curl_multi_cleanup (rb_curl.curl_multi_cleanup)
#define curl_multi_add_handle (rb_curl.curl_multi_add_handle)
#define curl_multi_remove_handle (rb_curl.curl_multi_remove_handle)
#define curl_multi_perform (rb_curl.curl_multi_perform)
#define curl_multi_poll (rb_curl.curl_multi_poll)
#define curl_multi_info_read (rb_curl.curl_multi_info_read)
#define curl_multi_setopt (rb_curl.curl_multi_setopt)
#undef curl_share_setopt
#define curl_share_init (rb_curl.curl_share_init)
#define curl_share_setopt (rb_curl.curl_share_setopt)
#define curl_share_cleanup (rb_curl.curl_share_cleanup)
#endif

#endif
