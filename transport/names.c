/* The per-runtime name registry: tr_name_register / tr_whereis, and the
 * lookups other nodes make (SPAWN with "lookup", link.c). A name whose
 * actor has ended is free again: every lookup checks that the actor is
 * alive (generation-checked refs make that exact) and drops it if not. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "actors/system.h"
#include "runtime/grow.h"
#include "runtime/log.h"
#include "transport/remote.h"
#include "troupe/node.h"

typedef struct name_entry {
    char name[TR__REG_NAME_MAX];
    tr_ref ref;
} name_entry;

typedef struct names {
    pthread_mutex_t lock;
    name_entry *e;
    uint32_t n, cap;
} names;

/* Creating the table once per runtime, from any thread. */
static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

static void names_destroy(void *p) {
    names *t = p;
    pthread_mutex_destroy(&t->lock);
    free(t->e);
    free(t);
}

static names *table(tr_runtime *rt, bool create) {
    pthread_mutex_lock(&create_lock);
    names *t = rt->names;
    if (t == NULL && create) {
        t = calloc(1, sizeof *t);
        if (t != NULL) {
            pthread_mutex_init(&t->lock, NULL);
            rt->names = t;
            rt->names_destroy = names_destroy;
        }
    }
    pthread_mutex_unlock(&create_lock);
    return t;
}

static bool name_ok(const char *name, size_t len) {
    return name != NULL && len > 0 && len < TR__REG_NAME_MAX &&
           memchr(name, 0, len) == NULL;
}

/* Index of name (t locked), dropping it if its actor is dead; -1. */
static int find(tr_runtime *rt, names *t, const char *name, size_t len) {
    for (uint32_t i = 0; i < t->n; i++) {
        if (strlen(t->e[i].name) != len || memcmp(t->e[i].name, name, len))
            continue;
        if (tr_actor_alive(rt, t->e[i].ref))
            return (int)i;
        t->e[i] = t->e[--t->n];
        return -1;
    }
    return -1;
}

TR_API int tr_name_register(tr_runtime *rt, const char *name, tr_ref ref) {
    if (rt == NULL || name == NULL || !name_ok(name, strlen(name)))
        return TR_EINVAL;
    if (!tr_actor_alive(rt, ref))
        return TR_ENOACTOR;
    names *t = table(rt, true);
    if (t == NULL)
        return TR_ENOMEM;
    int rc = 0;
    size_t len = strlen(name);
    pthread_mutex_lock(&t->lock);
    if (find(rt, t, name, len) >= 0)
        rc = TR_EEXIST;
    else if (t->n == t->cap &&
             !tr__grow((void **)&t->e, &t->cap, t->n + 1, sizeof *t->e, 8))
        rc = TR_ENOMEM;
    else {
        memcpy(t->e[t->n].name, name, len + 1);
        t->e[t->n++].ref = ref;
    }
    pthread_mutex_unlock(&t->lock);
    return rc;
}

TR_API int tr_name_unregister(tr_runtime *rt, const char *name) {
    if (rt == NULL || name == NULL || !name_ok(name, strlen(name)))
        return TR_EINVAL;
    names *t = table(rt, false);
    if (t == NULL)
        return TR_ENOTFOUND;
    pthread_mutex_lock(&t->lock);
    int i = find(rt, t, name, strlen(name));
    if (i >= 0)
        t->e[i] = t->e[--t->n];
    pthread_mutex_unlock(&t->lock);
    return i >= 0 ? 0 : TR_ENOTFOUND;
}

int tr__names_find(tr_runtime *rt, const char *name, size_t len,
                   tr_ref *out) {
    if (rt == NULL || !name_ok(name, len) || out == NULL)
        return TR_EINVAL;
    names *t = table(rt, false);
    if (t == NULL)
        return TR_ENOTFOUND;
    pthread_mutex_lock(&t->lock);
    int i = find(rt, t, name, len);
    if (i >= 0)
        *out = t->e[i].ref;
    pthread_mutex_unlock(&t->lock);
    return i >= 0 ? 0 : TR_ENOTFOUND;
}

TR_API int tr_whereis(tr_runtime *rt, const char *name, tr_ref *out) {
    if (name == NULL)
        return TR_EINVAL;
    return tr__names_find(rt, name, strlen(name), out);
}
