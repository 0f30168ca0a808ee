/* test_router — routers (troupe/router.h): round robin, least loaded,
 * hash by key (the same key always to the same routee, and only the keys
 * of a removed routee move), broadcast; routees that end leave the pool;
 * replies from a routee answer the original requester. Supervised pools:
 * a crashed routee is restarted and routed to again, messages are held
 * (in order) while no routee runs, the pool grows and shrinks, and a
 * supervisor that gives up takes the router with it. */
#include "testutil.h"

#include "troupe/router.h"

enum {
    T_JOB = 1,
    T_DID,
    T_ASK,
    T_ANSWER,
    T_CRASH,
    T_CMD_JOB,
    T_CMD_CRASH,
    T_CMD_RESIZE,
    T_POOL_DOWN
};

/* Reports (its index << 32 | the job's value). */
typedef struct worker {
    tr_ref report;
    uint32_t index;
} worker;

static int worker_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    worker *w = st;
    if (tr_msg_is_request(m)) {
        tr_msg *r = tr_msg_new_u64(T_ANSWER, w->index);
        return tr_reply(ctx, m, &r);
    }
    tu_report(ctx, w->report, T_DID, ((uint64_t)w->index << 32) | tr_msg_u64(m));
    return 0;
}

static const tr_behavior worker_beh = {
    .name = "worker", .handle = worker_handle, .state_size = sizeof(worker)};

static void workers(tu_env *e, tr_ref *w, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        TU_ASSERT_OK(tr_runtime_spawn(e->rt, &worker_beh,
                                      &(worker){e->inbox_ref, i},
                                      sizeof(worker), &w[i]));
}

static uint64_t next_did(tu_env *e) { return tu_recv_u64(e, T_DID, TU_PROMPT_MS); }

static void test_round_robin(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref w[3], r;
    workers(e, w, 3);
    TU_ASSERT_RC(tr_runtime_router_spawn(e->rt, (tr_route)9, w, 3, &r),
                 TR_EINVAL);
    TU_ASSERT_OK(tr_runtime_router_spawn(e->rt, TR_ROUTE_ROUND_ROBIN, w, 3, &r));
    tu_env_start(e);
    uint32_t per[3] = {0, 0, 0};
    for (uint64_t i = 0; i < 9; i++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, r, T_JOB, i));
    for (int i = 0; i < 9; i++)
        per[next_did(e) >> 32]++;
    assert_int_equal(per[0], 3);
    assert_int_equal(per[1], 3);
    assert_int_equal(per[2], 3);
    /* A routee that ends leaves the pool: the rest share the work. */
    TU_ASSERT_OK(tr_cancel(e->rt, w[1], TR_EXIT_CANCELLED, -1));
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, w[1]), TU_PROMPT_MS);
    /* Dead means its DOWN is already queued at the router (monitors are
     * told before the slot is released), ahead of what we send now. */
    for (uint64_t i = 0; i < 4; i++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, r, T_JOB, i));
    for (int i = 0; i < 4; i++)
        assert_int_not_equal(next_did(e) >> 32, 1);
    tu_env_finish(e);
}

static void test_hash_by_key_is_stable(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref w[4], r;
    workers(e, w, 4);
    TU_ASSERT_OK(tr_runtime_router_spawn(e->rt, TR_ROUTE_HASH, w, 4, &r));
    tu_env_start(e);
    uint32_t owner[64];
    for (uint64_t k = 0; k < 64; k++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, r, T_JOB, k));
    for (int i = 0; i < 64; i++) {
        uint64_t v = next_did(e);
        owner[v & 0xffffffffu] = (uint32_t)(v >> 32);
    }
    /* Same keys again: same routees. */
    for (uint64_t k = 0; k < 64; k++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, r, T_JOB, k));
    uint32_t used = 0;
    for (int i = 0; i < 64; i++) {
        uint64_t v = next_did(e);
        assert_int_equal(owner[v & 0xffffffffu], (uint32_t)(v >> 32));
        used |= 1u << (v >> 32);
    }
    assert_int_equal(used, 0xfu); /* spread over all four */
    /* Routee 2 ends: only its keys move. */
    TU_ASSERT_OK(tr_cancel(e->rt, w[2], TR_EXIT_CANCELLED, -1));
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, w[2]), TU_PROMPT_MS);
    /* (as above: its DOWN is queued ahead of these) */
    for (uint64_t k = 0; k < 64; k++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, r, T_JOB, k));
    for (int i = 0; i < 64; i++) {
        uint64_t v = next_did(e);
        uint32_t k = (uint32_t)(v & 0xffffffffu), now = (uint32_t)(v >> 32);
        assert_int_not_equal(now, 2);
        if (owner[k] != 2)
            assert_int_equal(now, owner[k]);
    }
    tu_env_finish(e);
}

