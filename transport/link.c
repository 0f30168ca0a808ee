/* Design notes
 * ------------
 * One link actor per transport owns its ZeroMQ sockets: ZeroMQ sockets
 * are not thread-safe, and an actor runs on one thread at a time, so no
 * socket needs a lock. Each socket's ZMQ_FD is watched by the reactor
 * (edge-triggered, as ZeroMQ requires): on each readiness message, and
 * after every message the link handles, it drains every socket while
 * ZMQ_EVENTS reports POLLIN.
 *
 * The envelope handler is the same in every mode (link.h): any side may
 * spawn on, send to, request from, monitor and cancel actors of the other;
 * what differs is how peers come and go (procs.c: worker processes;
 * node.c: named nodes over tcp with CURVE).
 *
 * Batching: envelopes for a peer go into that peer's encoder; the first
 * one of a frame also queues a FLUSH message to the link itself, which
 * comes after everything already in the link's mailbox. So a burst of
 * sends becomes one frame, and a lone send goes out at once.
 *
 * Socket options, each set on purpose (tr__link_sockopts):
 *   ZMQ_LINGER 0          closing never blocks (shutdown has its own
 *                         BYE/reap protocol; libzmq#4660: we do not rely
 *                         on linger to deliver a tail).
 *   ZMQ_SNDHWM/RCVHWM     100000 frames: room for bursts of batches.
 *   ZMQ_SNDTIMEO 2000 ms  (worker pipes) a peer that does not read for 2 s
 *                         is treated as stuck: the frame is dropped and
 *                         counted (logged). Node sockets never block:
 *                         they send with ZMQ_DONTWAIT.
 *   ZMQ_MAXMSGSIZE        the codec's max frame: a peer cannot make us
 *                         allocate more (LESSONS.md); libzmq drops the
 *                         connection of a peer that tries.
 *   ZMQ_ROUTER_MANDATORY  (ROUTER) a frame to a peer that is gone fails
 *                         loudly instead of vanishing.
 *   ZMQ_ROUTING_ID        (DEALER) "w<i>.<n>" (worker slot i, its n-th
 *                         process) or the node's name, so the other side
 *                         knows who speaks. One id per worker process,
 *                         never reused: what a dead worker sent before it
 *                         died and is read after cannot pass for its
 *                         successor's (procs.c), and its successor never
 *                         connects with an id the ROUTER may still hold
 *                         (libzmq ignores such a connection for good).
 *   ZMQ_RECONNECT_IVL     (DEALER) 1 ms to a worker's parent (it may bind
 *                         after we start); 100 ms to a node, capped at
 *                         ZMQ_RECONNECT_IVL_MAX 1 s, so a node that comes
 *                         back is found within a second.
 *   ZMQ_IMMEDIATE 1       (DEALER) queue only to a completed connection:
 *                         nothing piles up for a peer that is not there.
 *   Nodes also: ZMQ_ROUTER_HANDOVER (a node that reconnects takes its
 *   name back), CURVE keys and ZAP (node.c). */
#define _GNU_SOURCE
#include "transport/link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "runtime/log.h"
#include "supervisor/channel_int.h"
#include "transport/proxy.h"
#include "troupe/lifecycle.h"
#include "troupe/mpack.h"

/* Envelopes kept for a peer that has not said HELLO yet. */
#define TR__WAITING_MAX 100000u

static _Atomic uint64_t drop_log_count, unknown_log_count, reject_log_count;

void tr__link_count(uint64_t *c) { __atomic_add_fetch(c, 1, __ATOMIC_RELAXED); }

static void set_int(void *sock, int opt, int v) {
    if (zmq_setsockopt(sock, opt, &v, sizeof v) != 0)
        tr__log(TR_LOG_WARN, "zmq_setsockopt(%d): %s", opt,
                zmq_strerror(zmq_errno()));
}

void tr__link_sockopts(tr__link *l, void *sock) {
    set_int(sock, ZMQ_LINGER, 0);
    set_int(sock, ZMQ_SNDHWM, 100000);
    set_int(sock, ZMQ_RCVHWM, 100000);
    set_int(sock, ZMQ_SNDTIMEO, 2000);
    int64_t maxmsg = (int64_t)l->dec.lim.max_frame;
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
}

tr__link *tr__link_new(tr_runtime *rt, tr__link_mode mode, unsigned npeers) {
    tr__link *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    l->rt = rt;
    l->mode = mode;
    l->npeers = npeers;
    l->zfd = l->zapfd = -1;
    l->peers = calloc(npeers, sizeof *l->peers);
    if (l->peers == NULL) {
        free(l);
        return NULL;
    }
    pthread_mutex_init(&l->lock, NULL);
    tr__codec_limits_default(&l->lim);
    for (unsigned i = 0; i < npeers; i++) {
        tr__peer *p = &l->peers[i];
        p->pidfd = -1;
        p->zfd = -1;
        p->used = mode != TR__LINK_NODE;
        if (mode == TR__LINK_POOL)
            p->identlen =
                (size_t)snprintf(p->ident, sizeof p->ident, "w%u", i);
        (void)tr__encoder_init(&p->enc, &l->lim);
    }
    return l;
}

int tr__link_open(tr__link *l) {
    int rc = tr__decoder_init(&l->dec, &l->lim);
    if (rc != 0)
        return rc;
    l->zctx = zmq_ctx_new();
    if (l->zctx == NULL)
        return TR_ESYS;
    if (l->mode == TR__LINK_NODE)
        return tr__node_open(l);
    bool pool = l->mode == TR__LINK_POOL;
    l->sock = zmq_socket(l->zctx, pool ? ZMQ_ROUTER : ZMQ_DEALER);
    if (l->sock == NULL)
        return TR_ESYS;
    tr__link_sockopts(l, l->sock);
    if (pool) {
        set_int(l->sock, ZMQ_ROUTER_MANDATORY, 1);
        if (zmq_bind(l->sock, l->endpoint) != 0) {
            tr__log(TR_LOG_ERROR, "pool: bind %s: %s", l->endpoint,
                    zmq_strerror(zmq_errno()));
            return TR_ESYS;
        }
    } else {
        char id[TR__REG_NAME_MAX];
        int n = l->routing_id[0] != 0
                    ? snprintf(id, sizeof id, "%s", l->routing_id)
                    : snprintf(id, sizeof id, "w%u", l->index);
        zmq_setsockopt(l->sock, ZMQ_ROUTING_ID, id, (size_t)n);
        set_int(l->sock, ZMQ_RECONNECT_IVL, 1);
        set_int(l->sock, ZMQ_IMMEDIATE, 1);
        if (zmq_connect(l->sock, l->endpoint) != 0) {
            tr__log(TR_LOG_ERROR, "worker: connect %s: %s", l->endpoint,
                    zmq_strerror(zmq_errno()));
            return TR_ESYS;
        }
    }
    for (unsigned i = 0; i < l->npeers; i++) {
        l->peers[i].sock = l->sock;
        l->peers[i].routed = pool;
    }
    size_t sz = sizeof l->zfd;
    if (zmq_getsockopt(l->sock, ZMQ_FD, &l->zfd, &sz) != 0)
        return TR_ESYS;
    return 0;
}

