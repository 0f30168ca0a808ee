/* Routers (troupe/router.h): an actor that forwards what it gets. The
 * initial routees come through the spawn's init (a small array copied
 * into the state); add/remove are control messages. */
#include <stdlib.h>
#include <string.h>

#include "actors/system.h"
#include "runtime/grow.h"
#include "troupe/error.h"
#include "troupe/lifecycle.h"
#include "troupe/router.h"

#define RT_ADD 0xFFFF0730u
#define RT_REMOVE 0xFFFF0731u
#define ROUTER_MAX 1024u

typedef struct routee_ent {
    tr_ref ref;
    uint64_t mon;
} routee_ent;

typedef struct router {
    tr_route how;
    uint32_t next;
    routee_ent *r;
    uint32_t n, cap;
    tr_ref init[16]; /* the first routees (from the spawn) */
    uint32_t ninit;
    tr_ref *more; /* beyond 16: heap, freed on start */
} router;

static int add(tr_ctx *ctx, router *s, tr_ref who) {
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
    s->r[s->n++] = (routee_ent){who, mon};
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

static int router_start(tr_ctx *ctx, void *state) {
    router *s = state;
    int rc = 0;
    for (uint32_t i = 0; i < s->ninit && rc == 0; i++)
        rc = add(ctx, s, i < 16 ? s->init[i] : s->more[i - 16]);
    free(s->more);
    s->more = NULL;
    return rc;
}

static int router_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    router *s = state;
    switch (tr_msg_tag(msg)) {
    case RT_ADD:
        return add(ctx, s, (tr_ref){tr_msg_u64(msg)});
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
    default:
        break;
    }
    if (s->n == 0)
        return 0; /* no routee: dropped (the requester's timeout tells) */
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
    /* A routee that just ended: dropped with it (its DOWN removes it). */
    (void)tr_forward(ctx, s->r[pick(ctx, s, msg)].ref, msg);
    return 0;
}

static void router_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)reason;
    router *s = state;
    free(s->r);
    free(s->more);
    s->r = NULL;
    s->more = NULL;
}

static const tr_behavior router_behavior = {.name = "troupe.router",
                                            .handle = router_handle,
                                            .on_start = router_start,
                                            .on_stop = router_stop,
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
