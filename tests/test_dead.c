/* test_dead — dead and bogus references, dead letters, sends after stop,
 * and NULL arguments: clear errors, no crash, no leak (ASan checks the
 * last part). */
#include "testutil.h"

enum {
    T_DIE = 1,
    T_HOLD, /* block until the main thread says go, then stop */
    T_DATA,
    T_PROBE,  /* to the prober: try sends to a dead ref from a handler */
    T_MISUSE, /* to the prober: handler-only misuse */
    R_STOPPED = 100,
    R_HOLDING,
    R_PROBE_RC,
    R_PROBE_KEPT,
    R_RECV_RC,
    R_SPAWN_RC,
    R_STOP_RC,
};

static uint64_t rc64(int rc) { return (uint64_t)(int64_t)rc; }
static int rc_of(uint64_t v) { return (int)(int64_t)v; }

static _Atomic uint64_t g_dtor_calls;
static _Atomic int g_hold_release;

static void count_dtor(void *p) {
    (void)p;
    atomic_fetch_add(&g_dtor_calls, 1);
}

static tr_msg *fake_ptr_msg(uint32_t tag) {
    tr_msg *m = tr_msg_new_ptr(tag, (void *)(uintptr_t)0x1000, 0, count_dtor);
    assert_non_null(m);
    return m;
}

/* ---- an actor that dies on T_DIE, or on T_HOLD after the main thread
 * releases it */

typedef struct mortal {
    tr_ref report_to;
    uint64_t handled;
} mortal;

static int mortal_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    mortal *st = state;
    st->handled++;
    switch (tr_msg_tag(msg)) {
    case T_DIE:
        return TR_STOP;
    case T_HOLD: {
        tu_report(ctx, st->report_to, R_HOLDING, 0);
        int64_t deadline = tu_now_ms() + 10000;
        while (!atomic_load(&g_hold_release) && tu_now_ms() < deadline)
            tu_sleep_ms(1);
        return TR_STOP;
    }
    default:
        return 0;
    }
}

static void mortal_stop(tr_ctx *ctx, void *state, int reason) {
    mortal *st = state;
    (void)reason;
    tu_report(ctx, st->report_to, R_STOPPED, st->handled);
}

static const tr_behavior mortal_behavior = {
    .name = "mortal",
    .handle = mortal_handle,
    .on_stop = mortal_stop,
    .state_size = sizeof(mortal),
};

static tr_ref spawn_mortal(tu_env *e) {
    mortal init = {.report_to = e->inbox_ref};
    tr_ref ref = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &mortal_behavior, &init, sizeof init, &ref));
    return ref;
}

/* ---- a prober: sends from a handler to a dead ref; handler-only misuse */

typedef struct prober {
    tr_ref report_to;
    tr_ref target;
    tr_inbox *inbox; /* to check tr_inbox_recv refuses inside a handler */
} prober;

static int prober_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    prober *st = state;
    if (tr_msg_tag(msg) == T_PROBE) {
        tu_report(ctx, st->report_to, R_PROBE_RC,
                  rc64(tr_send_u64(ctx, st->target, T_DATA, 1)));
        tu_report(ctx, st->report_to, R_PROBE_RC,
                  rc64(tr_send_tag(ctx, st->target, T_DATA)));
        tr_msg *m = tr_msg_new_u64(T_DATA, 2);
        int rc = tr_send(ctx, st->target, &m);
        tu_report(ctx, st->report_to, R_PROBE_RC, rc64(rc));
        tu_report(ctx, st->report_to, R_PROBE_KEPT, m != NULL);
        tr_msg_destroy(&m);
    } else if (tr_msg_tag(msg) == T_MISUSE) {
        tr_msg *got = NULL;
        tu_report(ctx, st->report_to, R_RECV_RC,
                  rc64(tr_inbox_recv(st->inbox, 0, &got)));
        if (got != NULL)
            tr_msg_destroy(&got);
        tu_report(ctx, st->report_to, R_SPAWN_RC,
                  rc64(tr_spawn(ctx, NULL, NULL, 0, NULL)));
        tr_msg *none = NULL;
        tu_report(ctx, st->report_to, R_PROBE_RC,
                  rc64(tr_send(ctx, st->target, &none)));
        tu_report(ctx, st->report_to, R_PROBE_RC,
                  rc64(tr_send(ctx, st->target, NULL)));
    }
    return 0;
}