static void test_broadcast(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref w[3], r;
    workers(e, w, 3);
    TU_ASSERT_OK(tr_runtime_router_spawn(e->rt, TR_ROUTE_BROADCAST, w, 3, &r));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, r, T_JOB, 7));
    uint32_t seen = 0;
    for (int i = 0; i < 3; i++) {
        uint64_t v = next_did(e);
        assert_int_equal(v & 0xffffffffu, 7);
        seen |= 1u << (v >> 32);
    }
    assert_int_equal(seen, 0x7u);
    tu_env_finish(e);
}

/* Least loaded (depths tracked): a busy routee is skipped. Requests
 * through the router are answered to the requester. */
typedef struct asker {
    tr_ref router, report;
} asker;

static int asker_start(tr_ctx *ctx, void *st) {
    asker *a = st;
    tr_msg *q = tr_msg_new_u64(T_ASK, 1);
    return tr_request(ctx, a->router, &q, 5000, NULL);
}

static int asker_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    asker *a = st;
    if (tr_msg_tag(m) == T_ANSWER) {
        tu_report(ctx, a->report, T_ANSWER, tr_msg_u64(m));
        return TR_STOP;
    }
    return TR_UNHANDLED;
}

static const tr_behavior asker_beh = {.name = "asker",
                                      .handle = asker_handle,
                                      .on_start = asker_start,
                                      .state_size = sizeof(asker)};

static void test_request_through_router(void **state) {
    tu_env *e = *state;
    tu_env_init_cfg(e, &(tr_runtime_config){.workers = 2, .track_depth = true});
    tr_ref w[2], r;
    workers(e, w, 2);
    TU_ASSERT_OK(
        tr_runtime_router_spawn(e->rt, TR_ROUTE_LEAST_LOADED, w, 2, &r));
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh,
                                  &(asker){r, e->inbox_ref}, sizeof(asker),
                                  NULL));
    tu_env_start(e);
    uint64_t who = tu_recv_u64(e, T_ANSWER, TU_PROMPT_MS);
    assert_true(who < 2);
    tu_env_finish(e);
}

/* ---- supervised pools ---- */

/* A pool's routee: reports each job (value) to `report`; the report's
 * sender tells which incarnation did it. T_CRASH makes it fail. */
static int pw_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    tr_ref *report = st;
    if (tr_msg_tag(m) == T_CRASH)
        return TR_EPROTO;
    tu_report(ctx, *report, T_DID, tr_msg_u64(m));
    return 0;
}

static const tr_behavior pw_beh = {
    .name = "pool-worker", .handle = pw_handle, .state_size = sizeof(tr_ref)};

/* Owns the pool (tr_router_pool_spawn from a handler), watches it, and
 * sends it what the test asks: one sender, so the router sees it in
 * order. */
typedef struct pdriver {
    tr_ref report, pool;
    tr_route how;
    uint32_t size, intensity;
    int64_t backoff_ms;
} pdriver;

static int pd_start(tr_ctx *ctx, void *st) {
    pdriver *d = st;
    tr_router_pool_config cfg = {
        .how = d->how,
        .routee = {.name = "w",
                   .behavior = &pw_beh,
                   .init = &d->report,
                   .init_len = sizeof d->report,
                   .restart = TR_RESTART_PERMANENT,
                   .shutdown_ms = 1000},
        .size = d->size,
        .sup = {.strategy = TR_SUP_ONE_FOR_ONE,
                .intensity = d->intensity,
                .period_ms = 5000,
                .backoff_min_ms = d->backoff_ms,
                .backoff_max_ms = d->backoff_ms}};
    int rc = tr_router_pool_spawn(ctx, &cfg, &d->pool);
    return rc != 0 ? rc : tr_monitor(ctx, d->pool, NULL);
}

static int pd_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    pdriver *d = st;
    switch (tr_msg_tag(m)) {
    case T_CMD_JOB:
        return tr_send_u64(ctx, d->pool, T_JOB, tr_msg_u64(m));
    case T_CMD_CRASH:
        return tr_send_tag(ctx, d->pool, T_CRASH);
    case T_CMD_RESIZE: {
        /* Then a broadcast probe (1000 + size): routed after the resize. */
        int rc = tr_router_resize(ctx, d->pool, (uint32_t)tr_msg_u64(m));
        return rc != 0 ? rc
                       : tr_send_u64(ctx, d->pool, T_JOB,
                                     1000 + tr_msg_u64(m));
    }
    case TR_TAG_DOWN: {
        tr_exit x;
        if (tr_msg_exit(m, &x) == 0)
            tu_report(ctx, d->report, T_POOL_DOWN, (uint64_t)(int64_t)x.reason);
        return 0;
    }
    default:
        return TR_UNHANDLED;
    }
}

