/* troupe — bounded mailboxes with an overflow policy.
 *
 * An actor spawned with a limit counts the ordinary messages in its
 * mailbox (a message counts from its send until the end of the turn that
 * handles it). Past the limit, the policy decides:
 *
 *   TR_OVERFLOW_BACKPRESSURE  the message is queued and the sending actor
 *       is muted: parked after its current turn, never a thread, until the
 *       mailbox is down to half the limit (actors/mute.c); senders resume
 *       in order. A foreign thread may wait with tr_runtime_send_wait.
 *   TR_OVERFLOW_DROP_NEWEST   the new message is dropped (the send
 *       succeeds), counted.
 *   TR_OVERFLOW_DROP_OLDEST   the new message is queued and the oldest
 *       ordinary message still queued is dropped unhandled, counted.
 *   TR_OVERFLOW_REJECT        the send fails with TR_EAGAIN (the message
 *       stays the caller's), counted.
 *
 * The system lane: system messages (cancel, kill, exits, DOWN, shutdown),
 * replies and request timeouts never count and are never dropped or
 * delayed by a policy: a full mailbox never eats a shutdown or a reply
 * its actor waits for. Limits are in messages and, optionally, in payload
 * bytes (a message over either limit triggers the policy; a single message
 * larger than max_bytes is still accepted into an empty mailbox). */
#ifndef TROUPE_BOUNDED_H
#define TROUPE_BOUNDED_H

#include <stdint.h>

#include "actor.h"
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tr_overflow {
    TR_OVERFLOW_BACKPRESSURE = 0,
    TR_OVERFLOW_DROP_NEWEST = 1,
    TR_OVERFLOW_DROP_OLDEST = 2,
    TR_OVERFLOW_REJECT = 3
} tr_overflow;

typedef struct tr_mailbox_limit {
    uint32_t max_msgs;  /* >= 1 */
    tr_overflow policy;
    uint64_t max_bytes; /* payload bytes queued; 0 = no byte limit */
} tr_mailbox_limit;

/* tr_spawn / tr_runtime_spawn with a bounded mailbox. TR_EINVAL for a bad
 * limit; otherwise as tr_spawn. */
TR_API int tr_spawn_bounded(tr_ctx *ctx, const tr_behavior *beh,
                            const void *init, size_t init_len,
                            const tr_mailbox_limit *limit, tr_ref *out);
TR_API int tr_runtime_spawn_bounded(tr_runtime *rt, const tr_behavior *beh,
                                    const void *init, size_t init_len,
                                    const tr_mailbox_limit *limit,
                                    tr_ref *out);

typedef struct tr_mailbox_stats {
    uint32_t depth;    /* ordinary messages counted now */
    uint32_t max_msgs; /* the limit */
    uint64_t bytes;    /* their payload bytes */
    uint64_t max_bytes;
    uint64_t dropped;  /* DROP_NEWEST / DROP_OLDEST */
    uint64_t rejected; /* REJECT */
    uint64_t full;     /* times it reached its limit (BACKPRESSURE) */
} tr_mailbox_stats;

/* A bounded actor's counters. TR_ENOACTOR (dead), TR_ESTATE (not
 * bounded). Any thread. */
TR_API int tr_mailbox_stats_get(tr_runtime *rt, tr_ref ref,
                                tr_mailbox_stats *out);

/* From a foreign thread: tr_runtime_send, but when `to` is a bounded
 * actor with the backpressure policy at its limit, waits (up to
 * timeout_ms; -1 = no limit) until it has room. TR_ETIMEDOUT if it does
 * not (the message stays the caller's). Not from a handler (TR_ESTATE):
 * actors are muted instead. */
TR_API int tr_runtime_send_wait(tr_runtime *rt, tr_ref to, tr_msg **msg,
                                int64_t timeout_ms);

#ifdef __cplusplus
}
#endif
#endif
