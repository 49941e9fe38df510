/* libpq, called through pointers loaded on first use (see dynlib.h). */
#ifndef RUNBOOK_DL_PQ_H
#define RUNBOOK_DL_PQ_H

#include <libpq-fe.h>

#include "dynlib.h"

#define RB_PQ_FUNCS(X) \
  X(PQbackendPID) \
  X(PQcancel) \
  X(PQclear) \
  X(PQcmdStatus) \
  X(PQcmdTuples) \
  X(PQconnectPoll) \
  X(PQconnectStartParams) \
  X(PQconninfoFree) \
  X(PQconninfoParse) \
  X(PQconsumeInput) \
  X(PQdb) \
  X(PQencryptPasswordConn) \
  X(PQerrorMessage) \
  X(PQescapeIdentifier) \
  X(PQescapeLiteral) \
  X(PQfinish) \
  X(PQflush) \
  X(PQfname) \
  X(PQfreeCancel) \
  X(PQfreemem) \
  X(PQftype) \
  X(PQgetCancel) \
  X(PQgetCopyData) \
  X(PQgetResult) \
  X(PQgetisnull) \
  X(PQgetlength) \
  X(PQgetvalue) \
  X(PQhost) \
  X(PQisBusy) \
  X(PQlibVersion) \
  X(PQnfields) \
  X(PQntuples) \
  X(PQport) \
  X(PQputCopyData) \
  X(PQputCopyEnd) \
  X(PQresultErrorField) \
  X(PQresultErrorMessage) \
  X(PQresultStatus) \
  X(PQsendPrepare) \
  X(PQsendQuery) \
  X(PQsendQueryParams) \
  X(PQsendQueryPrepared) \
  X(PQserverVersion) \
  X(PQsetNoticeReceiver) \
  X(PQsetnonblocking) \
  X(PQsocket) \
  X(PQstatus) \
  X(PQtransactionStatus) \
  X(PQuser)

#define RB_DL_FIELD(name) __typeof__(name) *name;
struct rb_pq_api {
  RB_PQ_FUNCS(RB_DL_FIELD)
};
#undef RB_DL_FIELD
extern struct rb_pq_api rb_pq;

/* dynlib.c defines RB_DL_DEFINE to fill the table under the real names */
#ifndef RB_DL_DEFINE
#define PQbackendPID (rb_pq.PQbackendPID)
#define PQcancel (rb_pq.PQcancel)
#define PQclear (rb_pq.PQclear)
#define PQcmdStatus (rb_pq.PQcmdStatus)
#define PQcmdTuples (rb_pq.PQcmdTuples)
#define PQconnectPoll (rb_pq.PQconnectPoll)
#define PQconnectStartParams (rb_pq.PQconnectStartParams)
#define PQconninfoFree (rb_pq.PQconninfoFree)
#define PQconninfoParse (rb_pq.PQconninfoParse)
#define PQconsumeInput (rb_pq.PQconsumeInput)
#define PQdb (rb_pq.PQdb)
#define PQencryptPasswordConn (rb_pq.PQencryptPasswordConn)
#define PQerrorMessage (rb_pq.PQerrorMessage)
#define PQescapeIdentifier (rb_pq.PQescapeIdentifier)
#define PQescapeLiteral (rb_pq.PQescapeLiteral)
#define PQfinish (rb_pq.PQfinish)
#define PQflush (rb_pq.PQflush)
#define PQfname (rb_pq.PQfname)
#define PQfreeCancel (rb_pq.PQfreeCancel)
#define PQfreemem (rb_pq.PQfreemem)
#define PQftype (rb_pq.PQftype)
#define PQgetCancel (rb_pq.PQgetCancel)
#define PQgetCopyData (rb_pq.PQgetCopyData)
#define PQgetResult (rb_pq.PQgetResult)
#define PQgetisnull (rb_pq.PQgetisnull)
#define PQgetlength (rb_pq.PQgetlength)
#define PQgetvalue (rb_pq.PQgetvalue)
#define PQhost (rb_pq.PQhost)
#define PQisBusy (rb_pq.PQisBusy)
#define PQlibVersion (rb_pq.PQlibVersion)
#define PQnfields (rb_pq.PQnfields)
#define PQntuples (rb_pq.PQntuples)
#define PQport (rb_pq.PQport)
#define PQputCopyData (rb_pq.PQputCopyData)
#define PQputCopyEnd (rb_pq.PQputCopyEnd)
#define PQresultErrorField (rb_pq.PQresultErrorField)
#define PQresultErrorMessage (rb_pq.PQresultErrorMessage)
#define PQresultStatus (rb_pq.PQresultStatus)
#define PQsendPrepare (rb_pq.PQsendPrepare)
#define PQsendQuery (rb_pq.PQsendQuery)
#define PQsendQueryParams (rb_pq.PQsendQueryParams)
#define PQsendQueryPrepared (rb_pq.PQsendQueryPrepared)
#define PQserverVersion (rb_pq.PQserverVersion)
#define PQsetNoticeReceiver (rb_pq.PQsetNoticeReceiver)
#define PQsetnonblocking (rb_pq.PQsetnonblocking)
#define PQsocket (rb_pq.PQsocket)
#define PQstatus (rb_pq.PQstatus)
#define PQtransactionStatus (rb_pq.PQtransactionStatus)
#define PQuser (rb_pq.PQuser)
#endif

#endif