static void peer_free_waiting(tr__peer *p) {
    for (uint32_t i = 0; i < p->nwaiting; i++)
        tr__fwd_free(p->waiting[i]);
    free(p->waiting);
    p->waiting = NULL;
    p->nwaiting = p->capwaiting = 0;
}

static tr__fwd *flow_pop(tr__link *l, tr__flow *fl);

void tr__link_free(tr__link *l) {
    if (l == NULL)
        return;
    for (unsigned i = 0; i < l->npeers; i++) {
        tr__peer *p = &l->peers[i];
        peer_free_waiting(p);
        tr__encoder_free(&p->enc);
        tr__idmap_free(&p->proxies);
        tr__idmap_free(&p->spawning);
        tr__idmap_free(&p->reverse);
        tr__idmap_free(&p->watching);
        tr__idmap_free(&p->spawned);
        for (uint32_t k = 0; k < p->flows.cap; k++) {
            uint64_t key = p->flows.keys[k];
            if (key == TR__IDMAP_EMPTY || key == TR__IDMAP_GONE)
                continue;
            tr__flow *fl = (tr__flow *)(uintptr_t)p->flows.vals[k];
            while (fl->held.n > 0)
                tr__fwd_free(flow_pop(l, fl));
            tr__ring_free(&fl->held);
            free(fl->flagged);
            free(fl);
        }
        tr__idmap_free(&p->flows);
        tr__idmap_free(&p->owed);
        free(p->downs);
        for (uint32_t k = 0; k < p->nreqs; k++)
            tr__fwd_free(p->reqs[k].copy);
        free(p->reqs);
        if (p->pidfd >= 0)
            close(p->pidfd);
        if (p->sock != NULL && p->sock != l->sock)
            zmq_close(p->sock);
    }
    free(l->peers);
    if (l->mode == TR__LINK_NODE)
        tr__node_close(l);
    tr__decoder_free(&l->dec);
    if (l->sock != NULL)
        zmq_close(l->sock);
    if (l->zctx != NULL)
        zmq_ctx_term(l->zctx);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

/* ---- sending ---- */

int tr__link_send_frame(tr__link *l, tr__peer *p, const void *data,
                        size_t len) {
    if (p->sock == NULL)
        return TR_ESTATE;
    /* Node sockets never block the link (a stalled node is found by its
     * heartbeats); worker pipes may block up to ZMQ_SNDTIMEO. */
    int flags = l->mode == TR__LINK_NODE ? ZMQ_DONTWAIT : 0;
    int rc = 0;
    if (p->routed)
        rc = zmq_send(p->sock, p->ident, p->identlen, flags | ZMQ_SNDMORE);
    if (rc >= 0)
        rc = zmq_send(p->sock, data, len, flags);
    if (rc < 0 && l->mode == TR__LINK_NODE && !p->connected &&
        zmq_errno() == EAGAIN)
        return TR_EAGAIN; /* a HELLO before the connection is up: retried */
    if (rc < 0) {
        tr__link_count(&l->c.dropped_out);
        tr__log_sampled(&drop_log_count, TR_LOG_WARN,
                        "link: frame of %zu bytes to %s dropped: %s", len,
                        p->identlen ? p->ident : "main",
                        zmq_strerror(zmq_errno()));
        return TR_ESYS;
    }
    tr__link_count(&l->c.frames_out);
    return 0;
}

static void flush_peer(tr__link *l, tr__peer *p) {
    const unsigned char *frame;
    size_t len;
    p->flush_sched = false;
    if (tr__encoder_finish(&p->enc, &frame, &len) == 0)
        (void)tr__link_send_frame(l, p, frame, len);
    tr__encoder_reset(&p->enc);
}

static void env_from_fwd(const tr__fwd *f, tr__env *env) {
    memset(env, 0, sizeof *env);
    env->kind = f->kind;
    env->flags = f->flags;
    env->sender = f->sender;
    env->target = f->target;
    env->req_id = f->req_id;
    env->aux = f->aux;
    env->tag = f->tag;
    env->pkind = TR_PAYLOAD_NONE;
    if (f->payload != NULL) {
        env->pkind = f->payload->kind;
        if (f->payload->kind == TR_PAYLOAD_U64)
            env->u64 = tr_msg_u64(f->payload);
        else
            env->data = tr_msg_data(f->payload, &env->len);
    }
}

void tr__link_tell_proxy(tr_ctx *ctx, uint64_t proxy, uint32_t tag,
                         uint64_t v) {
    if (proxy != 0)
        (void)tr_send_u64(ctx, (tr_ref){proxy}, tag, v);
}

/* Answers a request's requester with a failure (TR_TAG_REMOTE_FAILED). */
static void fail_request(tr_ctx *ctx, tr__link *l, uint64_t requester,
                         uint64_t req_id, int err) {
    tr__remote_fail(l->rt, ctx, requester, req_id, err);
}

/* A request of an idempotent actor whose process was lost goes back to
 * its proxy, which sends it again to a new actor (takes f). Once sent,
 * the message answers for it: should the proxy end before taking it, the
 * request is failed back (tr__retry_msg_new). */
static void retry_request(tr_ctx *ctx, tr__link *l, tr__fwd *f, int err) {
    tr_ref proxy = {f->proxy};
    tr_msg *m = tr__retry_msg_new(l->rt, f);
    if (m == NULL) {
        fail_request(ctx, l, f->sender, f->req_id, err);
        tr__fwd_free(f);
        return;
    }
    if (tr_send(ctx, proxy, &m) != 0) {
        tr_msg_destroy(&m); /* the proxy is gone: failed back (TR_ELOST) */
        return;
    }
    tr__link_count(&l->c.retried);
}

/* An envelope that cannot reach its peer: nothing that waits for an
 * answer is left waiting (takes f). */
static void fail_fwd(tr_ctx *ctx, tr__link *l, tr__fwd *f, int err) {
    if (f->kind == TR__K_REQUEST && f->retry && err == TR_ELOST) {
        retry_request(ctx, l, f, err);
        return;
    }
    if (f->kind == TR__K_SPAWN)
        tr__link_tell_proxy(ctx, f->sender, TR__PT_REMOTE_DOWN,
                            (uint64_t)(int64_t)err);
    else if (f->kind == TR__K_REQUEST)
        fail_request(ctx, l, f->sender, f->req_id, err);
    tr__fwd_free(f);
}

static void queue_waiting(tr_ctx *ctx, tr__link *l, tr__peer *p, tr__fwd *f) {
    if (p->nwaiting >= TR__WAITING_MAX ||
        (p->nwaiting == p->capwaiting &&
         !tr__grow((void **)&p->waiting, &p->capwaiting, p->nwaiting + 1,
                   sizeof *p->waiting, 16))) {
        tr__log_sampled(&drop_log_count, TR_LOG_WARN,
                        "link: %s is not connected and %u envelopes wait "
                        "for it: envelope refused",
                        p->identlen ? p->ident : "main", p->nwaiting);
        fail_fwd(ctx, l, f, TR_EAGAIN);
        return;
    }
    p->waiting[p->nwaiting++] = f;
}

/* ---- credit (flow control per consumer) ---- */

/* Envelopes that take credit. Not a channel's take: a full channel holds
 * its remote producers' credit back (try_grant) and drains only through
 * takes, which must not wait behind those producers' items when they
 * share a process (or it would never drain). A take needs no order with
 * its sender's other messages. */
static bool takes_credit(uint8_t kind, uint32_t tag) {
    return (kind == TR__K_SEND && tag != TR__CH_TAKE) || kind == TR__K_REQUEST;
}

static bool is_data(const tr__fwd *f) { return takes_credit(f->kind, f->tag); }

static tr__flow *flow_of(tr__peer *p, uint64_t consumer, bool create) {
    uint64_t v;
    if (tr__idmap_get(&p->flows, consumer, &v))
        return (tr__flow *)(uintptr_t)v;
    if (!create)
        return NULL;
    tr__flow *fl = calloc(1, sizeof *fl);
    if (fl != NULL &&
        !tr__idmap_put(&p->flows, consumer, (uint64_t)(uintptr_t)fl)) {
        free(fl);
        fl = NULL;
    }
    return fl;
}

static bool flow_hold(tr__link *l, tr__flow *fl, tr__fwd *f) {
    if (!tr__ring_push(&fl->held, &f, sizeof f))
        return false;
    /* Relaxed: statistics; only the link's thread writes them. */
    uint64_t held = __atomic_add_fetch(&l->c.held, 1, __ATOMIC_RELAXED);
    if (held > __atomic_load_n(&l->c.held_peak, __ATOMIC_RELAXED))
        __atomic_store_n(&l->c.held_peak, held, __ATOMIC_RELAXED);
    return true;
}

static tr__fwd *flow_pop(tr__link *l, tr__flow *fl) {
    tr__fwd *f;
    tr__ring_pop(&fl->held, &f, sizeof f);
    __atomic_sub_fetch(&l->c.held, 1, __ATOMIC_RELAXED);
    return f;
}

/* The proxy that forwarded f is overloaded: its senders are muted after
 * their turn (actors/mute.c) until the flow has room again. */
static void flow_flag(tr_ctx *ctx, tr__link *l, tr__flow *fl, uint64_t proxy) {
    if (proxy == 0)
        return;
    for (uint32_t i = 0; i < fl->nflagged; i++)
        if (fl->flagged[i] == proxy)
            return;
    if (fl->nflagged == fl->capflagged &&
        !tr__grow((void **)&fl->flagged, &fl->capflagged, fl->nflagged + 1,
                  sizeof *fl->flagged, 4))
        return;
    fl->flagged[fl->nflagged++] = proxy;
    (void)tr__overload_set(l->rt, ctx, (tr_ref){proxy}, true);
}

static void flow_unflag(tr_ctx *ctx, tr__link *l, tr__flow *fl) {
    for (uint32_t i = 0; i < fl->nflagged; i++)
        (void)tr__overload_set(l->rt, ctx, (tr_ref){fl->flagged[i]}, false);
    fl->nflagged = 0;
}

static void emit(tr_ctx *ctx, tr__link *l, tr__peer *p, tr__fwd *f);
static void fail_fwd(tr_ctx *ctx, tr__link *l, tr__fwd *f, int err);

/* Ends a flow: what it held fails with err (retried if idempotent and
 * err is TR_ELOST), its proxies are relieved. */
static void flow_end(tr_ctx *ctx, tr__link *l, tr__flow *fl, int err) {
    while (fl->held.n > 0)
        fail_fwd(ctx, l, flow_pop(l, fl), err);
    flow_unflag(ctx, l, fl);
    tr__ring_free(&fl->held);
    free(fl->flagged);
    free(fl);
}

/* Does a flow of p hold an envelope that our actor `who` sent? */
static bool sender_held(const tr__peer *p, uint64_t who) {
    for (uint32_t k = 0; k < p->flows.cap; k++) {
        uint64_t key = p->flows.keys[k];
        if (key == TR__IDMAP_EMPTY || key == TR__IDMAP_GONE)
            continue;
        const tr__flow *fl = (const tr__flow *)(uintptr_t)p->flows.vals[k];
        for (uint32_t i = 0; i < fl->held.n; i++) {
            const tr__fwd *f;
            memcpy(&f,
                   fl->held.v + ((fl->held.head + i) % fl->held.cap) * sizeof f,
                   sizeof f);
            if (f->sender == who)
                return true;
        }
    }
    return false;
}

/* Our actor `who`, which peer p monitors (proxy: its proxy there), ended.
 * The DOWN must not overtake what it sent before: envelopes held back
 * for want of credit would reach their receivers after it, and a
 * receiver that counts the sender's end as its last word (a channel: an
 * ended producer has closed) would take them for strays. So it waits
 * until none of them is held any more (downs_flush). Cost: a scan of the
 * held envelopes, only while some are held. */
static void send_down(tr_ctx *ctx, tr__link *l, tr__peer *p, uint64_t who,
                      uint64_t proxy, uint64_t mon, int64_t reason) {
    if (!sender_held(p, who) || !tr__grow((void **)&p->downs, &p->capdowns,
                                          p->ndowns + 1, sizeof *p->downs, 4)) {
        tr__link_send_env(ctx, l, (unsigned)(p - l->peers), TR__K_DOWN, who,
                          proxy, mon, reason);
        return;
    }
    p->downs[p->ndowns++] = (tr__down_wait){who, proxy, mon, reason};
}

/* Sends the waiting DOWNs whose actors have nothing held any more. */
static void downs_flush(tr_ctx *ctx, tr__link *l, tr__peer *p) {
    for (uint32_t i = 0; i < p->ndowns;) {
        tr__down_wait d = p->downs[i];
        if (sender_held(p, d.who)) {
            i++;
            continue;
        }
        memmove(&p->downs[i], &p->downs[i + 1],
                (p->ndowns - i - 1) * sizeof *p->downs);
        p->ndowns--;
        tr__link_send_env(ctx, l, (unsigned)(p - l->peers), TR__K_DOWN, d.who,
                          d.proxy, d.mon, d.reason);
    }
}

/* CREDIT from the peer: consumer took n more envelopes. */
static void on_credit(tr_ctx *ctx, tr__link *l, tr__peer *p, uint64_t consumer,
                      uint64_t n) {
    tr__flow *fl = flow_of(p, consumer, false);
    if (fl == NULL)
        return;
    fl->inflight = n >= fl->inflight ? 0 : fl->inflight - (uint32_t)n;
    while (fl->held.n > 0 && fl->inflight < p->window) {
        fl->inflight++;
        emit(ctx, l, p, flow_pop(l, fl));
    }
    /* Hysteresis: its senders go on once what is held back fits in half
     * a window, so the flow does not run dry before they refill it. */
    if (fl->held.n <= p->window / 2)
        flow_unflag(ctx, l, fl);
    if (fl->held.n == 0) {
        if (fl->inflight == 0) {
            (void)tr__idmap_del(&p->flows, consumer, NULL);
            flow_end(ctx, l, fl, TR_ELOST);
        }
    }
    downs_flush(ctx, l, p);
}

/* Grants the credit owed for our actor `local` if it is keeping up (its
 * mailbox at most half the window deep, or depths not tracked, or it is
 * gone) and takes what its local senders may send (not HELD, as a full
 * channel is, nor FULL, as a bounded mailbox at its limit is: those mute
 * local senders, and the link, a system actor, is never muted); else
 * keeps it owed and retries shortly. */
static bool try_grant(tr_ctx *ctx, tr__link *l, tr__peer *p, uint64_t local) {
    uint64_t owed = 0;
    if (!tr__idmap_get(&p->owed, local, &owed) || owed == 0)
        return true;
    int64_t depth = tr_actor_mailbox_depth(l->rt, (tr_ref){local});
    if ((depth >= 0 && depth > (int64_t)(l->grant / 2)) ||
        tr__overload_blocks(l->rt, (tr_ref){local})) {
        if (!l->credit_timer) {
            tr_msg *t = tr_msg_new(TR__LT_CREDIT);
            if (t != NULL && tr_send_after(l->rt, l->self, 2, &t, NULL) == 0)
                l->credit_timer = true;
            else
                tr_msg_destroy(&t);
        }
        return false;
    }
    (void)tr__idmap_del(&p->owed, local, NULL);
    tr__link_send_env(ctx, l, (unsigned)(p - l->peers), TR__K_CREDIT, local, 0,
                      0, (int64_t)owed);
    return true;
}

/* A data envelope for our actor `local` arrived (delivered or not). */
static void owe(tr_ctx *ctx, tr__link *l, tr__peer *p, uint64_t local) {
    if (l->grant == 0 || local == 0)
        return;
    uint64_t owed = 0;
    (void)tr__idmap_get(&p->owed, local, &owed);
    (void)tr__idmap_put(&p->owed, local, ++owed);
    uint32_t batch = l->grant / 4 > 0 ? l->grant / 4 : 1;
    if (owed >= batch)
        (void)try_grant(ctx, l, p, local);
}

static void grant_all(tr_ctx *ctx, tr__link *l) {
    l->credit_timer = false;
    for (unsigned i = 0; i < l->npeers; i++) {
        tr__peer *p = &l->peers[i];
        if (!tr__peer_used(p) || !p->connected)
            continue;
        for (uint32_t k = 0; k < p->owed.cap; k++) {
            uint64_t key = p->owed.keys[k];
            if (key != TR__IDMAP_EMPTY && key != TR__IDMAP_GONE)
                (void)try_grant(ctx, l, p, key);
        }
    }
}

void tr__link_enqueue(tr_ctx *ctx, tr__link *l, tr__fwd *f) {
    if (f->peer >= l->npeers || !tr__peer_used(&l->peers[f->peer])) {
        fail_fwd(ctx, l, f, TR_ELOST);
        return;
    }
    tr__peer *p = &l->peers[f->peer];
    if (p->dead || (f->gen != 0 && f->gen != p->generation)) {
        fail_fwd(ctx, l, f, TR_ELOST);
        return;
    }
    if (!p->connected && f->kind != TR__K_HELLO) {
        queue_waiting(ctx, l, p, f);
        return;
    }
    if (p->window > 0 && is_data(f)) {
        tr__flow *fl = flow_of(p, f->target, true);
        if (fl != NULL && (fl->held.n > 0 || fl->inflight >= p->window)) {
            if (flow_hold(l, fl, f)) {
                flow_flag(ctx, l, fl, f->proxy);
                return;
            }
            fail_fwd(ctx, l, f, TR_ENOMEM);
            return;
        }
        if (fl != NULL)
            fl->inflight++;
    }
    emit(ctx, l, p, f);
}

/* Encodes f into p's frame (takes f). */
static void emit(tr_ctx *ctx, tr__link *l, tr__peer *p, tr__fwd *f) {
    /* What waits for an answer is listed, so a lost peer fails it back
     * (requests) or ends it (spawns). */
    if (f->kind == TR__K_REQUEST &&
        tr__grow((void **)&p->reqs, &p->capreqs, p->nreqs + 1, sizeof *p->reqs,
                 16))
        p->reqs[p->nreqs++] = (tr__pending_req){
            f->sender, f->req_id, f->retry ? tr__fwd_clone(f) : NULL};
    if (f->kind == TR__K_SPAWN)
        (void)tr__idmap_put(&p->spawning, f->sender, 1);
    tr__env env;
    env_from_fwd(f, &env);
    int rc = tr__encoder_add(&p->enc, &env);
    if (rc == TR_EAGAIN) {
        flush_peer(l, p);
        rc = tr__encoder_add(&p->enc, &env);
    }
    if (rc != 0) {
        tr__log(TR_LOG_WARN, "link: envelope (kind %u, tag 0x%x) refused: %s",
                f->kind, f->tag, tr_strerror(rc));
        if (f->kind == TR__K_REQUEST) {
            tr__fwd_free(p->reqs[--p->nreqs].copy);
            fail_request(ctx, l, f->sender, f->req_id, rc);
        }
    } else if (!p->flush_sched) {
        p->flush_sched = true;
        if (tr_send_u64(ctx, l->self, TR__LT_FLUSH, (uint64_t)(p - l->peers)) !=
            0)
            flush_peer(l, p);
    }
    tr__fwd_free(f);
}

void tr__link_send_env(tr_ctx *ctx, tr__link *l, unsigned peer, uint8_t kind,
                       uint64_t sender, uint64_t target, uint64_t req_id,
                       int64_t aux) {
    tr__fwd *f = calloc(1, sizeof *f);
    if (f == NULL)
        return;
    f->peer = peer;
    f->kind = kind;
    f->sender = sender;
    f->target = target;
    f->req_id = req_id;
    f->aux = aux;
    tr__link_enqueue(ctx, l, f);
}

void tr__link_send_hello(tr_ctx *ctx, tr__link *l, tr__peer *p) {
    static const char *const roles[] = {"main", "worker", "node"};
    const char *role = roles[l->mode];
    tr__hello h = {.proto_min = TR__PROTO_VERSION_MIN,
                   .proto_max = TR__PROTO_VERSION,
                   .role = role,
                   .role_len = strlen(role),
                   .pid = (uint64_t)getpid(),
                   .credit = l->grant};
    if (l->mode == TR__LINK_NODE) {
        h.node = l->name;
        h.node_len = strlen(l->name);
        h.epoch = (uint64_t)p->generation + 1;
    }
    unsigned char buf[TR__HELLO_MAX];
    size_t len;
    if (tr__hello_encode(&h, buf, sizeof buf, &len) != 0)
        return;
    tr__fwd *f = calloc(1, sizeof *f);
    if (f == NULL)
        return;
    f->peer = (uint32_t)(p - l->peers);
    f->kind = TR__K_HELLO;
    f->payload = tr_msg_new_msgpack(0, buf, len);
    tr__link_enqueue(ctx, l, f);
    if (p->flush_sched) /* at once: it opens the session */
        flush_peer(l, p);
}

/* ---- delivering ---- */

/* Delivers a SEND/REQUEST/REPLY envelope to a local actor. */
static int deliver(tr_ctx *ctx, tr__link *l, const tr__env *env,
                   tr_ref sender) {
    tr_msg *m;
    if (env->kind == TR__K_REPLY && env->aux < 0)
        m = tr_msg_new_u64(TR_TAG_REMOTE_FAILED, (uint64_t)env->aux);
    else
        m = tr__msg_from_env(env);
    if (m == NULL)
        return TR_ENOMEM;
    m->sender = sender;
    if (env->kind == TR__K_REQUEST) {
        m->flags |= TR__F_REQUEST;
        m->req_id = env->req_id;
    } else if (env->kind == TR__K_REPLY) {
        m->flags |= TR__F_REPLY;
        m->req_id = env->req_id;
    }
    int rc = tr__send(l->rt, ctx, (tr_ref){env->target}, m);
    if (rc != 0)
        tr__msg_free(m);
    return rc;
}

/* The local stand-in for a remote sender that is not one of our proxies'
 * actors (created on first contact, so replies to tr_msg_sender go back
 * over the link). It does not own the remote actor, keeps no runtime
 * alive (a system actor) and ends with the peer's session. */
static tr_ref reverse_proxy(tr__link *l, tr__peer *p, uint64_t remote_id) {
    uint64_t v;
    if (remote_id == 0)
        return TR_REF_NONE;
    if (tr__idmap_get(&p->proxies, remote_id, &v) ||
        (tr__idmap_get(&p->reverse, remote_id, &v) &&
         tr_actor_alive(l->rt, (tr_ref){v})))
        return (tr_ref){v};
    tr__proxy init = {.link = l->self,
                      .peer = (uint32_t)(p - l->peers),
                      .remote = remote_id,
                      .gen = p->generation};
    tr_ref r;
    if (tr__spawn_system(l->rt, &tr__proxy_behavior, &init, sizeof init, &r) !=
        0)
        return TR_REF_NONE;
    (void)tr__idmap_put(&p->reverse, remote_id, r.id);
    return r;
}

static void remove_req(tr__peer *p, uint64_t requester, uint64_t req_id) {
    for (uint32_t i = 0; i < p->nreqs; i++) {
        if (p->reqs[i].requester == requester && p->reqs[i].req_id == req_id) {
            tr__fwd_free(p->reqs[i].copy);
            p->reqs[i] = p->reqs[--p->nreqs];
            return;
        }
    }
}

static void load_add(tr__peer *p, int d) {
    uint32_t cur = __atomic_load_n(&p->load, __ATOMIC_RELAXED);
    if (d < 0 && cur == 0)
        return;
    __atomic_add_fetch(&p->load, (uint32_t)d, __ATOMIC_RELAXED);
}

/* SPAWN: {"behavior": name, "init": bin} spawns; {"lookup": name} finds a
 * registered actor instead (*owned false). */
static int spawn_local(tr_ctx *ctx, tr__link *l, const tr__env *env,
                       tr_ref *out, bool *owned) {
    tr_mp_reader r;
    tr_mp_reader_init(&r, env->data, env->len);
    uint32_t n;
    if (tr_mp_read_map(&r, &n) != 0)
        return TR_EPROTO;
    const char *name = NULL, *lookup = NULL;
    size_t namelen = 0, lookuplen = 0;
    const void *init = NULL;
    size_t initlen = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        size_t kl;
        if (tr_mp_read_str(&r, &k, &kl) != 0)
            return TR_EPROTO;
        if (kl == 8 && memcmp(k, "behavior", 8) == 0) {
            if (tr_mp_read_str(&r, &name, &namelen) != 0)
                return TR_EPROTO;
        } else if (kl == 4 && memcmp(k, "init", 4) == 0) {
            if (tr_mp_read_bin(&r, &init, &initlen) != 0)
                return TR_EPROTO;
        } else if (kl == 6 && memcmp(k, "lookup", 6) == 0) {
            if (tr_mp_read_str(&r, &lookup, &lookuplen) != 0)
                return TR_EPROTO;
        } else if (tr_mp_skip(&r) != 0) {
            return TR_EPROTO;
        }
    }
    *owned = lookup == NULL;
    if (lookup != NULL) {
        if (tr__names_find(l->rt, lookup, lookuplen, out) != 0) {
            tr__log(TR_LOG_INFO, "link: lookup of unknown name '%.*s'",
                    (int)lookuplen, lookup);
            return TR_ENOTFOUND;
        }
        return 0;
    }
    const tr_behavior *beh = name ? tr__registry_find(name, namelen) : NULL;
    if (beh == NULL) {
        tr__log(TR_LOG_WARN, "link: spawn of unregistered behaviour '%.*s'",
                (int)namelen, name ? name : "");
        return TR_ENOTFOUND;
    }
    if (initlen > beh->state_size)
        return TR_ETOOBIG;
    return tr_spawn(ctx, beh, init, initlen, out);
}