static const tr_behavior pd_beh = {.name = "pool-driver",
                                   .handle = pd_handle,
                                   .on_start = pd_start,
                                   .state_size = sizeof(pdriver)};

static tr_ref pool_env(tu_env *e, tr_route how, uint32_t size,
                       uint32_t intensity, int64_t backoff_ms) {
    tu_env_init(e, 2);
    tr_ref d;
    TU_ASSERT_OK(tr_runtime_spawn(
        e->rt, &pd_beh,
        &(pdriver){.report = e->inbox_ref,
                   .how = how,
                   .size = size,
                   .intensity = intensity,
                   .backoff_ms = backoff_ms},
        sizeof(pdriver), &d));
    tu_env_start(e);
    return d;
}

/* The next report: T_DID with value v; *who = the routee that did it. */
static uint64_t did(tu_env *e, tr_ref *who, int64_t timeout_ms) {
    tr_msg *m = tu_recv(e, timeout_ms);
    assert_int_equal(tr_msg_tag(m), T_DID);
    uint64_t v = tr_msg_u64(m);
    if (who != NULL)
        *who = tr_msg_sender(m);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    return v;
}

static void test_pool_bad_config(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 1);
    tr_router_pool_config cfg = {
        .how = TR_ROUTE_ROUND_ROBIN,
        .routee = {.name = "w", .behavior = &pw_beh, .init_len = 0},
        .size = 0,
        .sup = TR_SUP_CONFIG_INIT};
    tr_ref r;
    TU_ASSERT_RC(tr_runtime_router_pool_spawn(e->rt, &cfg, &r), TR_EINVAL);
    cfg.size = 1025;
    TU_ASSERT_RC(tr_runtime_router_pool_spawn(e->rt, &cfg, &r), TR_EINVAL);
    cfg.size = 2;
    cfg.routee.behavior = NULL; /* local routee without a behaviour */
    TU_ASSERT_RC(tr_runtime_router_pool_spawn(e->rt, &cfg, &r), TR_EINVAL);
    cfg.routee.behavior = &pw_beh;
    cfg.routee.name = "a-prefix-far-too-long-to-leave-room-for-the-slot-nr";
    TU_ASSERT_RC(tr_runtime_router_pool_spawn(e->rt, &cfg, &r), TR_EINVAL);
    TU_ASSERT_RC(tr_runtime_router_pool_spawn(e->rt, NULL, &r), TR_EINVAL);
    TU_ASSERT_RC(tr_router_resize(NULL, r, 2), TR_ENOCTX);
    tu_env_finish(e);
}

static void test_pool_restarted_routee_is_routed_to(void **state) {
    tu_env *e = *state;
    tr_ref d = pool_env(e, TR_ROUTE_ROUND_ROBIN, 2, 10, 0);
    tr_ref a, b, who;
    /* Routees start one at a time: wait until both take turns. */
    int64_t end = tu_now_ms() + TU_PROMPT_MS;
    do {
        assert_true(tu_now_ms() < end);
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_JOB, 1));
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_JOB, 2));
        /* Two senders: the reports may come in either order. */
        uint64_t v = did(e, &a, TU_PROMPT_MS);
        assert_int_equal(v + did(e, &b, TU_PROMPT_MS), 3);
    } while (tr_ref_eq(a, b));
    /* Round robin: the crash goes to one of them; a is the one that died. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_CRASH, 0));
    TU_ASSERT_EVENTUALLY(
        !tr_actor_alive(e->rt, a) || !tr_actor_alive(e->rt, b), TU_PROMPT_MS);
    if (tr_actor_alive(e->rt, a)) {
        tr_ref t = a;
        a = b;
        b = t;
    }
    /* a's DOWN reached the router before anything sent from now on, so
     * b takes the jobs until the new incarnation is up; then both. */
    bool seen_new = false, seen_b = false;
    end = tu_now_ms() + TU_PROMPT_MS;
    for (uint64_t v = 10; !(seen_new && seen_b); v++) {
        assert_true(tu_now_ms() < end);
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_JOB, v));
        assert_int_equal(did(e, &who, TU_PROMPT_MS), v); /* none lost */
        assert_false(tr_ref_eq(who, a));
        if (tr_ref_eq(who, b))
            seen_b = true;
        else
            seen_new = true;
        if (!seen_new)
            tu_sleep_ms(5);
    }
    tu_env_finish(e);
}

