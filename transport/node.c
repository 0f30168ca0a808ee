/* Nodes (troupe/node.h): the NODE mode of the link. A node listens on a
 * ROUTER (CURVE server; its own ZAP handler checks each client's public
 * key against the allowlist) and connects out with one DEALER per peer
 * (CURVE client: it knows the server's public key). Peers are named;
 * a slot per name keeps the peer's tables across reconnections.
 *
 * Sessions: the connecting side sends HELLO (role "node", its name, pid
 * and an epoch) every heartbeat period until the listener's HELLO comes
 * back. A HELLO whose (pid, epoch) differs from the current session's
 * means the peer restarted or gave the session up: the old session is
 * lost first (link.c: tr__link_peer_lost). Heartbeats flow both ways every
 * loss_timeout/5; a peer silent for loss_timeout is lost, and a frame from
 * a peer without a session is answered with BYE so it starts again. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "runtime/log.h"
#include "transport/link.h"
#include "transport/proxy.h"
#include "troupe/node.h"

/* libzmq 4.3 lists it among the draft options, but implements it. */
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif

#define ZAP_DOMAIN "troupe"
#define NODE_NAME_MAX 64

static _Atomic uint64_t zap_log_count, accept_log_count;

static bool key_ok(const char *k) {
    uint8_t bin[32];
    return k != NULL && strlen(k) == TR_NODE_KEY_LEN &&
           zmq_z85_decode(bin, k) != NULL;
}

