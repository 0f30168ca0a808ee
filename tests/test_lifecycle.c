/* test_lifecycle — tr_runtime_run returns at quiescence or on stop (from a
 * handler, from another thread); on_stop runs exactly once per actor with
 * the right reason; run twice is TR_ESTATE; create/destroy without run;
 * many create/run/destroy cycles (leaks: ASan / valgrind). */
#include "testutil.h"

enum {
    T_GO = 1,
    T_DONE,
    T_WORK,
    T_STOP_RT,
    T_FLOOD,
    T_REPORT,
    R_STOPPED = 100, /* value = idx << 32 | (uint32_t)reason */
    R_STARTED,
    R_INFO,
    R_STATE,
};

/* ---- per-actor bookkeeping, indexed by the idx in each actor's state */

#define MAX_TRACK 64

static _Atomic int g_stop_count[MAX_TRACK];
static _Atomic int g_stop_reason[MAX_TRACK];
static _Atomic int g_stop_send_rc[MAX_TRACK];
static _Atomic int g_start_count[MAX_TRACK];
static _Atomic int g_handled[MAX_TRACK];
static _Atomic uint64_t g_dtor_calls;

static void reset_tracking(void) {
    for (int i = 0; i < MAX_TRACK; i++) {
        atomic_store(&g_stop_count[i], 0);
        atomic_store(&g_stop_reason[i], 12345);
        atomic_store(&g_stop_send_rc[i], 12345);
        atomic_store(&g_start_count[i], 0);
        atomic_store(&g_handled[i], 0);
    }
    atomic_store(&g_dtor_calls, 0);
}

static void count_dtor(void *p) {
    (void)p;
    atomic_fetch_add(&g_dtor_calls, 1);
}

/* Every state below starts with this header. */
typedef struct track_hdr {
    tr_ref report_to;
    uint32_t idx;
    uint32_t mode;
} track_hdr;

static uint64_t stop_code(uint32_t idx, int reason) {
    return ((uint64_t)idx << 32) | (uint32_t)reason;
}

static void tracked_on_stop(tr_ctx *ctx, void *state, int reason) {
    track_hdr *h = state;
    if (h->idx >= MAX_TRACK)
        return;
    atomic_store(&g_stop_reason[h->idx], reason);
    atomic_fetch_add(&g_stop_count[h->idx], 1);
    int rc =
        tr_send_u64(ctx, h->report_to, R_STOPPED, stop_code(h->idx, reason));
    atomic_store(&g_stop_send_rc[h->idx], rc);
}

static int tracked_on_start(tr_ctx *ctx, void *state) {
    track_hdr *h = state;
    (void)ctx;
    atomic_fetch_add(&g_start_count[h->idx], 1);
    return 0;
}

/* Checks the on_stop bookkeeping of actors [from, to). */
static void assert_stopped_once(uint32_t from, uint32_t to, int reason) {
    for (uint32_t i = from; i < to; i++) {
        int n = atomic_load(&g_stop_count[i]);
        if (n != 1)
            fail_msg("actor %u: on_stop ran %d times, expected once", i, n);
        int r = atomic_load(&g_stop_reason[i]);
        if (r != reason)
            fail_msg("actor %u: on_stop reason %d, expected %d", i, r, reason);
    }
}

/* ---- a family: the parent spawns children from a handler, sends them
 * work; children stop after `target` messages and tell the parent; the
 * parent stops when all children are done. Then nothing is alive. */

typedef struct family {
    track_hdr h;
    tr_ref parent;
    uint32_t children;
    uint32_t target;
    uint32_t done;
    uint32_t count;
} family;

static int family_handle(tr_ctx *ctx, void *state, tr_msg *msg);

static const tr_behavior family_behavior = {
    .name = "family",
    .handle = family_handle,
    .on_start = tracked_on_start,
    .on_stop = tracked_on_stop,
    .state_size = sizeof(family),
};