static const tr_behavior prober_behavior = {
    .name = "prober",
    .handle = prober_handle,
    .state_size = sizeof(prober),
};

/* Kills `ref` via T_DIE and waits until the runtime calls it dead. */
static void kill_and_wait(tu_env *e, tr_ref ref) {
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, ref, T_DIE, 0));
    assert_int_equal(tu_recv_u64(e, R_STOPPED, TU_PROMPT_MS), 1);
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, ref), TU_PROMPT_MS);
}

static void test_send_to_dead_actor(void **state) {
    tu_env *e = *state;
    atomic_store(&g_dtor_calls, 0);
    tu_env_init(e, 2);
    tu_spawn_keeper(e);
    tr_ref victim = spawn_mortal(e);
    assert_true(tr_actor_alive(e->rt, victim));
    tu_env_start(e);
    kill_and_wait(e, victim);
    tr_runtime_stats before = tu_stats(e);

    /* From outside: ENOACTOR, the caller keeps (and here frees) it. */
    tr_msg *m = fake_ptr_msg(T_DATA);
    tr_msg *orig = m;
    TU_ASSERT_RC(tr_runtime_send(e->rt, victim, &m), TR_ENOACTOR);
    assert_ptr_equal(m, orig);
    assert_int_equal(atomic_load(&g_dtor_calls), 0);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    assert_int_equal(atomic_load(&g_dtor_calls), 1);
    TU_ASSERT_RC(tr_runtime_send_u64(e->rt, victim, T_DATA, 5), TR_ENOACTOR);

    /* From a handler: the same. */
    prober pinit = {.report_to = e->inbox_ref, .target = victim};
    tr_ref pr = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &prober_behavior, &pinit, sizeof pinit, &pr));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, pr, T_PROBE, 0));
    for (int i = 0; i < 3; i++)
        TU_ASSERT_RC(rc_of(tu_recv_u64(e, R_PROBE_RC, TU_PROMPT_MS)),
                     TR_ENOACTOR);
    assert_int_equal(tu_recv_u64(e, R_PROBE_KEPT, TU_PROMPT_MS), 1);

    /* 2 refused from here + 3 from the prober */
    TU_ASSERT_EVENTUALLY(tu_stats(e).sends_refused - before.sends_refused >= 5,
                         TU_PROMPT_MS);
    assert_false(tr_actor_alive(e->rt, victim));
    /* Nothing was delivered anywhere. */
    tu_expect_silence(e, 100);
    tu_env_finish(e);
}

static void test_bogus_refs(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tu_spawn_keeper(e);
    tu_env_start(e);
    const tr_ref bogus[] = {
        {0},
        {~0ull},
        {12345ull << 32},
        {1},
        {(12345ull << 32) | 1},
        {0x8000000000000000ull},
        {0xFFFFFFFFull},
    };
    for (size_t i = 0; i < sizeof bogus / sizeof bogus[0]; i++) {
        assert_false(tr_actor_alive(e->rt, bogus[i]));
        TU_ASSERT_RC(tr_runtime_send_u64(e->rt, bogus[i], T_DATA, i),
                     TR_ENOACTOR);
        tr_msg *m = tr_msg_new_u64(T_DATA, i);
        assert_non_null(m);
        TU_ASSERT_RC(tr_runtime_send(e->rt, bogus[i], &m), TR_ENOACTOR);
        assert_non_null(m);
        TU_ASSERT_OK(tr_msg_destroy(&m));
    }
    tu_expect_silence(e, 50);
    tu_env_finish(e);
}

