/* Design notes
 * ------------
 * Backpressure by muting, after Pony's runtime: an actor that sends to an
 * OVERLOADED target is MUTED once its current handler returns — the
 * scheduler does not run it again until the target is no longer
 * overloaded. No thread ever blocks: a muted actor is simply parked, its
 * mailbox keeps filling, and it resumes where it left off, in order.
 *
 * Who is overloaded: HELD, set from outside: a proxy whose remote actor
 * has no credit left (the link sets it, transport/link.c); BEHIND, set by
 * the actor's own run: an actor of a "pressure" behaviour (the proxy, the
 * link) that handled a full batch and still has messages waiting, until
 * its mailbox is empty again (Pony's heuristic: a producer cannot outrun
 * the path to another process). When no bit is left, every actor muted
 * on it is woken. A sender to an actor that is itself muted is muted too
 * (pressure travels back along a chain) and woken when that one is.
 *
 * Parking: a muted actor's run ends WITHOUT marking its mailbox empty, so
 * a send to it does not schedule it (the mailbox looks busy). The one
 * thing that must still get through is a system message (cancel, kill,
 * exit, DOWN...): a shutdown must never wait on a slow consumer. So a
 * system sender, after its push, reads the flags with an RMW (fetch_or 0,
 * acq_rel) and wakes the actor if MUTED; the parker sets MUTED with an RMW
 * too, then scans its mailbox for a system message. Two RMWs on one
 * location are totally ordered: if the sender's comes second it reads
 * MUTED and wakes; if it comes first, the parker's RMW reads its value
 * and acquires it, so the sender's push (before its RMW) is visible to
 * the scan. (No fences: gcc's TSan does not model them.) Whoever clears
 * MUTED (an atomic fetch_and) schedules the actor: exactly once — except
 * while PARKING (the parker's thread has not finished its scan): then the
 * parker sees MUTED gone and runs on itself, so no other thread can run
 * the actor while its own thread still reads its mailbox.
 *
 * The table of who is muted on whom is small (one row per overloaded
 * target with parked senders) and under one lock: muting is the slow
 * path. Deadlock guard (Pony's rule): an actor that is itself overloaded,
 * a system actor or an actor sending to itself is never muted. Nor is an
 * exempt actor (TR__MF_SYSTEM without being a system actor): a worker
 * process's link, an ordinary actor there so that the worker runs as long
 * as it does, but the one that brings the CREDIT which relieves a proxy;
 * muted on an actor muted on that proxy, it would never run again. */
#include <stdlib.h>

#include "actors/system.h"
#include "runtime/grow.h"

typedef struct tr__mute_row {
    uint64_t target;
    uint64_t *senders; /* refs (id with generation) */
    uint32_t n, cap;
} tr__mute_row;

struct tr__mutes {
    tr__mute_row *rows;
    uint32_t n, cap;
};

void tr__mutes_destroy(tr_runtime *rt) {
    tr__mutes *m = rt->mutes;
    if (m == NULL)
        return;
    for (uint32_t i = 0; i < m->n; i++)
        free(m->rows[i].senders);
    free(m->rows);
    free(m);
    rt->mutes = NULL;
}

/* Schedules a parked actor if it is still parked (exactly once). */
static void wake(tr_runtime *rt, tr_ctx *ctx, uint64_t ref_id) {
    tr__actor *a = tr__slot_lookup(rt, ref_id);
    if (a == NULL || (atomic_load_explicit(&a->live_gen, memory_order_acquire) &
                      ~TR__GEN_KILL) != (uint32_t)(ref_id >> 32))
        return; /* gone (or the slot holds someone else now) */
    tr__mute_wake(rt, ctx, a);
}

