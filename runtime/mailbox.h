/* Multi-producer single-consumer mailbox (intrusive, unbounded).
 *
 * Design notes
 * ------------
 * The algorithm of Pony's messageq (after Vyukov's intrusive MPSC queue):
 *   - `head` is the producers' end. A push is ONE atomic exchange on head
 *     plus a release store linking the previous node: no CAS loop, so
 *     producers never retry and a send is wait-free.
 *   - `tail` is the consumer's end: the last node consumed, which stays in
 *     the queue as the stub until the next pop (the consumer frees the old
 *     stub then). A fresh mailbox's stub is the node embedded in the owner.
 *   - The low bit of `head` means "empty and not scheduled". A push that
 *     exchanges away a marked head saw the empty->non-empty transition:
 *     exactly one producer sees it, and that producer schedules the owner.
 *     The consumer marks the queue empty with a CAS at the end of its turn;
 *     if a push raced in, the CAS fails and the owner stays scheduled. So an
 *     actor is in at most one run queue and run by at most one thread.
 * Per-producer FIFO follows from the exchange: one producer's exchanges are
 * ordered, and nodes are linked in exchange order. */
#ifndef TR_RUNTIME_MAILBOX_H
#define TR_RUNTIME_MAILBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct tr__node {
    struct tr__node *_Atomic next;
} tr__node;

typedef struct tr__mailbox {
    /* Written by producers (exchange) and by the consumer (mark empty). */
    _Atomic uintptr_t head;
    /* Consumer only. */
    tr__node *tail;
} tr__mailbox;

#define TR__MB_EMPTY ((uintptr_t)1)

/* Initializes an empty, unscheduled mailbox whose stub is `stub`. */
static inline void tr__mailbox_init(tr__mailbox *mb, tr__node *stub,
                                    bool scheduled) {
    atomic_store_explicit(&stub->next, NULL, memory_order_relaxed);
    mb->tail = stub;
    atomic_store_explicit(&mb->head,
                          (uintptr_t)stub | (scheduled ? 0 : TR__MB_EMPTY),
                          memory_order_relaxed);
}

/* Appends n. Returns true if the mailbox was empty and unscheduled: the
 * caller must then schedule the owner. Any thread. */
static inline bool tr__mailbox_push(tr__mailbox *mb, tr__node *n) {
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    /* acq_rel: release publishes n's contents to whoever follows the chain
     * from head; acquire orders us after the previous pusher so linking
     * prev->next below cannot be reordered before it. */
    uintptr_t prev =
        atomic_exchange_explicit(&mb->head, (uintptr_t)n, memory_order_acq_rel);
    tr__node *p = (tr__node *)(prev & ~TR__MB_EMPTY);
    /* Release: the consumer's acquire load of p->next sees n's contents. */
    atomic_store_explicit(&p->next, n, memory_order_release);
    return (prev & TR__MB_EMPTY) != 0;
}

/* Returns the next node or NULL when none is visible yet. *old_stub is set
 * to the node that stopped being the stub (the caller frees it, unless it is
 * the embedded stub) or NULL. Consumer only. */
static inline tr__node *tr__mailbox_pop(tr__mailbox *mb, tr__node **old_stub) {
    tr__node *tail = mb->tail;
    /* Acquire: pairs with the producer's release store of next. */
    tr__node *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next == NULL) {
        *old_stub = NULL;
        return NULL;
    }
    mb->tail = next;
    *old_stub = tail;
    return next;
}

/* Tries to mark the mailbox empty (unscheduled). Succeeds only if no node
 * was pushed after the current stub. Consumer only, at the end of a turn. */
static inline bool tr__mailbox_mark_empty(tr__mailbox *mb) {
    uintptr_t expect = (uintptr_t)mb->tail;
    /* acq_rel on success: release makes this turn's work visible to the
     * thread that next schedules the owner (it acquires via the exchange);
     * relaxed on failure: we just keep running. */
    return atomic_compare_exchange_strong_explicit(
        &mb->head, &expect, expect | TR__MB_EMPTY, memory_order_acq_rel,
        memory_order_relaxed);
}

#endif