/* Generations: refs of dead actors stay dead when their slots are reused. */
static void test_stale_refs_after_slot_reuse(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tu_spawn_keeper(e);
    tu_env_start(e);
    enum { N = 200 };
    tr_ref old[N];
    for (int i = 0; i < N; i++) {
        old[i] = spawn_mortal(e);
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, old[i], T_DIE, 0));
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(tu_recv_u64(e, R_STOPPED, TU_PROMPT_MS), 1);
    for (int i = 0; i < N; i++)
        TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, old[i]), TU_PROMPT_MS);
    /* New actors probably reuse the slots. */
    tr_ref fresh[N];
    for (int i = 0; i < N; i++) {
        fresh[i] = spawn_mortal(e);
        assert_true(tr_actor_alive(e->rt, fresh[i]));
    }
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < N; j++)
            assert_false(tr_ref_eq(old[i], fresh[j]));
        assert_false(tr_actor_alive(e->rt, old[i]));
        TU_ASSERT_RC(tr_runtime_send_u64(e->rt, old[i], T_DATA, 0),
                     TR_ENOACTOR);
    }
    /* The stale sends reached none of the new actors: each handled only
     * its own T_DIE. */
    for (int i = 0; i < N; i++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, fresh[i], T_DIE, 0));
    for (int i = 0; i < N; i++)
        assert_int_equal(tu_recv_u64(e, R_STOPPED, TU_PROMPT_MS), 1);
    tu_env_finish(e);
}

/* Messages accepted while the receiver was alive, then orphaned by its
 * death, are dead letters: counted, destructors run, not leaked. */
static void test_messages_racing_death_are_dead_letters(void **state) {
    tu_env *e = *state;
    atomic_store(&g_dtor_calls, 0);
    atomic_store(&g_hold_release, 0);
    tu_env_init(e, 2);
    tu_spawn_keeper(e);
    tr_ref victim = spawn_mortal(e);
    tu_env_start(e);
    tr_runtime_stats before = tu_stats(e);

    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, victim, T_HOLD, 0));
    (void)tu_recv_u64(e, R_HOLDING, TU_PROMPT_MS);
    /* The victim is inside its last handler: these are accepted... */
    enum { N = 1000 };
    for (int i = 0; i < N; i++) {
        tr_msg *m = fake_ptr_msg(T_DATA);
        TU_ASSERT_OK(tr_runtime_send(e->rt, victim, &m));
    }
    /* ...then it returns TR_STOP without handling them. */
    atomic_store(&g_hold_release, 1);
    assert_int_equal(tu_recv_u64(e, R_STOPPED, TU_PROMPT_MS), 1);
    TU_ASSERT_EVENTUALLY(atomic_load(&g_dtor_calls) == N, TU_PROMPT_MS);
    TU_ASSERT_EVENTUALLY(tu_stats(e).dead_letters - before.dead_letters >= N,
                         TU_PROMPT_MS);
    assert_true(tu_stats(e).dead_letters - before.dead_letters == N);
    tu_env_finish(e);
    assert_true(atomic_load(&g_dtor_calls) == N);
}

/* The same race with concurrent foreign senders and no gate: every message
 * is either refused (sender keeps it), handled, or a dead letter. */
typedef struct race_sender {
    tr_runtime *rt;
    tr_ref to;
    uint64_t accepted;
    uint64_t refused;
    uint64_t other;
} race_sender;

static void *race_sender_main(void *arg) {
    race_sender *t = arg;
    for (int i = 0; i < 20000; i++) {
        tr_msg *m = tr_msg_new_ptr(T_DATA, (void *)(uintptr_t)1, 0, count_dtor);
        int rc = tr_runtime_send(t->rt, t->to, &m);
        if (rc == 0) {
            t->accepted++;
        } else {
            tr_msg_destroy(&m);
            if (rc == TR_ENOACTOR)
                t->refused++;
            else
                t->other++;
        }
    }
    return NULL;
}

