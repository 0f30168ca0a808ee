/* Inboxes: an actor slot whose messages are handed to a non-actor thread.
 *
 * The slot's worker moves each message into a fresh node (the handled node
 * must stay behind as the mailbox stub) and appends it to a mutex-protected
 * list the owner thread waits on. The inbox is shared by the slot and its
 * owner and freed when both let go: the owner in tr_inbox_destroy, the
 * slot at runtime shutdown. After destroy the slot is marked dead, so new
 * sends fail with TR_ENOACTOR and racing ones are dropped. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actors/system.h"
#include "runtime/log.h"
#include "troupe/inbox.h"

struct tr_inbox {
    tr_runtime *rt;
    tr_ref ref;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    tr_msg *head, *tail; /* linked through node.next (under lock) */
    int refs;
    bool closed;
};

static int inbox_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)ctx;
    (void)state;
    (void)msg;
    return 0; /* never called: the run loop delivers to the inbox */
}

const tr_behavior tr__inbox_behavior = {.name = "inbox",
                                        .handle = inbox_handle};

static void free_list(tr_msg *m) {
    while (m != NULL) {
        tr_msg *n =
            (tr_msg *)atomic_load_explicit(&m->node.next, memory_order_relaxed);
        tr__msg_free(m);
        m = n;
    }
}

void tr__inbox_deliver(struct tr_inbox *ib, tr_msg *m) {
    tr_msg *copy = tr__msg_alloc(m->tag, (tr_payload_kind)m->kind);
    if (copy == NULL) {
        tr__log(TR_LOG_ERROR, "inbox: out of memory, message dropped");
        tr__msg_release_payload(m);
        return;
    }
    /* Move header and payload; m keeps nothing to release. */
    copy->flags = m->flags & (uint16_t)~TR__F_START;
    copy->len = m->len;
    copy->sender = m->sender;
    copy->req_id = m->req_id;
    memcpy(&copy->u, &m->u, sizeof copy->u);
    m->kind = TR_PAYLOAD_NONE;
    atomic_store_explicit(&copy->node.next, NULL, memory_order_relaxed);
    pthread_mutex_lock(&ib->lock);
    if (ib->closed) {
        pthread_mutex_unlock(&ib->lock);
        tr__msg_free(copy);
        return;
    }
    if (ib->tail != NULL)
        atomic_store_explicit(&ib->tail->node.next, &copy->node,
                              memory_order_relaxed);
    else
        ib->head = copy;
    ib->tail = copy;
    pthread_cond_signal(&ib->cond);
    pthread_mutex_unlock(&ib->lock);
}

static void unref(struct tr_inbox *ib) {
    pthread_mutex_lock(&ib->lock);
    int left = --ib->refs;
    pthread_mutex_unlock(&ib->lock);
    if (left > 0)
        return;
    free_list(ib->head);
    pthread_cond_destroy(&ib->cond);
    pthread_mutex_destroy(&ib->lock);
    free(ib);
}

void tr__inbox_release(struct tr_inbox *ib) { unref(ib); }

TR_API int tr_inbox_create(tr_runtime *rt, tr_inbox **out) {
    if (rt == NULL || out == NULL)
        return TR_EINVAL;
    tr_inbox *ib = calloc(1, sizeof *ib);
    if (ib == NULL)
        return TR_ENOMEM;
    ib->rt = rt;
    ib->refs = 2;
    pthread_mutex_init(&ib->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ib->cond, &ca);
    pthread_condattr_destroy(&ca);
    int rc = tr__spawn(rt, NULL, &tr__inbox_behavior, NULL, 0, &ib->ref, ib,
                       TR_REF_NONE);
    if (rc != 0) {
        pthread_cond_destroy(&ib->cond);
        pthread_mutex_destroy(&ib->lock);
        free(ib);
        return rc;
    }
    *out = ib;
    return 0;
}

TR_API tr_ref tr_inbox_ref(const tr_inbox *ib) {
    return ib != NULL ? ib->ref : TR_REF_NONE;
}

TR_API int tr_inbox_recv(tr_inbox *ib, int64_t timeout_ms, tr_msg **out) {
    if (ib == NULL || out == NULL || timeout_ms < -1)
        return TR_EINVAL;
    if (tr__sched_current() != NULL)
        return TR_ESTATE;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ms > 0) {
        deadline.tv_sec += (time_t)(timeout_ms / 1000);
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&ib->lock);
    while (ib->head == NULL) {
        if (timeout_ms == 0)
            break;
        if (timeout_ms < 0) {
            pthread_cond_wait(&ib->cond, &ib->lock);
        } else if (pthread_cond_timedwait(&ib->cond, &ib->lock, &deadline) ==
                   ETIMEDOUT) {
            break;
        }
    }
    tr_msg *m = ib->head;
    if (m != NULL) {
        ib->head =
            (tr_msg *)atomic_load_explicit(&m->node.next, memory_order_relaxed);
        if (ib->head == NULL)
            ib->tail = NULL;
    }
    pthread_mutex_unlock(&ib->lock);
    if (m == NULL)
        return TR_ETIMEDOUT;
    *out = m;
    return 0;
}

TR_API void tr_inbox_destroy(tr_inbox **pib) {
    if (pib == NULL || *pib == NULL)
        return;
    tr_inbox *ib = *pib;
    *pib = NULL;
    /* Ask the slot's worker to let go of the inbox and free the slot
     * (if the runtime no longer runs, its shutdown does that); then new
     * sends to the inbox's ref fail with TR_ENOACTOR at once. Messages
     * that raced in are dropped by the closed inbox. */
    (void)tr__send_sys(ib->rt, NULL, TR_REF_NONE, ib->ref, TR__SYS_KILL, 0,
                       NULL);
    tr__actor *a = tr__slot_lookup(ib->rt, ib->ref.id);
    if (a != NULL) {
        uint32_t cur = atomic_load_explicit(&a->live_gen, memory_order_relaxed);
        /* Only our incarnation: the worker may already have freed and
         * reused the slot. */
        while ((cur & TR__GEN_MASK) == (uint32_t)(ib->ref.id >> 32) &&
               !(cur & TR__GEN_DEAD) &&
               !atomic_compare_exchange_weak_explicit(
                   &a->live_gen, &cur, cur | TR__GEN_DEAD, memory_order_release,
                   memory_order_relaxed)) {
        }
    }
    pthread_mutex_lock(&ib->lock);
    ib->closed = true;
    tr_msg *queued = ib->head;
    ib->head = ib->tail = NULL;
    pthread_mutex_unlock(&ib->lock);
    free_list(queued);
    unref(ib);
}