void tr__mute_wake(tr_runtime *rt, tr_ctx *ctx, tr__actor *a) {
    uint8_t old = atomic_fetch_and_explicit(
        tr__mflags_of(a), (uint8_t)~TR__MF_MUTED, memory_order_seq_cst);
    if (!(old & TR__MF_MUTED))
        return;
    /* The ref first: once pushed, a may run (and die) elsewhere. */
    uint32_t gen = atomic_load_explicit(&a->live_gen, memory_order_acquire) &
                   ~TR__GEN_KILL;
    uint64_t id = tr__make_ref(tr__slot_index(a), gen).id;
    /* PARKING: its own thread is still in tr__mute_park and will see
     * MUTED gone and run on: nobody else may schedule it. Otherwise into
     * the shared queue, not the waker's next slot: the waker (often the
     * link) may run long, and the woken actor is what its producers wait
     * on. */
    if (!(old & TR__MF_PARKING)) {
        (void)ctx;
        tr__sched_push(&rt->sched, NULL, a);
    }
    /* Those muted on it go on too, unless it is still overloaded (then
     * its relief does it): of the threads clearing its bits, the one that
     * leaves none releases (tr__overload_clear). */
    if (!(old & TR__MF_OVERLOADED))
        tr__mute_release(rt, ctx, id);
}

void tr__overload_clear(tr_runtime *rt, tr_ctx *ctx, tr__actor *a,
                        uint8_t bit, uint32_t gen) {
    /* Cleared before the lock is taken: a sender that parks after this
     * sees it clear under the lock and does not park (mute_park). Of two
     * threads clearing the two bits, the one that leaves none releases. */
    uint8_t old = atomic_fetch_and_explicit(tr__mflags_of(a), (uint8_t)~bit,
                                            memory_order_seq_cst);
    if ((old & bit) && !(old & (TR__MF_OVERLOADED | TR__MF_MUTED) & ~bit))
        tr__mute_release(rt, ctx, tr__make_ref(tr__slot_index(a), gen).id);
}

int tr__mute_exempt(tr_runtime *rt, tr_ref target) {
    tr__actor *a = tr__slot_lookup(rt, target.id);
    if (a == NULL)
        return TR_ENOACTOR;
    /* seq_cst like the other RMWs on the flags; read relaxed by its own
     * thread in tr__mute_park, which runs after the spawn published it. */
    atomic_fetch_or_explicit(tr__mflags_of(a), TR__MF_SYSTEM,
                             memory_order_seq_cst);
    return 0;
}

int tr__overload_set(tr_runtime *rt, tr_ctx *ctx, tr_ref target, bool on) {
    tr__actor *a = tr__slot_lookup(rt, target.id);
    if (a == NULL)
        return TR_ENOACTOR;
    if (on)
        atomic_fetch_or_explicit(tr__mflags_of(a), TR__MF_HELD,
                                 memory_order_seq_cst);
    else
        tr__overload_clear(rt, ctx, a, TR__MF_HELD, (uint32_t)(target.id >> 32));
    return 0;
}

bool tr__overload_blocks(tr_runtime *rt, tr_ref ref) {
    tr__actor *a = tr__slot_lookup(rt, ref.id);
    /* Acquire: pairs with the spawner's release of live_gen. */
    if (a == NULL || (atomic_load_explicit(&a->live_gen, memory_order_acquire) &
                      ~TR__GEN_KILL) != (uint32_t)(ref.id >> 32))
        return false;
    /* Relaxed: a hint; a stale value holds credit back one retry longer
     * or grants one batch more. */
    return atomic_load_explicit(tr__mflags_of(a), memory_order_relaxed) &
           (TR__MF_HELD | TR__MF_FULL);
}

void tr__mute_release(tr_runtime *rt, tr_ctx *ctx, uint64_t target_id) {
    uint64_t *senders = NULL;
    uint32_t n = 0;
    pthread_mutex_lock(&rt->mute_lock);
    tr__mutes *m = rt->mutes;
    for (uint32_t i = 0; m != NULL && i < m->n; i++) {
        if (m->rows[i].target != target_id)
            continue;
        senders = m->rows[i].senders;
        n = m->rows[i].n;
        m->rows[i] = m->rows[--m->n];
        break;
    }
    pthread_mutex_unlock(&rt->mute_lock);
    for (uint32_t i = 0; i < n; i++)
        wake(rt, ctx, senders[i]);
    free(senders);
}

