/* Routers (troupe/router.h): an actor that forwards what it gets. The
 * initial routees come through the spawn's init (a small array copied
 * into the state); add/remove are control messages.
 *
 * Supervised pools: the router starts a supervisor (its own child, so the
 * pool lives and ends with the router) whose children are the routees,
 * named "<name>.<slot>", and asks it for TR_TAG_SUP_CHILD_UP notices:
 * every start or restart of a routee adds it (a restart is a new actor:
 * the old one left by its DOWN). Resizing starts, restarts (a slot used
 * before) or terminates slots through the supervisor's calls, which it
 * handles in order. While the pool has no routee (all restarting),
 * messages are held in order, not dropped; past `hold` of them the
 * router mutes its senders (actors/mute.c), as a full channel does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/system.h"
#include "supervisor/supervisor_int.h"
#include "runtime/grow.h"
#include "runtime/log.h"
#include "runtime/ring.h"
#include "troupe/error.h"
#include "troupe/lifecycle.h"
#include "troupe/router.h"
#include "troupe/supervisor.h"

#define RT_ADD 0xFFFF0730u
#define RT_REMOVE 0xFFFF0731u
#define RT_RESIZE 0xFFFF0732u
#define NO_SLOT UINT32_MAX
#define ROUTER_MAX 1024u

typedef struct routee_ent {
    tr_ref ref;
    uint64_t mon;
    uint32_t slot; /* pool: the supervisor child's slot; else NO_SLOT */
} routee_ent;

/* A supervised pool's part of the state (heap; the router owns it). */
typedef struct pool {
    tr_sup_config sup;
    char sup_name[TR_SUP_NAME_MAX];
    char prefix[TR_SUP_NAME_MAX - 16];
    const tr_behavior *behavior;
    void *init;
    size_t init_len;
    tr_restart restart;
    int64_t shutdown_ms;
    char remote[64], node[64];
    bool bounded;
    tr_mailbox_limit limit;
    tr_ref sup_ref;
    uint32_t size; /* slots wanted: 0..size-1 */
    uint32_t made; /* slots the supervisor has a spec for */
    uint32_t hold_max;
    bool muted;
    tr__ring held; /* tr_msg *, while no routee runs */
} pool;

typedef struct router {
    tr_route how;
    uint32_t next;
    routee_ent *r;
    uint32_t n, cap;
    tr_ref init[16]; /* the first routees (from the spawn) */
    uint32_t ninit;
    tr_ref *more; /* beyond 16: heap, freed on start */
    pool *pool;   /* supervised pool, or NULL */
} router;

static int add(tr_ctx *ctx, router *s, tr_ref who, uint32_t slot) {
    for (uint32_t i = 0; i < s->n; i++)
        if (tr_ref_eq(s->r[i].ref, who))
            return 0;
    if (s->n >= ROUTER_MAX)
        return TR_ENOMEM;
    if (s->n == s->cap &&
        !tr__grow((void **)&s->r, &s->cap, s->n + 1, sizeof *s->r, 8))
        return TR_ENOMEM;
    uint64_t mon = 0;
    if (tr_monitor(ctx, who, &mon) != 0)
        return 0; /* dead already: not added */
    s->r[s->n++] = (routee_ent){who, mon, slot};
    return 0;
}

static void remove_at(tr_ctx *ctx, router *s, uint32_t i) {
    if (ctx != NULL && s->r[i].mon != 0)
        (void)tr_demonitor(ctx, s->r[i].mon);
    /* Order kept: round robin and hashing stay stable for the others. */
    memmove(&s->r[i], &s->r[i + 1], (s->n - i - 1) * sizeof *s->r);
    s->n--;
}

/* Rendezvous hashing: the routee with the highest hash(key, routee). */
static uint32_t by_key(const router *s, uint64_t key) {
    uint32_t best = 0;
    uint64_t top = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        uint64_t h = (key ^ (s->r[i].ref.id * 0x9E3779B97F4A7C15ull)) *
                     0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
        h *= 0x94D049BB133111EBull;
        h ^= h >> 29;
        if (i == 0 || h > top) {
            top = h;
            best = i;
        }
    }
    return best;
}