static void on_spawn(tr_ctx *ctx, tr__link *l, tr__peer *p,
                     const tr__env *env) {
    tr_ref a = TR_REF_NONE;
    bool owned = true;
    int rc = spawn_local(ctx, l, env, &a, &owned);
    uint64_t mon = 0;
    if (rc == 0 && (rc = tr_monitor(ctx, a, &mon)) == 0) {
        (void)tr__idmap_put(&p->watching, mon, env->sender);
        if (owned)
            (void)tr__idmap_put(&p->spawned, mon, a.id);
    } else if (rc != 0 && owned && a.id != 0) {
        (void)tr_kill(l->rt, a);
    }
    tr__link_send_env(ctx, l, (unsigned)(p - l->peers), TR__K_SPAWN_REPLY,
                      rc == 0 ? a.id : 0, env->sender, env->req_id, rc);
}

static void on_spawn_reply(tr_ctx *ctx, tr__link *l, tr__peer *p,
                           const tr__env *env) {
    /* load was counted when the spawn picked this peer (pool.c). */
    if (!tr__idmap_del(&p->spawning, env->target, NULL))
        return; /* not ours, or its session is over */
    if (env->aux == 0) {
        (void)tr__idmap_put(&p->proxies, env->sender, env->target);
        /* The proxy learns the actor's id and the session (incarnation)
         * it lives in (req_id). */
        tr_msg *sp = tr_msg_new_u64(TR__PT_SPAWNED, env->sender);
        if (sp != NULL) {
            sp->req_id = p->generation;
            sp->sender = l->self;
            if (tr__send(l->rt, ctx, (tr_ref){env->target}, sp) != 0)
                tr__msg_free(sp);
        }
    } else {
        load_add(p, -1);
        tr__link_tell_proxy(ctx, env->target, TR__PT_REMOTE_DOWN,
                            (uint64_t)env->aux);
    }
}

