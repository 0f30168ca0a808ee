/* test_sched_fairness — a flooding actor does not starve the others.
 *
 * A flooder keeps FLOOD_DEPTH messages to itself in flight forever (each
 * handled message sends one more), so it is always runnable. With one
 * worker and with two, another actor sent a message from outside (or by a
 * timer) must still reply within a bounded time while the flood is
 * verifiably still running; then tr_runtime_stop ends everything. */
#include "testutil.h"

enum {
    T_FLOOD = 1,
    T_PING,
    R_PONG = 100,
};

#define FLOOD_DEPTH 256     /* more than a default batch (64) */
#define REPLY_BOUND_MS 2000 /* the fairness bound the test asserts */

static _Atomic uint64_t g_flood_count[2];
static _Atomic uint64_t g_flood_errors;

typedef struct flooder {
    uint32_t idx;
} flooder;

static int flooder_start(tr_ctx *ctx, void *state) {
    (void)state;
    for (int i = 0; i < FLOOD_DEPTH; i++) {
        if (tr_send_tag(ctx, tr_self(ctx), T_FLOOD) != 0)
            atomic_fetch_add(&g_flood_errors, 1);
    }
    return 0;
}

static int flooder_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    flooder *st = state;
    (void)msg;
    atomic_fetch_add_explicit(&g_flood_count[st->idx], 1, memory_order_relaxed);
    int rc = tr_send_tag(ctx, tr_self(ctx), T_FLOOD);
    /* ESTOPPED is the expected end of the flood. */
    if (rc != 0 && rc != TR_ESTOPPED)
        atomic_fetch_add(&g_flood_errors, 1);
    return 0;
}

static const tr_behavior flooder_behavior = {
    .name = "flooder",
    .handle = flooder_handle,
    .on_start = flooder_start,
    .state_size = sizeof(flooder),
};

typedef struct victim {
    tr_ref report_to;
} victim;

static int victim_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    victim *st = state;
    if (tr_msg_tag(msg) == T_PING)
        tu_report(ctx, st->report_to, R_PONG, tr_msg_u64(msg));
    return 0;
}

static const tr_behavior victim_behavior = {
    .name = "victim",
    .handle = victim_handle,
    .state_size = sizeof(victim),
};

static uint64_t flood_count(uint32_t i) {
    return atomic_load_explicit(&g_flood_count[i], memory_order_relaxed);
}

/* Asserts the flooder i is still flooding: its count moves. */
static void assert_still_flooding(tu_env *e, tr_ref fl, uint32_t i) {
    uint64_t c0 = flood_count(i);
    TU_ASSERT_EVENTUALLY(flood_count(i) > c0, REPLY_BOUND_MS);
    assert_true(tr_actor_alive(e->rt, fl));
}

static void run_fairness(tu_env *e, unsigned workers, uint32_t nflooders,
                         bool use_timer) {
    for (uint32_t i = 0; i < 2; i++)
        atomic_store(&g_flood_count[i], 0);
    atomic_store(&g_flood_errors, 0);
    tu_env_init(e, workers);

    tr_ref fl[2];
    for (uint32_t i = 0; i < nflooders; i++) {
        flooder init = {.idx = i};
        TU_ASSERT_OK(tr_runtime_spawn(e->rt, &flooder_behavior, &init,
                                      sizeof init, &fl[i]));
    }
    victim vinit = {.report_to = e->inbox_ref};
    tr_ref vic = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &victim_behavior, &vinit, sizeof vinit, &vic));
    tu_env_start(e);

    /* The flood is under way before we ask anything. */
    for (uint32_t i = 0; i < nflooders; i++)
        TU_ASSERT_EVENTUALLY(flood_count(i) > 10000, 10000);

    int64_t worst = 0;
    for (uint64_t round = 0; round < 10; round++) {
        int64_t t0 = tu_now_ms();
        if (use_timer) {
            tr_msg *m = tr_msg_new_u64(T_PING, round);
            assert_non_null(m);
            TU_ASSERT_OK(tr_send_after(e->rt, vic, 5, &m, NULL));
        } else {
            TU_ASSERT_OK(tr_runtime_send_u64(e->rt, vic, T_PING, round));
        }
        uint64_t got = tu_recv_u64(e, R_PONG, REPLY_BOUND_MS);
        int64_t dt = tu_now_ms() - t0;
        if (dt > worst)
            worst = dt;
        assert_true(got == round);
        for (uint32_t i = 0; i < nflooders; i++)
            assert_still_flooding(e, fl[i], i);
    }
    print_message("[ INFO     ] workers=%u flooders=%u timer=%d: worst reply "
                  "%lld ms, flood counts %" PRIu64 " %" PRIu64 "\n",
                  workers, nflooders, (int)use_timer, (long long)worst,
                  flood_count(0), flood_count(1));

    /* Two flooders on one worker both progress (neither starves the
     * other). */
    if (nflooders == 2) {
        uint64_t a = flood_count(0), b = flood_count(1);
        tu_sleep_ms(200);
        assert_true(flood_count(0) > a);
        assert_true(flood_count(1) > b);
    }

    tu_env_finish(e); /* stop must end the flood: bounded join inside */
    assert_int_equal(atomic_load(&g_flood_errors), 0);
}

static void test_fairness_one_worker(void **state) {
    run_fairness(*state, 1, 1, false);
}

static void test_fairness_two_workers(void **state) {
    run_fairness(*state, 2, 1, false);
}

/* Two flooders: with two workers each could occupy one. */
static void test_fairness_two_flooders_two_workers(void **state) {
    run_fairness(*state, 2, 2, false);
}

static void test_fairness_two_flooders_one_worker(void **state) {
    run_fairness(*state, 1, 2, false);
}

/* A timer's message also gets through the flood. */
static void test_fairness_timer_one_worker(void **state) {
    run_fairness(*state, 1, 1, true);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_fairness_one_worker),
        TU_TEST(test_fairness_two_workers),
        TU_TEST(test_fairness_two_flooders_two_workers),
        TU_TEST(test_fairness_two_flooders_one_worker),
        TU_TEST(test_fairness_timer_one_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