static bool name_ok(const char *n, size_t len) {
    if (n == NULL || len == 0 || len >= NODE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int setopt(void *s, int opt, const void *v, size_t len) {
    if (zmq_setsockopt(s, opt, v, len) == 0)
        return 0;
    tr__log(TR_LOG_ERROR, "node: zmq_setsockopt(%d): %s", opt,
            zmq_strerror(zmq_errno()));
    return TR_ESYS;
}

static int setint(void *s, int opt, int v) {
    return setopt(s, opt, &v, sizeof v);
}

int tr__node_open(tr__link *l) {
    if (!l->plaintext) {
        /* Our own ZAP handler, in this context, before any CURVE socket:
         * libzmq asks it about every client key. */
        l->zap = zmq_socket(l->zctx, ZMQ_REP);
        if (l->zap == NULL || setint(l->zap, ZMQ_LINGER, 0) != 0 ||
            zmq_bind(l->zap, "inproc://zeromq.zap.01") != 0) {
            tr__log(TR_LOG_ERROR, "node: cannot start the ZAP handler: %s",
                    zmq_strerror(zmq_errno()));
            return TR_ESYS;
        }
        size_t sz = sizeof l->zapfd;
        if (zmq_getsockopt(l->zap, ZMQ_FD, &l->zapfd, &sz) != 0)
            return TR_ESYS;
    }
    if (l->endpoint[0] == 0)
        return 0; /* connect only */
    l->sock = zmq_socket(l->zctx, ZMQ_ROUTER);
    if (l->sock == NULL)
        return TR_ESYS;
    tr__link_sockopts(l, l->sock);
    int rc = setint(l->sock, ZMQ_ROUTER_MANDATORY, 1);
    if (rc == 0)
        rc = setint(l->sock, ZMQ_ROUTER_HANDOVER, 1);
    if (rc == 0 && !l->plaintext) {
        rc = setint(l->sock, ZMQ_CURVE_SERVER, 1);
        if (rc == 0)
            rc = setopt(l->sock, ZMQ_CURVE_SECRETKEY, l->secret_key,
                        TR_NODE_KEY_LEN);
        if (rc == 0)
            rc = setopt(l->sock, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN,
                        strlen(ZAP_DOMAIN));
        /* Fail closed: without a ZAP handler every key would pass. */
        if (rc == 0)
            rc = setint(l->sock, ZMQ_ZAP_ENFORCE_DOMAIN, 1);
    }
    if (rc != 0)
        return rc;
    if (zmq_bind(l->sock, l->endpoint) != 0) {
        tr__log(TR_LOG_ERROR, "node: bind %s: %s", l->endpoint,
                zmq_strerror(zmq_errno()));
        return TR_ESYS;
    }
    size_t sz = sizeof l->endpoint;
    (void)zmq_getsockopt(l->sock, ZMQ_LAST_ENDPOINT, l->endpoint, &sz);
    sz = sizeof l->zfd;
    return zmq_getsockopt(l->sock, ZMQ_FD, &l->zfd, &sz) == 0 ? 0 : TR_ESYS;
}

void tr__node_close(tr__link *l) {
    if (l->zap != NULL)
        zmq_close(l->zap);
    l->zap = NULL;
    free(l->allow);
    free(l->subs);
}

/* ---- ZAP: the allowlist ---- */

static bool allowed(tr__link *l, const void *key32) {
    char z85[TR_NODE_KEY_LEN + 1];
    if (zmq_z85_encode(z85, key32, 32) == NULL)
        return false;
    for (size_t i = 0; i < l->nallow; i++)
        if (memcmp(l->allow[i], z85, TR_NODE_KEY_LEN) == 0)
            return true;
    return false;
}

/* One ZAP request (RFC 27): version, request id, domain, address,
 * identity, mechanism, credentials...; answered 200 or 400. */
static void zap_one(tr__link *l) {
    zmq_msg_t parts[8];
    int n = 0;
    bool more = true;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, l->zap, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        more = zmq_msg_more(&m);
        if (n < 8)
            parts[n++] = m;
        else
            zmq_msg_close(&m);
    }
    if (n == 0)
        return;
#define PART_IS(i, s)                                                          \
    (zmq_msg_size(&parts[i]) == strlen(s) &&                                   \
     memcmp(zmq_msg_data(&parts[i]), s, strlen(s)) == 0)
    bool ok = n >= 7 && PART_IS(0, "1.0") && PART_IS(2, ZAP_DOMAIN) &&
              PART_IS(5, "CURVE") && zmq_msg_size(&parts[6]) == 32 &&
              allowed(l, zmq_msg_data(&parts[6]));
#undef PART_IS
    char addr[64] = "?";
    if (n >= 4) {
        size_t al = zmq_msg_size(&parts[3]);
        if (al >= sizeof addr)
            al = sizeof addr - 1;
        memcpy(addr, zmq_msg_data(&parts[3]), al);
        addr[al] = 0;
    }
    if (ok) {
        tr__link_count(&l->c.zap_allowed);
    } else {
        tr__link_count(&l->c.zap_denied);
        tr__log_sampled(&zap_log_count, TR_LOG_WARN,
                        "node: connection from %s refused: its key is not on "
                        "the allowlist",
                        addr);
    }
    /* Reply: version, request id, status code, text, user id, metadata. */
    const char *code = ok ? "200" : "400";
    const char *text = ok ? "OK" : "not allowed";
    zmq_send(l->zap, "1.0", 3, ZMQ_SNDMORE);
    if (n >= 2)
        zmq_send(l->zap, zmq_msg_data(&parts[1]), zmq_msg_size(&parts[1]),
                 ZMQ_SNDMORE);
    else
        zmq_send(l->zap, "", 0, ZMQ_SNDMORE);
    zmq_send(l->zap, code, 3, ZMQ_SNDMORE);
    zmq_send(l->zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(l->zap, "", 0, ZMQ_SNDMORE);
    zmq_send(l->zap, "", 0, 0);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&parts[i]);
}

void tr__node_zap(tr__link *l) {
    if (l->zap == NULL)
        return;
    for (;;) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(l->zap, ZMQ_EVENTS, &events, &sz) != 0 ||
            !(events & ZMQ_POLLIN))
            return;
        zap_one(l);
    }
}

/* ---- peers and sessions ---- */