static uint64_t key_of(const tr_msg *m) {
    if (tr_msg_kind(m) == TR_PAYLOAD_U64)
        return tr_msg_u64(m);
    size_t len = 0;
    const unsigned char *p = tr_msg_data(m, &len);
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; p != NULL && i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static uint32_t pick(tr_ctx *ctx, router *s, const tr_msg *m) {
    switch (s->how) {
    case TR_ROUTE_HASH:
        return by_key(s, key_of(m));
    case TR_ROUTE_LEAST_LOADED: {
        int64_t best_d = -1;
        uint32_t best = 0;
        for (uint32_t i = 0; i < s->n; i++) {
            int64_t d =
                tr_actor_mailbox_depth(tr_ctx_runtime(ctx), s->r[i].ref);
            if (d < 0)
                break; /* depths not tracked: round robin */
            if (best_d < 0 || d < best_d) {
                best_d = d;
                best = i;
            }
        }
        if (best_d >= 0)
            return best;
    } /* fall through */
    default:
        return s->next++ % s->n;
    }
}

static tr_msg *copy_of(const tr_msg *m) {
    size_t len = 0;
    const void *d;
    tr_msg *c;
    switch (tr_msg_kind(m)) {
    case TR_PAYLOAD_NONE:
        c = tr_msg_new(tr_msg_tag(m));
        break;
    case TR_PAYLOAD_U64:
        c = tr_msg_new_u64(tr_msg_tag(m), tr_msg_u64(m));
        break;
    case TR_PAYLOAD_BYTES:
        d = tr_msg_data(m, &len);
        c = tr_msg_new_bytes(tr_msg_tag(m), d, len);
        break;
    case TR_PAYLOAD_MSGPACK:
        d = tr_msg_data(m, &len);
        c = tr_msg_new_msgpack(tr_msg_tag(m), d, len);
        break;
    default:
        return NULL; /* a pointer cannot be shared */
    }
    if (c != NULL)
        c->sender = tr_msg_sender(m);
    return c;
}

/* ---- supervised pools ---- */

static void slot_spec(const pool *p, uint32_t slot, char *name,
                      tr_sup_spec *out) {
    /* prefix: at most 47 chars, so that any slot fits. */
    snprintf(name, TR_SUP_NAME_MAX, "%.47s.%u", p->prefix,
             (unsigned)(uint16_t)slot);
    *out = (tr_sup_spec){.name = name,
                         .behavior = p->behavior,
                         .init = p->init,
                         .init_len = p->init_len,
                         .restart = p->restart,
                         .shutdown_ms = p->shutdown_ms,
                         .remote = p->remote[0] ? p->remote : NULL,
                         .node = p->node[0] ? p->node : NULL,
                         .mailbox = p->bounded ? &p->limit : NULL};
}

static int pool_start(tr_ctx *ctx, pool *p) {
    tr_sup_spec *specs = calloc(p->size, sizeof *specs);
    char(*names)[TR_SUP_NAME_MAX] = calloc(p->size, TR_SUP_NAME_MAX);
    int rc = TR_ENOMEM;
    if (specs != NULL && names != NULL) {
        for (uint32_t i = 0; i < p->size; i++)
            slot_spec(p, i, names[i], &specs[i]);
        p->sup.notify = tr_self(ctx);
        p->sup.name = p->sup_name;
        rc = tr_sup_start(ctx, &p->sup, specs, p->size, &p->sup_ref);
        p->made = p->size;
    }
    free(specs);
    free(names);
    return rc;
}

/* The slot of a child named "<prefix>.<slot>", or NO_SLOT. */
static uint32_t slot_of(const pool *p, const char *name) {
    size_t n = strlen(p->prefix);
    if (strncmp(name, p->prefix, n) != 0 || name[n] != '.')
        return NO_SLOT;
    char *end = NULL;
    unsigned long v = strtoul(name + n + 1, &end, 10);
    return end != name + n + 1 && *end == 0 && v < ROUTER_MAX ? (uint32_t)v
                                                               : NO_SLOT;
}

static void hold_mute(tr_ctx *ctx, pool *p, bool on) {
    if (p->muted != on) {
        p->muted = on;
        (void)tr__overload_set(tr_ctx_runtime(ctx), ctx, tr_self(ctx), on);
    }
}

static int route(tr_ctx *ctx, router *s, tr_msg *msg);

/* A routee is back: what was held goes out in arrival order. */
static void pool_flush(tr_ctx *ctx, router *s) {
    pool *p = s->pool;
    tr_runtime *rt = tr_ctx_runtime(ctx);
    while (p->held.n > 0 && s->n > 0) {
        tr_msg *m;
        tr__ring_pop(&p->held, &m, sizeof m);
        if (s->how == TR_ROUTE_BROADCAST) {
            (void)route(ctx, s, m);
            tr__msg_free(m);
        } else if (tr__send(rt, ctx, s->r[pick(ctx, s, m)].ref, m) != 0) {
            tr__msg_free(m); /* that routee just ended */
        }
    }
    if (p->held.n == 0)
        hold_mute(ctx, p, false);
}

static int pool_hold(tr_ctx *ctx, pool *p, tr_msg *msg) {
    tr_msg *m = tr__msg_move(msg);
    if (m == NULL)
        return TR_ENOMEM;
    if (!tr__ring_push(&p->held, &m, sizeof m)) {
        tr__msg_free(m);
        return TR_ENOMEM;
    }
    if (p->held.n >= p->hold_max)
        hold_mute(ctx, p, true);
    return 0;
}

static void pool_child_up(tr_ctx *ctx, router *s, const tr_msg *msg) {
    tr_ref ref;
    char name[TR_SUP_NAME_MAX];
    if (tr_sup_child_up_read(msg, &ref, name) != 0 ||
        !tr_ref_eq(tr_msg_sender(msg), s->pool->sup_ref))
        return;
    uint32_t slot = slot_of(s->pool, name);
    if (slot >= s->pool->size)
        return; /* a slot being shrunk away: its terminate call follows */
    for (uint32_t i = 0; i < s->n; i++)
        if (s->r[i].slot == slot) /* its old incarnation, not yet DOWN */
            remove_at(ctx, s, i--);
    (void)add(ctx, s, ref, slot);
    pool_flush(ctx, s);
}

static int pool_resize(tr_ctx *ctx, router *s, uint32_t size) {
    pool *p = s->pool;
    if (size == 0 || size > ROUTER_MAX)
        return 0; /* checked by tr_router_resize */
    char name[TR_SUP_NAME_MAX];
    tr_sup_spec spec;
    int rc = 0;
    for (uint32_t k = p->size; k < size && rc == 0; k++) {
        slot_spec(p, k, name, &spec);
        if (k < p->made) {
            rc = tr_sup_restart_child(ctx, p->sup_ref, name, NULL);
        } else {
            rc = tr_sup_start_child(ctx, p->sup_ref, &spec, NULL);
            p->made = k + 1;
        }
    }
    for (uint32_t i = 0; i < s->n; i++)
        if (s->r[i].slot != NO_SLOT && s->r[i].slot >= size)
            remove_at(ctx, s, i--);
    for (uint32_t k = size; k < p->size && rc == 0; k++) {
        slot_spec(p, k, name, &spec);
        rc = tr_sup_terminate_child(ctx, p->sup_ref, name, NULL);
    }
    p->size = size;
    return rc;
}

static void pool_free(pool *p) {
    if (p == NULL)
        return;
    while (p->held.n > 0) {
        tr_msg *m;
        tr__ring_pop(&p->held, &m, sizeof m);
        tr__msg_free(m);
    }
    tr__ring_free(&p->held);
    free(p->init);
    free(p);
}

static void router_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    router *s = state;
    /* The pool's supervisor failed (restart intensity exceeded): so does
     * the pool, so that the router's own parent applies its policy. */
    if (s->pool != NULL && tr_ref_eq(x->who, s->pool->sup_ref) &&
        x->reason < 0)
        (void)tr_fail(ctx, x->reason, "pool supervisor failed: %s",
                      x->text != NULL && x->text[0] ? x->text
                                                    : tr_strerror(x->reason));
}