static int family_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    family *st = state;
    atomic_fetch_add(&g_handled[st->h.idx], 1);
    switch (tr_msg_tag(msg)) {
    case T_GO: /* parent */
        for (uint32_t i = 0; i < st->children; i++) {
            family child;
            memset(&child, 0, sizeof child);
            child.h.report_to = st->h.report_to;
            child.h.idx = st->h.idx + 1 + i;
            child.parent = tr_self(ctx);
            child.target = st->target;
            tr_ref c = TR_REF_NONE;
            if (tr_spawn(ctx, &family_behavior, &child, sizeof child, &c) != 0)
                return TR_ESTATE;
            for (uint32_t k = 0; k < st->target; k++) {
                if (tr_send_u64(ctx, c, T_WORK, k) != 0)
                    return TR_ESTATE;
            }
        }
        return 0;
    case T_WORK: /* child */
        if (++st->count == st->target) {
            (void)tr_send_tag(ctx, st->parent, T_DONE);
            return TR_STOP;
        }
        return 0;
    case T_DONE: /* parent */
        return ++st->done == st->children ? TR_STOP : 0;
    default:
        return 0;
    }
}

static tr_ref spawn_family(tr_runtime *rt, tr_ref report_to, uint32_t children,
                           uint32_t target) {
    family init;
    memset(&init, 0, sizeof init);
    init.h.report_to = report_to;
    init.h.idx = 0;
    init.children = children;
    init.target = target;
    tr_ref ref = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_spawn(rt, &family_behavior, &init, sizeof init, &ref));
    TU_ASSERT_OK(tr_runtime_send_u64(rt, ref, T_GO, 0));
    return ref;
}

static void test_run_returns_at_quiescence(void **state) {
    tu_env *e = *state;
    reset_tracking();
    tu_env_init(e, 2);
    enum { CHILDREN = 10, TARGET = 100 };
    spawn_family(e->rt, e->inbox_ref, CHILDREN, TARGET);
    tu_env_start(e);
    /* No tr_runtime_stop: run must return by itself. */
    tu_env_expect_run_returns(e, 10000);
    assert_stopped_once(0, CHILDREN + 1, TR_EXIT_NORMAL);
    for (uint32_t i = 0; i <= CHILDREN; i++) {
        assert_int_equal(atomic_load(&g_start_count[i]), 1);
        TU_ASSERT_OK(atomic_load(&g_stop_send_rc[i]));
    }
    assert_int_equal(atomic_load(&g_handled[0]), 1 + CHILDREN);
    for (uint32_t i = 1; i <= CHILDREN; i++)
        assert_int_equal(atomic_load(&g_handled[i]), TARGET);
    tr_runtime_stats s = tu_stats(e);
    assert_true(s.spawned == CHILDREN + 1);
    assert_true(s.ended == CHILDREN + 1);
    /* Their on_stop reports are in the inbox. */
    for (uint32_t i = 0; i <= CHILDREN; i++) {
        uint64_t v = tu_recv_u64(e, R_STOPPED, TU_PROMPT_MS);
        assert_int_equal((uint32_t)v, (uint32_t)TR_EXIT_NORMAL);
    }
    tu_env_finish(e);
}

/* With no actor at all, run returns at once. */
static void test_run_with_no_actors_returns(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tu_env_start(e);
    tu_env_expect_run_returns(e, TU_PROMPT_MS);
    tu_env_finish(e);
}

/* ---- idle actors with on_stop tracking; a stopper stops the runtime */

typedef struct idler {
    track_hdr h;
} idler;

static int idler_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    idler *st = state;
    atomic_fetch_add(&g_handled[st->h.idx], 1);
    if (tr_msg_tag(msg) == T_STOP_RT)
        (void)tr_runtime_stop(tr_ctx_runtime(ctx));
    return 0;
}

static const tr_behavior idler_behavior = {
    .name = "idler",
    .handle = idler_handle,
    .on_start = tracked_on_start,
    .on_stop = tracked_on_stop,
    .state_size = sizeof(idler),
};

static tr_ref spawn_idler(tu_env *e, uint32_t idx) {
    idler init = {.h = {.report_to = e->inbox_ref, .idx = idx}};
    tr_ref ref = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &idler_behavior, &init, sizeof init, &ref));
    return ref;
}

