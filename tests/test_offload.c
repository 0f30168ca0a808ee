/* test_offload — tr_offload runs blocking functions on the bounded pool and
 * delivers their result as a message; the submitting actor stays
 * responsive meanwhile; a full queue is TR_EAGAIN, never a block. */
#include "testutil.h"

enum {
    T_START = 1, /* to the worker actor: submit one offload job */
    T_PING,
    T_RESULT,
    R_SUBMITTED = 100,
    R_PONG,
    R_RESULT,
    R_RESULT_KIND,
    R_ERR,
};

#define SLOW_MS 200

/* ---- offload functions */

static _Atomic int g_running;     /* jobs inside fn right now */
static _Atomic int g_max_running; /* the most seen at once */
static _Atomic int g_calls;

static void note_enter(void) {
    int now = atomic_fetch_add(&g_running, 1) + 1;
    int prev = atomic_load(&g_max_running);
    while (now > prev &&
           !atomic_compare_exchange_weak(&g_max_running, &prev, now))
        ;
    atomic_fetch_add(&g_calls, 1);
}

static void note_leave(void) { atomic_fetch_sub(&g_running, 1); }

/* Sleeps SLOW_MS, returns a U64 of arg * 10. */
static tr_msg *slow_times_ten(void *arg) {
    note_enter();
    tu_sleep_ms(SLOW_MS);
    note_leave();
    return tr_msg_new_u64(0xBAD, (uint64_t)(uintptr_t)arg * 10);
}

static tr_msg *quick_times_ten(void *arg) {
    note_enter();
    tu_sleep_ms(50);
    note_leave();
    return tr_msg_new_u64(0xBAD, (uint64_t)(uintptr_t)arg * 10);
}

static tr_msg *returns_null(void *arg) {
    (void)arg;
    note_enter();
    note_leave();
    return NULL;
}

static _Atomic int g_dtor_calls;

static void payload_dtor(void *p) {
    atomic_fetch_add(&g_dtor_calls, 1);
    free(p);
}

static tr_msg *returns_ptr(void *arg) {
    (void)arg;
    uint64_t *p = malloc(sizeof *p);
    if (p == NULL)
        return NULL;
    *p = 0xFEEDull;
    tr_msg *m = tr_msg_new_ptr(1, p, sizeof *p, payload_dtor);
    if (m == NULL)
        free(p);
    return m;
}

/* Blocks until the gate opens (bounded: 10 s), so the test controls when
 * the single pool thread is busy. */
static _Atomic int g_gate_open;
static _Atomic int g_gate_entered;

static tr_msg *gated(void *arg) {
    atomic_fetch_add(&g_gate_entered, 1);
    int64_t deadline = tu_now_ms() + 10000;
    while (!atomic_load(&g_gate_open) && tu_now_ms() < deadline)
        tu_sleep_ms(1);
    return tr_msg_new_u64(0, (uint64_t)(uintptr_t)arg);
}

static void reset(void) {
    atomic_store(&g_running, 0);
    atomic_store(&g_max_running, 0);
    atomic_store(&g_calls, 0);
    atomic_store(&g_dtor_calls, 0);
    atomic_store(&g_gate_open, 0);
    atomic_store(&g_gate_entered, 0);
}

/* ---- an actor that offloads and keeps answering pings */

typedef struct offloader {
    tr_ref report_to;
} offloader;

static int offloader_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    offloader *st = state;
    switch (tr_msg_tag(msg)) {
    case T_START: {
        int rc = tr_offload(tr_ctx_runtime(ctx), slow_times_ten,
                            (void *)(uintptr_t)tr_msg_u64(msg), tr_self(ctx),
                            T_RESULT);
        tu_report(ctx, st->report_to, rc == 0 ? R_SUBMITTED : R_ERR,
                  (uint64_t)(int64_t)rc);
        break;
    }
    case T_PING:
        tu_report(ctx, st->report_to, R_PONG, tr_msg_u64(msg));
        break;
    case T_RESULT:
        tu_report(ctx, st->report_to, R_RESULT_KIND,
                  (uint64_t)tr_msg_kind(msg));
        tu_report(ctx, st->report_to, R_RESULT, tr_msg_u64(msg));
        break;
    default:
        break;
    }
    return 0;
}

