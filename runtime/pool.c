/* Design notes
 * ------------
 * Blocks come from malloc one by one and are cached, never carved from
 * slabs: a block can always go back to the system, so the pool trims to
 * nothing (valgrind-clean) and a burst (10^7 queued messages) does not pin
 * memory forever: the depot keeps at most DEPOT_MAX magazines, more are
 * freed.
 * Per thread: magazines `a` (current) and `b` (spare), singly linked
 * through the block's first word. Invariant: 0 <= na, nb <= TR__MAG and
 * b is either empty or full.
 * A pthread key destructor flushes a thread's cache when it exits; the
 * process destructor frees the depot and the main thread's cache. */
#include "runtime/pool.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct block {
    struct block *next;
} block;

typedef struct cache {
    block *a, *b;
    unsigned na, nb;
    int registered;
} cache;

#define DEPOT_MAX 1024

static struct {
    pthread_mutex_t lock;
    block *mags[DEPOT_MAX];
    unsigned n;
    pthread_key_t key;
    pthread_once_t once;
} depot = {PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0, PTHREAD_ONCE_INIT};

static __thread cache tcache __attribute__((tls_model("initial-exec")));

static void free_list(block *b) {
    while (b != NULL) {
        block *n = b->next;
        free(b);
        b = n;
    }
}

/* Gives a full magazine to the depot or, if the depot is full, to free(). */
static void depot_put(block *mag) {
    pthread_mutex_lock(&depot.lock);
    if (depot.n < DEPOT_MAX) {
        depot.mags[depot.n++] = mag;
        mag = NULL;
    }
    pthread_mutex_unlock(&depot.lock);
    free_list(mag);
}

static block *depot_get(void) {
    block *mag = NULL;
    pthread_mutex_lock(&depot.lock);
    if (depot.n > 0)
        mag = depot.mags[--depot.n];
    pthread_mutex_unlock(&depot.lock);
    return mag;
}

static void flush_cache(cache *c) {
    /* Only full magazines go to the depot; partial ones are freed. */
    if (c->na == TR__MAG)
        depot_put(c->a);
    else
        free_list(c->a);
    if (c->nb == TR__MAG)
        depot_put(c->b);
    else
        free_list(c->b);
    c->a = c->b = NULL;
    c->na = c->nb = 0;
}

static void thread_exit(void *arg) {
    (void)arg;
    flush_cache(&tcache);
}

static void make_key(void) { pthread_key_create(&depot.key, thread_exit); }

static void register_thread(cache *c) {
    pthread_once(&depot.once, make_key);
    /* Any non-NULL value makes the destructor run at thread exit. */
    pthread_setspecific(depot.key, c);
    c->registered = 1;
}

void *tr__block_alloc(void) {
    cache *c = &tcache;
    if (__builtin_expect(!c->registered, 0))
        register_thread(c);
    if (c->na == 0) {
        if (c->nb == TR__MAG) {
            c->a = c->b;
            c->na = TR__MAG;
            c->b = NULL;
            c->nb = 0;
        } else {
            block *mag = depot_get();
            if (mag == NULL)
                return malloc(TR__BLOCK_SIZE);
            c->a = mag;
            c->na = TR__MAG;
        }
    }
    block *b = c->a;
    c->a = b->next;
    c->na--;
    return b;
}

void tr__block_free(void *p) {
    cache *c = &tcache;
    block *b = p;
    /* Every caching thread registers, so its exit flushes the cache. */
    if (__builtin_expect(!c->registered, 0))
        register_thread(c);
    if (c->na == TR__MAG) {
        if (c->nb == TR__MAG)
            depot_put(c->b);
        c->b = c->a;
        c->nb = TR__MAG;
        c->a = NULL;
        c->na = 0;
    }
    b->next = c->a;
    c->a = b;
    c->na++;
}

void tr__pool_thread_flush(void) { flush_cache(&tcache); }

void tr__pool_trim(void) {
    pthread_mutex_lock(&depot.lock);
    unsigned n = depot.n;
    block *mags[DEPOT_MAX];
    for (unsigned i = 0; i < n; i++)
        mags[i] = depot.mags[i];
    depot.n = 0;
    pthread_mutex_unlock(&depot.lock);
    for (unsigned i = 0; i < n; i++)
        free_list(mags[i]);
}

__attribute__((destructor)) static void pool_at_exit(void) {
    flush_cache(&tcache);
    tr__pool_trim();
}