static void test_stop_from_handler(void **state) {
    tu_env *e = *state;
    reset_tracking();
    tu_env_init(e, 2);
    enum { N = 5 };
    tr_ref refs[N];
    for (uint32_t i = 0; i < N; i++)
        refs[i] = spawn_idler(e, i);
    tu_env_start(e);
    for (uint32_t i = 0; i < N; i++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, refs[i], T_WORK, 0));
    for (uint32_t i = 0; i < N; i++)
        TU_ASSERT_EVENTUALLY(atomic_load(&g_handled[i]) == 1, TU_PROMPT_MS);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, refs[2], T_STOP_RT, 0));
    tu_env_expect_run_returns(e, TU_JOIN_MS);
    /* Everyone, the stopper included, ended by shutdown, once; their
     * on_stop sends were refused (shutdown). */
    assert_stopped_once(0, N, TR_EXIT_SHUTDOWN);
    for (uint32_t i = 0; i < N; i++) {
        TU_ASSERT_RC(atomic_load(&g_stop_send_rc[i]), TR_ESTOPPED);
        assert_false(tr_actor_alive(e->rt, refs[i]));
    }
    tr_runtime_stats s = tu_stats(e);
    assert_true(s.spawned == N);
    assert_true(s.ended == N);
    tu_env_finish(e);
    assert_stopped_once(0, N, TR_EXIT_SHUTDOWN); /* not again at destroy */
}

/* ---- stop from a foreign thread while actors keep flooding */

static _Atomic uint64_t g_flood;

typedef struct flooder {
    track_hdr h;
} flooder;

static int flooder_start(tr_ctx *ctx, void *state) {
    (void)tracked_on_start(ctx, state);
    for (int i = 0; i < 8; i++)
        (void)tr_send_tag(ctx, tr_self(ctx), T_FLOOD);
    return 0;
}

static int flooder_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)state;
    (void)msg;
    atomic_fetch_add_explicit(&g_flood, 1, memory_order_relaxed);
    (void)tr_send_tag(ctx, tr_self(ctx), T_FLOOD);
    return 0;
}

static const tr_behavior flooder_behavior = {
    .name = "flooder",
    .handle = flooder_handle,
    .on_start = flooder_start,
    .on_stop = tracked_on_stop,
    .state_size = sizeof(flooder),
};

typedef struct stopper_arg {
    tr_runtime *rt;
    int rc;
} stopper_arg;

static void *stopper_main(void *arg) {
    stopper_arg *s = arg;
    tu_sleep_ms(100);
    s->rc = tr_runtime_stop(s->rt);
    return NULL;
}

static void test_stop_from_other_thread(void **state) {
    tu_env *e = *state;
    reset_tracking();
    atomic_store(&g_flood, 0);
    tu_env_init(e, 2);
    enum { N = 4 };
    for (uint32_t i = 0; i < N; i++) {
        flooder init = {.h = {.report_to = e->inbox_ref, .idx = i}};
        TU_ASSERT_OK(tr_runtime_spawn(e->rt, &flooder_behavior, &init,
                                      sizeof init, NULL));
    }
    tu_env_start(e);
    TU_ASSERT_EVENTUALLY(atomic_load(&g_flood) > 1000, TU_PROMPT_MS);
    stopper_arg sa = {.rt = e->rt, .rc = 12345};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stopper_main, &sa), 0);
    tu_env_expect_run_returns(e, TU_JOIN_MS);
    assert_int_equal(pthread_join(th, NULL), 0);
    TU_ASSERT_OK(sa.rc);
    assert_stopped_once(0, N, TR_EXIT_SHUTDOWN);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(atomic_load(&g_start_count[i]), 1);
    /* The flood is over once run has returned. */
    uint64_t f = atomic_load(&g_flood);
    tu_sleep_ms(50);
    assert_true(atomic_load(&g_flood) == f);
    tu_env_finish(e);
}

/* ---- every exit reason */

enum mode {
    MODE_RETURN_STOP = 1, /* handler returns TR_STOP */
    MODE_CALL_STOP,       /* handler calls tr_stop, returns 0 */
    MODE_FAIL,            /* handler returns TR_EPROTO */
    MODE_START_FAIL,      /* on_start returns TR_EINVAL */
    MODE_START_STOP,      /* on_start returns TR_STOP */
    MODE_STAY,            /* lives until shutdown */
};

typedef struct reasoner {
    track_hdr h;
} reasoner;

static int reasoner_start(tr_ctx *ctx, void *state) {
    reasoner *st = state;
    (void)tracked_on_start(ctx, state);
    if (st->h.mode == MODE_START_FAIL)
        return TR_EINVAL;
    if (st->h.mode == MODE_START_STOP)
        return TR_STOP;
    return 0;
}

static int reasoner_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    reasoner *st = state;
    (void)msg;
    atomic_fetch_add(&g_handled[st->h.idx], 1);
    switch (st->h.mode) {
    case MODE_RETURN_STOP:
        return TR_STOP;
    case MODE_CALL_STOP:
        tr_stop(ctx);
        return 0;
    case MODE_FAIL:
        return TR_EPROTO;
    default:
        return 0;
    }
}

