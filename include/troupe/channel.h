/* troupe — channels (memory object streams): bounded, multi-producer and
 * multi-consumer, with end-of-stream.
 *
 * A channel is an actor. Producers tr_channel_open it, put items
 * (tr_channel_put: any message with a user tag; it is moved, not copied,
 * and keeps its tag, payload and sender) and tr_channel_close it.
 * Consumers ask for one item at a time (tr_channel_take); the item
 * arrives as the original message, or TR_TAG_CHANNEL_CLOSED once every
 * producer that opened the channel has closed it (or ended) and no item is
 * left: every consumer sees the end of the stream, no sentinel needed.
 * Items go to waiting consumers first come, first served.
 *
 * Bounded: with `capacity` items buffered, the producers are muted
 * (parked after the put, never a thread) until the consumers have taken
 * it down to half. Puts the channel has not handled yet count too: its
 * mailbox is bounded at `capacity` (bounded.h, backpressure), so a burst
 * of puts mutes its producers even before the channel runs. At most about
 * twice `capacity` items are in a channel (queued and buffered), plus one
 * put per producer racing at the edge.
 *
 * Across processes: actors of worker processes reach a channel of the
 * main process through a proxy (tr_main_lookup) and open, put, close and
 * take as local ones do (payloads that can cross: U64, BYTES, MSGPACK).
 * A full channel holds back its remote producers' credit, so they are
 * muted in their own process: a remote producer runs ahead by at most
 * the pool's window (tr_pool_config.window) plus a turn. A producer whose
 * process dies counts as closed (its proxy ends). */
#ifndef TROUPE_CHANNEL_H
#define TROUPE_CHANNEL_H

#include <stdint.h>

#include "actor.h"
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tags 0xFFFF0720..0xFFFF072F belong to channels. */
#define TR_TAG_CHANNEL_CLOSED 0xFFFF0720u

TR_API int tr_channel_spawn(tr_ctx *ctx, uint32_t capacity, tr_ref *out);
TR_API int tr_runtime_channel_spawn(tr_runtime *rt, uint32_t capacity,
                                    tr_ref *out);

/* Producers (handler only). */
TR_API int tr_channel_open(tr_ctx *ctx, tr_ref ch);
TR_API int tr_channel_put(tr_ctx *ctx, tr_ref ch, tr_msg **item);
TR_API int tr_channel_close(tr_ctx *ctx, tr_ref ch);
/* Consumers: one item (or TR_TAG_CHANNEL_CLOSED) per take. */
TR_API int tr_channel_take(tr_ctx *ctx, tr_ref ch);

#ifdef __cplusplus
}
#endif
#endif
