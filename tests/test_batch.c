/* test_batch — batchers (troupe/batch.h): batches by count, by time, the
 * remainder flushed when the batcher stops, order and senders kept. */
#include "testutil.h"

#include "troupe/batch.h"

enum { T_ITEM = 1, T_BATCH_OF, T_FIRST, T_FROM };

/* Reports each batch: its size (T_BATCH_OF) and its first value
 * (T_FIRST); checks values ascend by one inside a batch and that each
 * message kept its sender (`from`). */
typedef struct sink {
    tr_ref report, from;
} sink;

static int sink_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    sink *s = st;
    uint32_t n = tr_batch_count(m);
    if (n == 0)
        return TR_UNHANDLED;
    for (uint32_t i = 0; i < n; i++) {
        const tr_msg *x = tr_batch_get(m, i);
        if (tr_msg_tag(x) != T_ITEM ||
            tr_msg_u64(x) != tr_msg_u64(tr_batch_get(m, 0)) + i ||
            (!tr_ref_is_none(s->from) && !tr_ref_eq(tr_msg_sender(x), s->from)))
            return TR_EPROTO;
    }
    tu_report(ctx, s->report, T_FIRST, tr_msg_u64(tr_batch_get(m, 0)));
    tu_report(ctx, s->report, T_BATCH_OF, n);
    tu_report(ctx, s->report, T_FROM, tr_msg_sender(tr_batch_get(m, 0)).id);
    return 0;
}

static const tr_behavior sink_beh = {
    .name = "sink", .handle = sink_handle, .state_size = sizeof(sink)};

/* Sends items 0..n-1 to `to` from an actor (so they carry its ref). */
typedef struct feeder {
    tr_ref to;
    uint32_t n;
} feeder;

static int feeder_start(tr_ctx *ctx, void *st) {
    feeder *f = st;
    for (uint32_t i = 0; i < f->n; i++) {
        int rc = tr_send_u64(ctx, f->to, T_ITEM, i);
        if (rc != 0)
            return rc;
    }
    return TR_STOP;
}

static const tr_behavior feeder_beh = {.name = "feeder",
                                       .handle = tu_keeper_handle,
                                       .on_start = feeder_start,
                                       .state_size = sizeof(feeder)};

/* Returns the sender of the batch's first message. */
static uint64_t expect_batch(tu_env *e, uint64_t first, uint64_t n) {
    assert_int_equal(tu_recv_u64(e, T_FIRST, TU_PROMPT_MS), first);
    assert_int_equal(tu_recv_u64(e, T_BATCH_OF, TU_PROMPT_MS), n);
    return tu_recv_u64(e, T_FROM, TU_PROMPT_MS);
}

static void test_by_count_then_window(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e);
    tr_ref snk, b;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &sink_beh,
                                  &(sink){.report = e->inbox_ref},
                                  sizeof(sink), &snk));
    TU_ASSERT_RC(tr_runtime_batcher_spawn(e->rt, snk, 0, 10, &b), TR_EINVAL);
    TU_ASSERT_OK(tr_runtime_batcher_spawn(e->rt, snk, 4, 100, &b));
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &feeder_beh,
                                  &(feeder){.to = b, .n = 10},
                                  sizeof(feeder), NULL));
    tu_env_start(e);
    (void)expect_batch(e, 0, 4); /* full: at once */
    (void)expect_batch(e, 4, 4);
    int64_t t0 = tu_now_ms();
    (void)expect_batch(e, 8, 2); /* the rest when the window closes */
    assert_true(tu_now_ms() - t0 >= 20); /* by the window, not at once */
    tu_env_finish(e);
}

static void test_by_time_only_and_senders(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e);
    tr_ref snk, b, f;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &sink_beh,
                                  &(sink){.report = e->inbox_ref},
                                  sizeof(sink), &snk));
    TU_ASSERT_OK(tr_runtime_batcher_spawn(e->rt, snk, 1000, 50, &b));
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &feeder_beh,
                                  &(feeder){.to = b, .n = 7}, sizeof(feeder),
                                  &f));
    tu_env_start(e);
    /* The messages keep their sender (the feeder, not the batcher). */
    assert_int_equal(expect_batch(e, 0, 7), f.id);
    tu_expect_silence(e, 120); /* nothing more: no empty batches */
    tu_env_finish(e);
}

static void test_stop_flushes_the_rest(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e);
    tr_ref snk, b;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &sink_beh,
                                  &(sink){.report = e->inbox_ref},
                                  sizeof(sink), &snk));
    TU_ASSERT_OK(tr_runtime_batcher_spawn(e->rt, snk, 100, 0, &b));
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &feeder_beh,
                                  &(feeder){.to = b, .n = 5}, sizeof(feeder),
                                  NULL));
    tu_env_start(e);
    tu_expect_silence(e, 100); /* count only: 5 < 100 wait */
    TU_ASSERT_OK(tr_cancel(e->rt, b, TR_EXIT_CANCELLED, -1));
    (void)expect_batch(e, 0, 5);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_by_count_then_window),
        TU_TEST(test_by_time_only_and_senders),
        TU_TEST(test_stop_flushes_the_rest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
