/* Bounded mailboxes (troupe/bounded.h).
 *
 * Per slot, in a side array of its chunk allocated on the chunk's first
 * bounded spawn (idle unbounded actors pay nothing): the count of
 * ordinary messages, the limit and policy, drops owed (drop-oldest) and
 * counters. Senders add to the count as they send (an atomic add: the
 * count may overshoot the limit by the senders racing at the edge, never
 * by more); the owner subtracts what its turn took, at the turn's end.
 *
 * Policies act on the send side except drop-oldest: a producer cannot take
 * a message out of an MPSC queue, so it records a drop owed and the owner
 * drops that many of the oldest ordinary messages as it reaches them.
 * Backpressure marks the actor FULL, one of the bits that mute its senders
 * (actors/mute.c); the owner clears it when its count is down to half the
 * limit, which wakes them.
 *
 * Memory ordering: counts and flags are atomics; the limit and policy are
 * written before the slot's generation is published (release, spawn) and
 * read after a sender acquired it, so relaxed loads of them are enough. */
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#include "actors/system.h"
#include "runtime/log.h"
#include "troupe/bounded.h"

typedef struct tr__bound {
    _Atomic uint32_t depth;
    _Atomic uint32_t drop; /* drop-oldest: drops owed */
    uint32_t max;
    uint32_t policy;
    _Atomic uint64_t bytes; /* payload bytes of the counted messages */
    uint64_t max_bytes;     /* 0: none */
    _Atomic uint64_t dropped, rejected, full;
} tr__bound;

static tr__bound *bound_of(const tr__actor *a) {
    uintptr_t base = (uintptr_t)a & ~(uintptr_t)(TR__CHUNK_BYTES - 1);
    tr__chunk_head *h = (tr__chunk_head *)base;
    tr__bound *b = atomic_load_explicit(&h->bounds, memory_order_acquire);
    return b != NULL ? &b[((uintptr_t)a - base) / sizeof(tr__actor)] : NULL;
}

/* The limit a tr_spawn_bounded on this thread is passing to spawn_locked
 * (the spawn path is shared with every other spawn). */
static _Thread_local const tr_mailbox_limit *pending;

const struct tr_mailbox_limit *tr__bound_pending(void) { return pending; }

int tr__bound_install(tr__actor *a, const struct tr_mailbox_limit *lim) {
    uintptr_t base = (uintptr_t)a & ~(uintptr_t)(TR__CHUNK_BYTES - 1);
    tr__chunk_head *h = (tr__chunk_head *)base;
    tr__bound *b = atomic_load_explicit(&h->bounds, memory_order_acquire);
    if (b == NULL) {
        tr__bound *n = calloc(TR__CHUNK_SLOTS, sizeof *n);
        if (n == NULL)
            return TR_ENOMEM;
        /* Release/acquire: the zeroed array is seen by whoever loads it. */
        if (atomic_compare_exchange_strong_explicit(&h->bounds, &b, n,
                                                    memory_order_acq_rel,
                                                    memory_order_acquire))
            b = n;
        else
            free(n);
    }
    tr__bound *e = &b[((uintptr_t)a - base) / sizeof(tr__actor)];
    atomic_store_explicit(&e->depth, 0, memory_order_relaxed);
    atomic_store_explicit(&e->drop, 0, memory_order_relaxed);
    atomic_store_explicit(&e->dropped, 0, memory_order_relaxed);
    atomic_store_explicit(&e->rejected, 0, memory_order_relaxed);
    atomic_store_explicit(&e->full, 0, memory_order_relaxed);
    atomic_store_explicit(&e->bytes, 0, memory_order_relaxed);
    e->max_bytes = lim->max_bytes;
    e->max = lim->max_msgs;
    e->policy = (uint32_t)lim->policy;
    return 0;
}

void tr__bounds_free(tr__chunk_head *h) {
    free(atomic_load_explicit(&h->bounds, memory_order_relaxed));
}

