/* bench_local.c — workloads 1-4 of the peers' README: pingpong, counting,
 * ring, skynet. Each function spawns its actors from main and blocks on
 * main's inbox for the result; every check value is carried by the
 * messages the actors exchanged. */
#include <stdint.h>
#include <stdio.h>

#include "bench.h"

/* ---- 1. pingpong ------------------------------------------------------------
 */

typedef struct ping_state {
    tr_ref pong;
    tr_ref main;
    uint64_t n;     /* round trips to make */
    uint64_t i;     /* value of the ping in flight */
    uint64_t count; /* round trips whose pong carried the right value */
} ping_state;

static int pong_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)state;
    switch (tr_msg_tag(msg)) {
    case TAG_PING: {
        int rc =
            tr_send_u64(ctx, tr_msg_sender(msg), TAG_PONG, tr_msg_u64(msg));
        return rc < 0 ? bench_actor_fail(rc, "pong: send pong") : 0;
    }
    case TAG_STOP:
        return TR_STOP;
    default:
        return bench_unexpected("pong", msg);
    }
}

static int ping_on_start(tr_ctx *ctx, void *state) {
    ping_state *s = state;
    int rc = tr_send_u64(ctx, s->pong, TAG_PING, 0);
    return rc < 0 ? bench_actor_fail(rc, "ping: send ping") : 0;
}

static int ping_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    ping_state *s = state;
    if (tr_msg_tag(msg) != TAG_PONG)
        return bench_unexpected("ping", msg);
    if (tr_msg_u64(msg) == s->i)
        s->count++;
    if (++s->i < s->n) {
        int rc = tr_send_u64(ctx, s->pong, TAG_PING, s->i);
        return rc < 0 ? bench_actor_fail(rc, "ping: send ping") : 0;
    }
    int rc = tr_send_tag(ctx, s->pong, TAG_STOP);
    if (rc < 0)
        return bench_actor_fail(rc, "ping: stop pong");
    rc = tr_send_u64(ctx, s->main, TAG_RESULT, s->count);
    return rc < 0 ? bench_actor_fail(rc, "ping: send result") : TR_STOP;
}

static const tr_behavior pong_behavior = {
    .name = "bench.pong",
    .handle = pong_handle,
};

static const tr_behavior ping_behavior = {
    .name = "bench.ping",
    .handle = ping_handle,
    .on_start = ping_on_start,
    .state_size = sizeof(ping_state),
};

uint64_t bench_pingpong(bench_env *env, uint64_t n) {
    ping_state init = {.main = env->main, .n = n};
    bench_must(tr_runtime_spawn(env->rt, &pong_behavior, NULL, 0, &init.pong),
               "spawn pong");
    bench_must(
        tr_runtime_spawn(env->rt, &ping_behavior, &init, sizeof init, NULL),
        "spawn ping");
    return bench_recv_u64(env, TAG_RESULT);
}

/* ---- 2. counting ------------------------------------------------------------
 */

typedef struct counter_state {
    uint64_t value;
} counter_state;

typedef struct producer_state {
    tr_ref counter;
    tr_ref main;
    uint64_t n;
    uint64_t get_id; /* the id of the get request */
} producer_state;

static int counter_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    counter_state *s = state;
    switch (tr_msg_tag(msg)) {
    case TAG_INC:
        s->value++;
        return 0;
    case TAG_GET: {
        tr_msg *reply = tr_msg_new_u64(TAG_VALUE, s->value);
        if (reply == NULL)
            return bench_actor_fail(TR_ENOMEM, "counter: tr_msg_new_u64");
        int rc = tr_reply(ctx, msg, &reply);
        if (rc < 0) {
            tr_msg_destroy(&reply);
            return bench_actor_fail(rc, "counter: tr_reply");
        }
        return TR_STOP;
    }
    default:
        return bench_unexpected("counter", msg);
    }
}

/* The producer sends all N increments back to back in on_start, then the
 * get request; its handler only waits for the reply. */
static int producer_on_start(tr_ctx *ctx, void *state) {
    producer_state *s = state;
    for (uint64_t i = 0; i < s->n; i++) {
        int rc = tr_send_tag(ctx, s->counter, TAG_INC);
        if (rc < 0)
            return bench_actor_fail(rc, "producer: send increment");
    }
    tr_msg *get = tr_msg_new(TAG_GET);
    if (get == NULL)
        return bench_actor_fail(TR_ENOMEM, "producer: tr_msg_new");
    int rc = tr_request(ctx, s->counter, &get, -1, &s->get_id);
    if (rc < 0) {
        tr_msg_destroy(&get);
        return bench_actor_fail(rc, "producer: tr_request");
    }
    return 0;
}

static int producer_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    producer_state *s = state;
    if (!tr_msg_is_reply(msg) || tr_msg_request_id(msg) != s->get_id ||
        tr_msg_tag(msg) != TAG_VALUE)
        return bench_unexpected("producer", msg);
    int rc = tr_send_u64(ctx, s->main, TAG_RESULT, tr_msg_u64(msg));
    return rc < 0 ? bench_actor_fail(rc, "producer: send result") : TR_STOP;
}

static const tr_behavior counter_behavior = {
    .name = "bench.counter",
    .handle = counter_handle,
    .state_size = sizeof(counter_state),
};

