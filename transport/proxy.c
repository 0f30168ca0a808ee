/* Design notes
 * ------------
 * Location transparency by proxies: a reference to an actor in another
 * process is the reference of a local proxy actor. Whatever reaches the
 * proxy is moved (payload not copied) into a tr__fwd and handed to the
 * link actor, the only user of the ZeroMQ socket, which encodes and
 * batches it. Because the proxy is an ordinary actor, monitors, links,
 * cancellation and supervision apply to it unchanged; it ends when the
 * remote actor ends (TR__PT_REMOTE_DOWN) or the process is lost.
 *
 * Until the remote actor exists (its SPAWN_REPLY), messages wait in the
 * proxy in order. Also here: the process-wide behaviour registry.
 *
 * Every request that reaches a proxy gets one outcome from the transport
 * (a reply, a failure, or for an idempotent behaviour a resend), however
 * the proxy ends. Requests waiting in it are failed back when it gives up
 * or is stopped. A request in flight when its process dies comes back
 * from the link (TR__PT_RETRY) to be resent, and may come back after the
 * proxy has learnt of the loss: one the proxy sent to the dead actor
 * before its REMOTE_DOWN arrived is bounced by the link behind that
 * REMOTE_DOWN. If the proxy gives up there, it ends with such retries
 * still in its mailbox; they are failed back by the message itself (its
 * destructor, retry_box), since no one else knows they were never taken.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/log.h"
#include "transport/proxy.h"
#include "transport/remote.h"
#include "troupe/lifecycle.h"

/* ---- registry ---- */

#define REG_MAX 256

static struct {
    pthread_mutex_t lock;
    char names[REG_MAX][TR__REG_NAME_MAX];
    const tr_behavior *behs[REG_MAX];
    unsigned flags[REG_MAX];
    unsigned n;
} reg = {PTHREAD_MUTEX_INITIALIZER, {{0}}, {0}, {0}, 0};

TR_API int tr_register(const char *name, const tr_behavior *beh) {
    return tr_register_flags(name, beh, 0);
}

TR_API int tr_register_flags(const char *name, const tr_behavior *beh,
                             unsigned flags) {
    if (name == NULL || beh == NULL || beh->handle == NULL ||
        (flags & ~TR_REG_IDEMPOTENT) != 0)
        return TR_EINVAL;
    size_t len = strlen(name);
    if (len == 0 || len >= TR__REG_NAME_MAX)
        return TR_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&reg.lock);
    unsigned i = 0;
    while (i < reg.n && strcmp(reg.names[i], name) != 0)
        i++;
    if (i < reg.n)
        rc = reg.behs[i] == beh && reg.flags[i] == flags ? 0 : TR_ESTATE;
    else if (reg.n == REG_MAX)
        rc = TR_ENOMEM;
    else {
        memcpy(reg.names[reg.n], name, len + 1);
        reg.flags[reg.n] = flags;
        reg.behs[reg.n++] = beh;
    }
    pthread_mutex_unlock(&reg.lock);
    return rc;
}

const tr_behavior *tr__registry_find(const char *name, size_t len) {
    const tr_behavior *beh = NULL;
    pthread_mutex_lock(&reg.lock);
    for (unsigned i = 0; i < reg.n && beh == NULL; i++)
        if (strlen(reg.names[i]) == len && memcmp(reg.names[i], name, len) == 0)
            beh = reg.behs[i];
    pthread_mutex_unlock(&reg.lock);
    return beh;
}

unsigned tr__registry_flags(const char *name) {
    unsigned flags = 0;
    pthread_mutex_lock(&reg.lock);
    for (unsigned i = 0; i < reg.n; i++)
        if (strcmp(reg.names[i], name) == 0)
            flags = reg.flags[i];
    pthread_mutex_unlock(&reg.lock);
    return flags;
}

/* ---- forwarding ---- */

/* A copy of a payload message (U64 / BYTES / MSGPACK). */
static tr_msg *payload_copy(const tr_msg *m) {
    size_t len = 0;
    switch (m->kind) {
    case TR_PAYLOAD_U64:
        return tr_msg_new_u64(m->tag, tr_msg_u64(m));
    case TR_PAYLOAD_BYTES: {
        const void *d = tr_msg_data(m, &len);
        return tr_msg_new_bytes(m->tag, d, len);
    }
    case TR_PAYLOAD_MSGPACK: {
        const void *d = tr_msg_data(m, &len);
        return tr_msg_new_msgpack(m->tag, d, len);
    }
    default:
        return NULL;
    }
}

