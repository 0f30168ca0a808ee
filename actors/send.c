/* Sends, forwarding, request/reply.
 *
 * Request ids are per requester (a counter in the actor's ext), so a reply
 * is matched by (requester, id). The pending table lists the requests that
 * still wait: a reply or timeout whose id is not in it is late and dropped,
 * which is how a late reply can never be taken for another request's.
 *
 * Cancellation travels with a request. When the requester gives up on it
 * (its timeout fires, or the requester starts stopping or ends with it
 * pending) it notes (requester, id) in the runtime's cancelled list and
 * sends SYS_REQ_CANCEL to the target: a local target drops the request if
 * it has not started it (the run loop consumes the note), a proxy passes
 * the word to the worker process that has it, and a handler already
 * working on it can poll tr_request_cancelled (which looks, never
 * consumes: a forwarded copy still queued elsewhere must find the note).
 * The list is bounded (TR__CANCELLED_MAX, the oldest note is forgotten when
 * full: that request runs, as it would have without cancellation); notes
 * of requests already started stay until pushed out. A counting filter
 * (cancel_buckets) lets the check on every request skip the lock when no
 * note can match. */
#include <stdlib.h>
#include <string.h>

#include "actors/system.h"
#include "runtime/log.h"
#include "runtime/platform.h"

void tr__count_refused(tr_runtime *rt, tr_ctx *ctx) {
    if (ctx != NULL && ctx->w != NULL)
        atomic_store_explicit(
            &ctx->st.refused,
            atomic_load_explicit(&ctx->st.refused, memory_order_relaxed) + 1,
            memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&rt->foreign_refused, 1,
                                  memory_order_relaxed);
}

static _Atomic uint64_t dead_send_log_count;

static int send_locked(tr_runtime *rt, tr_ctx *ctx, tr_ref to, tr_msg *m);

/* Sends from threads that are not workers (foreign threads, the reactor,
 * the offload pool) announce themselves in rt->foreign_inflight around the
 * check of `stopping` and the push: shutdown sets `stopping`, then waits
 * for the count to drop to 0 before it drains mailboxes, so no push can
 * land in a mailbox being freed. Workers need no such guard: they are
 * joined before shutdown. seq_cst on both sides: a Dekker pair. */
bool tr__foreign_enter(tr_runtime *rt) {
    atomic_fetch_add_explicit(&rt->foreign_inflight, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&rt->stopping, memory_order_seq_cst)) {
        atomic_fetch_sub_explicit(&rt->foreign_inflight, 1,
                                  memory_order_release);
        return false;
    }
    return true;
}

void tr__foreign_leave(tr_runtime *rt) {
    /* Release: the push is complete before shutdown sees 0. */
    atomic_fetch_sub_explicit(&rt->foreign_inflight, 1, memory_order_release);
}

int tr__send(tr_runtime *rt, tr_ctx *ctx, tr_ref to, tr_msg *m) {
    if (tr__magic(m) != TR__MSG_LIVE)
        return TR_EFREED;
    if (ctx != NULL && ctx->w != NULL)
        return send_locked(rt, ctx, to, m);
    if (!tr__foreign_enter(rt)) {
        tr__count_refused(rt, ctx);
        return TR_ESTOPPED;
    }
    int rc = send_locked(rt, ctx, to, m);
    tr__foreign_leave(rt);
    return rc;
}