/* Is a system message queued in a's mailbox (owner only)? */
static bool sys_queued(tr__actor *a) {
    tr__node *node = a->mb.tail;
    for (;;) {
        /* Acquire: pairs with the producer's release link (mailbox.h). */
        node = atomic_load_explicit(&node->next, memory_order_acquire);
        if (node == NULL)
            return false;
        if (node != &a->stub && (((tr_msg *)node)->flags & TR__F_SYS))
            return true;
    }
}

bool tr__mute_park(tr_ctx *ctx, tr__actor *a, uint64_t target_id) {
    tr_runtime *rt = ctx->rt;
    tr__actor *t = tr__slot_lookup(rt, target_id);
    /* TR__MF_SYSTEM: system actors (set at spawn) and exempt ones. */
    if (t == NULL || t == a || a->beh == NULL ||
        (atomic_load_explicit(tr__mflags_of(a), memory_order_relaxed) &
         TR__MF_SYSTEM))
        return false;
    /* Pony's cycle guard: an overloaded actor is not muted, unless its
     * target is a system actor (never muted: no cycle can go through it),
     * so a proxy that is behind still stops feeding a link that is. */
    if ((atomic_load_explicit(tr__mflags_of(a), memory_order_relaxed) &
         TR__MF_OVERLOADED) &&
        !(atomic_load_explicit(tr__mflags_of(t), memory_order_relaxed) &
          TR__MF_SYSTEM))
        return false;
    uint64_t self = tr__make_ref(tr__slot_index(a),
                                 a->run_gen & ~TR__STUB_QUEUED)
                        .id;
    pthread_mutex_lock(&rt->mute_lock);
    if (!(atomic_load_explicit(tr__mflags_of(t), memory_order_seq_cst) &
          (TR__MF_OVERLOADED | TR__MF_MUTED))) {
        pthread_mutex_unlock(&rt->mute_lock);
        return false; /* relieved meanwhile */
    }
    tr__mutes *m = rt->mutes;
    if (m == NULL && (m = rt->mutes = calloc(1, sizeof *m)) == NULL) {
        pthread_mutex_unlock(&rt->mute_lock);
        return false;
    }
    tr__mute_row *row = NULL;
    for (uint32_t i = 0; i < m->n && row == NULL; i++)
        if (m->rows[i].target == target_id)
            row = &m->rows[i];
    if (row == NULL && (m->n < m->cap ||
                        tr__grow((void **)&m->rows, &m->cap, m->n + 1,
                                 sizeof *m->rows, 4))) {
        row = &m->rows[m->n++];
        *row = (tr__mute_row){.target = target_id};
    }
    if (row == NULL || (row->n == row->cap &&
                        !tr__grow((void **)&row->senders, &row->cap,
                                  row->n + 1, sizeof *row->senders, 4))) {
        pthread_mutex_unlock(&rt->mute_lock);
        return false; /* out of memory: not muted, no harm */
    }
    row->senders[row->n++] = self;
    /* MUTED with PARKING: a waker from now on clears MUTED but leaves the
     * scheduling to this thread, which still reads a's mailbox below. */
    atomic_fetch_or_explicit(tr__mflags_of(a), TR__MF_MUTED | TR__MF_PARKING,
                             memory_order_seq_cst);
    pthread_mutex_unlock(&rt->mute_lock);
    /* The handshake with system senders (design notes). */
    if (sys_queued(a)) {
        atomic_fetch_and_explicit(tr__mflags_of(a),
                                  (uint8_t)~(TR__MF_MUTED | TR__MF_PARKING),
                                  memory_order_seq_cst);
        return false; /* a system message waits: run on */
    }
    /* Parked from here on, unless woken meanwhile (MUTED gone): then it
     * runs on, on this thread. Nothing of a is touched after this. */
    if (!(atomic_fetch_and_explicit(tr__mflags_of(a),
                                    (uint8_t)~TR__MF_PARKING,
                                    memory_order_seq_cst) &
          TR__MF_MUTED))
        return false;
    atomic_store_explicit(&ctx->st.muted,
                          atomic_load_explicit(&ctx->st.muted,
                                               memory_order_relaxed) +
                              1,
                          memory_order_relaxed); /* owner-only counter */
    return true;
}