static void test_pool_holds_messages_while_restarting(void **state) {
    tu_env *e = *state;
    /* One routee, restarted after a 300 ms backoff. */
    tr_ref d = pool_env(e, TR_ROUTE_ROUND_ROBIN, 1, 10, 300);
    tr_ref a, who;
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_JOB, 0));
    assert_int_equal(did(e, &a, TU_PROMPT_MS), 0);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_CRASH, 0));
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, a), TU_PROMPT_MS);
    /* No routee for ~300 ms: all 200 are held, then go out in order. */
    for (uint64_t v = 1; v <= 200; v++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_JOB, v));
    for (uint64_t v = 1; v <= 200; v++) {
        assert_int_equal(did(e, &who, TU_PROMPT_MS), v);
        assert_false(tr_ref_eq(who, a));
    }
    tu_env_finish(e);
}

/* Broadcast probe 1000 + n after a resize to n: how many routees got it
 * (each report once per routee); the set of routees that did. */
static uint32_t probe(tu_env *e, uint32_t n, int64_t quiet_ms) {
    uint32_t got = 0;
    for (;;) {
        tr_msg *m = NULL;
        int rc = tr_inbox_recv(e->inbox, quiet_ms, &m);
        if (rc == TR_ETIMEDOUT)
            return got;
        TU_ASSERT_OK(rc);
        assert_int_equal(tr_msg_tag(m), T_DID);
        assert_int_equal(tr_msg_u64(m), 1000 + n);
        got++;
        TU_ASSERT_OK(tr_msg_destroy(&m));
    }
}

static void test_pool_grows_and_shrinks(void **state) {
    tu_env *e = *state;
    tr_ref d = pool_env(e, TR_ROUTE_BROADCAST, 2, 10, 0);
    /* Same size: nothing changes, the probe reaches both (once up). */
    int64_t end = tu_now_ms() + TU_PROMPT_MS;
    uint32_t got;
    do {
        assert_true(tu_now_ms() < end);
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_RESIZE, 2));
    } while ((got = probe(e, 2, 100)) < 2);
    assert_int_equal(got, 2);
    /* Grow: the new routees join as they start. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_RESIZE, 5));
    (void)probe(e, 5, 100);
    do {
        assert_true(tu_now_ms() < end);
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_RESIZE, 5));
    } while ((got = probe(e, 5, 100)) < 5);
    assert_int_equal(got, 5);
    /* Shrink: the removed ones leave the routing at once. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_RESIZE, 1));
    assert_int_equal(probe(e, 1, 200), 1);
    /* Grow again: slots used before are restarted. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_RESIZE, 3));
    (void)probe(e, 3, 100);
    do {
        assert_true(tu_now_ms() < end);
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_RESIZE, 3));
    } while ((got = probe(e, 3, 100)) < 3);
    assert_int_equal(got, 3);
    tu_env_finish(e);
}

static void test_pool_fails_when_supervisor_gives_up(void **state) {
    tu_env *e = *state;
    /* intensity 1: the second crash within 5 s is one restart too many. */
    tr_ref d = pool_env(e, TR_ROUTE_ROUND_ROBIN, 1, 1, 0);
    tr_ref a, who;
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_JOB, 0));
    assert_int_equal(did(e, &a, TU_PROMPT_MS), 0);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_CRASH, 0));
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, a), TU_PROMPT_MS);
    /* Held until the restart, then done by the new incarnation. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_JOB, 1));
    assert_int_equal(did(e, &who, TU_PROMPT_MS), 1);
    assert_false(tr_ref_eq(who, a));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, d, T_CMD_CRASH, 0));
    int64_t reason = (int64_t)tu_recv_u64(e, T_POOL_DOWN, TU_PROMPT_MS);
    assert_int_equal(reason, TR_ESTATE); /* restart intensity exceeded */
    /* Its routees ended before it did (their slots are released just
     * after their exits are told). */
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, who), TU_PROMPT_MS);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_round_robin),
        TU_TEST(test_hash_by_key_is_stable),
        TU_TEST(test_broadcast),
        TU_TEST(test_request_through_router),
        TU_TEST(test_pool_bad_config),
        TU_TEST(test_pool_restarted_routee_is_routed_to),
        TU_TEST(test_pool_holds_messages_while_restarting),
        TU_TEST(test_pool_grows_and_shrinks),
        TU_TEST(test_pool_fails_when_supervisor_gives_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