static const tr_behavior offloader_behavior = {
    .name = "offloader",
    .handle = offloader_handle,
    .state_size = sizeof(offloader),
};

static void test_offload_result_and_responsiveness(void **state) {
    tu_env *e = *state;
    reset();
    tu_env_init(e, 1); /* one worker: a blocked worker would show at once */
    offloader init = {.report_to = e->inbox_ref};
    tr_ref a = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &offloader_behavior, &init, sizeof init, &a));
    tu_env_start(e);

    int64_t t0 = tu_now_ms();
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, a, T_START, 7));
    assert_int_equal(tu_recv_u64(e, R_SUBMITTED, TU_PROMPT_MS), 0);
    /* The job sleeps SLOW_MS; meanwhile the actor answers pings. */
    for (uint64_t i = 0; i < 5; i++) {
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, a, T_PING, i));
        assert_true(tu_recv_u64(e, R_PONG, TU_PROMPT_MS) == i);
    }
    int64_t pongs_done = tu_now_ms() - t0;
    assert_int_equal(tu_recv_u64(e, R_RESULT_KIND, TU_PROMPT_MS),
                     TR_PAYLOAD_U64);
    assert_int_equal(tu_recv_u64(e, R_RESULT, TU_PROMPT_MS), 70);
    int64_t result_at = tu_now_ms() - t0;
    print_message("[ INFO     ] pongs after %lld ms, result after %lld ms\n",
                  (long long)pongs_done, (long long)result_at);
    /* The pongs did not wait for the job; the result did. */
    assert_true(result_at >= SLOW_MS);
    assert_int_equal(atomic_load(&g_calls), 1);
    tu_env_finish(e);
}

static void test_offload_from_any_thread_to_inbox(void **state) {
    tu_env *e = *state;
    reset();
    tu_env_init(e, 2);
    tu_spawn_keeper(e);
    tu_env_start(e);
    /* NULL result: an empty message with the given tag. */
    TU_ASSERT_OK(tr_offload(e->rt, returns_null, NULL, e->inbox_ref, 42));
    tr_msg *m = tu_recv(e, TU_PROMPT_MS);
    assert_int_equal(tr_msg_tag(m), 42);
    assert_int_equal(tr_msg_kind(m), TR_PAYLOAD_NONE);
    tr_msg_destroy(&m);
    /* The function's message: its tag replaced, its payload kept. */
    TU_ASSERT_OK(tr_offload(e->rt, quick_times_ten, (void *)(uintptr_t)3,
                            e->inbox_ref, 43));
    assert_int_equal(tu_recv_u64(e, 43, TU_PROMPT_MS), 30);
    /* A PTR payload moves through, its destructor runs once, here. */
    TU_ASSERT_OK(tr_offload(e->rt, returns_ptr, NULL, e->inbox_ref, 44));
    m = tu_recv(e, TU_PROMPT_MS);
    assert_int_equal(tr_msg_tag(m), 44);
    assert_int_equal(tr_msg_kind(m), TR_PAYLOAD_PTR);
    size_t len = 0;
    const uint64_t *p = tr_msg_data(m, &len);
    assert_non_null(p);
    assert_int_equal(len, sizeof *p);
    assert_true(*p == 0xFEEDull);
    assert_int_equal(atomic_load(&g_dtor_calls), 0);
    tr_msg_destroy(&m);
    assert_int_equal(atomic_load(&g_dtor_calls), 1);
    tu_env_finish(e);
    assert_int_equal(atomic_load(&g_dtor_calls), 1);
}