static const tr_behavior reasoner_behavior = {
    .name = "reasoner",
    .handle = reasoner_handle,
    .on_start = reasoner_start,
    .on_stop = tracked_on_stop,
    .state_size = sizeof(reasoner),
};

static void test_on_stop_reasons(void **state) {
    tu_env *e = *state;
    reset_tracking();
    tu_env_init(e, 2);
    const uint32_t modes[] = {MODE_RETURN_STOP, MODE_CALL_STOP,  MODE_FAIL,
                              MODE_START_FAIL,  MODE_START_STOP, MODE_STAY};
    const int reasons[] = {TR_EXIT_NORMAL, TR_EXIT_NORMAL, TR_EPROTO,
                           TR_EINVAL,      TR_EXIT_NORMAL, TR_EXIT_SHUTDOWN};
    enum { N = 6 };
    tr_ref refs[N];
    for (uint32_t i = 0; i < N; i++) {
        reasoner init = {
            .h = {.report_to = e->inbox_ref, .idx = i, .mode = modes[i]}};
        TU_ASSERT_OK(tr_runtime_spawn(e->rt, &reasoner_behavior, &init,
                                      sizeof init, &refs[i]));
        /* Two messages each: nobody handles one after ending. The second
         * may be refused if the actor is already dead. */
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, refs[i], T_WORK, 1));
        int rc = tr_runtime_send_u64(e->rt, refs[i], T_WORK, 2);
        assert_true(rc == 0 || rc == TR_ENOACTOR);
    }
    tu_env_start(e);
    /* The five that end by themselves report from on_stop (sends allowed
     * outside shutdown). */
    bool seen[N] = {false};
    for (int n = 0; n < 5; n++) {
        uint64_t v = tu_recv_u64(e, R_STOPPED, TU_PROMPT_MS);
        uint32_t idx = (uint32_t)(v >> 32);
        assert_true(idx < 5);
        assert_false(seen[idx]);
        seen[idx] = true;
        if ((int)(uint32_t)v != reasons[idx])
            fail_msg("actor %u (mode %u): reason %d, expected %d", idx,
                     modes[idx], (int)(uint32_t)v, reasons[idx]);
    }
    for (uint32_t i = 0; i < 5; i++) {
        TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, refs[i]), TU_PROMPT_MS);
        TU_ASSERT_OK(atomic_load(&g_stop_send_rc[i]));
    }
    assert_true(tr_actor_alive(e->rt, refs[5]));
    /* handled: once for the handler-enders, never for on_start enders */
    assert_int_equal(atomic_load(&g_handled[0]), 1);
    assert_int_equal(atomic_load(&g_handled[1]), 1);
    assert_int_equal(atomic_load(&g_handled[2]), 1);
    assert_int_equal(atomic_load(&g_handled[3]), 0);
    assert_int_equal(atomic_load(&g_handled[4]), 0);
    TU_ASSERT_EVENTUALLY(atomic_load(&g_handled[5]) == 2, TU_PROMPT_MS);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(atomic_load(&g_start_count[i]), 1);
    tu_env_finish(e);
    for (uint32_t i = 0; i < N; i++)
        assert_stopped_once(i, i + 1, reasons[i]);
}

/* ---- run twice */

typedef struct run_arg {
    tr_runtime *rt;
    int rc;
} run_arg;

static void *second_run_main(void *arg) {
    run_arg *a = arg;
    a->rc = tr_runtime_run(a->rt);
    return NULL;
}

/* Calls tr_runtime_run on a helper thread; it must return within 5 s. */
static int run_bounded(tr_runtime *rt) {
    run_arg a = {.rt = rt, .rc = 12345};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, second_run_main, &a), 0);
    struct timespec abs;
    clock_gettime(CLOCK_REALTIME, &abs);
    abs.tv_sec += 5;
    if (pthread_timedjoin_np(th, NULL, &abs) != 0)
        fail_msg("a second tr_runtime_run blocked instead of TR_ESTATE");
    return a.rc;
}