static _Atomic uint64_t drop_log_count;

int tr__bound_admit(tr_runtime *rt, tr_ctx *ctx, tr__actor *a, tr_msg *m) {
    (void)rt;
    tr__bound *b = bound_of(a);
    if (b == NULL || !tr__bound_counts(m))
        return 0;
    uint32_t d = atomic_fetch_add_explicit(&b->depth, 1,
                                           memory_order_relaxed) + 1;
    uint64_t len = m->len;
    uint64_t by = atomic_fetch_add_explicit(&b->bytes, len,
                                            memory_order_relaxed) + len;
    /* Over the byte limit only if others are queued: one big message
     * alone always fits. */
    bool over_bytes = b->max_bytes > 0 && by > b->max_bytes && d > 1;
    if (d <= b->max && !over_bytes)
        return 0;
    switch ((tr_overflow)b->policy) {
    case TR_OVERFLOW_REJECT:
        atomic_fetch_sub_explicit(&b->depth, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&b->bytes, len, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->rejected, 1, memory_order_relaxed);
        return TR_EAGAIN;
    case TR_OVERFLOW_DROP_NEWEST:
        atomic_fetch_sub_explicit(&b->depth, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&b->bytes, len, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->dropped, 1, memory_order_relaxed);
        tr__log_sampled(&drop_log_count, TR_LOG_DEBUG,
                        "bounded mailbox full: message (tag 0x%x) dropped",
                        m->tag);
        tr__msg_free(m);
        return 1;
    case TR_OVERFLOW_DROP_OLDEST:
        atomic_fetch_add_explicit(&b->drop, 1, memory_order_relaxed);
        return 0;
    default: /* backpressure: queued; the sender is muted (send.c) */
        if (!(atomic_fetch_or_explicit(tr__mflags_of(a), TR__MF_FULL,
                                       memory_order_seq_cst) &
              TR__MF_FULL))
            atomic_fetch_add_explicit(&b->full, 1, memory_order_relaxed);
        (void)ctx;
        return 0;
    }
}

bool tr__bound_drop_oldest(tr__actor *a) {
    tr__bound *b = bound_of(a);
    uint32_t owed = atomic_load_explicit(&b->drop, memory_order_relaxed);
    while (owed > 0) {
        if (atomic_compare_exchange_weak_explicit(&b->drop, &owed, owed - 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed)) {
            atomic_fetch_add_explicit(&b->dropped, 1, memory_order_relaxed);
            return true;
        }
    }
    return false;
}

void tr__bound_turn_end(tr_runtime *rt, tr_ctx *ctx, tr__actor *a,
                        uint32_t n, uint64_t nbytes, uint32_t gen) {
    tr__bound *b = bound_of(a);
    if (b == NULL)
        return;
    uint64_t by = atomic_load_explicit(&b->bytes, memory_order_relaxed);
    while (nbytes > 0 && !atomic_compare_exchange_weak_explicit(
                             &b->bytes, &by, by > nbytes ? by - nbytes : 0,
                             memory_order_relaxed, memory_order_relaxed))
        ;
    by = by > nbytes ? by - nbytes : 0;
    /* Subtract, never below 0 (a count the slot's previous incarnation
     * left cannot make it wrap). */
    uint32_t d = atomic_load_explicit(&b->depth, memory_order_relaxed);
    while (n > 0 && !atomic_compare_exchange_weak_explicit(
                        &b->depth, &d, d > n ? d - n : 0,
                        memory_order_relaxed, memory_order_relaxed))
        ;
    d = d > n ? d - n : 0;
    /* Relieved at half the limit (hysteresis: senders refill the rest). */
    if (d <= b->max / 2 && (b->max_bytes == 0 || by <= b->max_bytes / 2) &&
        (atomic_load_explicit(tr__mflags_of(a), memory_order_relaxed) &
         TR__MF_FULL))
        tr__overload_clear(rt, ctx, a, TR__MF_FULL, gen);
}