static int router_start(tr_ctx *ctx, void *state) {
    router *s = state;
    int rc = 0;
    for (uint32_t i = 0; i < s->ninit && rc == 0; i++)
        rc = add(ctx, s, i < 16 ? s->init[i] : s->more[i - 16], NO_SLOT);
    free(s->more);
    s->more = NULL;
    if (rc != 0 || s->pool == NULL)
        return rc;
    return pool_start(ctx, s->pool);
}

static int router_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    router *s = state;
    switch (tr_msg_tag(msg)) {
    case RT_ADD:
        return add(ctx, s, (tr_ref){tr_msg_u64(msg)}, NO_SLOT);
    case RT_REMOVE:
        for (uint32_t i = 0; i < s->n; i++)
            if (s->r[i].ref.id == tr_msg_u64(msg)) {
                remove_at(ctx, s, i);
                break;
            }
        return 0;
    case TR_TAG_DOWN: {
        tr_exit x;
        if (tr_msg_exit(msg, &x) == 0)
            for (uint32_t i = 0; i < s->n; i++)
                if (s->r[i].mon == x.id) {
                    s->r[i].mon = 0;
                    remove_at(ctx, s, i);
                    break;
                }
        return 0;
    }
    case TR_TAG_SUP_CHILD_UP:
        if (s->pool != NULL)
            pool_child_up(ctx, s, msg);
        return 0;
    case TR_TAG_SUP_REPLY: {
        tr_sup_reply r;
        if (s->pool != NULL && tr_sup_reply_read(msg, &r) == 0 &&
            r.result != 0)
            tr__log(TR_LOG_WARN, "router: pool %s: supervisor call %d: %s",
                    s->pool->prefix, r.op, tr_strerror(r.result));
        return 0;
    }
    case RT_RESIZE:
        return s->pool != NULL ? pool_resize(ctx, s, (uint32_t)tr_msg_u64(msg))
                               : 0;
    default:
        break;
    }
    if (s->n == 0 && s->pool != NULL && !tr_msg_is_reply(msg))
        return pool_hold(ctx, s->pool, msg);
    return route(ctx, s, msg);
}