/* The slot named name (l->lock held), or NULL. */
static tr__peer *slot_by_name(tr__link *l, const char *name, size_t len) {
    for (unsigned i = 0; i < l->npeers; i++)
        if (l->peers[i].used && l->peers[i].identlen == len &&
            memcmp(l->peers[i].ident, name, len) == 0)
            return &l->peers[i];
    return NULL;
}

/* A free slot named name (l->lock held), or NULL when all are taken.
 * endpoint: where to connect (an outgoing peer), or NULL. */
static tr__peer *slot_take(tr__link *l, const char *name, size_t len,
                           const char *endpoint, const char *key) {
    for (unsigned i = 0; i < l->npeers; i++) {
        tr__peer *p = &l->peers[i];
        if (p->used)
            continue;
        memcpy(p->ident, name, len);
        p->ident[len] = 0;
        p->identlen = len;
        if (endpoint != NULL) {
            p->outgoing = true;
            snprintf(p->endpoint, sizeof p->endpoint, "%s", endpoint);
            if (key != NULL)
                memcpy(p->serverkey, key, TR_NODE_KEY_LEN);
        }
        /* Release: the link's thread reads the slot's fields after it
         * sees used (tr__peer_used, acquire). */
        __atomic_store_n(&p->used, true, __ATOMIC_RELEASE);
        return p;
    }
    return NULL;
}

tr__peer *tr__node_accept(tr_ctx *ctx, tr__link *l, const void *id,
                          size_t idlen, const void *data, size_t len) {
    (void)ctx;
    uint32_t n = 0;
    tr__hello h;
    const char *why = NULL;
    if (tr__decoder_decode(&l->dec, data, len, &n) != 0 || n != 1 ||
        l->dec.envs[0].kind != TR__K_HELLO)
        why = "its first frame is not a HELLO";
    else if (tr__hello_decode(l->dec.envs[0].data, l->dec.envs[0].len, &h) !=
                 0 ||
             h.role_len != 4 || memcmp(h.role, "node", 4) != 0 ||
             h.node == NULL || !name_ok(h.node, h.node_len))
        why = "its HELLO is not a node's";
    else if (h.node_len != idlen || memcmp(h.node, id, idlen) != 0)
        why = "its HELLO names another node than its routing id";
    tr__peer *p = NULL;
    if (why == NULL) {
        pthread_mutex_lock(&l->lock);
        if (slot_by_name(l, h.node, h.node_len) != NULL)
            why = "a node of that name is connected already";
        else if ((p = slot_take(l, h.node, h.node_len, NULL, NULL)) == NULL)
            why = "max_peers reached";
        pthread_mutex_unlock(&l->lock);
    }
    if (why != NULL) {
        tr__link_count(&l->c.unknown_peer);
        tr__log_sampled(&accept_log_count, TR_LOG_WARN,
                        "node: frame from an unknown peer dropped: %s", why);
        return NULL;
    }
    p->sock = l->sock;
    p->routed = true;
    return p;
}

void tr__node_notify(tr_ctx *ctx, tr__link *l, tr__peer *p, bool up) {
    uint32_t k = 0;
    for (uint32_t i = 0; i < l->nsubs; i++) {
        tr_msg *m = tr_msg_new_bytes(up ? TR_TAG_NODE_UP : TR_TAG_NODE_DOWN,
                                     p->ident, p->identlen);
        if (m != NULL && tr_send(ctx, l->subs[i], &m) != 0) {
            tr_msg_destroy(&m);
            continue; /* gone: forgotten */
        }
        l->subs[k++] = l->subs[i];
    }
    l->nsubs = k;
}

