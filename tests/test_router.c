/* test_router — routers (troupe/router.h): round robin, least loaded,
 * hash by key (the same key always to the same routee, and only the keys
 * of a removed routee move), broadcast; routees that end leave the pool;
 * replies from a routee answer the original requester. */
#include "testutil.h"

#include "troupe/router.h"

enum { T_JOB = 1, T_DID, T_ASK, T_ANSWER };

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

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_round_robin),
        TU_TEST(test_hash_by_key_is_stable),
        TU_TEST(test_broadcast),
        TU_TEST(test_request_through_router),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
