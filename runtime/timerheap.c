/* 4-ary min-heap of timer slots. A 4-ary heap halves the depth of a binary
 * one and keeps a node's children in one cache line of indices, which is
 * what matters at 10^5 timers; add/cancel/fire are O(log4 n). */
#include "runtime/timerheap.h"

#include "runtime/grow.h"

#include <stdlib.h>
#include <string.h>

#define NOT_IN_HEAP UINT32_MAX

void tr__timerheap_init(tr__timerheap *h) { memset(h, 0, sizeof *h); }

void tr__timerheap_destroy(tr__timerheap *h) {
    free(h->slots);
    free(h->free);
    free(h->heap);
    memset(h, 0, sizeof *h);
}

static bool earlier(const tr__timerheap *h, uint32_t a, uint32_t b) {
    return h->slots[a].deadline < h->slots[b].deadline;
}

static void place(tr__timerheap *h, uint32_t pos, uint32_t slot) {
    h->heap[pos] = slot;
    h->slots[slot].heap_pos = pos;
}

static void sift_up(tr__timerheap *h, uint32_t pos) {
    uint32_t slot = h->heap[pos];
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 4;
        if (!earlier(h, slot, h->heap[parent]))
            break;
        place(h, pos, h->heap[parent]);
        pos = parent;
    }
    place(h, pos, slot);
}

static void sift_down(tr__timerheap *h, uint32_t pos) {
    uint32_t slot = h->heap[pos];
    for (;;) {
        uint32_t first = pos * 4 + 1, best = pos;
        uint32_t best_slot = slot;
        for (uint32_t c = first; c < first + 4 && c < h->nheap; c++) {
            if (earlier(h, h->heap[c], best_slot)) {
                best = c;
                best_slot = h->heap[c];
            }
        }
        if (best == pos)
            break;
        place(h, pos, best_slot);
        pos = best;
    }
    place(h, pos, slot);
}

static bool grow(void **arr, uint32_t *cap, size_t elem, uint32_t need) {
    return tr__grow(arr, cap, need, elem, 64);
}

uint64_t tr__timerheap_add(tr__timerheap *h, int64_t deadline, int64_t period,
                           uint64_t to, void *msg, uint32_t tag) {
    uint32_t capheap = h->capheap;
    if (!grow((void **)&h->heap, &capheap, sizeof *h->heap, h->nheap + 1))
        return 0;
    h->capheap = capheap;
    uint32_t slot;
    if (h->nfree > 0) {
        slot = h->free[--h->nfree];
    } else {
        uint32_t cap = h->capslots;
        if (!grow((void **)&h->slots, &cap, sizeof *h->slots, h->nslots + 1))
            return 0;
        /* free[] can hold every slot, so releasing never allocates. */
        uint32_t capfree = h->capslots;
        if (!grow((void **)&h->free, &capfree, sizeof *h->free, cap))
            return 0;
        h->capslots = cap;
        slot = h->nslots++;
        h->slots[slot].gen = 0;
    }
    tr__timer *t = &h->slots[slot];
    t->deadline = deadline;
    t->period = period;
    t->to = to;
    t->msg = msg;
    t->ticks = 0;
    t->tag = tag;
    t->gen = (t->gen + 1) & 0x7fffffffu;
    if (t->gen == 0)
        t->gen = 1;
    h->heap[h->nheap] = slot;
    t->heap_pos = h->nheap++;
    sift_up(h, t->heap_pos);
    return ((uint64_t)t->gen << 32) | ((uint64_t)slot + 1);
}

tr__timer *tr__timerheap_get(tr__timerheap *h, uint64_t id) {
    uint32_t low = (uint32_t)id;
    if (low == 0 || low > h->nslots)
        return NULL;
    tr__timer *t = &h->slots[low - 1];
    if (t->gen != (uint32_t)(id >> 32) || t->heap_pos == NOT_IN_HEAP)
        return NULL;
    return t;
}

uint64_t tr__timerheap_id(tr__timerheap *h, const tr__timer *t) {
    return ((uint64_t)t->gen << 32) | ((uint64_t)(t - h->slots) + 1);
}

tr__timer *tr__timerheap_top(tr__timerheap *h) {
    return h->nheap > 0 ? &h->slots[h->heap[0]] : NULL;
}

void tr__timerheap_remove(tr__timerheap *h, tr__timer *t) {
    uint32_t pos = t->heap_pos;
    uint32_t slot = (uint32_t)(t - h->slots);
    uint32_t last = h->heap[--h->nheap];
    t->heap_pos = NOT_IN_HEAP;
    h->free[h->nfree++] = slot;
    if (pos == h->nheap)
        return;
    place(h, pos, last);
    if (pos > 0 && earlier(h, last, h->heap[(pos - 1) / 4]))
        sift_up(h, pos);
    else
        sift_down(h, pos);
}

void tr__timerheap_update(tr__timerheap *h, tr__timer *t) {
    uint32_t pos = t->heap_pos;
    if (pos > 0 && earlier(h, h->heap[pos], h->heap[(pos - 1) / 4]))
        sift_up(h, pos);
    else
        sift_down(h, pos);
}
