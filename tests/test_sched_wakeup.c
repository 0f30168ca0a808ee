/* test_sched_wakeup — no lost wakeup: while one worker is stuck in a long
 * handler, a message to another actor is handled by the other worker.
 * Regression test for runtime/sched.c find_work: a worker that gave up
 * spinning and found work on its way to sleep must spin again, or the
 * producers that saw it spinning (and woke no one) leave a unit behind
 * the one it takes. Caught at random points of spinning / falling asleep
 * by a random pause before each round. */
#include "testutil.h"

static _Atomic int go;

enum { BLOCK = 1, PING, R_PONG, R_FREED };

static int handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    tr_ref *report = state;
    if (tr_msg_tag(msg) == BLOCK) {
        int64_t end = tu_now_ms() + 3000; /* a long handler, bounded */
        while (!atomic_load(&go) && tu_now_ms() < end)
            ;
        tu_report(ctx, *report, R_FREED, 0);
    } else if (tr_msg_tag(msg) == PING) {
        tu_report(ctx, *report, R_PONG, 0);
    }
    return 0;
}

static const tr_behavior beh = {
    .name = "x", .handle = handle, .state_size = sizeof(tr_ref)};

static void test_busy_worker_does_not_hide_work(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref blocker, pinger;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &beh, &e->inbox_ref,
                                  sizeof e->inbox_ref, &blocker));
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &beh, &e->inbox_ref,
                                  sizeof e->inbox_ref, &pinger));
    tu_env_start(e);
    uint64_t seed = tu_seed("sched_wakeup");
    uint64_t rounds = tu_scaled(2000, 200);
    for (uint64_t i = 0; i < rounds; i++) {
        atomic_store(&go, 0);
        struct timespec ts = {0, (long)(tu_rand(&seed) % 400) * 1000};
        nanosleep(&ts, NULL);
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, blocker, BLOCK, 0));
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, pinger, PING, 0));
        /* The PING comes while the blocker still holds its worker. */
        tr_msg *m = NULL;
        int rc = tr_inbox_recv(e->inbox, 1000, &m);
        if (rc != 0)
            fail_msg("round %llu: PING not handled within 1 s while the "
                     "other worker was busy (lost wakeup)",
                     (unsigned long long)i);
        assert_int_equal(tr_msg_tag(m), R_PONG);
        TU_ASSERT_OK(tr_msg_destroy(&m));
        atomic_store(&go, 1);
        assert_int_equal(tu_recv_u64(e, R_FREED, TU_PROMPT_MS), 0);
    }
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_busy_worker_does_not_hide_work),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
