/* troupe — batching: a consumer takes up to N messages, or whatever
 * arrived within a time window, as one message.
 *
 * A batcher is an actor placed in front of a consumer: what is sent to the
 * batcher is collected, in arrival order, and delivered to the consumer as
 * one TR_TAG_BATCH message as soon as max_n messages are in, or window_ms
 * after the first message of the batch arrived, whichever comes first.
 * The messages are moved, not copied; each keeps its tag, payload and
 * original sender. A batch is local (its payload is a pointer). When the
 * batcher stops, what it holds is delivered first. */
#ifndef TROUPE_BATCH_H
#define TROUPE_BATCH_H

#include <stdint.h>

#include "actor.h"
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TR_TAG_BATCH 0xFFFF0710u

/* A batcher in front of `target` (max_n >= 1; window_ms >= 1, or 0 for
 * count only). A child of the caller's actor, or top-level. */
TR_API int tr_batcher_spawn(tr_ctx *ctx, tr_ref target, uint32_t max_n,
                            int64_t window_ms, tr_ref *out);
TR_API int tr_runtime_batcher_spawn(tr_runtime *rt, tr_ref target,
                                    uint32_t max_n, int64_t window_ms,
                                    tr_ref *out);

/* The messages in a TR_TAG_BATCH message (0 if it is not one), and the
 * i-th of them (borrowed: valid while the batch is; read it with the
 * tr_msg_* accessors, tr_msg_sender included). */
TR_API uint32_t tr_batch_count(const tr_msg *batch);
TR_API const tr_msg *tr_batch_get(const tr_msg *batch, uint32_t i);

#ifdef __cplusplus
}
#endif
#endif
