/* troupe — routers: one reference in front of a pool of actors.
 *
 * What is sent to a router goes on to one of its routees (or to all), by
 * strategy; it is forwarded with tr_forward (no copy; the original sender
 * and request id are kept, so a routee's tr_reply answers the requester):
 *
 *   TR_ROUTE_ROUND_ROBIN  each in turn;
 *   TR_ROUTE_LEAST_LOADED the routee with the fewest messages queued
 *                         (tr_actor_mailbox_depth: set track_depth; else
 *                         round robin);
 *   TR_ROUTE_HASH         by key: the message's u64 payload, or a hash of
 *                         its bytes; rendezvous hashing, so adding or
 *                         removing a routee moves only the keys it gets or
 *                         had;
 *   TR_ROUTE_BROADCAST    a copy to every routee (U64, BYTES or MSGPACK
 *                         payloads).
 *
 * Routees are monitored: one that ends leaves the pool. The pool grows and
 * shrinks at runtime (tr_router_add / tr_router_remove). With no routee a
 * message is dropped and counted as a dead letter (a request is failed
 * back at once: TR_TAG_REQUEST_FAILED). */
#ifndef TROUPE_ROUTER_H
#define TROUPE_ROUTER_H

#include <stdint.h>

#include "actor.h"
#include "export.h"
#include "supervisor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tr_route {
    TR_ROUTE_ROUND_ROBIN = 0,
    TR_ROUTE_LEAST_LOADED = 1,
    TR_ROUTE_HASH = 2,
    TR_ROUTE_BROADCAST = 3
} tr_route;

/* A router over routees[0..n) (n may be 0; at most 1024). */
TR_API int tr_router_spawn(tr_ctx *ctx, tr_route how, const tr_ref *routees,
                           uint32_t n, tr_ref *out);
TR_API int tr_runtime_router_spawn(tr_runtime *rt, tr_route how,
                                   const tr_ref *routees, uint32_t n,
                                   tr_ref *out);
/* Grow / shrink the pool (handler only; applied in order with the
 * messages the router gets). */
TR_API int tr_router_add(tr_ctx *ctx, tr_ref router, tr_ref routee);
TR_API int tr_router_remove(tr_ctx *ctx, tr_ref router, tr_ref routee);

/* ---- supervised pools ----
 *
 * A router whose routees are the children of a supervisor it starts
 * itself (its own child: the pool ends with the router, children first).
 * Routee k is the child spec `routee` named "<routee.name>.<k>" (local,
 * or remote with routee.remote / routee.node: worker processes or another
 * node). The supervisor restarts routees by `sup`'s strategy, intensity
 * and backoff; a restarted routee (a new actor) is routed to as soon as it
 * has started. While no routee runs, messages are held in order (not
 * dropped); with `hold` of them held, the senders are muted until a
 * routee is back. The router's own mailbox is bounded by `hold` too
 * (backpressure policy): when the routees fall behind, the router's
 * senders are muted rather than queueing without bound in front of the
 * pool. Messages queued at a routee when it dies are lost with
 * it, as for any restart (for remote routees registered with
 * TR_REG_IDEMPOTENT, requests are resent instead). When the supervisor
 * fails (restart intensity exceeded) the router fails with its reason.
 * The pool grows and shrinks at runtime with tr_router_resize: new slots
 * start (or restart, for a slot used before); removed slots leave the
 * routing at once and are stopped with routee.shutdown_ms. */
typedef struct tr_router_pool_config {
    tr_route how;
    tr_sup_spec routee; /* name: the prefix (at most 47 chars) */
    uint32_t size;      /* routees at start: 1..1024 */
    tr_sup_config sup;  /* notify is set by the router */
    uint32_t hold;      /* held messages before senders are muted (0: 1024) */
} tr_router_pool_config;

TR_API int tr_router_pool_spawn(tr_ctx *ctx, const tr_router_pool_config *cfg,
                                tr_ref *out);
TR_API int tr_runtime_router_pool_spawn(tr_runtime *rt,
                                        const tr_router_pool_config *cfg,
                                        tr_ref *out);
/* Resizes a supervised pool to `size` routees (1..1024; handler only;
 * applied in order with the router's messages). Ignored by a plain
 * router. */
TR_API int tr_router_resize(tr_ctx *ctx, tr_ref router, uint32_t size);

#ifdef __cplusplus
}
#endif
#endif