tr__fwd *tr__fwd_clone(const tr__fwd *f) {
    tr__fwd *c = malloc(sizeof *c);
    if (c == NULL)
        return NULL;
    *c = *f;
    c->payload = NULL;
    if (f->payload != NULL && (c->payload = payload_copy(f->payload)) == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

void tr__fwd_free(void *p) {
    tr__fwd *f = p;
    if (f == NULL)
        return;
    if (f->payload != NULL)
        tr__msg_free(f->payload);
    free(f);
}

/* Moves m's payload into a fresh message (m keeps nothing to release). */
static tr_msg *take_payload(tr_msg *m) {
    return m->kind == TR_PAYLOAD_NONE ? NULL : tr__msg_move(m);
}

tr__fwd *tr__fwd_from_msg(tr_msg *m, uint32_t peer, uint64_t target) {
    tr__fwd *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->peer = peer;
    f->target = target;
    f->sender = m->sender.id;
    f->tag = m->tag;
    if (m->flags & TR__F_REPLY) {
        f->kind = TR__K_REPLY;
        f->req_id = m->req_id;
    } else if (m->flags & TR__F_REQUEST) {
        f->kind = TR__K_REQUEST;
        f->req_id = m->req_id;
        f->aux = -1;
    } else {
        f->kind = TR__K_SEND;
    }
    f->payload = take_payload(m);
    return f;
}

int tr__fwd_send(tr_ctx *ctx, tr_runtime *rt, tr_ref link, tr__fwd *f) {
    tr_msg *m = tr_msg_new_ptr(TR__LT_FWD, f, sizeof *f, tr__fwd_free);
    if (m == NULL) {
        tr__fwd_free(f);
        return TR_ENOMEM;
    }
    /* A user's send or request: its proxy is muted while the link is
     * behind, as for any user message (a cancel or a spawn is not). */
    if (f->kind == TR__K_SEND || f->kind == TR__K_REQUEST)
        m->flags |= TR__F_DATA;
    int rc =
        ctx != NULL ? tr_send(ctx, link, &m) : tr_runtime_send(rt, link, &m);
    if (rc != 0)
        tr_msg_destroy(&m);
    return rc;
}

void tr__remote_fail(tr_runtime *rt, tr_ctx *ctx, uint64_t requester,
                     uint64_t req_id, int err) {
    tr__reply_failure(rt, ctx, (tr_ref){requester}, req_id,
                      TR_TAG_REMOTE_FAILED, err);
}

/* A request on its way back to its proxy (TR__PT_RETRY). Until the proxy
 * takes it, the box owns the duty to answer it: the link cannot know
 * whether the proxy will still be there to read its mailbox (it may give
 * up or be stopped with retries queued behind), so a box dropped unread
 * fails its request back from its destructor. The one place that knows
 * the request was not taken is the only one that can answer it exactly
 * once. */
typedef struct retry_box {
    tr_runtime *rt;
    tr__fwd *f;
} retry_box;

static void retry_box_drop(void *p) {
    retry_box *b = p;
    /* ctx NULL: a destructor runs wherever the message is dropped (a dead
     * letter on a worker, the link whose send was refused, shutdown, when
     * sends are refused and nobody waits any more). */
    tr__remote_fail(b->rt, NULL, b->f->sender, b->f->req_id, TR_ELOST);
    tr__fwd_free(b->f);
    free(b);
}

tr_msg *tr__retry_msg_new(tr_runtime *rt, tr__fwd *f) {
    retry_box *b = malloc(sizeof *b);
    if (b == NULL)
        return NULL;
    b->rt = rt;
    b->f = f;
    tr_msg *m = tr_msg_new_ptr(TR__PT_RETRY, b, sizeof *b, retry_box_drop);
    if (m == NULL)
        free(b);
    return m;
}

tr__fwd *tr__retry_msg_take(tr_msg *m) {
    void *p = NULL;
    if (tr_msg_take_ptr(m, &p) != 0)
        return NULL;
    retry_box *b = p;
    tr__fwd *f = b->f;
    free(b);
    return f;
}

tr_msg *tr__msg_from_env(const tr__env *env) {
    tr_msg *m;
    switch (env->pkind) {
    case TR_PAYLOAD_U64:
        m = tr_msg_new_u64(env->tag, env->u64);
        break;
    case TR_PAYLOAD_BYTES:
        m = tr_msg_new_bytes(env->tag, env->data, env->len);
        break;
    case TR_PAYLOAD_MSGPACK:
        m = tr_msg_new_msgpack(env->tag, env->data, env->len);
        break;
    default:
        m = tr_msg_new(env->tag);
        break;
    }
    return m;
}

/* ---- the proxy actor ---- */

/* Empties the queue of what waits for the spawn. With ctx, its requests
 * are failed back first (err: TR_TAG_REMOTE_FAILED); sends are at most
 * once and just dropped. Without ctx (runtime shutdown) nobody waits. */
static void proxy_queue_drop(tr_ctx *ctx, tr__proxy *p, int err) {
    for (uint32_t i = 0; i < p->nq; i++) {
        tr__fwd *f = p->q[i];
        if (ctx != NULL && f->kind == TR__K_REQUEST)
            tr__remote_fail(tr_ctx_runtime(ctx), ctx, f->sender, f->req_id,
                            err);
        tr__fwd_free(f);
    }
    free(p->q);
    p->q = NULL;
    p->nq = p->capq = 0;
}

static int queue_fwd(tr__proxy *p, tr__fwd *f) {
    if (p->nq == p->capq) {
        uint32_t ncap = p->capq ? p->capq * 2 : 8;
        tr__fwd **nq = realloc(p->q, ncap * sizeof *nq);
        if (nq == NULL)
            return TR_ENOMEM;
        p->q = nq;
        p->capq = ncap;
    }
    p->q[p->nq++] = f;
    return 0;
}

static int proxy_forward(tr_ctx *ctx, tr__proxy *p, tr__fwd *f) {
    if (f->payload != NULL && f->payload->kind == TR_PAYLOAD_PTR) {
        tr__log(TR_LOG_WARN,
                "proxy: a pointer payload cannot cross to "
                "another process; message (tag 0x%x) dropped",
                f->tag);
        tr__fwd_free(f);
        return 0;
    }
    if (p->remote == 0) { /* not spawned yet: keep the order */
        int rc = queue_fwd(p, f);
        if (rc != 0)
            tr__fwd_free(f);
        /* A process takes a while to start: its senders wait (muted)
         * rather than pile messages up here. */
        if (p->nq >= TR__PROXY_QUEUE_MAX && !p->self_held &&
            tr__overload_set(tr_ctx_runtime(ctx), ctx, tr_self(ctx), true) ==
                0)
            p->self_held = true;
        return rc;
    }
    f->target = p->remote;
    f->gen = p->gen;
    f->proxy = tr_self(ctx).id; /* flagged overloaded if its flow is full */
    f->retry = p->respawn != NULL && f->kind == TR__K_REQUEST;
    return tr__fwd_send(ctx, NULL, p->link, f);
}

/* Its actor's process was lost, and the behaviour is idempotent: spawn it
 * again (same name and init, same worker slot: the link restarts the
 * process) and keep what comes meanwhile. false: give up. */
static bool respawn(tr_ctx *ctx, tr__proxy *p) {
    int64_t now = tr_now_ms();
    p->streak = now - p->last_loss_ms < 1000 ? p->streak + 1 : 1;
    p->last_loss_ms = now;
    if (p->streak >= 5) {
        tr__log(TR_LOG_WARN,
                "proxy: its actor was lost %u times in a row, less than "
                "a second apart: giving up (requests fail with TR_ELOST)",
                p->streak);
        return false;
    }
    tr__fwd *f = calloc(1, sizeof *f);
    tr_msg *pl = f != NULL ? payload_copy(p->respawn) : NULL;
    if (pl == NULL) {
        free(f);
        return false;
    }
    f->peer = p->peer;
    f->kind = TR__K_SPAWN;
    f->sender = tr_self(ctx).id;
    f->req_id = f->sender;
    f->payload = pl;
    p->remote = 0;
    p->gen = 0;
    return tr__fwd_send(ctx, NULL, p->link, f) == 0;
}

static int proxy_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    tr__proxy *p = state;
    uint32_t tag = tr_msg_tag(msg);
    if (tag == TR__PT_SPAWNED && tr_ref_eq(tr_msg_sender(msg), p->link)) {
        p->remote = tr_msg_u64(msg);
        p->gen = (uint32_t)tr_msg_request_id(msg);
        uint32_t n = p->nq;
        tr__fwd **q = p->q;
        p->q = NULL;
        p->nq = p->capq = 0;
        int rc = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (rc == 0)
                rc = proxy_forward(ctx, p, q[i]);
            else
                tr__fwd_free(q[i]);
        }
        free(q);
        if (p->self_held) {
            p->self_held = false;
            (void)tr__overload_set(tr_ctx_runtime(ctx), ctx, tr_self(ctx),
                                   false);
        }
        if (rc != 0)
            return rc;
        if (p->draining) /* cancelled while it waited: all sent, done */
            return TR_STOP;
        if (p->started_tag != 0) /* a supervisor waits for the start */
            (void)tr_send_tag(ctx, tr_parent(ctx), p->started_tag);
        return 0;
    }
    if (tag == TR__PT_RETRY && tr_ref_eq(tr_msg_sender(msg), p->link)) {
        /* A request that was in flight when the actor's process died:
         * sent again once the actor exists again, in request order. */
        tr__fwd *r = tr__retry_msg_take(msg);
        if (r == NULL)
            return 0;
        /* Sent to the actor we still know (same incarnation): that one
         * is lost and its REMOTE_DOWN follows, so it waits here for the
         * respawn (or is failed back if we give up), rather than going
         * to the dead actor and bouncing back once more. */
        if (p->remote != 0 && r->gen != p->gen) /* the new actor exists */
            return proxy_forward(ctx, p, r);
        uint32_t i = p->nq;
        while (i > 0 && p->q[i - 1]->kind == TR__K_REQUEST &&
               p->q[i - 1]->sender == r->sender &&
               p->q[i - 1]->req_id > r->req_id)
            i--;
        if (queue_fwd(p, r) != 0) {
            tr__remote_fail(tr_ctx_runtime(ctx), ctx, r->sender, r->req_id,
                            TR_ENOMEM);
            tr__fwd_free(r);
            return TR_ENOMEM;
        }
        memmove(&p->q[i + 1], &p->q[i], (p->nq - 1 - i) * sizeof *p->q);
        p->q[i] = r;
        return 0;
    }
    if (tag == TR__PT_REMOTE_DOWN && tr_ref_eq(tr_msg_sender(msg), p->link)) {
        int reason = (int)(int64_t)tr_msg_u64(msg);
        if (reason == TR_ELOST && p->respawn != NULL && respawn(ctx, p))
            return 0;
        p->remote_gone = true;
        /* Requests still waiting here for the spawn (or a respawn, with
         * the retried ones): failed back. */
        proxy_queue_drop(ctx, p, reason < 0 ? reason : TR_ELOST);
        if (reason < 0)
            return reason;
        if (reason == TR_EXIT_NORMAL)
            return TR_STOP;
        /* End with the remote actor's reason (cancelled, killed...). */
        return tr_cancel(tr_ctx_runtime(ctx), tr_self(ctx), reason, 0);
    }
    if (tag == TR__TAG_REQ_CANCEL) {
        /* The requester gave up (its timeout, or it ended): the other
         * side drops the request if it has not started it, and a handler
         * running it sees tr_request_cancelled. */
        tr__fwd *c = calloc(1, sizeof *c);
        if (c == NULL)
            return TR_ENOMEM;
        c->peer = p->peer;
        c->kind = TR__K_CANCEL;
        c->sender = tr_msg_sender(msg).id;
        c->req_id = tr_msg_request_id(msg);
        c->aux = TR_EXIT_CANCELLED;
        return proxy_forward(ctx, p, c);
    }
    tr__fwd *f = tr__fwd_from_msg(msg, p->peer, p->remote);
    if (f == NULL)
        return TR_ENOMEM;
    return proxy_forward(ctx, p, f);
}

