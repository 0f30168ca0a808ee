/* Work-stealing deque of runnable units (Chase-Lev, fixed capacity).
 *
 * The owner pushes and pops at the bottom (LIFO: the unit it just made
 * runnable runs next, on a hot cache, and a spawn tree is walked
 * depth-first, which keeps few actors alive at once); thieves steal at the
 * top (FIFO: the oldest work moves, the young work stays local).
 * Formulation of Le, Pop, Cohen, Zappa Nardelli (PPoPP 2013), written with
 * seq_cst operations on top/bottom instead of standalone fences so that
 * ThreadSanitizer, which does not model fences, checks it too. */
#ifndef TR_RUNTIME_DEQUE_H
#define TR_RUNTIME_DEQUE_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TR__DEQUE_CAP 4096 /* power of two */

typedef struct tr__deque {
    alignas(64) _Atomic int64_t top;    /* thieves (CAS) and owner */
    alignas(64) _Atomic int64_t bottom; /* owner writes, thieves read */
    void *_Atomic slots[TR__DEQUE_CAP];
} tr__deque;

void tr__deque_init(tr__deque *d);
/* Owner only. false when full (the caller puts the unit elsewhere). */
bool tr__deque_push(tr__deque *d, void *unit);
/* Owner only. NULL when empty. */
void *tr__deque_pop(tr__deque *d);
/* Any thread. NULL when empty or when it lost a race (caller may retry). */
void *tr__deque_steal(tr__deque *d);
/* Approximate size, any thread. */
int64_t tr__deque_size(tr__deque *d);

#endif