typedef struct counted_mortal {
    tr_ref report_to;
    uint64_t die_at;
    uint64_t handled;
} counted_mortal;

static int counted_mortal_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    counted_mortal *st = state;
    (void)msg;
    if (++st->handled == st->die_at) {
        tu_report(ctx, st->report_to, R_STOPPED, st->handled);
        return TR_STOP;
    }
    return 0;
}

static const tr_behavior counted_mortal_behavior = {
    .name = "counted-mortal",
    .handle = counted_mortal_handle,
    .state_size = sizeof(counted_mortal),
};

static void test_concurrent_senders_racing_death(void **state) {
    tu_env *e = *state;
    atomic_store(&g_dtor_calls, 0);
    tu_env_init(e, 2);
    tu_spawn_keeper(e);
    counted_mortal init = {.report_to = e->inbox_ref, .die_at = 5000};
    tr_ref victim = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &counted_mortal_behavior, &init,
                                  sizeof init, &victim));
    tu_env_start(e);
    tr_runtime_stats before = tu_stats(e);
    enum { NTHREADS = 4 };
    race_sender rs[NTHREADS];
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        rs[i] = (race_sender){.rt = e->rt, .to = victim};
        assert_int_equal(pthread_create(&th[i], NULL, race_sender_main, &rs[i]),
                         0);
    }
    uint64_t accepted = 0, refused = 0;
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(rs[i].other, 0);
        accepted += rs[i].accepted;
        refused += rs[i].refused;
    }
    assert_true(accepted + refused == NTHREADS * 20000ull);
    assert_true(tu_recv_u64(e, R_STOPPED, 30000) == 5000);
    /* handled + dead letters == accepted; every payload freed once. */
    TU_ASSERT_EVENTUALLY(atomic_load(&g_dtor_calls) == NTHREADS * 20000ull,
                         TU_PROMPT_MS);
    TU_ASSERT_EVENTUALLY(tu_stats(e).dead_letters - before.dead_letters ==
                             accepted - 5000,
                         TU_PROMPT_MS);
    print_message("[ INFO     ] accepted %" PRIu64 " refused %" PRIu64
                  " dead letters %" PRIu64 "\n",
                  accepted, refused, accepted - 5000);
    tu_env_finish(e);
    assert_true(atomic_load(&g_dtor_calls) == NTHREADS * 20000ull);
}

static void test_send_after_stop(void **state) {
    tu_env *e = *state;
    atomic_store(&g_dtor_calls, 0);
    tu_env_init(e, 2);
    tr_ref alive = spawn_mortal(e);
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_stop(e->rt));
    TU_ASSERT_OK(tr_runtime_stop(e->rt)); /* idempotent */

    tr_msg *m = fake_ptr_msg(T_DATA);
    TU_ASSERT_RC(tr_runtime_send(e->rt, alive, &m), TR_ESTOPPED);
    assert_non_null(m);
    TU_ASSERT_RC(tr_runtime_send(e->rt, e->inbox_ref, &m), TR_ESTOPPED);
    assert_non_null(m);
    TU_ASSERT_RC(tr_runtime_send_u64(e->rt, alive, T_DATA, 1), TR_ESTOPPED);
    mortal init = {.report_to = e->inbox_ref};
    tr_ref r2 = TR_REF_NONE;
    TU_ASSERT_RC(
        tr_runtime_spawn(e->rt, &mortal_behavior, &init, sizeof init, &r2),
        TR_ESTOPPED);

    /* Still refused once run has returned. */
    assert_int_equal(tu_env_join(e, TU_JOIN_MS), 0);
    TU_ASSERT_OK(e->run_rc);
    TU_ASSERT_RC(tr_runtime_send(e->rt, alive, &m), TR_ESTOPPED);
    TU_ASSERT_RC(tr_runtime_send_u64(e->rt, e->inbox_ref, T_DATA, 1),
                 TR_ESTOPPED);
    assert_int_equal(atomic_load(&g_dtor_calls), 0);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    assert_int_equal(atomic_load(&g_dtor_calls), 1);
    /* five refused sends above (spawn is not a send) */
    assert_true(tu_stats(e).sends_refused >= 5);
    tu_env_finish(e);
}

