#include "runtime/deque.h"

#define MASK (TR__DEQUE_CAP - 1)

void tr__deque_init(tr__deque *d) {
    atomic_store_explicit(&d->top, 0, memory_order_relaxed);
    atomic_store_explicit(&d->bottom, 0, memory_order_relaxed);
    for (size_t i = 0; i < TR__DEQUE_CAP; i++)
        atomic_store_explicit(&d->slots[i], NULL, memory_order_relaxed);
}

bool tr__deque_push(tr__deque *d, void *unit) {
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    /* Acquire: a slot freed by a thief's CAS is ours to overwrite. */
    int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
    if (b - t >= TR__DEQUE_CAP)
        return false;
    atomic_store_explicit(&d->slots[b & MASK], unit, memory_order_relaxed);
    /* Release: a thief that reads the new bottom sees the slot's value. */
    atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
    return true;
}

void *tr__deque_pop(tr__deque *d) {
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    /* seq_cst store then seq_cst load: the StoreLoad order that decides
     * the race with a thief for the last element. */
    atomic_store_explicit(&d->bottom, b, memory_order_seq_cst);
    int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    if (t > b) { /* empty */
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
        return NULL;
    }
    void *unit =
        atomic_load_explicit(&d->slots[b & MASK], memory_order_relaxed);
    if (t == b) { /* last element: race thieves for it via top */
        if (!atomic_compare_exchange_strong_explicit(
                &d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed))
            unit = NULL;
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
    }
    return unit;
}

void *tr__deque_steal(tr__deque *d) {
    int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_seq_cst);
    if (t >= b)
        return NULL;
    /* Acquire via the seq_cst load of bottom above (pairs with the owner's
     * release in push): the slot's value is visible. */
    void *unit =
        atomic_load_explicit(&d->slots[t & MASK], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(
            &d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed))
        return NULL;
    return unit;
}

int64_t tr__deque_size(tr__deque *d) {
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
    return b > t ? b - t : 0;
}