static int send_locked(tr_runtime *rt, tr_ctx *ctx, tr_ref to, tr_msg *m) {
    if (atomic_load_explicit(&rt->stopping, memory_order_relaxed) ||
        (ctx != NULL && ctx->shutdown)) {
        tr__count_refused(rt, ctx);
        return TR_ESTOPPED;
    }
    tr__actor *a = tr__slot_lookup(rt, to.id);
    uint32_t gen = (uint32_t)(to.id >> 32);
    /* Acquire: pairs with the spawner's release of live_gen. */
    if (a == NULL ||
        atomic_load_explicit(&a->live_gen, memory_order_acquire) != gen) {
        tr__count_refused(rt, ctx);
        if (rt->debug)
            tr__log_sampled(&dead_send_log_count, TR_LOG_WARN,
                            "debug: send of tag 0x%x to dead actor "
                            "%llx refused",
                            m->tag, (unsigned long long)to.id);
        return TR_ENOACTOR;
    }
    /* m is the receiver's once queued. A user message, or user data under
     * a runtime tag (TR__F_DATA), may mute its sender. */
    bool m_user = m->tag < TR_TAG_SYSTEM || (m->flags & TR__F_DATA);
    /* One load of the target's flags per send (relaxed: a stale value
     * only mutes one turn later); reloaded after a bounded admission,
     * which may have just set FULL. */
    uint8_t mf = atomic_load_explicit(tr__mflags_of(a), memory_order_relaxed);
    if (mf & TR__MF_BOUNDED) {
        int rc = tr__bound_admit(rt, ctx, a, m);
        if (rc == 1)
            return 0; /* dropped by its policy (counted): a success */
        if (rc < 0) {
            tr__count_refused(rt, ctx);
            return rc;
        }
        mf = atomic_load_explicit(tr__mflags_of(a), memory_order_relaxed);
    }
    tr__enqueue(rt, ctx, a, m, gen);
    /* Overloaded, or muted itself (Pony: pressure travels back along a
     * chain of actors). */
    if (ctx != NULL && ctx->cur != NULL) {
        ctx->turn_sends++;
        /* Only user messages: runtime and toolkit control (tags at or
         * above TR_TAG_SYSTEM: a consumer's take from a full channel, a
         * limiter release...) must get through to relieve the pressure.
         * A proxy's forward of a user message is user data (TR__F_DATA):
         * a proxy still stops feeding a link that is behind (mute.c). */
        if (ctx->mute_on == 0 && m_user &&
            (mf & (TR__MF_OVERLOADED | TR__MF_MUTED)))
            ctx->mute_on = to.id;
    }
    return 0;
}

static tr_ctx *caller_ctx(tr_runtime *rt) {
    tr__worker *w = tr__sched_current();
    return (w != NULL && w->sched == &rt->sched) ? (tr_ctx *)w->user : NULL;
}

TR_API int tr_send(tr_ctx *ctx, tr_ref to, tr_msg **msg) {
    if (ctx == NULL || msg == NULL || *msg == NULL)
        return TR_EINVAL;
    tr_msg *m = *msg;
    if (tr__magic(m) != TR__MSG_LIVE)
        return TR_EFREED; /* checked before any write to m */
    m->sender = ctx->self;
    int rc = tr__send(ctx->rt, ctx, to, m);
    if (rc == 0)
        *msg = NULL;
    return rc;
}

TR_API int tr_runtime_send(tr_runtime *rt, tr_ref to, tr_msg **msg) {
    if (rt == NULL || msg == NULL || *msg == NULL)
        return TR_EINVAL;
    tr_ctx *ctx = caller_ctx(rt);
    tr_msg *m = *msg;
    if (tr__magic(m) != TR__MSG_LIVE)
        return TR_EFREED;
    m->sender = ctx != NULL ? ctx->self : TR_REF_NONE;
    int rc = tr__send(rt, ctx, to, m);
    if (rc == 0)
        *msg = NULL;
    return rc;
}

static int send_built(tr_runtime *rt, tr_ctx *ctx, tr_ref to, tr_msg *m) {
    if (m == NULL)
        return TR_ENOMEM;
    m->sender = ctx != NULL ? ctx->self : TR_REF_NONE;
    int rc = tr__send(rt, ctx, to, m);
    if (rc != 0)
        tr__msg_free(m);
    return rc;
}

TR_API int tr_send_u64(tr_ctx *ctx, tr_ref to, uint32_t tag, uint64_t value) {
    if (ctx == NULL)
        return TR_EINVAL;
    return send_built(ctx->rt, ctx, to, tr_msg_new_u64(tag, value));
}

TR_API int tr_send_tag(tr_ctx *ctx, tr_ref to, uint32_t tag) {
    if (ctx == NULL)
        return TR_EINVAL;
    return send_built(ctx->rt, ctx, to, tr_msg_new(tag));
}

TR_API int tr_runtime_send_u64(tr_runtime *rt, tr_ref to, uint32_t tag,
                               uint64_t value) {
    if (rt == NULL)
        return TR_EINVAL;
    return send_built(rt, caller_ctx(rt), to, tr_msg_new_u64(tag, value));
}

void tr__reply_failure(tr_runtime *rt, tr_ctx *ctx, tr_ref requester,
                       uint64_t req_id, uint32_t tag, int err) {
    tr_msg *f = tr_msg_new_u64(tag, (uint64_t)(int64_t)err);
    if (f == NULL)
        return; /* the requester's timeout still tells */
    f->flags |= TR__F_REPLY;
    f->req_id = req_id;
    if (tr__send(rt, ctx, requester, f) != 0)
        tr__msg_free(f); /* the requester is gone, or the runtime stops */
}

