/* troupe — inboxes: a mailbox for a thread that is not an actor (main, a
 * test, a foreign library thread), with a blocking receive. An inbox has a
 * tr_ref like an actor, so actors reply to it as to any actor. It does not
 * count as a live actor for tr_runtime_run's quiescence. */
#ifndef TROUPE_INBOX_H
#define TROUPE_INBOX_H

#include <stdint.h>

#include "actor.h"
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tr_inbox tr_inbox;

/* Any thread except a handler's. */
TR_API int tr_inbox_create(tr_runtime *rt, tr_inbox **out);
TR_API tr_ref tr_inbox_ref(const tr_inbox *inbox);
/* Waits up to timeout_ms (-1 forever, 0 poll) for the next message; the
 * caller owns *out (tr_msg_destroy). TR_ETIMEDOUT when none came. Must not
 * be called from a handler (it would block a worker): TR_ESTATE. */
TR_API int tr_inbox_recv(tr_inbox *inbox, int64_t timeout_ms, tr_msg **out);
/* Closes the inbox (later sends to it: TR_ENOACTOR), frees queued messages,
 * sets *inbox to NULL. Before tr_runtime_destroy. */
TR_API void tr_inbox_destroy(tr_inbox **inbox);

#ifdef __cplusplus
}
#endif
#endif