static void test_run_twice(void **state) {
    tu_env *e = *state;
    reset_tracking();
    tu_env_init(e, 2);
    spawn_idler(e, 0);
    tu_env_start(e);
    TU_ASSERT_EVENTUALLY(atomic_load(&g_start_count[0]) == 1, TU_PROMPT_MS);
    /* While the first run is running... */
    TU_ASSERT_RC(run_bounded(e->rt), TR_ESTATE);
    TU_ASSERT_OK(tr_runtime_stop(e->rt));
    tu_env_expect_run_returns(e, TU_JOIN_MS);
    /* ...and after it returned. */
    TU_ASSERT_RC(run_bounded(e->rt), TR_ESTATE);
    tu_env_finish(e);
    assert_stopped_once(0, 1, TR_EXIT_SHUTDOWN);
}

/* ---- create/destroy without run */

static void test_create_destroy_without_run(void **state) {
    (void)state;
    reset_tracking();
    tr_runtime *rt = NULL;
    TU_ASSERT_OK(tr_runtime_create(&rt, NULL));
    assert_non_null(rt);
    assert_true(tr_runtime_workers(rt) >= 1);
    tr_runtime_destroy(&rt);
    assert_null(rt);

    /* With actors, queued messages and an inbox: on_stop runs (shutdown),
     * handlers never do, every payload is freed once. */
    TU_ASSERT_OK(tr_runtime_create(&rt, NULL));
    tr_inbox *ib = NULL;
    TU_ASSERT_OK(tr_inbox_create(rt, &ib));
    enum { N = 5 };
    for (uint32_t i = 0; i < N; i++) {
        idler init = {.h = {.report_to = tr_inbox_ref(ib), .idx = i}};
        tr_ref ref = TR_REF_NONE;
        TU_ASSERT_OK(
            tr_runtime_spawn(rt, &idler_behavior, &init, sizeof init, &ref));
        tr_msg *m = tr_msg_new_ptr(T_WORK, (void *)(uintptr_t)1, 0, count_dtor);
        assert_non_null(m);
        TU_ASSERT_OK(tr_runtime_send(rt, ref, &m));
    }
    tr_msg *m = tr_msg_new_ptr(T_WORK, (void *)(uintptr_t)1, 0, count_dtor);
    TU_ASSERT_OK(tr_runtime_send(rt, tr_inbox_ref(ib), &m));
    tr_inbox_destroy(&ib);
    assert_null(ib);
    tr_runtime_destroy(&rt);
    assert_null(rt);
    assert_stopped_once(0, N, TR_EXIT_SHUTDOWN);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(atomic_load(&g_handled[i]), 0);
    assert_true(atomic_load(&g_dtor_calls) == N + 1);
}

/* ---- many cycles */

static void *cycle_runner(void *arg) {
    run_arg *a = arg;
    a->rc = tr_runtime_run(a->rt);
    return NULL;
}

static void test_many_cycles(void **state) {
    (void)state;
    int cycles = (int)tu_scaled(200, 20);
    for (int c = 0; c < cycles; c++) {
        reset_tracking();
        tr_runtime_config cfg = {.workers = (unsigned)(1 + c % 3)};
        tr_runtime *rt = NULL;
        TU_ASSERT_OK(tr_runtime_create(&rt, &cfg));
        tr_inbox *ib = NULL;
        TU_ASSERT_OK(tr_inbox_create(rt, &ib));
        enum { CHILDREN = 4 };
        spawn_family(rt, tr_inbox_ref(ib), CHILDREN, 20);
        if (c % 2 == 1) {
            /* odd cycles: an extra idler keeps it alive until stopped */
            idler init = {.h = {.report_to = tr_inbox_ref(ib), .idx = 10}};
            TU_ASSERT_OK(tr_runtime_spawn(rt, &idler_behavior, &init,
                                          sizeof init, NULL));
        }
        run_arg a = {.rt = rt, .rc = 12345};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, cycle_runner, &a), 0);
        /* wait for the family's five on_stop reports */
        for (int i = 0; i < CHILDREN + 1; i++) {
            tr_msg *m = NULL;
            int rc = tr_inbox_recv(ib, TU_PROMPT_MS, &m);
            if (rc != 0)
                fail_msg("cycle %d: report %d missing: %s", c, i,
                         tu_err_text(rc));
            assert_int_equal(tr_msg_tag(m), R_STOPPED);
            tr_msg_destroy(&m);
        }
        if (c % 2 == 1)
            TU_ASSERT_OK(tr_runtime_stop(rt));
        struct timespec abs;
        clock_gettime(CLOCK_REALTIME, &abs);
        abs.tv_sec += TU_JOIN_MS / 1000;
        if (pthread_timedjoin_np(th, NULL, &abs) != 0)
            fail_msg("cycle %d: tr_runtime_run did not return", c);
        TU_ASSERT_OK(a.rc);
        tr_runtime_stats s;
        tr_runtime_get_stats(rt, &s);
        uint64_t expected = CHILDREN + 1 + (uint64_t)(c % 2);
        assert_true(s.spawned == expected);
        assert_true(s.ended == expected);
        assert_stopped_once(0, CHILDREN + 1, TR_EXIT_NORMAL);
        tr_inbox_destroy(&ib);
        tr_runtime_destroy(&rt);
        assert_null(rt);
        if (c % 2 == 1)
            assert_stopped_once(10, 11, TR_EXIT_SHUTDOWN);
    }
}

