/* Timer storage: a 4-ary min-heap over deadlines plus a slot table that
 * gives every timer a stable (index, generation) id, so cancel is
 * O(log n) and a stale id is recognised. Not thread-safe: the reactor
 * holds its lock around every call. */
#ifndef TR_RUNTIME_TIMERHEAP_H
#define TR_RUNTIME_TIMERHEAP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct tr__timer {
    int64_t deadline;
    int64_t period; /* 0 = one-shot */
    uint64_t to;
    void *msg;      /* one-shot message, or NULL for periodic */
    uint64_t ticks; /* periodic: ticks delivered */
    uint32_t tag;
    uint32_t gen;
    uint32_t heap_pos; /* UINT32_MAX when not in the heap (slot free) */
} tr__timer;

typedef struct tr__timerheap {
    tr__timer *slots;
    uint32_t nslots, capslots;
    uint32_t *free; /* free slot indices */
    uint32_t nfree;
    uint32_t *heap; /* slot indices ordered by deadline */
    uint32_t nheap, capheap;
} tr__timerheap;

void tr__timerheap_init(tr__timerheap *h);
void tr__timerheap_destroy(tr__timerheap *h);
/* Returns the new timer's id (never 0), or 0 when out of memory. */
uint64_t tr__timerheap_add(tr__timerheap *h, int64_t deadline, int64_t period,
                           uint64_t to, void *msg, uint32_t tag);
/* The timer with this id if it is pending, else NULL. */
tr__timer *tr__timerheap_get(tr__timerheap *h, uint64_t id);
/* Earliest pending timer or NULL. */
tr__timer *tr__timerheap_top(tr__timerheap *h);
/* Removes a pending timer (frees its slot). */
void tr__timerheap_remove(tr__timerheap *h, tr__timer *t);
/* Re-sorts t after its deadline changed (periodic re-arm). */
void tr__timerheap_update(tr__timerheap *h, tr__timer *t);
uint64_t tr__timerheap_id(tr__timerheap *h, const tr__timer *t);

#endif