/* Cancelled (most often: its parent, the actor that spawned or looked up
 * the remote actor, ends) while messages wait for the spawn's answer:
 * they were sent while their sender lived, so they go out first, as a
 * local actor's messages would be in their receiver's mailbox already.
 * It stops once the answer came (SPAWNED: sent; REMOTE_DOWN: failed), or
 * when its grace runs out. */
static int proxy_cancel(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)reason;
    tr__proxy *p = state;
    if (p->remote != 0 || p->remote_gone || p->nq == 0)
        return 0;
    p->draining = true;
    return TR_DRAIN;
}

static void proxy_stop(tr_ctx *ctx, void *state, int reason) {
    tr__proxy *p = state;
    /* Stopped with requests still waiting for a spawn or a respawn (its
     * grace ran out before the answer came, see proxy_cancel; killed; a
     * failure): they will never be sent. */
    proxy_queue_drop(ctx, p, TR_ELOST);
    if (p->respawn != NULL)
        tr__msg_free(p->respawn);
    p->respawn = NULL;
    if (!p->owns || p->remote_gone || p->remote == 0 || ctx == NULL)
        return;
    /* The proxy ends first (its parent stops, it is cancelled): the remote
     * actor ends too, with the same reason (killed when it was killed). */
    tr__fwd *f = calloc(1, sizeof *f);
    if (f == NULL)
        return;
    f->peer = p->peer;
    f->gen = p->gen;
    f->kind = TR__K_CANCEL;
    f->target = p->remote;
    f->aux = reason;
    if (reason == TR_EXIT_KILLED)
        f->flags = TR__ENV_F_KILL;
    (void)tr__fwd_send(NULL, tr_ctx_runtime(ctx), p->link, f);
}

const tr_behavior tr__proxy_behavior = {.name = "troupe.proxy",
                                        .handle = proxy_handle,
                                        .on_stop = proxy_stop,
                                        .on_cancel = proxy_cancel,
                                        .state_size = sizeof(tr__proxy),
                                        .grace_ms = 1000};