static void test_offload_runs_in_parallel(void **state) {
    tu_env *e = *state;
    reset();
    tr_runtime_config cfg = {.workers = 2, .offload_threads = 4};
    tu_env_init_cfg(e, &cfg);
    tu_spawn_keeper(e);
    tu_env_start(e);
    enum { JOBS = 40 };
    int64_t t0 = tu_now_ms();
    for (uintptr_t i = 1; i <= JOBS; i++)
        TU_ASSERT_OK(tr_offload(e->rt, quick_times_ten, (void *)i, e->inbox_ref,
                                T_RESULT));
    uint64_t sum = 0;
    bool seen[JOBS + 1] = {false};
    for (int i = 0; i < JOBS; i++) {
        uint64_t v = tu_recv_u64(e, T_RESULT, TU_PROMPT_MS);
        assert_true(v % 10 == 0 && v / 10 >= 1 && v / 10 <= JOBS);
        assert_false(seen[v / 10]);
        seen[v / 10] = true;
        sum += v;
    }
    int64_t elapsed = tu_now_ms() - t0;
    assert_true(sum == 10ull * JOBS * (JOBS + 1) / 2);
    print_message("[ INFO     ] %d jobs of 50 ms on 4 threads: %lld ms, at "
                  "most %d at once\n",
                  JOBS, (long long)elapsed, atomic_load(&g_max_running));
    /* Bounded pool: never more than offload_threads at once, and it does
     * run them side by side (serially it would take 2000 ms). */
    assert_true(atomic_load(&g_max_running) <= 4);
    assert_true(atomic_load(&g_max_running) >= 2);
    assert_true(elapsed < 1500);
    tu_env_finish(e);
}

static void test_offload_queue_full_is_eagain(void **state) {
    tu_env *e = *state;
    reset();
    tr_runtime_config cfg = {
        .workers = 2, .offload_threads = 1, .offload_queue = 2};
    tu_env_init_cfg(e, &cfg);
    tu_spawn_keeper(e);
    tu_env_start(e);

    /* Occupy the only pool thread. */
    TU_ASSERT_OK(
        tr_offload(e->rt, gated, (void *)(uintptr_t)1, e->inbox_ref, T_RESULT));
    TU_ASSERT_EVENTUALLY(atomic_load(&g_gate_entered) == 1, TU_PROMPT_MS);
    /* The queue holds two more, then refuses without blocking. */
    TU_ASSERT_OK(
        tr_offload(e->rt, gated, (void *)(uintptr_t)2, e->inbox_ref, T_RESULT));
    TU_ASSERT_OK(
        tr_offload(e->rt, gated, (void *)(uintptr_t)3, e->inbox_ref, T_RESULT));
    int64_t t0 = tu_now_ms();
    for (int i = 0; i < 5; i++)
        TU_ASSERT_RC(tr_offload(e->rt, gated, (void *)(uintptr_t)99,
                                e->inbox_ref, T_RESULT),
                     TR_EAGAIN);
    assert_true(tu_now_ms() - t0 < 1000); /* refused, not blocked */
    tu_expect_silence(e, 50);

    /* Open the gate: the three accepted jobs complete, in order (one
     * thread, FIFO queue), and none of the refused ones ran. */
    atomic_store(&g_gate_open, 1);
    for (uint64_t i = 1; i <= 3; i++)
        assert_true(tu_recv_u64(e, T_RESULT, TU_PROMPT_MS) == i);
    tu_expect_silence(e, 100);
    assert_int_equal(atomic_load(&g_gate_entered), 3);
    /* Room again. */
    TU_ASSERT_OK(
        tr_offload(e->rt, gated, (void *)(uintptr_t)4, e->inbox_ref, T_RESULT));
    assert_true(tu_recv_u64(e, T_RESULT, TU_PROMPT_MS) == 4);
    tu_env_finish(e);
}

static void test_offload_misuse(void **state) {
    tu_env *e = *state;
    reset();
    tu_env_init(e, 2);
    tu_spawn_keeper(e);
    tu_env_start(e);
    TU_ASSERT_RC(tr_offload(NULL, returns_null, NULL, e->inbox_ref, 1),
                 TR_EINVAL);
    TU_ASSERT_RC(tr_offload(e->rt, NULL, NULL, e->inbox_ref, 1), TR_EINVAL);
    TU_ASSERT_OK(tr_runtime_stop(e->rt));
    TU_ASSERT_RC(tr_offload(e->rt, returns_null, NULL, e->inbox_ref, 1),
                 TR_ESTOPPED);
    tu_env_finish(e);
    assert_int_equal(atomic_load(&g_calls), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_offload_result_and_responsiveness),
        TU_TEST(test_offload_from_any_thread_to_inbox),
        TU_TEST(test_offload_runs_in_parallel),
        TU_TEST(test_offload_queue_full_is_eagain),
        TU_TEST(test_offload_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
