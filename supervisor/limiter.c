/* Capacity and rate limiters (troupe/limiter.h).
 *
 * One actor behaviour for both. The limiter keeps its clients (monitored on
 * first contact, forgotten when they hold nothing and wait for nothing), a
 * FIFO line of waiters and, for a rate limiter, a token bucket refilled
 * from the monotonic clock; a timer message wakes it when the next token is
 * due and someone waits. A client that ends gives back what it held and
 * leaves the line (its DOWN). */
#include <math.h>
#include <stdlib.h>

#include "runtime/grow.h"
#include "runtime/log.h"
#include "runtime/ring.h"
#include "troupe/error.h"
#include "troupe/lifecycle.h"
#include "troupe/limiter.h"
#include "troupe/timer.h"

/* ACQUIRE, RELEASE and TR_TAG_LIMIT_GRANT cross processes (transport/
 * codec.h, TR__TAG_LIMITER_*); the timer's TICK stays local. */
#define LIM_ACQUIRE 0xFFFF0701u
#define LIM_RELEASE 0xFFFF0702u
#define LIM_TICK 0xFFFF0703u

typedef struct waiter {
    tr_ref who;
    uint64_t cookie;
} waiter;

typedef struct client {
    tr_ref who;
    uint64_t mon;
    uint32_t held, waiting;
} client;

typedef struct limiter {
    bool rate;
    uint32_t capacity, out;                 /* capacity limiter */
    double per_second, tokens;              /* rate limiter */
    uint32_t burst;
    int64_t last_ns;
    bool tick_armed;
    tr__ring q; /* waiters, first come first served */
    client *c;
    uint32_t nc, capc;
} limiter;

static _Atomic uint64_t misuse_log_count;

static client *client_of(limiter *l, tr_ref who) {
    for (uint32_t i = 0; i < l->nc; i++)
        if (tr_ref_eq(l->c[i].who, who))
            return &l->c[i];
    return NULL;
}

static client *client_add(tr_ctx *ctx, limiter *l, tr_ref who) {
    client *c = client_of(l, who);
    if (c != NULL)
        return c;
    if (l->nc == l->capc &&
        !tr__grow((void **)&l->c, &l->capc, l->nc + 1, sizeof *l->c, 8))
        return NULL;
    c = &l->c[l->nc++];
    *c = (client){.who = who};
    if (tr_monitor(ctx, who, &c->mon) != 0)
        c->mon = 0;
    return c;
}

static void client_forget_if_idle(tr_ctx *ctx, limiter *l, client *c) {
    if (c->held > 0 || c->waiting > 0)
        return;
    if (c->mon != 0)
        (void)tr_demonitor(ctx, c->mon);
    *c = l->c[--l->nc];
}

static void refill(limiter *l) {
    int64_t now = tr_now_ns();
    l->tokens += (double)(now - l->last_ns) * 1e-9 * l->per_second;
    if (l->tokens > l->burst)
        l->tokens = l->burst;
    l->last_ns = now;
}

/* Grants to the head of the line while there is room (or tokens). */
static void serve(tr_ctx *ctx, limiter *l) {
    if (l->rate)
        refill(l);
    while (l->q.n > 0 &&
           (l->rate ? l->tokens >= 1.0 : l->out < l->capacity)) {
        waiter w;
        tr__ring_pop(&l->q, &w, sizeof w);
        client *c = client_of(l, w.who);
        if (c == NULL)
            continue; /* it ended: left the line */
        c->waiting--;
        if (tr_send_u64(ctx, w.who, TR_TAG_LIMIT_GRANT, w.cookie) != 0) {
            client_forget_if_idle(ctx, l, c);
            continue;
        }
        if (l->rate) {
            l->tokens -= 1.0;
            client_forget_if_idle(ctx, l, c);
        } else {
            l->out++;
            c->held++;
        }
    }
    if (l->rate && l->q.n > 0 && !l->tick_armed) {
        /* Wake when the next token is due. */
        /* Rounded up (no libm: + 1 ms instead of ceil). */
        int64_t ms =
            (int64_t)((1.0 - l->tokens) / l->per_second * 1000.0) + 1;
        tr_msg *t = tr_msg_new(LIM_TICK);
        if (t != NULL && tr_send_after(tr_ctx_runtime(ctx), tr_self(ctx),
                                       ms < 1 ? 1 : ms, &t, NULL) == 0)
            l->tick_armed = true;
        else
            tr_msg_destroy(&t);
    }
}