void tr__node_hello(tr_ctx *ctx, tr__link *l, tr__peer *p,
                    const tr__env *env) {
    tr__hello h;
    uint32_t v;
    if (tr__hello_decode(env->data, env->len, &h) != 0 ||
        tr__hello_version(&h, &v) != 0 || h.role_len != 4 ||
        memcmp(h.role, "node", 4) != 0 || h.node_len != p->identlen ||
        memcmp(h.node, p->ident, p->identlen) != 0) {
        tr__link_count(&l->c.rejected);
        tr__log(TR_LOG_WARN,
                "node: HELLO from %s refused (not a node of that name, or "
                "no common protocol version)",
                p->ident);
        return;
    }
    bool same = p->session[0] == h.pid && p->session[1] == h.epoch;
    if (p->connected && same) {
        if (!p->outgoing) /* it did not get our answer yet */
            tr__link_send_hello(ctx, l, p);
        return;
    }
    if (p->connected) { /* it restarted, or gave the session up */
        tr__log(TR_LOG_WARN, "node: %s started a new session", p->ident);
        tr__link_peer_lost(ctx, l, p, TR_ELOST);
    }
    p->session[0] = h.pid;
    p->session[1] = h.epoch;
    p->window = h.credit > UINT32_MAX ? UINT32_MAX : (uint32_t)h.credit;
    __atomic_store_n(&p->connected, true, __ATOMIC_RELAXED);
    p->ever_connected = true;
    tr__log(TR_LOG_INFO, "node: %s (pid %llu) connected", p->ident,
            (unsigned long long)h.pid);
    if (!p->outgoing)
        tr__link_send_hello(ctx, l, p);
    tr__link_peer_up(ctx, l, p);
    tr__node_notify(ctx, l, p, true);
}

void tr__node_tick(tr_ctx *ctx, tr__link *l) {
    int64_t now = tr_now_ms();
    /* Ticks come every loss_timeout/5: a peer silent for more than
     * loss_timeout minus one period is lost, so a loss is declared at
     * most loss_timeout after the last frame. */
    int64_t period = l->loss_timeout_ms / 5;
    for (unsigned i = 0; i < l->npeers; i++) {
        tr__peer *p = &l->peers[i];
        if (!tr__peer_used(p))
            continue;
        if (p->connected && now - p->last_rx_ms > l->loss_timeout_ms - period) {
            tr__log(TR_LOG_WARN, "node: %s lost (silent for %lld ms)",
                    p->ident, (long long)(now - p->last_rx_ms));
            tr__link_peer_lost(ctx, l, p, TR_ELOST);
        }
        if (p->connected)
            tr__link_send_env(ctx, l, i, TR__K_HEARTBEAT, 0, 0, 0,
                              (int64_t)++p->hb_seq);
        else if (p->outgoing && p->sock != NULL)
            tr__link_send_hello(ctx, l, p);
    }
}

/* Opens the DEALER to an outgoing peer (the link's thread). */
static int connect_peer(tr_ctx *ctx, tr__link *l, tr__peer *p) {
    void *s = zmq_socket(l->zctx, ZMQ_DEALER);
    if (s == NULL)
        return TR_ESYS;
    tr__link_sockopts(l, s);
    int rc = setopt(s, ZMQ_ROUTING_ID, l->name, strlen(l->name));
    if (rc == 0)
        rc = setint(s, ZMQ_RECONNECT_IVL, 100);
    if (rc == 0)
        rc = setint(s, ZMQ_RECONNECT_IVL_MAX, 1000);
    if (rc == 0)
        rc = setint(s, ZMQ_IMMEDIATE, 1);
    if (rc == 0 && !l->plaintext) {
        rc = setopt(s, ZMQ_CURVE_SERVERKEY, p->serverkey, TR_NODE_KEY_LEN);
        if (rc == 0)
            rc = setopt(s, ZMQ_CURVE_PUBLICKEY, l->public_key,
                        TR_NODE_KEY_LEN);
        if (rc == 0)
            rc = setopt(s, ZMQ_CURVE_SECRETKEY, l->secret_key,
                        TR_NODE_KEY_LEN);
    }
    if (rc == 0 && zmq_connect(s, p->endpoint) != 0) {
        tr__log(TR_LOG_ERROR, "node: connect %s: %s", p->endpoint,
                zmq_strerror(zmq_errno()));
        rc = TR_ESYS;
    }
    size_t sz = sizeof p->zfd;
    if (rc == 0 && zmq_getsockopt(s, ZMQ_FD, &p->zfd, &sz) != 0)
        rc = TR_ESYS;
    if (rc == 0)
        rc = tr_watch(l->rt, p->zfd, TR_READABLE, l->self, TR__LT_ZMQ,
                      &p->zwatch);
    if (rc != 0) {
        zmq_close(s);
        p->zfd = -1;
        return rc;
    }
    p->sock = s;
    p->routed = false;
    tr__link_send_hello(ctx, l, p);
    return 0;
}

