/* Design notes: entries live in an array in start order; removal leaves a
 * hole (id 0) and the array is compacted when holes outnumber live
 * entries, so iteration in start order stays cheap. Past SMALL entries a
 * linear-probing hash (id -> position) makes removal O(1); deletion uses
 * backward shifting, so the table never needs its own tombstones. */
#include "actors/kids.h"

#include "runtime/grow.h"

#include <stdlib.h>
#include <string.h>

#define SMALL 32

static uint32_t hash(uint64_t id, uint32_t mask) {
    return tr__hash64(id, mask);
}

static void index_put(tr__kids *k, uint64_t id, uint32_t pos) {
    uint32_t mask = k->icap - 1;
    uint32_t i = hash(id, mask);
    while (k->index[i] != 0)
        i = (i + 1) & mask;
    k->index[i] = pos + 1;
}

/* Rebuilds the index for v[0..n) with room for twice the entries. */
static bool index_rebuild(tr__kids *k) {
    uint32_t want = 64;
    while (want < k->n * 2 + 2)
        want *= 2;
    uint32_t *ni = calloc(want, sizeof *ni);
    if (ni == NULL)
        return false;
    free(k->index);
    k->index = ni;
    k->icap = want;
    for (uint32_t p = 0; p < k->n; p++)
        if (k->v[p].id != 0)
            index_put(k, k->v[p].id, p);
    return true;
}

/* Slot of id in the index, or UINT32_MAX. */
static uint32_t index_find(const tr__kids *k, uint64_t id) {
    uint32_t mask = k->icap - 1;
    for (uint32_t i = hash(id, mask);; i = (i + 1) & mask) {
        uint32_t p = k->index[i];
        if (p == 0)
            return UINT32_MAX;
        if (k->v[p - 1].id == id)
            return i;
    }
}

static void index_delete(tr__kids *k, uint32_t i) {
    uint32_t mask = k->icap - 1;
    k->index[i] = 0;
    /* Backward shift: move later members of the probe run into the hole
     * when their home slot is not between the hole and them. */
    for (uint32_t j = (i + 1) & mask; k->index[j] != 0; j = (j + 1) & mask) {
        uint32_t home = hash(k->v[k->index[j] - 1].id, mask);
        bool movable =
            (j > i) ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            k->index[i] = k->index[j];
            k->index[j] = 0;
            i = j;
        }
    }
}

static void compact(tr__kids *k) {
    uint32_t w = 0;
    for (uint32_t p = 0; p < k->n; p++)
        if (k->v[p].id != 0)
            k->v[w++] = k->v[p];
    k->n = w;
    if (k->index != NULL && !index_rebuild(k)) {
        free(k->index);
        k->index = NULL;
        k->icap = 0;
    }
}

bool tr__kids_add(tr__kids *k, tr_ref r) {
    if (k->n == k->cap) {
        if (k->n - k->live > k->live) {
            compact(k);
        } else {
            uint32_t ncap = k->cap ? k->cap * 2 : 16;
            tr_ref *nv = realloc(k->v, ncap * sizeof *nv);
            if (nv == NULL)
                return false;
            k->v = nv;
            k->cap = ncap;
        }
    }
    uint32_t pos = k->n++;
    k->v[pos] = r;
    k->live++;
    if (k->index == NULL && k->n > SMALL)
        (void)index_rebuild(k); /* without it, removal scans: still right */
    else if (k->index != NULL) {
        if (k->n * 2 + 2 > k->icap)
            (void)index_rebuild(k);
        else
            index_put(k, r.id, pos);
    }
    return true;
}

bool tr__kids_remove(tr__kids *k, tr_ref r) {
    if (r.id == 0 || k->live == 0)
        return false;
    uint32_t pos = UINT32_MAX;
    if (k->index != NULL) {
        uint32_t i = index_find(k, r.id);
        if (i == UINT32_MAX)
            return false;
        pos = k->index[i] - 1;
        index_delete(k, i);
    } else {
        for (uint32_t p = k->n; p-- > 0;)
            if (k->v[p].id == r.id) {
                pos = p;
                break;
            }
        if (pos == UINT32_MAX)
            return false;
    }
    k->v[pos].id = 0;
    k->live--;
    while (k->n > 0 && k->v[k->n - 1].id == 0)
        k->n--; /* holes at the end cost nothing to drop */
    if (k->n - k->live > SMALL && k->n - k->live > k->live)
        compact(k);
    return true;
}

tr_ref tr__kids_youngest(tr__kids *k) {
    while (k->n > 0 && k->v[k->n - 1].id == 0)
        k->n--;
    return k->n > 0 ? k->v[k->n - 1] : TR_REF_NONE;
}

void tr__kids_free(tr__kids *k) {
    free(k->v);
    free(k->index);
    memset(k, 0, sizeof *k);
}