static void on_cancel(tr_ctx *ctx, tr__link *l, tr__peer *p,
                      const tr__env *env) {
    if (env->req_id != 0) { /* drop the request if not started yet */
        tr__req_cancel_note(l->rt, reverse_proxy(l, p, env->sender).id,
                            env->req_id);
        return;
    }
    /* Only an actor this process runs for that peer can be stopped by it
     * (a looked-up actor belongs to us). */
    bool ours = false;
    for (uint32_t k = 0; k < p->spawned.cap && !ours; k++) {
        uint64_t key = p->spawned.keys[k];
        ours = key != TR__IDMAP_EMPTY && key != TR__IDMAP_GONE &&
               p->spawned.vals[k] == env->target;
    }
    if (!ours) {
        tr__log(TR_LOG_INFO,
                "link: %s asked to stop an actor it does not own: ignored",
                p->identlen ? p->ident : "main");
        return;
    }
    if (env->flags & TR__ENV_F_KILL)
        (void)tr_kill(l->rt, (tr_ref){env->target});
    else
        (void)tr_cancel(l->rt, (tr_ref){env->target}, (int)env->aux, -1);
    (void)ctx;
}

static void handle_env(tr_ctx *ctx, tr__link *l, tr__peer *p,
                       const tr__env *env) {
    uint64_t proxy = 0;
    switch (env->kind) {
    case TR__K_HELLO:
        if (l->mode == TR__LINK_NODE) {
            tr__node_hello(ctx, l, p, env);
        } else if (!p->connected) {
            tr__hello h;
            if (tr__hello_decode(env->data, env->len, &h) == 0)
                p->window = h.credit > UINT32_MAX ? UINT32_MAX
                                                  : (uint32_t)h.credit;
            p->connected = true;
            p->ever_connected = true;
            tr__log(TR_LOG_INFO, "pool: worker %s (pid %d) connected", p->ident,
                    (int)p->pid);
            tr__link_peer_up(ctx, l, p);
        }
        break;
    case TR__K_HEARTBEAT: /* last_rx_ms is what it is for */
        if (l->mode == TR__LINK_WORKER) /* answer the main side's ping */
            tr__link_send_env(ctx, l, 0, TR__K_HEARTBEAT, 0, 0, 0, env->aux);
        break;
    case TR__K_BYE:
        if (l->mode == TR__LINK_WORKER) {
            l->stopping = true;
            (void)tr_runtime_shutdown(l->rt);
        } else if (l->mode == TR__LINK_NODE && p->connected) {
            tr__log(TR_LOG_INFO, "node: %s said BYE", p->ident);
            tr__link_peer_lost(ctx, l, p, TR_ELOST);
        }
        break;
    case TR__K_SPAWN:
        on_spawn(ctx, l, p, env);
        break;
    case TR__K_SPAWN_REPLY:
        on_spawn_reply(ctx, l, p, env);
        break;
    case TR__K_SEND:
    case TR__K_REQUEST:
    case TR__K_REPLY: {
        if (env->kind == TR__K_REPLY)
            remove_req(p, env->target, env->req_id);
        int rc = deliver(ctx, l, env, reverse_proxy(l, p, env->sender));
        if (rc != 0 && env->kind == TR__K_REQUEST)
            tr__link_send_env(ctx, l, (unsigned)(p - l->peers), TR__K_REPLY,
                              env->target, env->sender, env->req_id, rc);
        if (takes_credit(env->kind, env->tag))
            owe(ctx, l, p, env->target);
        break;
    }
    case TR__K_CREDIT:
        on_credit(ctx, l, p, env->sender, (uint64_t)env->aux);
        break;
    case TR__K_CANCEL:
        on_cancel(ctx, l, p, env);
        break;
    case TR__K_DOWN: {
        uint64_t flv;
        if (tr__idmap_del(&p->flows, env->sender, &flv)) {
            flow_end(ctx, l, (tr__flow *)(uintptr_t)flv, TR_ENOACTOR);
            downs_flush(ctx, l, p);
        }
        if (tr__idmap_del(&p->proxies, env->sender, &proxy)) {
            load_add(p, -1);
            tr__link_tell_proxy(ctx, proxy, TR__PT_REMOTE_DOWN,
                                (uint64_t)env->aux);
        }
        break;
    }
    default:
        break;
    }
}