void tr__request_fail(tr_runtime *rt, tr_ctx *ctx, const tr_msg *m, int err) {
    if ((m->flags & TR__F_REQUEST) &&
        !(m->flags & (TR__F_REPLY | TR__F_SYS | TR__F_TIMEOUT)) &&
        !tr_ref_is_none(m->sender))
        tr__reply_failure(rt, ctx, m->sender, m->req_id, TR_TAG_REQUEST_FAILED,
                          err);
}

TR_API int tr_forward(tr_ctx *ctx, tr_ref to, tr_msg *msg) {
    if (ctx == NULL || msg == NULL)
        return TR_EINVAL;
    /* Borrowed in a handler (QUEUED) or owned (LIVE). */
    if (tr__magic(msg) != TR__MSG_QUEUED && tr__magic(msg) != TR__MSG_LIVE)
        return TR_EFREED;
    tr_msg *m = tr__msg_alloc(msg->tag, (tr_payload_kind)msg->kind);
    if (m == NULL)
        return TR_ENOMEM;
    /* Move the payload (inline bytes are copied, pointers move). */
    m->flags = msg->flags & (TR__F_INLINE | TR__F_REQUEST);
    m->len = msg->len;
    m->req_id = msg->req_id;
    memcpy(&m->u, &msg->u, sizeof m->u);
    /* The original sender stays: a forwarded request is answered to the
     * requester, not to the forwarder. */
    m->sender = msg->sender;
    int rc = tr__send(ctx->rt, ctx, to, m);
    if (rc != 0) {
        m->kind = TR_PAYLOAD_NONE; /* the payload stays with msg */
        tr__msg_free(m);
        return rc;
    }
    msg->kind = TR_PAYLOAD_NONE;
    msg->len = 0;
    return 0;
}

static tr__actor_ext *ext_of(tr__actor *a) {
    if (a->ext == NULL)
        a->ext = calloc(1, sizeof *a->ext);
    return a->ext;
}

static int pending_add(tr__actor_ext *e, uint64_t req_id, uint64_t timer_id) {
    if (e->npending == e->cappending) {
        uint32_t ncap = e->cappending ? e->cappending * 2 : 4;
        tr__pending *np = realloc(e->pending, ncap * sizeof *np);
        if (np == NULL)
            return TR_ENOMEM;
        e->pending = np;
        e->cappending = ncap;
    }
    e->pending[e->npending++] = (tr__pending){req_id, timer_id, TR_REF_NONE};
    return 0;
}

TR_API int tr_request(tr_ctx *ctx, tr_ref to, tr_msg **msg, int64_t timeout_ms,
                      uint64_t *req_id) {
    if (ctx == NULL || msg == NULL || *msg == NULL || timeout_ms < -1)
        return TR_EINVAL;
    if (ctx->cur == NULL)
        return TR_ENOCTX;
    if (tr__magic(*msg) != TR__MSG_LIVE)
        return TR_EFREED;
    tr__actor_ext *e = ext_of(ctx->cur);
    if (e == NULL)
        return TR_ENOMEM;
    /* Reserve the pending entry first: once sent, the request cannot be
     * taken back. */
    if (pending_add(e, 0, 0) != 0)
        return TR_ENOMEM;
    e->npending--;
    tr_msg *tmo = NULL;
    if (timeout_ms >= 0) {
        tmo = tr__msg_alloc(TR_TAG_TIMEOUT, TR_PAYLOAD_U64);
        if (tmo == NULL)
            return TR_ENOMEM;
    }
    uint64_t id = ++e->next_req_id;
    tr_msg *m = *msg;
    m->flags |= TR__F_REQUEST;
    m->req_id = id;
    m->sender = ctx->self;
    int rc = tr__send(ctx->rt, ctx, to, m);
    if (rc != 0) {
        m->flags &= (uint16_t)~TR__F_REQUEST;
        m->req_id = 0;
        if (tmo != NULL)
            tr__msg_free(tmo);
        return rc;
    }
    *msg = NULL;
    uint64_t timer_id = 0;
    if (tmo != NULL) {
        tmo->flags = TR__F_TIMEOUT;
        tmo->req_id = id;
        tmo->u.u64 = (uint64_t)(int64_t)TR_ETIMEDOUT;
        if (tr__reactor_timer_add(&ctx->rt->reactor,
                                  tr__after_ns(tr__now_ns(), timeout_ms), 0,
                                  ctx->self.id, tmo, 0, &timer_id) != 0) {
            /* Cannot arm the timeout: deliver it now rather than never. */
            tr__log(TR_LOG_WARN, "request %llu: timer failed, timing out",
                    (unsigned long long)id);
            tmo->sender = TR_REF_NONE;
            if (tr__send(ctx->rt, ctx, ctx->self, tmo) != 0)
                tr__msg_free(tmo);
        }
    }
    e->pending[e->npending++] = (tr__pending){id, timer_id, to};
    if (req_id != NULL)
        *req_id = id;
    return 0;
}

