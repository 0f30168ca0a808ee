/* Bounded thread pool for blocking work (asyncio's to_thread). Jobs wait in
 * a bounded FIFO; a full queue refuses (never blocks the caller). Results
 * go out through the reactor's delivery callback type. */
#ifndef TR_RUNTIME_OFFLOAD_H
#define TR_RUNTIME_OFFLOAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "runtime/reactor.h"

/* A job's function, stored type-erased; the runner casts it back. */
typedef void (*tr__job_fn)(void);
/* Runs fn(arg) and returns the message to deliver with `tag` (or NULL when
 * out of memory). */
typedef void *(*tr__wrap_fn)(tr__job_fn fn, void *arg, uint32_t tag);

typedef struct tr__job {
    tr__job_fn fn;
    void *arg;
    uint64_t to;
    uint32_t tag;
} tr__job;

typedef struct tr__offload {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    tr__job *ring;
    unsigned cap, head, len;
    unsigned nthreads;
    pthread_t *threads;
    unsigned started;
    bool stopping;
    tr__deliver_fn deliver;
    tr__wrap_fn wrap;
    tr__free_msg_fn free_msg;
    void *arg;
} tr__offload;

int tr__offload_init(tr__offload *o, unsigned nthreads, unsigned cap,
                     tr__deliver_fn deliver, tr__wrap_fn wrap,
                     tr__free_msg_fn free_msg, void *arg);
/* Threads start lazily on the first submit. */
int tr__offload_submit(tr__offload *o, tr__job_fn fn, void *arg, uint64_t to,
                       uint32_t tag);
/* Lets running jobs finish, drops queued ones, joins the threads. */
void tr__offload_destroy(tr__offload *o);

#endif