/* A BYE frame to p at once (no session: nothing else may be batched). */
static void send_bye(tr__link *l, tr__peer *p) {
    unsigned char bye[32];
    tr__encoder e;
    const unsigned char *fr;
    size_t fl;
    tr__env b = {.kind = TR__K_BYE, .aux = TR_ELOST};
    if (tr__encoder_init(&e, NULL) == 0 && tr__encoder_add(&e, &b) == 0 &&
        tr__encoder_finish(&e, &fr, &fl) == 0 && fl <= sizeof bye) {
        memcpy(bye, fr, fl);
        (void)tr__link_send_frame(l, p, bye, fl);
    }
    tr__encoder_free(&e);
}

static void handle_frame(tr_ctx *ctx, tr__link *l, tr__peer *p,
                         const void *data, size_t len) {
    uint32_t n = 0;
    int rc = tr__decoder_decode(&l->dec, data, len, &n);
    if (rc != 0) {
        tr__link_count(&l->c.rejected);
        tr__log_sampled(&reject_log_count, TR_LOG_WARN,
                        "link: frame of %zu bytes from %s rejected "
                        "(%s at byte %zu): %s",
                        len, p->identlen ? p->ident : "main",
                        tr__codec_reject_name(l->dec.reason), l->dec.offset,
                        tr_strerror(rc));
        return;
    }
    tr__link_count(&l->c.frames_in);
    p->last_rx_ms = tr_now_ms();
    for (uint32_t i = 0; i < n; i++) {
        const tr__env *env = &l->dec.envs[i];
        if (l->mode == TR__LINK_NODE && !p->connected &&
            env->kind != TR__K_HELLO) {
            /* No session. The side that connects drives the handshake
             * (HELLO every heartbeat period), so it just drops this; the
             * listening side answers BYE, so that a peer that still
             * believes in an old session starts a new one at once. */
            tr__link_count(&l->c.unknown_peer);
            if (!p->outgoing && env->kind != TR__K_BYE)
                send_bye(l, p);
            return;
        }
        handle_env(ctx, l, p, env);
    }
}