/* The requester `self` gives up on request p (its timer is already fired
 * or cancelled by the caller). The note comes first: by the time the
 * target could see SYS_REQ_CANCEL, the note is there. A target known dead
 * gets neither (the request is a dead letter there already), nor does a
 * request to oneself (it is in our own mailbox, dropped with us). */
static void cancel_pending(tr_ctx *ctx, tr_ref self, const tr__pending *p) {
    if (ctx->shutdown || tr_ref_is_none(p->target) || p->target.id == self.id ||
        !tr_actor_alive(ctx->rt, p->target))
        return;
    tr__req_cancel_note(ctx->rt, self.id, p->req_id);
    (void)tr__send_sys(ctx->rt, ctx, self, p->target, TR__SYS_REQ_CANCEL,
                       p->req_id, NULL);
}

bool tr__request_filter(tr_ctx *ctx, tr__actor *a, tr_msg *m) {
    tr__actor_ext *e = a->ext;
    uint32_t i = 0;
    if (e != NULL)
        while (i < e->npending && e->pending[i].req_id != m->req_id)
            i++;
    if (e == NULL || i == e->npending) {
        if (m->flags & TR__F_REPLY) {
            atomic_store_explicit(&ctx->st.late_replies,
                                  atomic_load_explicit(&ctx->st.late_replies,
                                                       memory_order_relaxed) +
                                      1,
                                  memory_order_relaxed);
            tr__log(TR_LOG_DEBUG, "late reply to request %llu discarded",
                    (unsigned long long)m->req_id);
        }
        return false;
    }
    if ((m->flags & TR__F_REPLY) && e->pending[i].timer_id != 0)
        (void)tr__reactor_timer_cancel(&ctx->rt->reactor,
                                       e->pending[i].timer_id);
    if (m->flags & TR__F_TIMEOUT)
        cancel_pending(ctx, ctx->self, &e->pending[i]);
    e->pending[i] = e->pending[--e->npending];
    return true;
}

