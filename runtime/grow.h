/* Small helpers shared by the runtime's growable arrays and hash tables. */
#ifndef TR_RUNTIME_GROW_H
#define TR_RUNTIME_GROW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* Makes room for `need` elements of `elem` bytes in *arr (capacity *cap),
 * doubling from `first`. false (and *arr untouched) when out of memory. */
static inline bool tr__grow(void **arr, uint32_t *cap, uint32_t need,
                            size_t elem, uint32_t first) {
    if (need <= *cap)
        return true;
    uint32_t ncap = *cap ? *cap * 2 : first;
    while (ncap < need)
        ncap *= 2;
    void *na = realloc(*arr, (size_t)ncap * elem);
    if (na == NULL)
        return false;
    *arr = na;
    *cap = ncap;
    return true;
}

/* A 64-bit mixer (murmur3's finalizer) reduced to a table mask. */
static inline uint32_t tr__hash64(uint64_t k, uint32_t mask) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (uint32_t)k & mask;
}

#endif
