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
 * message is dropped and counted as a dead letter (a request gets its
 * timeout). */
#ifndef TROUPE_ROUTER_H
#define TROUPE_ROUTER_H

#include <stdint.h>

#include "actor.h"
#include "export.h"

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

#ifdef __cplusplus
}
#endif
#endif