static int route(tr_ctx *ctx, router *s, tr_msg *msg) {
    if (s->n == 0) { /* no routee: dropped, a request failed back */
        tr__request_fail(tr_ctx_runtime(ctx), ctx, msg, TR_ENOACTOR);
        return 0;
    }
    if (s->how == TR_ROUTE_BROADCAST) {
        for (uint32_t i = 0; i < s->n; i++) {
            tr_msg *c = copy_of(msg);
            if (c == NULL)
                return TR_EPAYLOAD;
            if (tr__send(tr_ctx_runtime(ctx), ctx, s->r[i].ref, c) != 0)
                tr__msg_free(c);
        }
        return 0;
    }
    /* A routee that just ended (its DOWN will remove it): dropped, a
     * request failed back. */
    if (tr_forward(ctx, s->r[pick(ctx, s, msg)].ref, msg) != 0)
        tr__request_fail(tr_ctx_runtime(ctx), ctx, msg, TR_ENOACTOR);
    return 0;
}

static void router_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)reason;
    router *s = state;
    free(s->r);
    free(s->more);
    pool_free(s->pool);
    s->r = NULL;
    s->more = NULL;
    s->pool = NULL;
}

static const tr_behavior router_behavior = {.name = "troupe.router",
                                            .handle = router_handle,
                                            .on_start = router_start,
                                            .on_stop = router_stop,
                                            .on_child_exit = router_child_exit,
                                            .state_size = sizeof(router)};

static int spawn(tr_runtime *rt, tr_ctx *ctx, tr_route how,
                 const tr_ref *routees, uint32_t n, tr_ref *out) {
    if ((unsigned)how > TR_ROUTE_BROADCAST || n > ROUTER_MAX ||
        (n > 0 && routees == NULL))
        return TR_EINVAL;
    router s = {.how = how, .ninit = n};
    if (n > 0)
        memcpy(s.init, routees, (n < 16 ? n : 16) * sizeof *routees);
    if (n > 16) {
        s.more = malloc((n - 16) * sizeof *s.more);
        if (s.more == NULL)
            return TR_ENOMEM;
        memcpy(s.more, routees + 16, (n - 16) * sizeof *s.more);
    }
    int rc = ctx != NULL
                 ? tr_spawn(ctx, &router_behavior, &s, sizeof s, out)
                 : tr_runtime_spawn(rt, &router_behavior, &s, sizeof s, out);
    if (rc != 0)
        free(s.more);
    return rc;
}

TR_API int tr_router_spawn(tr_ctx *ctx, tr_route how, const tr_ref *routees,
                           uint32_t n, tr_ref *out) {
    return ctx != NULL ? spawn(NULL, ctx, how, routees, n, out) : TR_EINVAL;
}

TR_API int tr_runtime_router_spawn(tr_runtime *rt, tr_route how,
                                   const tr_ref *routees, uint32_t n,
                                   tr_ref *out) {
    return rt != NULL ? spawn(rt, NULL, how, routees, n, out) : TR_EINVAL;
}

TR_API int tr_router_add(tr_ctx *ctx, tr_ref router_ref, tr_ref routee) {
    return ctx != NULL ? tr_send_u64(ctx, router_ref, RT_ADD, routee.id)
                       : TR_ENOCTX;
}

