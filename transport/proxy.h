/* Internal: the proxy actor's state (transport/proxy.c). */
#ifndef TR_TRANSPORT_PROXY_H
#define TR_TRANSPORT_PROXY_H

#include <stdbool.h>
#include <stdint.h>

#include "transport/remote.h"

/* Messages a proxy keeps while its actor is being spawned before its
 * senders are muted. */
#define TR__PROXY_QUEUE_MAX 256u

typedef struct tr__proxy {
    tr_ref link;      /* the link actor that owns the socket */
    uint32_t peer;    /* which worker process (main side) */
    uint64_t remote;  /* the actor's id over there; 0 until spawned */
    uint32_t gen;     /* incarnation of the process it lives in */
    bool remote_gone; /* ended over there: nothing to cancel */
    bool owns;        /* spawned by us: ending the proxy ends the actor */
    uint32_t started_tag; /* sent to the parent when spawned (0: none) */
    tr_msg *respawn;  /* idempotent behaviour: its SPAWN payload, to spawn
                         it again when its process dies; else NULL */
    unsigned streak;  /* losses less than a second apart */
    int64_t last_loss_ms;
    bool self_held;   /* it marked itself overloaded (queue full) */
    bool draining;    /* cancelled with q waiting for the spawn (on_cancel) */
    tr__fwd **q;      /* waiting for the spawn */
    uint32_t nq, capq;
} tr__proxy;

extern const tr_behavior tr__proxy_behavior;

#endif