int tr__node_handle(tr_ctx *ctx, tr__link *l, tr_msg *msg) {
    switch (tr_msg_tag(msg)) {
    case TR__LT_CONNECT: {
        uint64_t i = tr_msg_u64(msg);
        if (i < l->npeers && l->peers[i].outgoing &&
            l->peers[i].sock == NULL) {
            int rc = connect_peer(ctx, l, &l->peers[i]);
            if (rc != 0)
                tr__log(TR_LOG_ERROR, "node: cannot connect to %s: %s",
                        l->peers[i].ident, tr_strerror(rc));
        }
        return 0;
    }
    case TR__LT_SUBSCRIBE: {
        tr_ref to = {tr_msg_u64(msg)};
        if (l->nsubs == l->capsubs &&
            !tr__grow((void **)&l->subs, &l->capsubs, l->nsubs + 1,
                      sizeof *l->subs, 4))
            return TR_ENOMEM;
        l->subs[l->nsubs++] = to;
        return 0;
    }
    default:
        return TR_UNHANDLED;
    }
}

/* ---- the public API ---- */

static void node_destroy(void *p) {
    tr__link *l = p;
    /* Tell connected peers at once (they would notice within
     * loss_timeout anyway). No actor runs any more: this thread owns the
     * sockets now. */
    for (unsigned i = 0; i < l->npeers; i++) {
        tr__peer *q = &l->peers[i];
        if (!tr__peer_used(q) || !q->connected || q->sock == NULL)
            continue;
        tr__encoder_reset(&q->enc);
        tr__env env = {.kind = TR__K_BYE};
        const unsigned char *frame;
        size_t len;
        if (tr__encoder_add(&q->enc, &env) == 0 &&
            tr__encoder_finish(&q->enc, &frame, &len) == 0)
            (void)tr__link_send_frame(l, q, frame, len);
    }
    tr__link_free(l);
}

static tr__link *node_of(tr_runtime *rt) {
    return rt != NULL ? rt->node : NULL;
}

