/* hiredis, called through pointers loaded on first use (see dynlib.h). */
#ifndef RUNBOOK_DL_REDIS_H
#define RUNBOOK_DL_REDIS_H

#include <hiredis/hiredis.h>

#include "dynlib.h"

#define RB_REDIS_FUNCS(X) \
  X(freeReplyObject) \
  X(redisAppendCommandArgv) \
  X(redisBufferRead) \
  X(redisBufferWrite) \
  X(redisCommandArgv) \
  X(redisConnectWithTimeout) \
  X(redisFree) \
  X(redisGetReplyFromReader) \
  X(redisSetTimeout)

#define RB_DL_FIELD(name) __typeof__(name) *name;
struct rb_redis_api {
  RB_REDIS_FUNCS(RB_DL_FIELD)
};
#undef RB_DL_FIELD
extern struct rb_redis_api rb_redis;

/* dynlib.c defines RB_DL_DEFINE to fill the table under the real names */
#ifndef RB_DL_DEFINE
#define freeReplyObject (rb_redis.freeReplyObject)
#define redisAppendCommandArgv (rb_redis.redisAppendCommandArgv)
#define redisBufferRead (rb_redis.redisBufferRead)
#define redisBufferWrite (rb_redis.redisBufferWrite)
#define redisCommandArgv (rb_redis.redisCommandArgv)
#define redisConnectWithTimeout (rb_redis.redisConnectWithTimeout)
#define redisFree (rb_redis.redisFree)
#define redisGetReplyFromReader (rb_redis.redisGetReplyFromReader)
#define redisSetTimeout (rb_redis.redisSetTimeout)
#endif

#endif