/* NULL (and empty) arguments: TR_EINVAL where an int comes back, no crash
 * where nothing does. */
static int null_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)ctx;
    (void)state;
    (void)msg;
    return 0;
}

static void test_null_arguments(void **state) {
    tu_env *e = *state;
    TU_ASSERT_RC(tr_runtime_create(NULL, NULL), TR_EINVAL);
    tu_env_init(e, 2);
    tr_ref keeper = tu_spawn_keeper(e);
    tr_ref out = TR_REF_NONE;

    static const tr_behavior no_handler = {.name = "no-handler"};
    static const tr_behavior small_state = {.handle = null_handle,
                                            .state_size = 4};
    const uint64_t init8 = 8;
    TU_ASSERT_RC(tr_runtime_spawn(NULL, &small_state, NULL, 0, &out),
                 TR_EINVAL);
    TU_ASSERT_RC(tr_runtime_spawn(e->rt, NULL, NULL, 0, &out), TR_EINVAL);
    TU_ASSERT_RC(tr_runtime_spawn(e->rt, &no_handler, NULL, 0, &out),
                 TR_EINVAL);
    /* init larger than the state, or NULL with a length */
    TU_ASSERT_RC(
        tr_runtime_spawn(e->rt, &small_state, &init8, sizeof init8, &out),
        TR_EINVAL);
    TU_ASSERT_RC(tr_runtime_spawn(e->rt, &small_state, NULL, 4, &out),
                 TR_EINVAL);

    tr_msg *none = NULL;
    tr_msg *m = tr_msg_new_u64(T_DATA, 1);
    assert_non_null(m);
    TU_ASSERT_RC(tr_runtime_send(NULL, keeper, &m), TR_EINVAL);
    assert_non_null(m);
    TU_ASSERT_RC(tr_runtime_send(e->rt, keeper, NULL), TR_EINVAL);
    TU_ASSERT_RC(tr_runtime_send(e->rt, keeper, &none), TR_EINVAL);
    TU_ASSERT_RC(tr_runtime_send_u64(NULL, keeper, T_DATA, 1), TR_EINVAL);

    /* handler-only calls without a handler context */
    int rc = tr_send(NULL, keeper, &m);
    assert_true(rc == TR_EINVAL || rc == TR_ENOCTX);
    assert_non_null(m);
    rc = tr_send_u64(NULL, keeper, T_DATA, 1);
    assert_true(rc == TR_EINVAL || rc == TR_ENOCTX);
    rc = tr_send_tag(NULL, keeper, T_DATA);
    assert_true(rc == TR_EINVAL || rc == TR_ENOCTX);
    rc = tr_spawn(NULL, &small_state, NULL, 0, &out);
    assert_true(rc == TR_EINVAL || rc == TR_ENOCTX);
    rc = tr_forward(NULL, keeper, m);
    assert_true(rc == TR_EINVAL || rc == TR_ENOCTX);
    rc = tr_reply(NULL, m, &m);
    assert_true(rc == TR_EINVAL || rc == TR_ENOCTX);
    assert_non_null(m);

    /* timers */
    tr_timer_id tid = {0};
    TU_ASSERT_RC(tr_send_after(NULL, keeper, 10, &m, &tid), TR_EINVAL);
    TU_ASSERT_RC(tr_send_after(e->rt, keeper, 10, NULL, &tid), TR_EINVAL);
    TU_ASSERT_RC(tr_send_after(e->rt, keeper, 10, &none, &tid), TR_EINVAL);
    TU_ASSERT_RC(tr_send_at(NULL, keeper, 10, &m, &tid), TR_EINVAL);
    TU_ASSERT_RC(tr_send_every(NULL, keeper, 10, T_DATA, &tid), TR_EINVAL);
    TU_ASSERT_RC(tr_timer_cancel(NULL, tid), TR_EINVAL);
    assert_non_null(m);

    /* messages */
    TU_ASSERT_RC(tr_msg_destroy(NULL), TR_EINVAL);
    TU_ASSERT_RC(tr_msg_destroy(&none), TR_EINVAL);
    void *p = NULL;
    TU_ASSERT_RC(tr_msg_take_ptr(NULL, &p), TR_EINVAL);
    tr_msg *pm = fake_ptr_msg(T_DATA);
    TU_ASSERT_RC(tr_msg_take_ptr(pm, NULL), TR_EINVAL);
    TU_ASSERT_OK(tr_msg_destroy(&pm));

    /* inboxes */
    tr_inbox *ib = NULL;
    TU_ASSERT_RC(tr_inbox_create(NULL, &ib), TR_EINVAL);
    assert_null(ib);
    TU_ASSERT_RC(tr_inbox_create(e->rt, NULL), TR_EINVAL);
    tr_msg *got = NULL;
    TU_ASSERT_RC(tr_inbox_recv(NULL, 0, &got), TR_EINVAL);
    TU_ASSERT_RC(tr_inbox_recv(e->inbox, 0, NULL), TR_EINVAL);
    tr_inbox_destroy(NULL);
    tr_inbox_destroy(&ib); /* *ib == NULL */
    assert_null(ib);

    /* reactor / offload */
    tr_watch_id w = {0};
    TU_ASSERT_RC(tr_watch(NULL, 0, TR_READABLE, keeper, 1, &w), TR_EINVAL);
    TU_ASSERT_RC(tr_unwatch(NULL, w), TR_EINVAL);
    TU_ASSERT_RC(tr_offload(NULL, NULL, NULL, keeper, 1), TR_EINVAL);

    /* runtime */
    assert_false(tr_actor_alive(NULL, keeper));
    TU_ASSERT_RC(tr_runtime_run(NULL), TR_EINVAL);
    TU_ASSERT_RC(tr_runtime_stop(NULL), TR_EINVAL);
    tr_runtime_destroy(NULL);
    tr_runtime *nort = NULL;
    tr_runtime_destroy(&nort);
    assert_null(nort);

    TU_ASSERT_OK(tr_msg_destroy(&m));
    /* The runtime still works after all that. */
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, e->inbox_ref, T_DATA, 9));
    assert_int_equal(tu_recv_u64(e, T_DATA, TU_PROMPT_MS), 9);
    tu_env_finish(e);
}

