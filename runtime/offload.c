/* Design notes
 * ------------
 * A fixed set of threads (started on first use) takes jobs from a bounded
 * ring under one mutex + condvar. The ring bound is the backpressure: a
 * submit that finds it full returns TR_EAGAIN at once, because the caller
 * may be a scheduler thread that must never block. Results are delivered
 * as messages; a result whose receiver died is freed. */
#include "runtime/offload.h"

#include <stdlib.h>
#include <string.h>

#include "runtime/log.h"
#include "runtime/platform.h"
#include "troupe/error.h"

int tr__offload_init(tr__offload *o, unsigned nthreads, unsigned cap,
                     tr__deliver_fn deliver, tr__wrap_fn wrap,
                     tr__free_msg_fn free_msg, void *arg) {
    memset(o, 0, sizeof *o);
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->cond, NULL);
    o->cap = cap;
    o->nthreads = nthreads;
    o->deliver = deliver;
    o->wrap = wrap;
    o->free_msg = free_msg;
    o->arg = arg;
    o->ring = calloc(cap, sizeof *o->ring);
    o->threads = calloc(nthreads, sizeof *o->threads);
    return (o->ring != NULL && o->threads != NULL) ? 0 : TR_ENOMEM;
}

static void *offload_main(void *arg) {
    tr__offload *o = arg;
    tr__thread_name("troupe-offload");
    pthread_mutex_lock(&o->lock);
    for (;;) {
        while (o->len == 0 && !o->stopping)
            pthread_cond_wait(&o->cond, &o->lock);
        if (o->stopping)
            break;
        tr__job job = o->ring[o->head];
        o->head = (o->head + 1) % o->cap;
        o->len--;
        pthread_mutex_unlock(&o->lock);
        void *msg = o->wrap(job.fn, job.arg, job.tag);
        if (msg != NULL && o->deliver(o->arg, job.to, msg) != 0)
            o->free_msg(msg);
        else if (msg == NULL)
            tr__log(TR_LOG_ERROR, "offload: out of memory for a result");
        pthread_mutex_lock(&o->lock);
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

int tr__offload_submit(tr__offload *o, tr__job_fn fn, void *arg, uint64_t to,
                       uint32_t tag) {
    pthread_mutex_lock(&o->lock);
    if (o->stopping) {
        pthread_mutex_unlock(&o->lock);
        return TR_ESTOPPED;
    }
    if (o->len == o->cap) {
        pthread_mutex_unlock(&o->lock);
        return TR_EAGAIN;
    }
    /* Start a thread per job until the pool is full. */
    if (o->started < o->nthreads && o->started <= o->len) {
        if (pthread_create(&o->threads[o->started], NULL, offload_main, o) == 0)
            o->started++;
        else if (o->started == 0) {
            pthread_mutex_unlock(&o->lock);
            tr__log(TR_LOG_ERROR, "offload: pthread_create failed");
            return TR_ESYS;
        }
    }
    o->ring[(o->head + o->len) % o->cap] = (tr__job){fn, arg, to, tag};
    o->len++;
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->lock);
    return 0;
}

void tr__offload_destroy(tr__offload *o) {
    pthread_mutex_lock(&o->lock);
    o->stopping = true;
    if (o->len > 0)
        tr__log(TR_LOG_INFO, "offload: %u queued jobs dropped at shutdown",
                o->len);
    o->len = 0;
    pthread_cond_broadcast(&o->cond);
    pthread_mutex_unlock(&o->lock);
    for (unsigned i = 0; i < o->started; i++)
        pthread_join(o->threads[i], NULL);
    free(o->ring);
    free(o->threads);
    o->ring = NULL;
    o->threads = NULL;
    pthread_cond_destroy(&o->cond);
    pthread_mutex_destroy(&o->lock);
}