static tr__peer *peer_by_ident(tr__link *l, const void *id, size_t len) {
    for (unsigned i = 0; i < l->npeers; i++)
        if (tr__peer_used(&l->peers[i]) && l->peers[i].identlen == len &&
            l->peers[i].sock == l->sock &&
            memcmp(l->peers[i].ident, id, len) == 0)
            return &l->peers[i];
    return NULL;
}

/* Receives one part; false when there is none. */
static bool recv_part(void *sock, zmq_msg_t *part) {
    zmq_msg_init(part);
    if (zmq_msg_recv(part, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(part);
        return false;
    }
    return true;
}

/* Skips the rest of a message with more parts than the protocol has. */
static bool skip_extra_parts(tr__link *l, void *sock, zmq_msg_t *last) {
    if (!zmq_msg_more(last))
        return false;
    zmq_msg_t extra;
    while (recv_part(sock, &extra)) {
        bool more = zmq_msg_more(&extra);
        zmq_msg_close(&extra);
        if (!more)
            break;
    }
    tr__link_count(&l->c.rejected);
    tr__log_sampled(&reject_log_count, TR_LOG_WARN,
                    "link: multi-part message rejected (one frame per "
                    "message)");
    return true;
}

/* Reads every message a socket has (ZMQ_FD is edge-triggered). fixed: the
 * peer of a DEALER; NULL for the ROUTER. */
static void drain_sock(tr_ctx *ctx, tr__link *l, void *sock, tr__peer *fixed) {
    for (;;) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(sock, ZMQ_EVENTS, &events, &sz) != 0 ||
            !(events & ZMQ_POLLIN))
            return;
        zmq_msg_t id, part;
        tr__peer *p = fixed;
        bool have_id = false;
        if (fixed == NULL) {
            if (!recv_part(sock, &id))
                return;
            have_id = true;
            if (!zmq_msg_more(&id)) { /* an empty probe, nothing to read */
                zmq_msg_close(&id);
                continue;
            }
            p = peer_by_ident(l, zmq_msg_data(&id), zmq_msg_size(&id));
        }
        if (!recv_part(sock, &part)) {
            if (have_id)
                zmq_msg_close(&id);
            return;
        }
        if (!skip_extra_parts(l, sock, &part)) {
            if (p == NULL && l->mode == TR__LINK_NODE)
                p = tr__node_accept(ctx, l, zmq_msg_data(&id),
                                    zmq_msg_size(&id), zmq_msg_data(&part),
                                    zmq_msg_size(&part));
            else if (p == NULL) {
                tr__link_count(&l->c.unknown_peer);
                if (l->mode == TR__LINK_POOL &&
                    tr__link_past_worker(l, zmq_msg_data(&id),
                                         zmq_msg_size(&id)))
                    tr__log_sampled(&unknown_log_count, TR_LOG_DEBUG,
                                    "link: frame from %.*s, a worker "
                                    "process that has died, dropped",
                                    (int)zmq_msg_size(&id),
                                    (const char *)zmq_msg_data(&id));
                else
                    tr__log_sampled(&unknown_log_count, TR_LOG_WARN,
                                    "link: frame from an unknown peer "
                                    "dropped");
            }
            if (p != NULL)
                handle_frame(ctx, l, p, zmq_msg_data(&part),
                             zmq_msg_size(&part));
        }
        zmq_msg_close(&part);
        if (have_id)
            zmq_msg_close(&id);
    }
}

