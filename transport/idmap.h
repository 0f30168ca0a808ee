/* Internal: a small open-addressing map from actor id (u64, never 0 or
 * UINT64_MAX) to u64, for the transport's per-peer tables. Single-threaded
 * (owned by the link actor). */
#ifndef TR_TRANSPORT_IDMAP_H
#define TR_TRANSPORT_IDMAP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "runtime/grow.h"

#define TR__IDMAP_EMPTY 0u
#define TR__IDMAP_GONE UINT64_MAX

typedef struct tr__idmap {
    uint64_t *keys, *vals;
    uint32_t cap, used; /* used counts tombstones too */
} tr__idmap;

static inline bool tr__idmap_rehash(tr__idmap *m, uint32_t ncap) {
    uint64_t *k = calloc(ncap, sizeof *k), *v = calloc(ncap, sizeof *v);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return false;
    }
    uint32_t used = 0;
    for (uint32_t i = 0; i < m->cap; i++) {
        uint64_t key = m->keys[i];
        if (key == TR__IDMAP_EMPTY || key == TR__IDMAP_GONE)
            continue;
        uint32_t j = tr__hash64(key, ncap - 1);
        while (k[j] != TR__IDMAP_EMPTY)
            j = (j + 1) & (ncap - 1);
        k[j] = key;
        v[j] = m->vals[i];
        used++;
    }
    free(m->keys);
    free(m->vals);
    m->keys = k;
    m->vals = v;
    m->cap = ncap;
    m->used = used;
    return true;
}

static inline bool tr__idmap_put(tr__idmap *m, uint64_t key, uint64_t val) {
    if ((m->used + 1) * 2 > m->cap &&
        !tr__idmap_rehash(m, m->cap ? m->cap * 2 : 64))
        return false;
    uint32_t mask = m->cap - 1, i = tr__hash64(key, mask), slot = UINT32_MAX;
    for (; m->keys[i] != TR__IDMAP_EMPTY; i = (i + 1) & mask) {
        if (m->keys[i] == key) {
            m->vals[i] = val;
            return true;
        }
        if (m->keys[i] == TR__IDMAP_GONE && slot == UINT32_MAX)
            slot = i;
    }
    if (slot == UINT32_MAX) {
        slot = i;
        m->used++;
    }
    m->keys[slot] = key;
    m->vals[slot] = val;
    return true;
}

/* Index of key or UINT32_MAX. */
static inline uint32_t tr__idmap_find(const tr__idmap *m, uint64_t key) {
    if (m->cap == 0)
        return UINT32_MAX;
    uint32_t mask = m->cap - 1;
    for (uint32_t i = tr__hash64(key, mask); m->keys[i] != TR__IDMAP_EMPTY;
         i = (i + 1) & mask)
        if (m->keys[i] == key)
            return i;
    return UINT32_MAX;
}

static inline bool tr__idmap_get(const tr__idmap *m, uint64_t key,
                                 uint64_t *val) {
    uint32_t i = tr__idmap_find(m, key);
    if (i == UINT32_MAX)
        return false;
    *val = m->vals[i];
    return true;
}

static inline bool tr__idmap_del(tr__idmap *m, uint64_t key, uint64_t *val) {
    uint32_t i = tr__idmap_find(m, key);
    if (i == UINT32_MAX)
        return false;
    if (val != NULL)
        *val = m->vals[i];
    m->keys[i] = TR__IDMAP_GONE;
    return true;
}

static inline void tr__idmap_free(tr__idmap *m) {
    free(m->keys);
    free(m->vals);
    m->keys = m->vals = NULL;
    m->cap = m->used = 0;
}

#endif