TR_API int tr_node_start(tr_runtime *rt, const tr_node_config *cfg) {
    if (rt == NULL || cfg == NULL || cfg->name == NULL ||
        !name_ok(cfg->name, strlen(cfg->name)))
        return TR_EINVAL;
    tr__behavior_mark_raw_replies(&tr__proxy_behavior);
    tr__behavior_mark_pressure(&tr__proxy_behavior);
    tr__behavior_mark_pressure(&tr__link_behavior);
    if (!cfg->plaintext && (!key_ok(cfg->public_key) ||
                            !key_ok(cfg->secret_key) ||
                            (cfg->nallow > 0 && cfg->allow == NULL))) {
        tr__log(TR_LOG_ERROR, "node: CURVE keys missing or malformed (Z85, "
                              "40 characters; or set plaintext)");
        return TR_EINVAL;
    }
    for (size_t i = 0; !cfg->plaintext && i < cfg->nallow; i++)
        if (!key_ok(cfg->allow[i]))
            return TR_EINVAL;
    if (cfg->listen != NULL && strlen(cfg->listen) >= 150)
        return TR_EINVAL;
    if (rt->node != NULL)
        return TR_ESTATE;
    unsigned n = cfg->max_peers > 0 ? cfg->max_peers : 64;
    if (n > 4096)
        return TR_EINVAL;
    tr__link *l = tr__link_new(rt, TR__LINK_NODE, n);
    if (l == NULL)
        return TR_ENOMEM;
    snprintf(l->name, sizeof l->name, "%s", cfg->name);
    if (cfg->max_frame > 0) {
        l->lim.max_frame = cfg->max_frame;
        if (l->lim.max_payload > cfg->max_frame)
            l->lim.max_payload = (uint32_t)cfg->max_frame;
        if (tr__codec_limits_check(&l->lim) != 0) {
            tr__link_free(l);
            return TR_EINVAL;
        }
        for (unsigned i = 0; i < n; i++)
            (void)tr__encoder_init(&l->peers[i].enc, &l->lim);
    }
    if (cfg->listen != NULL)
        snprintf(l->endpoint, sizeof l->endpoint, "%s", cfg->listen);
    l->plaintext = cfg->plaintext;
    l->grant = cfg->window == 0 ? 1024
               : cfg->window < 0 ? 0
                                 : (uint32_t)cfg->window;
    l->loss_timeout_ms = cfg->loss_timeout_ms > 0 ? cfg->loss_timeout_ms : 1000;
    int rc = 0;
    if (!l->plaintext) {
        memcpy(l->public_key, cfg->public_key, TR_NODE_KEY_LEN);
        memcpy(l->secret_key, cfg->secret_key, TR_NODE_KEY_LEN);
        if (cfg->nallow > 0) {
            l->allow = calloc(cfg->nallow, sizeof *l->allow);
            if (l->allow == NULL)
                rc = TR_ENOMEM;
            for (size_t i = 0; rc == 0 && i < cfg->nallow; i++)
                memcpy(l->allow[i], cfg->allow[i], TR_NODE_KEY_LEN);
            l->nallow = rc == 0 ? cfg->nallow : 0;
        }
    } else {
        tr__log(TR_LOG_WARN, "node %s: plaintext (no CURVE): any peer that "
                             "can reach it may connect",
                l->name);
    }
    if (rc == 0)
        rc = tr__link_open(l);
    if (rc == 0)
        rc = tr__spawn_system(rt, &tr__link_behavior, &l, sizeof l, &l->self);
    if (rc != 0) {
        tr__link_free(l);
        return rc;
    }
    rt->node = l;
    rt->node_destroy = node_destroy;
    return 0;
}

TR_API int tr_node_endpoint(tr_runtime *rt, char *buf, size_t cap) {
    tr__link *l = node_of(rt);
    if (l == NULL || l->sock == NULL)
        return TR_ESTATE;
    if (buf == NULL || strlen(l->endpoint) >= cap)
        return buf == NULL ? TR_EINVAL : TR_ETOOBIG;
    memcpy(buf, l->endpoint, strlen(l->endpoint) + 1);
    return 0;
}

TR_API int tr_node_connect(tr_runtime *rt, const char *name,
                           const char *endpoint, const char *server_key) {
    tr__link *l = node_of(rt);
    if (l == NULL)
        return TR_ESTATE;
    if (name == NULL || !name_ok(name, strlen(name)) || endpoint == NULL ||
        strlen(endpoint) >= sizeof l->peers[0].endpoint ||
        (!l->plaintext && !key_ok(server_key)) || strcmp(name, l->name) == 0)
        return TR_EINVAL;
    pthread_mutex_lock(&l->lock);
    int rc = 0;
    tr__peer *p = NULL;
    if (slot_by_name(l, name, strlen(name)) != NULL)
        rc = TR_EEXIST;
    else if ((p = slot_take(l, name, strlen(name), endpoint,
                            l->plaintext ? NULL : server_key)) == NULL)
        rc = TR_ENOMEM;
    pthread_mutex_unlock(&l->lock);
    if (rc != 0)
        return rc;
    return tr_runtime_send_u64(rt, l->self, TR__LT_CONNECT,
                               (uint64_t)(p - l->peers));
}

/* The slot index of node `node`, or TR_ENOTFOUND. */
static int peer_index(tr__link *l, const char *node) {
    if (node == NULL)
        return TR_EINVAL;
    pthread_mutex_lock(&l->lock);
    tr__peer *p = slot_by_name(l, node, strlen(node));
    pthread_mutex_unlock(&l->lock);
    return p != NULL ? (int)(p - l->peers) : TR_ENOTFOUND;
}

