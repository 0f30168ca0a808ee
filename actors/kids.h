/* An actor's children: start order kept (the stop sequence takes the
 * youngest first), O(1) add and remove whatever the order of exits. The
 * root can have millions of children that end in any order; a plain array
 * with memmove made that quadratic. */
#ifndef TR_ACTORS_KIDS_H
#define TR_ACTORS_KIDS_H

#include <stdbool.h>
#include <stdint.h>

#include "troupe/actor.h"

typedef struct tr__kids {
    tr_ref *v;       /* start order; id 0 marks a removed entry */
    uint32_t n, cap; /* entries used (removed ones included), capacity */
    uint32_t live;
    uint32_t *index; /* open addressing: position + 1 in v, 0 = empty */
    uint32_t icap;   /* 0 (no index: small families scan) or a power of 2 */
} tr__kids;

bool tr__kids_add(tr__kids *k, tr_ref r);
/* false if r is not a child */
bool tr__kids_remove(tr__kids *k, tr_ref r);
/* The youngest live child, or TR_REF_NONE. */
tr_ref tr__kids_youngest(tr__kids *k);
static inline uint32_t tr__kids_count(const tr__kids *k) { return k->live; }
void tr__kids_free(tr__kids *k);

#endif