static const tr_behavior producer_behavior = {
    .name = "bench.producer",
    .handle = producer_handle,
    .on_start = producer_on_start,
    .state_size = sizeof(producer_state),
};

uint64_t bench_counting(bench_env *env, uint64_t n) {
    producer_state init = {.main = env->main, .n = n};
    bench_must(
        tr_runtime_spawn(env->rt, &counter_behavior, NULL, 0, &init.counter),
        "spawn counter");
    bench_must(
        tr_runtime_spawn(env->rt, &producer_behavior, &init, sizeof init, NULL),
        "spawn producer");
    return bench_recv_u64(env, TAG_RESULT);
}

/* ---- 3. ring ----------------------------------------------------------------
 */

typedef struct ring_state {
    tr_ref next;
    tr_ref main;
    uint64_t id; /* 1..R */
} ring_state;

static int ring_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    ring_state *s = state;
    switch (tr_msg_tag(msg)) {
    case TAG_TOKEN: {
        uint64_t t = tr_msg_u64(msg);
        int rc = t == 0 ? tr_send_u64(ctx, s->main, TAG_RESULT, s->id)
                        : tr_send_u64(ctx, s->next, TAG_TOKEN, t - 1);
        return rc < 0 ? bench_actor_fail(rc, "ring: send") : 0;
    }
    case TAG_LINK:
        s->next = (tr_ref){tr_msg_u64(msg)};
        return 0;
    case TAG_STOP:
        return TR_STOP;
    default:
        return bench_unexpected("ring", msg);
    }
}

static const tr_behavior ring_behavior = {
    .name = "bench.ring",
    .handle = ring_handle,
    .state_size = sizeof(ring_state),
};

/* Builds the ring from node R down to node 1, so that each node gets its
 * successor at spawn; node R learns node 1 from a TAG_LINK message, sent
 * before the token exists. */
uint64_t bench_ring(bench_env *env, uint64_t hops, uint64_t r, tr_ref *nodes) {
    ring_state init = {.main = env->main};
    for (uint64_t i = r; i >= 1; i--) {
        init.id = i;
        init.next = i == r ? TR_REF_NONE : nodes[i];
        bench_must(tr_runtime_spawn(env->rt, &ring_behavior, &init, sizeof init,
                                    &nodes[i - 1]),
                   "spawn ring node");
    }
    bench_must(
        tr_runtime_send_u64(env->rt, nodes[r - 1], TAG_LINK, nodes[0].id),
        "send link");
    bench_must(tr_runtime_send_u64(env->rt, nodes[0], TAG_TOKEN, hops),
               "send token");
    return bench_recv_u64(env, TAG_RESULT);
}

void bench_ring_stop(bench_env *env, uint64_t r, const tr_ref *nodes) {
    for (uint64_t i = 0; i < r; i++)
        bench_must(tr_runtime_send_u64(env->rt, nodes[i], TAG_STOP, 0),
                   "send stop to ring node");
}

/* ---- 4. skynet --------------------------------------------------------------
 */

/* 24 bytes: a million of these are alive in the worst case. */
typedef struct skynet_state {
    tr_ref parent;
    uint64_t acc;     /* num until the children are spawned, then their sum */
    uint32_t size;    /* leaves below this actor */
    uint32_t pending; /* replies still expected */
} skynet_state;

/* Tentative definition: on_start spawns actors of its own behaviour. */
static const tr_behavior skynet_behavior;

static int skynet_on_start(tr_ctx *ctx, void *state) {
    skynet_state *s = state;
    if (s->size == 1) {
        int rc = tr_send_u64(ctx, s->parent, TAG_NUM, s->acc);
        return rc < 0 ? bench_actor_fail(rc, "skynet: leaf send") : TR_STOP;
    }
    skynet_state child = {.parent = tr_self(ctx), .size = s->size / 10};
    for (uint32_t i = 0; i < 10; i++) {
        child.acc = s->acc + (uint64_t)i * child.size;
        int rc = tr_spawn(ctx, &skynet_behavior, &child, sizeof child, NULL);
        if (rc < 0)
            return bench_actor_fail(rc, "skynet: tr_spawn");
    }
    s->acc = 0;
    s->pending = 10;
    return 0;
}

static int skynet_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    skynet_state *s = state;
    if (tr_msg_tag(msg) != TAG_NUM)
        return bench_unexpected("skynet", msg);
    s->acc += tr_msg_u64(msg);
    if (--s->pending > 0)
        return 0;
    int rc = tr_send_u64(ctx, s->parent, TAG_NUM, s->acc);
    return rc < 0 ? bench_actor_fail(rc, "skynet: send sum") : TR_STOP;
}

static const tr_behavior skynet_behavior = {
    .name = "bench.skynet",
    .handle = skynet_handle,
    .on_start = skynet_on_start,
    .state_size = sizeof(skynet_state),
};

uint64_t bench_skynet(bench_env *env, uint64_t leaves) {
    skynet_state init = {.parent = env->main, .size = (uint32_t)leaves};
    bench_must(
        tr_runtime_spawn(env->rt, &skynet_behavior, &init, sizeof init, NULL),
        "spawn skynet root");
    return bench_recv_u64(env, TAG_NUM);
}