static int limiter_start(tr_ctx *ctx, void *state) {
    (void)ctx;
    limiter *l = state;
    l->last_ns = tr_now_ns();
    l->tokens = l->burst;
    return 0;
}

static int limiter_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    limiter *l = state;
    tr_ref who = tr_msg_sender(msg);
    switch (tr_msg_tag(msg)) {
    case LIM_ACQUIRE: {
        client *c = client_add(ctx, l, who);
        waiter w = {who, tr_msg_u64(msg)};
        if (c == NULL || !tr__ring_push(&l->q, &w, sizeof w))
            return TR_ENOMEM;
        c->waiting++;
        serve(ctx, l);
        return 0;
    }
    case LIM_RELEASE: {
        client *c = client_of(l, who);
        if (l->rate)
            return 0;
        if (c == NULL || c->held == 0) {
            tr__log_sampled(&misuse_log_count, TR_LOG_WARN,
                            "limiter: release by an actor that holds no "
                            "permit (ignored)");
            return 0;
        }
        c->held--;
        l->out--;
        client_forget_if_idle(ctx, l, c);
        serve(ctx, l);
        return 0;
    }
    case LIM_TICK:
        l->tick_armed = false;
        serve(ctx, l);
        return 0;
    case TR_TAG_DOWN: { /* a client ended: its permits come back */
        tr_exit x;
        if (tr_msg_exit(msg, &x) != 0)
            return 0;
        for (uint32_t i = 0; i < l->nc; i++) {
            if (l->c[i].mon != x.id)
                continue;
            if (!l->rate)
                l->out -= l->c[i].held;
            l->c[i] = l->c[--l->nc]; /* its waiters are skipped */
            break;
        }
        serve(ctx, l);
        return 0;
    }
    default:
        return TR_UNHANDLED;
    }
}

static void limiter_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)reason;
    limiter *l = state;
    tr__ring_free(&l->q);
    free(l->c);
    l->c = NULL;
}

static const tr_behavior limiter_behavior = {.name = "troupe.limiter",
                                             .handle = limiter_handle,
                                             .on_start = limiter_start,
                                             .on_stop = limiter_stop,
                                             .state_size = sizeof(limiter)};

static int spawn(tr_runtime *rt, tr_ctx *ctx, const limiter *init,
                 tr_ref *out) {
    return ctx != NULL
               ? tr_spawn(ctx, &limiter_behavior, init, sizeof *init, out)
               : tr_runtime_spawn(rt, &limiter_behavior, init, sizeof *init,
                                  out);
}

TR_API int tr_limiter_spawn(tr_ctx *ctx, uint32_t capacity, tr_ref *out) {
    if (ctx == NULL || capacity == 0)
        return TR_EINVAL;
    limiter l = {.capacity = capacity};
    return spawn(NULL, ctx, &l, out);
}

TR_API int tr_runtime_limiter_spawn(tr_runtime *rt, uint32_t capacity,
                                    tr_ref *out) {
    if (rt == NULL || capacity == 0)
        return TR_EINVAL;
    limiter l = {.capacity = capacity};
    return spawn(rt, NULL, &l, out);
}

static bool rate_ok(double per_second, uint32_t burst) {
    return per_second > 0 && isfinite(per_second) && burst >= 1;
}

TR_API int tr_rate_limiter_spawn(tr_ctx *ctx, double per_second,
                                 uint32_t burst, tr_ref *out) {
    if (ctx == NULL || !rate_ok(per_second, burst))
        return TR_EINVAL;
    limiter l = {.rate = true, .per_second = per_second, .burst = burst};
    return spawn(NULL, ctx, &l, out);
}

TR_API int tr_runtime_rate_limiter_spawn(tr_runtime *rt, double per_second,
                                         uint32_t burst, tr_ref *out) {
    if (rt == NULL || !rate_ok(per_second, burst))
        return TR_EINVAL;
    limiter l = {.rate = true, .per_second = per_second, .burst = burst};
    return spawn(rt, NULL, &l, out);
}

TR_API int tr_limiter_acquire(tr_ctx *ctx, tr_ref lim, uint64_t cookie) {
    if (ctx == NULL)
        return TR_ENOCTX;
    return tr_send_u64(ctx, lim, LIM_ACQUIRE, cookie);
}

TR_API int tr_limiter_release(tr_ctx *ctx, tr_ref lim) {
    if (ctx == NULL)
        return TR_ENOCTX;
    return tr_send_tag(ctx, lim, LIM_RELEASE);
}