/* ---- configuration and context accessors */

typedef struct introspect {
    track_hdr h;
    size_t pad; /* state_size > init: the rest must be zero */
    uint8_t tail[40];
} introspect;

static int introspect_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    introspect *st = state;
    (void)msg;
    tu_report(ctx, st->h.report_to, R_INFO, tr_self(ctx).id);
    tu_report(ctx, st->h.report_to, R_INFO, tr_ctx_worker(ctx));
    tu_report(ctx, st->h.report_to, R_INFO,
              (uint64_t)(uintptr_t)tr_ctx_runtime(ctx));
    uint64_t nonzero = st->pad;
    for (size_t i = 0; i < sizeof st->tail; i++)
        nonzero += st->tail[i];
    tu_report(ctx, st->h.report_to, R_INFO, nonzero);
    tu_report(ctx, st->h.report_to, R_INFO, st->h.idx);
    return 0;
}

static const tr_behavior introspect_behavior = {
    .name = "introspect",
    .handle = introspect_handle,
    .state_size = sizeof(introspect),
};

static int stateless_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    tr_ref to = {tr_msg_u64(msg)};
    tu_report(ctx, to, R_STATE, state == NULL);
    return 0;
}

static const tr_behavior stateless_behavior = {
    .name = "stateless",
    .handle = stateless_handle,
};

static void test_config_and_context(void **state) {
    tu_env *e = *state;
    tr_runtime *rt = NULL;
    tr_runtime_config cfg = {.workers = 3};
    TU_ASSERT_OK(tr_runtime_create(&rt, &cfg));
    assert_int_equal(tr_runtime_workers(rt), 3);
    tr_runtime_destroy(&rt);
    cfg.workers = 0;
    TU_ASSERT_OK(tr_runtime_create(&rt, &cfg));
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(tr_runtime_workers(rt), (unsigned)cpus);
    tr_runtime_destroy(&rt);

    tu_env_init(e, 2);
    assert_int_equal(tr_runtime_workers(e->rt), 2);
    /* init shorter than the state: copied to the start, the rest zeroed */
    track_hdr init = {.report_to = e->inbox_ref, .idx = 77};
    tr_ref a = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &introspect_behavior, &init, sizeof init, &a));
    tr_ref s = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &stateless_behavior, NULL, 0, &s));
    tu_env_start(e);
    for (int round = 0; round < 20; round++) {
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, a, T_REPORT, 0));
        assert_true(tu_recv_u64(e, R_INFO, TU_PROMPT_MS) == a.id);
        assert_true(tu_recv_u64(e, R_INFO, TU_PROMPT_MS) < 2);
        assert_true(tu_recv_u64(e, R_INFO, TU_PROMPT_MS) ==
                    (uint64_t)(uintptr_t)e->rt);
        assert_int_equal(tu_recv_u64(e, R_INFO, TU_PROMPT_MS), 0);
        assert_int_equal(tu_recv_u64(e, R_INFO, TU_PROMPT_MS), 77);
    }
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, s, T_REPORT, e->inbox_ref.id));
    assert_int_equal(tu_recv_u64(e, R_STATE, TU_PROMPT_MS), 1);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_run_returns_at_quiescence),
        TU_TEST(test_run_with_no_actors_returns),
        TU_TEST(test_stop_from_handler),
        TU_TEST(test_stop_from_other_thread),
        TU_TEST(test_on_stop_reasons),
        TU_TEST(test_run_twice),
        cmocka_unit_test(test_create_destroy_without_run),
        cmocka_unit_test(test_many_cycles),
        TU_TEST(test_config_and_context),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