static void drain(tr_ctx *ctx, tr__link *l) {
    if (l->sock != NULL)
        drain_sock(ctx, l, l->sock, l->mode == TR__LINK_WORKER ? &l->peers[0]
                                                               : NULL);
    if (l->mode != TR__LINK_NODE)
        return;
    for (unsigned i = 0; i < l->npeers; i++)
        if (tr__peer_used(&l->peers[i]) && l->peers[i].outgoing &&
            l->peers[i].sock != NULL)
            drain_sock(ctx, l, l->peers[i].sock, &l->peers[i]);
    tr__node_zap(l);
}

/* ---- peer sessions ---- */

void tr__link_peer_up(tr_ctx *ctx, tr__link *l, tr__peer *p) {
    p->last_rx_ms = tr_now_ms();
    uint32_t n = p->nwaiting;
    tr__fwd **w = p->waiting;
    p->waiting = NULL;
    p->nwaiting = p->capwaiting = 0;
    for (uint32_t i = 0; i < n; i++)
        tr__link_enqueue(ctx, l, w[i]);
    free(w);
}

/* Each live key of m (with its value) to fn. */
static void idmap_each(tr__idmap *m, void (*fn)(tr_ctx *, tr__link *,
                                                uint64_t, uint64_t),
                       tr_ctx *ctx, tr__link *l) {
    for (uint32_t k = 0; k < m->cap; k++) {
        uint64_t key = m->keys[k];
        if (key != TR__IDMAP_EMPTY && key != TR__IDMAP_GONE)
            fn(ctx, l, key, m->vals[k]);
    }
    tr__idmap_free(m);
}

static void end_proxy_key(tr_ctx *ctx, tr__link *l, uint64_t key,
                          uint64_t v) {
    (void)l;
    (void)v;
    tr__link_tell_proxy(ctx, key, TR__PT_REMOTE_DOWN,
                        (uint64_t)(int64_t)TR_ELOST);
}

static void end_proxy_val(tr_ctx *ctx, tr__link *l, uint64_t key,
                          uint64_t v) {
    end_proxy_key(ctx, l, v, key);
}

static void cancel_spawned(tr_ctx *ctx, tr__link *l, uint64_t key,
                           uint64_t v) {
    (void)ctx;
    (void)key;
    (void)tr_cancel(l->rt, (tr_ref){v}, TR_EXIT_CANCELLED, -1);
}