TR_API int tr_node_is_up(tr_runtime *rt, const char *name) {
    tr__link *l = node_of(rt);
    int i = l != NULL ? peer_index(l, name) : -1;
    /* connected is the link's; a relaxed read is a snapshot. */
    return i >= 0 && __atomic_load_n(&l->peers[i].connected, __ATOMIC_RELAXED);
}

TR_API int tr_node_subscribe(tr_runtime *rt, tr_ref to) {
    tr__link *l = node_of(rt);
    if (l == NULL)
        return TR_ESTATE;
    if (!tr_actor_alive(rt, to))
        return TR_ENOACTOR;
    return tr_runtime_send_u64(rt, l->self, TR__LT_SUBSCRIBE, to.id);
}

static int node_spawn(tr_runtime *rt, tr_ctx *ctx, const char *node,
                      const char *key, const char *name, const void *init,
                      size_t init_len, uint32_t started_tag, tr_ref *out) {
    tr__link *l = node_of(rt);
    if (l == NULL)
        return TR_ESTATE;
    int rc = tr__remote_args_check(name, init, init_len);
    if (rc != 0)
        return rc;
    int i = peer_index(l, node);
    if (i < 0)
        return i;
    return tr__remote_spawn(rt, ctx, l, (uint32_t)i, key, name, init,
                            init_len, started_tag, out);
}

int tr__node_spawn_placed(tr_ctx *ctx, const char *node, const char *name,
                          const void *init, size_t init_len,
                          uint32_t started_tag, tr_ref *out);
int tr__node_spawn_placed(tr_ctx *ctx, const char *node, const char *name,
                          const void *init, size_t init_len,
                          uint32_t started_tag, tr_ref *out) {
    return node_spawn(tr_ctx_runtime(ctx), ctx, node, "behavior", name, init,
                      init_len, started_tag, out);
}

TR_API int tr_node_spawn(tr_ctx *ctx, const char *node, const char *behavior,
                         const void *init, size_t init_len, tr_ref *out) {
    if (ctx == NULL)
        return TR_EINVAL;
    return node_spawn(tr_ctx_runtime(ctx), ctx, node, "behavior", behavior,
                      init, init_len, 0, out);
}

TR_API int tr_runtime_node_spawn(tr_runtime *rt, const char *node,
                                 const char *behavior, const void *init,
                                 size_t init_len, tr_ref *out) {
    return node_spawn(rt, NULL, node, "behavior", behavior, init, init_len, 0,
                      out);
}

TR_API int tr_node_lookup(tr_ctx *ctx, const char *node, const char *name,
                          tr_ref *out) {
    if (ctx == NULL)
        return TR_EINVAL;
    return node_spawn(tr_ctx_runtime(ctx), ctx, node, "lookup", name, NULL, 0,
                      0, out);
}

TR_API int tr_runtime_node_lookup(tr_runtime *rt, const char *node,
                                  const char *name, tr_ref *out) {
    return node_spawn(rt, NULL, node, "lookup", name, NULL, 0, 0, out);
}

TR_API int tr_transport_stats_get(tr_runtime *rt, bool node,
                                  tr_transport_stats *out) {
    if (rt == NULL || out == NULL)
        return TR_EINVAL;
    tr__link *l = node ? rt->node : rt->pool;
    if (l == NULL)
        return TR_ESTATE;
    const tr__link_counters *c = &l->c;
#define LD(f) out->f = __atomic_load_n(&c->f, __ATOMIC_RELAXED)
    LD(frames_in);
    LD(frames_out);
    LD(rejected);
    LD(unknown_peer);
    LD(zap_denied);
    LD(zap_allowed);
    LD(dropped_out);
    LD(peers_lost);
    LD(retried);
    LD(held);
    LD(held_peak);
#undef LD
    return 0;
}