/* ---- the public API ---- */

static bool limit_ok(const tr_mailbox_limit *l) {
    return l != NULL && l->max_msgs >= 1 &&
           (unsigned)l->policy <= TR_OVERFLOW_REJECT;
}

TR_API int tr_spawn_bounded(tr_ctx *ctx, const tr_behavior *beh,
                            const void *init, size_t init_len,
                            const tr_mailbox_limit *limit, tr_ref *out) {
    if (!limit_ok(limit))
        return TR_EINVAL;
    pending = limit;
    int rc = tr_spawn(ctx, beh, init, init_len, out);
    pending = NULL;
    return rc;
}

TR_API int tr_runtime_spawn_bounded(tr_runtime *rt, const tr_behavior *beh,
                                    const void *init, size_t init_len,
                                    const tr_mailbox_limit *limit,
                                    tr_ref *out) {
    if (!limit_ok(limit))
        return TR_EINVAL;
    pending = limit;
    int rc = tr_runtime_spawn(rt, beh, init, init_len, out);
    pending = NULL;
    return rc;
}

/* The bound of a live bounded actor, or NULL (*rc says why). */
static tr__bound *live_bound(tr_runtime *rt, tr_ref ref, int *rc) {
    if (rt == NULL) {
        *rc = TR_EINVAL;
        return NULL;
    }
    if (!tr_actor_alive(rt, ref)) {
        *rc = TR_ENOACTOR;
        return NULL;
    }
    tr__actor *a = tr__slot_lookup(rt, ref.id);
    if (!(atomic_load_explicit(tr__mflags_of(a), memory_order_relaxed) &
          TR__MF_BOUNDED)) {
        *rc = TR_ESTATE;
        return NULL;
    }
    *rc = 0;
    return bound_of(a);
}

TR_API int tr_mailbox_stats_get(tr_runtime *rt, tr_ref ref,
                                tr_mailbox_stats *out) {
    int rc;
    tr__bound *b = live_bound(rt, ref, &rc);
    if (b == NULL || out == NULL)
        return b == NULL ? rc : TR_EINVAL;
    out->depth = atomic_load_explicit(&b->depth, memory_order_relaxed);
    out->max_msgs = b->max;
    out->bytes = atomic_load_explicit(&b->bytes, memory_order_relaxed);
    out->max_bytes = b->max_bytes;
    out->dropped = atomic_load_explicit(&b->dropped, memory_order_relaxed);
    out->rejected = atomic_load_explicit(&b->rejected, memory_order_relaxed);
    out->full = atomic_load_explicit(&b->full, memory_order_relaxed);
    return 0;
}

TR_API int tr_runtime_send_wait(tr_runtime *rt, tr_ref to, tr_msg **msg,
                                int64_t timeout_ms) {
    if (rt == NULL || msg == NULL || *msg == NULL)
        return TR_EINVAL;
    if (tr__sched_current() != NULL)
        return TR_ESTATE;
    int64_t end = timeout_ms < 0 ? INT64_MAX : tr_now_ms() + timeout_ms;
    long sleep_ns = 20000;
    for (;;) {
        int rc;
        tr__bound *b = live_bound(rt, to, &rc);
        if (b == NULL || (tr_overflow)b->policy != TR_OVERFLOW_BACKPRESSURE ||
            (atomic_load_explicit(&b->depth, memory_order_relaxed) < b->max &&
             (b->max_bytes == 0 ||
              atomic_load_explicit(&b->bytes, memory_order_relaxed) <
                  b->max_bytes)))
            return tr_runtime_send(rt, to, msg);
        if (tr_now_ms() >= end)
            return TR_ETIMEDOUT;
        /* Polling with backoff (20 us .. 1 ms): a foreign thread has no
         * mailbox to be woken through. */
        struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL);
        if (sleep_ns < 1000000)
            sleep_ns *= 2;
    }
}