TR_API int tr_router_remove(tr_ctx *ctx, tr_ref router_ref, tr_ref routee) {
    return ctx != NULL ? tr_send_u64(ctx, router_ref, RT_REMOVE, routee.id)
                       : TR_ENOCTX;
}

/* ---- supervised pools ---- */

static int pool_new(const tr_router_pool_config *cfg, pool **out) {
    const tr_sup_spec *t = &cfg->routee;
    if ((unsigned)cfg->how > TR_ROUTE_BROADCAST || cfg->size == 0 ||
        cfg->size > ROUTER_MAX || t->name == NULL || t->name[0] == 0 ||
        strlen(t->name) >= sizeof((pool *)0)->prefix ||
        (t->remote != NULL && strlen(t->remote) >= 64) ||
        (t->node != NULL && strlen(t->node) >= 64))
        return TR_EINVAL;
    /* The supervisor checks the rest (behaviour, init, restart, config)
     * when the router starts it; check them here too so that a bad config
     * is an error of this call, not a failing router. */
    char name[TR_SUP_NAME_MAX];
    snprintf(name, sizeof name, "%.47s.%u", t->name,
             (unsigned)(uint16_t)(cfg->size - 1));
    tr_sup_spec probe = *t;
    probe.name = name;
    if (tr__sup_check_spec(&probe, 0) != 0 ||
        tr__sup_check_config(&cfg->sup) != 0)
        return TR_EINVAL;
    pool *p = calloc(1, sizeof *p);
    if (p == NULL)
        return TR_ENOMEM;
    p->sup = cfg->sup;
    snprintf(p->sup_name, sizeof p->sup_name, "%s",
             cfg->sup.name != NULL ? cfg->sup.name : t->name);
    snprintf(p->prefix, sizeof p->prefix, "%s", t->name);
    p->behavior = t->behavior;
    p->restart = t->restart;
    p->shutdown_ms = t->shutdown_ms;
    snprintf(p->remote, sizeof p->remote, "%s", t->remote ? t->remote : "");
    snprintf(p->node, sizeof p->node, "%s", t->node ? t->node : "");
    if (t->mailbox != NULL) {
        p->bounded = true;
        p->limit = *t->mailbox;
    }
    p->size = cfg->size;
    p->hold_max = cfg->hold != 0 ? cfg->hold : 1024;
    if (t->init_len > 0) {
        if ((p->init = malloc(t->init_len)) == NULL) {
            free(p);
            return TR_ENOMEM;
        }
        memcpy(p->init, t->init, t->init_len);
        p->init_len = t->init_len;
    }
    *out = p;
    return 0;
}

static int pool_spawn(tr_runtime *rt, tr_ctx *ctx,
                      const tr_router_pool_config *cfg, tr_ref *out) {
    if (cfg == NULL)
        return TR_EINVAL;
    router s = {.how = cfg->how};
    int rc = pool_new(cfg, &s.pool);
    if (rc != 0)
        return rc;
    /* The router's own mailbox is bounded too (`hold` messages): when the
     * routees are behind, the router is muted on them, its mailbox fills
     * and its senders are muted in turn, instead of queueing without
     * bound in front of the pool. */
    tr_mailbox_limit lim = {.max_msgs = s.pool->hold_max,
                            .policy = TR_OVERFLOW_BACKPRESSURE};
    rc = ctx != NULL ? tr_spawn_bounded(ctx, &router_behavior, &s, sizeof s,
                                        &lim, out)
                     : tr_runtime_spawn_bounded(rt, &router_behavior, &s,
                                                sizeof s, &lim, out);
    if (rc != 0)
        pool_free(s.pool);
    return rc;
}

TR_API int tr_router_pool_spawn(tr_ctx *ctx, const tr_router_pool_config *cfg,
                                tr_ref *out) {
    return ctx != NULL ? pool_spawn(NULL, ctx, cfg, out) : TR_EINVAL;
}

TR_API int tr_runtime_router_pool_spawn(tr_runtime *rt,
                                        const tr_router_pool_config *cfg,
                                        tr_ref *out) {
    return rt != NULL ? pool_spawn(rt, NULL, cfg, out) : TR_EINVAL;
}

TR_API int tr_router_resize(tr_ctx *ctx, tr_ref router_ref, uint32_t size) {
    if (ctx == NULL)
        return TR_ENOCTX;
    if (size == 0 || size > ROUTER_MAX)
        return TR_EINVAL;
    return tr_send_u64(ctx, router_ref, RT_RESIZE, size);
}
