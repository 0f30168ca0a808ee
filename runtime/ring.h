/* Internal: a growable FIFO ring of fixed-size elements (single-threaded:
 * owned by one actor). For queues that keep arrival order: a channel's
 * items and takers, a limiter's waiters, a link's held envelopes. */
#ifndef TR_RUNTIME_RING_H
#define TR_RUNTIME_RING_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct tr__ring {
    unsigned char *v;
    uint32_t head, n, cap;
} tr__ring;

/* Appends the element at e (esz bytes); false when out of memory. */
static inline bool tr__ring_push(tr__ring *r, const void *e, size_t esz) {
    if (r->n == r->cap) {
        uint32_t ncap = r->cap ? r->cap * 2 : 16;
        unsigned char *nv = malloc((size_t)ncap * esz);
        if (nv == NULL)
            return false;
        for (uint32_t i = 0; i < r->n; i++)
            memcpy(nv + (size_t)i * esz,
                   r->v + (size_t)((r->head + i) % r->cap) * esz, esz);
        free(r->v);
        r->v = nv;
        r->head = 0;
        r->cap = ncap;
    }
    memcpy(r->v + (size_t)((r->head + r->n++) % r->cap) * esz, e, esz);
    return true;
}

/* The oldest element (r->n > 0), left in place. */
static inline void *tr__ring_front(const tr__ring *r, size_t esz) {
    return r->v + (size_t)r->head * esz;
}

/* Removes the oldest element (r->n > 0) into out (may be NULL). */
static inline void tr__ring_pop(tr__ring *r, void *out, size_t esz) {
    if (out != NULL)
        memcpy(out, tr__ring_front(r, esz), esz);
    r->head = (r->head + 1) % r->cap;
    r->n--;
}

static inline void tr__ring_free(tr__ring *r) {
    free(r->v);
    *r = (tr__ring){0};
}

#endif