/* Bucket of a note in the counting filter. */
static uint32_t cancel_bucket(uint64_t requester, uint64_t req_id) {
    uint64_t h =
        (requester ^ (req_id * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
    return (uint32_t)(h >> 32) & (TR__CANCEL_BUCKETS - 1);
}

/* Under cancel_lock. The filter's counts are only written here, under the
 * lock, so a load+store is enough; relaxed: the lock orders the writers,
 * and a lock-free reader only takes a count as a hint (see the callers). */
static void bucket_add(tr_runtime *rt, const tr__cancelled_req *c, int d) {
    _Atomic uint16_t *b =
        &rt->cancel_buckets[cancel_bucket(c->requester, c->req_id)];
    atomic_store_explicit(
        b, (uint16_t)(atomic_load_explicit(b, memory_order_relaxed) + d),
        memory_order_relaxed);
}

void tr__req_cancel_note(tr_runtime *rt, uint64_t requester, uint64_t req_id) {
    tr__cancelled_req c = {requester, req_id};
    pthread_mutex_lock(&rt->cancel_lock);
    uint32_t n = atomic_load_explicit(&rt->ncancelled, memory_order_relaxed);
    if (n < TR__CANCELLED_MAX) {
        rt->cancelled[n] = c;
        atomic_store_explicit(&rt->ncancelled, n + 1, memory_order_relaxed);
    } else { /* full: the oldest is forgotten (that request runs) */
        tr__cancelled_req *old =
            &rt->cancelled[rt->cancelled_head++ % TR__CANCELLED_MAX];
        bucket_add(rt, old, -1);
        *old = c;
    }
    bucket_add(rt, &c, +1);
    pthread_mutex_unlock(&rt->cancel_lock);
}

/* Looks for the note of (requester, req_id); removes it if `consume`. */
static bool cancel_lookup(tr_runtime *rt, uint64_t requester, uint64_t req_id,
                          bool consume) {
    /* Relaxed, without the lock: a 0 read while the note is being made
     * means the request and its cancellation cross; the request runs (at
     * most once) or the next poll sees it. The entries themselves are only
     * read under the lock. */
    if (atomic_load_explicit(&rt->ncancelled, memory_order_relaxed) == 0 ||
        atomic_load_explicit(
            &rt->cancel_buckets[cancel_bucket(requester, req_id)],
            memory_order_relaxed) == 0)
        return false;
    bool found = false;
    pthread_mutex_lock(&rt->cancel_lock);
    uint32_t n = atomic_load_explicit(&rt->ncancelled, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++) {
        if (rt->cancelled[i].req_id == req_id &&
            rt->cancelled[i].requester == requester) {
            if (consume) {
                bucket_add(rt, &rt->cancelled[i], -1);
                rt->cancelled[i] = rt->cancelled[n - 1];
                atomic_store_explicit(&rt->ncancelled, n - 1,
                                      memory_order_relaxed);
            }
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&rt->cancel_lock);
    return found;
}

bool tr__req_cancel_check(tr_runtime *rt, uint64_t requester, uint64_t req_id) {
    return cancel_lookup(rt, requester, req_id, true);
}

TR_API bool tr_request_cancelled(tr_ctx *ctx, const tr_msg *req) {
    if (ctx == NULL || req == NULL || !(req->flags & TR__F_REQUEST))
        return false;
    /* A requester that has ended (or is being killed) will read no reply,
     * whether or not its note is still in the bounded list. Acquire (in
     * tr_actor_alive): pairs with the release that marks the slot dead;
     * a generation once dead never comes back for this reference. */
    if (!tr_ref_is_none(req->sender) && !tr_actor_alive(ctx->rt, req->sender))
        return true;
    /* The note is written under cancel_lock by the requester's worker (or
     * the link thread of a worker process) and read here under the same
     * lock, so a true answer is always backed by a note fully written.
     * The lock-free pre-check is relaxed: a stale 0 only postpones the
     * answer to a later poll. Not consumed: the drop-before-start check of
     * a forwarded copy may still need the note. */
    return cancel_lookup(ctx->rt, req->sender.id, req->req_id, false);
}

void tr__request_cancel_all(tr_ctx *ctx, tr__actor *a) {
    tr__actor_ext *e = a->ext;
    if (e == NULL || e->npending == 0)
        return;
    tr_ref self =
        tr__make_ref(tr__slot_index(a), a->run_gen & ~TR__STUB_QUEUED);
    for (uint32_t i = 0; i < e->npending; i++) {
        /* A timeout that already fired is on its way to us: dropped as a
         * dead letter, like any message to a stopping actor. */
        if (e->pending[i].timer_id != 0)
            (void)tr__reactor_timer_cancel(&ctx->rt->reactor,
                                           e->pending[i].timer_id);
        cancel_pending(ctx, self, &e->pending[i]);
    }
    e->npending = 0;
}

void tr__request_cleanup(tr_runtime *rt, tr__actor *a) {
    tr__actor_ext *e = a->ext;
    if (e == NULL)
        return;
    for (uint32_t i = 0; i < e->npending; i++)
        if (e->pending[i].timer_id != 0)
            (void)tr__reactor_timer_cancel(&rt->reactor,
                                           e->pending[i].timer_id);
    free(e->pending);
    free(e);
    a->ext = NULL;
}

TR_API int tr_reply(tr_ctx *ctx, const tr_msg *req, tr_msg **reply) {
    if (ctx == NULL || req == NULL || reply == NULL || *reply == NULL)
        return TR_EINVAL;
    if (!(req->flags & TR__F_REQUEST))
        return TR_ESTATE;
    tr_msg *m = *reply;
    if (tr__magic(m) != TR__MSG_LIVE)
        return TR_EFREED;
    m->flags |= TR__F_REPLY;
    m->req_id = req->req_id;
    m->sender = ctx->self;
    int rc = tr__send(ctx->rt, ctx, req->sender, m);
    if (rc == 0)
        *reply = NULL;
    else
        m->flags &= (uint16_t)~TR__F_REPLY;
    return rc;
}