void tr__link_peer_lost(tr_ctx *ctx, tr__link *l, tr__peer *p, int err) {
    tr__link_count(&l->c.peers_lost);
    /* Relaxed: tr_node_is_up reads it as a snapshot. */
    __atomic_store_n(&p->connected, false, __ATOMIC_RELAXED);
    p->flush_sched = false;
    p->generation++; /* proxies of the old session now fail their sends */
    tr__encoder_reset(&p->enc);
    /* Held back for want of credit, never sent: fails (or is retried). */
    for (uint32_t k = 0; k < p->flows.cap; k++) {
        uint64_t key = p->flows.keys[k];
        if (key != TR__IDMAP_EMPTY && key != TR__IDMAP_GONE)
            flow_end(ctx, l, (tr__flow *)(uintptr_t)p->flows.vals[k], err);
    }
    tr__idmap_free(&p->flows);
    tr__idmap_free(&p->owed);
    p->ndowns = 0; /* the session is over: no one to tell */
    /* What never left fails too. */
    uint32_t nw = p->nwaiting;
    tr__fwd **waiting = p->waiting;
    p->waiting = NULL;
    p->nwaiting = p->capwaiting = 0;
    for (uint32_t k = 0; k < nw; k++)
        fail_fwd(ctx, l, waiting[k], err);
    free(waiting);
    /* Requests in flight: failed back, distinctly (TR_ELOST), or sent
     * again (idempotent actors). */
    for (uint32_t k = 0; k < p->nreqs; k++) {
        if (p->reqs[k].copy != NULL)
            fail_fwd(ctx, l, p->reqs[k].copy, err);
        else
            fail_request(ctx, l, p->reqs[k].requester, p->reqs[k].req_id,
                         err);
    }
    p->nreqs = 0;
    /* Unanswered spawns, our proxies of its actors and the stand-ins for
     * its senders end; monitors, links and supervisors take it from
     * there. */
    idmap_each(&p->spawning, end_proxy_key, ctx, l);
    idmap_each(&p->proxies, end_proxy_val, ctx, l);
    idmap_each(&p->reverse, end_proxy_val, ctx, l);
    /* Actors we ran for it have no owner any more: cancelled. */
    idmap_each(&p->spawned, cancel_spawned, ctx, l);
    tr__idmap_free(&p->watching);
    __atomic_store_n(&p->load, 0, __ATOMIC_RELAXED);
    if (l->mode == TR__LINK_NODE)
        tr__node_notify(ctx, l, p, false);
}

/* ---- the actor ---- */

static int link_start(tr_ctx *ctx, void *state) {
    tr__link *l = *(tr__link **)state;
    l->self = tr_self(ctx);
    int rc = 0;
    if (l->sock != NULL)
        rc = tr_watch(l->rt, l->zfd, TR_READABLE, l->self, TR__LT_ZMQ,
                      &l->zwatch);
    if (rc != 0)
        return rc;
    if (l->mode == TR__LINK_POOL) {
        /* The processes were started by tr_pool_start. */
        for (unsigned i = 0; i < l->npeers; i++)
            tr__link_watch_worker(l, i);
    } else if (l->mode == TR__LINK_WORKER) {
        tr__peer *p = &l->peers[0];
        p->connected = true;
        p->last_rx_ms = tr_now_ms();
        tr__link_send_hello(ctx, l, p);
    } else if (l->zap != NULL) {
        rc = tr_watch(l->rt, l->zapfd, TR_READABLE, l->self, TR__LT_ZMQ,
                      &l->zapwatch);
    }
    /* Heartbeats and loss detection (pool: also a poll for dead workers:
     * pidfd is faster, but not everywhere: valgrind, old kernels). */
    if (rc == 0 && (l->mode != TR__LINK_WORKER || l->hang_timeout_ms > 0)) {
        int64_t period = l->mode == TR__LINK_NODE     ? l->loss_timeout_ms / 5
                         : l->mode == TR__LINK_WORKER ? 250
                                                      : 100;
        rc = tr_send_every(l->rt, l->self, period > 0 ? period : 1,
                           TR__LT_TICK, &l->tick);
    }
    drain(ctx, l);
    return rc;
}

static int link_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    tr__link *l = *(tr__link **)state;
    switch (tr_msg_tag(msg)) {
    case TR__LT_ZMQ:
        break;
    case TR__LT_FWD: {
        void *f = NULL;
        if (tr_msg_take_ptr(msg, &f) == 0)
            tr__link_enqueue(ctx, l, f);
        break;
    }
    case TR__LT_FLUSH: {
        uint64_t i = tr_msg_u64(msg);
        if (i < l->npeers && l->peers[i].flush_sched)
            flush_peer(l, &l->peers[i]);
        break;
    }
    case TR__LT_TICK:
        if (l->mode == TR__LINK_POOL)
            tr__link_pool_tick(ctx, l);
        else if (l->mode == TR__LINK_NODE)
            tr__node_tick(ctx, l);
        else if (!l->stopping &&
                 tr_now_ms() - l->peers[0].last_rx_ms > l->hang_timeout_ms) {
            /* The main process pings every 100 ms: silent this long, it
             * is hung (or gone without our noticing): stop. */
            tr__log(TR_LOG_WARN,
                    "worker %u: no heartbeat from the main process for "
                    "%lld ms: exiting",
                    l->index,
                    (long long)(tr_now_ms() - l->peers[0].last_rx_ms));
            l->stopping = true;
            (void)tr_runtime_shutdown(l->rt);
        }
        break;
    case TR__LT_CREDIT:
        grant_all(ctx, l);
        break;
    case TR__LT_DEAD:
        for (unsigned i = 0; i < l->npeers; i++)
            if (!l->peers[i].dead && l->peers[i].pid > 0)
                tr__link_worker_lost(ctx, l, i);
        break;
    case TR_TAG_DOWN: { /* an actor we run for a peer ended */
        tr_exit x;
        uint64_t proxy = 0;
        if (tr_msg_exit(msg, &x) != 0)
            break;
        for (unsigned i = 0; i < l->npeers; i++) {
            tr__peer *p = &l->peers[i];
            if (!tr__idmap_del(&p->watching, x.id, &proxy))
                continue;
            (void)tr__idmap_del(&p->spawned, x.id, NULL);
            send_down(ctx, l, p, x.who.id, proxy, x.id, x.reason);
            break;
        }
        break;
    }
    default:
        if (l->mode == TR__LINK_NODE &&
            tr__node_handle(ctx, l, msg) != TR_UNHANDLED)
            break;
        return TR_UNHANDLED;
    }
    drain(ctx, l); /* after any socket use, and on readiness */
    return 0;
}

const tr_behavior tr__link_behavior = {.name = "troupe.link",
                                       .handle = link_handle,
                                       .on_start = link_start,
                                       .state_size = sizeof(tr__link *),
                                       .grace_ms = 3000};