/* Handler-side misuse: blocking inbox receive from a handler is refused. */
static void test_handler_misuse(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref keeper = tu_spawn_keeper(e);
    prober pinit = {
        .report_to = e->inbox_ref, .target = keeper, .inbox = e->inbox};
    tr_ref pr = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &prober_behavior, &pinit, sizeof pinit, &pr));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, pr, T_MISUSE, 0));
    TU_ASSERT_RC(rc_of(tu_recv_u64(e, R_RECV_RC, TU_PROMPT_MS)), TR_ESTATE);
    TU_ASSERT_RC(rc_of(tu_recv_u64(e, R_SPAWN_RC, TU_PROMPT_MS)), TR_EINVAL);
    TU_ASSERT_RC(rc_of(tu_recv_u64(e, R_PROBE_RC, TU_PROMPT_MS)), TR_EINVAL);
    TU_ASSERT_RC(rc_of(tu_recv_u64(e, R_PROBE_RC, TU_PROMPT_MS)), TR_EINVAL);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_send_to_dead_actor),
        TU_TEST(test_bogus_refs),
        TU_TEST(test_stale_refs_after_slot_reuse),
        TU_TEST(test_messages_racing_death_are_dead_letters),
        TU_TEST(test_concurrent_senders_racing_death),
        TU_TEST(test_send_after_stop),
        TU_TEST(test_null_arguments),
        TU_TEST(test_handler_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
