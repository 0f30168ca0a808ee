/* test_sched_stress — an actor never runs on two threads at once.
 *
 * Each receiver's handler sets a plain (non-atomic) int in its state on
 * entry and clears it on exit; finding it already set means two workers
 * run the same actor: counted in an atomic. Under TSan a double schedule
 * is also reported as a data race on that int. Counts must be exact: no
 * message lost or handled twice. */
#include "testutil.h"

enum {
    T_WORK = 1,
    T_GO,
    T_MORE,
    T_SELF,
    T_EXT,
    T_FAN,
    R_DONE = 100,
    R_COUNT,
    R_SEND_ERR,
    R_ALL_DONE,
};

static _Atomic uint64_t g_violations;
static _Atomic uint64_t g_send_errors;

/* Burns a little time inside the handler so an overlapping run would
 * actually overlap. */
static void spin(unsigned n) {
    for (volatile unsigned i = 0; i < n; i++)
        ;
}

static void enter(int *in_handler) {
    if (*in_handler)
        atomic_fetch_add_explicit(&g_violations, 1, memory_order_relaxed);
    *in_handler = 1;
}

static void leave(int *in_handler) { *in_handler = 0; }

/* ---- receiver: counts T_WORK, reports once at the expected total */

typedef struct stress_rx {
    tr_ref report_to;
    uint64_t expected;
    uint32_t idx;
    int in_handler;
    uint64_t count;
    uint64_t started;
} stress_rx;

static int stress_rx_start(tr_ctx *ctx, void *state) {
    stress_rx *st = state;
    (void)ctx;
    enter(&st->in_handler);
    st->started++;
    leave(&st->in_handler);
    return 0;
}

static int stress_rx_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    stress_rx *st = state;
    enter(&st->in_handler);
    spin(50);
    if (tr_msg_tag(msg) == T_WORK)
        st->count++;
    bool done = st->count == st->expected && tr_msg_tag(msg) == T_WORK;
    leave(&st->in_handler);
    if (done) /* one report: idx, on_start runs, count */
        tu_report(ctx, st->report_to, R_COUNT,
                  ((uint64_t)st->idx << 56) | (st->started << 48) | st->count);
    return 0;
}

static const tr_behavior stress_rx_behavior = {
    .name = "stress-rx",
    .handle = stress_rx_handle,
    .on_start = stress_rx_start,
    .state_size = sizeof(stress_rx),
};

/* ---- sender actor: sends `per_rx` messages to each receiver in chunks */

#define MAX_RX 8

typedef struct stress_tx {
    tr_ref rx[MAX_RX];
    uint32_t nrx;
    uint32_t per_rx;
    uint32_t sent; /* per receiver */
    int in_handler;
} stress_tx;

static int stress_tx_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    stress_tx *st = state;
    (void)msg;
    enter(&st->in_handler);
    for (uint32_t k = 0; k < 32 && st->sent < st->per_rx; k++, st->sent++) {
        for (uint32_t r = 0; r < st->nrx; r++) {
            if (tr_send_u64(ctx, st->rx[r], T_WORK, st->sent) != 0)
                atomic_fetch_add(&g_send_errors, 1);
        }
    }
    bool more = st->sent < st->per_rx;
    leave(&st->in_handler);
    if (more) {
        if (tr_send_tag(ctx, tr_self(ctx), T_MORE) != 0)
            atomic_fetch_add(&g_send_errors, 1);
        return 0;
    }
    return TR_STOP;
}

static const tr_behavior stress_tx_behavior = {
    .name = "stress-tx",
    .handle = stress_tx_handle,
    .state_size = sizeof(stress_tx),
};

/* ---- foreign flooding threads */

typedef struct flood_thread {
    tr_runtime *rt;
    const tr_ref *rx;
    uint32_t nrx;
    uint32_t per_rx;
    uint32_t tag;
    int errors;
} flood_thread;

static void *flood_thread_main(void *arg) {
    flood_thread *t = arg;
    for (uint32_t i = 0; i < t->per_rx; i++) {
        for (uint32_t r = 0; r < t->nrx; r++) {
            if (tr_runtime_send_u64(t->rt, t->rx[r], t->tag, i) != 0)
                t->errors++;
        }
    }
    return NULL;
}

static void test_no_double_scheduling_many_senders(void **state) {
    tu_env *e = *state;
    atomic_store(&g_violations, 0);
    atomic_store(&g_send_errors, 0);
    tu_env_init(e, 2);

    enum { NRX = 3, NTHREADS = 4, NACTORS = 6 };
    uint32_t per = (uint32_t)tu_scaled(20000, 1000);
    uint64_t expected = (uint64_t)(NTHREADS + NACTORS) * per;

    tr_ref rx[NRX];
    for (uint32_t r = 0; r < NRX; r++) {
        stress_rx init = {
            .report_to = e->inbox_ref, .expected = expected, .idx = r};
        TU_ASSERT_OK(tr_runtime_spawn(e->rt, &stress_rx_behavior, &init,
                                      sizeof init, &rx[r]));
    }
    tr_ref tx[NACTORS];
    for (uint32_t i = 0; i < NACTORS; i++) {
        stress_tx init;
        memset(&init, 0, sizeof init);
        for (uint32_t r = 0; r < NRX; r++)
            init.rx[r] = rx[r];
        init.nrx = NRX;
        init.per_rx = per;
        TU_ASSERT_OK(tr_runtime_spawn(e->rt, &stress_tx_behavior, &init,
                                      sizeof init, &tx[i]));
    }
    tu_env_start(e);

    flood_thread ft[NTHREADS];
    pthread_t th[NTHREADS];
    for (uint32_t i = 0; i < NTHREADS; i++) {
        ft[i] = (flood_thread){
            .rt = e->rt, .rx = rx, .nrx = NRX, .per_rx = per, .tag = T_WORK};
        assert_int_equal(
            pthread_create(&th[i], NULL, flood_thread_main, &ft[i]), 0);
    }
    for (uint32_t i = 0; i < NACTORS; i++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, tx[i], T_GO, 0));
    for (uint32_t i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(ft[i].errors, 0);
    }

    bool seen[NRX] = {false};
    for (uint32_t n = 0; n < NRX; n++) {
        uint64_t v = tu_recv_u64(e, R_COUNT, 60000);
        uint32_t idx = (uint32_t)(v >> 56);
        assert_true(idx < NRX);
        assert_false(seen[idx]);
        seen[idx] = true;
        assert_true((v & 0xFFFFFFFFFFFFull) == expected);
        /* on_start ran exactly once */
        assert_int_equal((v >> 48) & 0xFF, 1);
    }
    /* No receiver counted past its total. */
    tu_expect_silence(e, 100);
    assert_int_equal(atomic_load(&g_send_errors), 0);
    if (atomic_load(&g_violations) != 0)
        fail_msg("an actor ran on two threads at once %" PRIu64 " times",
                 (uint64_t)atomic_load(&g_violations));
    tu_env_finish(e);
}

/* Many small actors, each receiving from all threads: many empty→non-empty
 * transitions, where a double schedule would come from. */

static _Atomic uint32_t g_small_done;

typedef struct small_rx {
    tr_ref report_to;
    uint64_t expected;
    uint32_t nactors;
    int in_handler;
    uint64_t count;
} small_rx;

static int small_rx_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    small_rx *st = state;
    (void)msg;
    enter(&st->in_handler);
    st->count++;
    bool done = st->count == st->expected;
    leave(&st->in_handler);
    if (done) {
        uint32_t n = atomic_fetch_add(&g_small_done, 1) + 1;
        if (n == st->nactors)
            tu_report(ctx, st->report_to, R_ALL_DONE, n);
    }
    return 0;
}

static const tr_behavior small_rx_behavior = {
    .name = "small-rx",
    .handle = small_rx_handle,
    .state_size = sizeof(small_rx),
};

typedef struct spray_thread {
    tr_runtime *rt;
    const tr_ref *refs;
    uint32_t n;
    uint32_t rounds;
    uint32_t offset;
    int errors;
} spray_thread;

static void *spray_thread_main(void *arg) {
    spray_thread *t = arg;
    for (uint32_t round = 0; round < t->rounds; round++) {
        for (uint32_t i = 0; i < t->n; i++) {
            uint32_t k = (i + t->offset) % t->n;
            if (tr_runtime_send_u64(t->rt, t->refs[k], T_WORK, round) != 0)
                t->errors++;
        }
    }
    return NULL;
}

static void test_no_double_scheduling_many_actors(void **state) {
    tu_env *e = *state;
    atomic_store(&g_violations, 0);
    atomic_store(&g_small_done, 0);
    tu_env_init(e, 2);

    enum { NTHREADS = 4 };
    uint32_t nactors = (uint32_t)tu_scaled(1000, 100);
    uint32_t rounds = 50;
    tr_ref *refs = calloc(nactors, sizeof *refs);
    assert_non_null(refs);
    for (uint32_t i = 0; i < nactors; i++) {
        small_rx init = {.report_to = e->inbox_ref,
                         .expected = (uint64_t)NTHREADS * rounds,
                         .nactors = nactors};
        TU_ASSERT_OK(tr_runtime_spawn(e->rt, &small_rx_behavior, &init,
                                      sizeof init, &refs[i]));
    }
    tu_env_start(e);
    spray_thread st[NTHREADS];
    pthread_t th[NTHREADS];
    for (uint32_t i = 0; i < NTHREADS; i++) {
        st[i] = (spray_thread){.rt = e->rt,
                               .refs = refs,
                               .n = nactors,
                               .rounds = rounds,
                               .offset = i * nactors / 4};
        assert_int_equal(
            pthread_create(&th[i], NULL, spray_thread_main, &st[i]), 0);
    }
    for (uint32_t i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(st[i].errors, 0);
    }
    assert_int_equal(tu_recv_u64(e, R_ALL_DONE, 60000), nactors);
    tu_expect_silence(e, 100);
    assert_int_equal(atomic_load(&g_small_done), nactors);
    assert_int_equal(atomic_load(&g_violations), 0);
    tu_env_finish(e);
    free(refs);
}

/* ---- an actor that pings itself, while outsiders also send to it */

typedef struct self_pinger {
    tr_ref report_to;
    uint64_t self_target;
    uint64_t ext_target;
    int in_handler;
    uint64_t self_count;
    uint64_t ext_count;
    bool reported;
} self_pinger;

static int self_pinger_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    self_pinger *st = state;
    enter(&st->in_handler);
    uint32_t tag = tr_msg_tag(msg);
    if (tag == T_SELF) {
        /* The chain's values must arrive in order: self FIFO. */
        if (tr_msg_u64(msg) != st->self_count)
            atomic_fetch_add(&g_violations, 1);
        st->self_count++;
        if (st->self_count < st->self_target &&
            tr_send_u64(ctx, tr_self(ctx), T_SELF, st->self_count) != 0)
            atomic_fetch_add(&g_send_errors, 1);
    } else if (tag == T_EXT) {
        st->ext_count++;
    }
    bool done = !st->reported && st->self_count == st->self_target &&
                st->ext_count == st->ext_target;
    if (done)
        st->reported = true;
    leave(&st->in_handler);
    if (done) {
        tu_report(ctx, st->report_to, R_COUNT, st->self_count);
        tu_report(ctx, st->report_to, R_DONE, st->ext_count);
    }
    return 0;
}

static const tr_behavior self_pinger_behavior = {
    .name = "self-pinger",
    .handle = self_pinger_handle,
    .state_size = sizeof(self_pinger),
};

static void test_self_ping_chain(void **state) {
    tu_env *e = *state;
    atomic_store(&g_violations, 0);
    atomic_store(&g_send_errors, 0);
    tu_env_init(e, 2);
    enum { NTHREADS = 2 };
    uint64_t self_target = tu_scaled(200000, 10000);
    uint32_t ext_per_thread = (uint32_t)tu_scaled(20000, 1000);
    self_pinger init = {.report_to = e->inbox_ref,
                        .self_target = self_target,
                        .ext_target = (uint64_t)NTHREADS * ext_per_thread};
    tr_ref pinger = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &self_pinger_behavior, &init,
                                  sizeof init, &pinger));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, pinger, T_SELF, 0));
    flood_thread ft[NTHREADS];
    pthread_t th[NTHREADS];
    for (uint32_t i = 0; i < NTHREADS; i++) {
        ft[i] = (flood_thread){.rt = e->rt,
                               .rx = &pinger,
                               .nrx = 1,
                               .per_rx = ext_per_thread,
                               .tag = T_EXT};
        assert_int_equal(
            pthread_create(&th[i], NULL, flood_thread_main, &ft[i]), 0);
    }
    for (uint32_t i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(ft[i].errors, 0);
    }
    assert_true(tu_recv_u64(e, R_COUNT, 60000) == self_target);
    assert_true(tu_recv_u64(e, R_DONE, TU_PROMPT_MS) ==
                (uint64_t)NTHREADS * ext_per_thread);
    tu_expect_silence(e, 100);
    assert_int_equal(atomic_load(&g_violations), 0);
    assert_int_equal(atomic_load(&g_send_errors), 0);
    tu_env_finish(e);
}

/* ---- fan-out to itself: each message sends two more until a depth, so
 * the mailbox grows while the actor runs: 2^(D+1) - 1 messages in all. */

typedef struct fanner {
    tr_ref report_to;
    uint64_t depth;
    uint64_t expected;
    int in_handler;
    uint64_t count;
} fanner;

static int fanner_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    fanner *st = state;
    enter(&st->in_handler);
    uint64_t d = tr_msg_u64(msg);
    st->count++;
    if (d < st->depth) {
        if (tr_send_u64(ctx, tr_self(ctx), T_FAN, d + 1) != 0 ||
            tr_send_u64(ctx, tr_self(ctx), T_FAN, d + 1) != 0)
            atomic_fetch_add(&g_send_errors, 1);
    }
    bool done = st->count == st->expected;
    leave(&st->in_handler);
    if (done)
        tu_report(ctx, st->report_to, R_COUNT, st->count);
    return 0;
}

static const tr_behavior fanner_behavior = {
    .name = "fanner",
    .handle = fanner_handle,
    .state_size = sizeof(fanner),
};

static void test_self_fan_out(void **state) {
    tu_env *e = *state;
    atomic_store(&g_violations, 0);
    atomic_store(&g_send_errors, 0);
    tu_env_init(e, 2);
    uint64_t depth = tu_scale_divisor() > 1 ? 14 : 17;
    uint64_t expected = (2ull << depth) - 1;
    fanner init = {
        .report_to = e->inbox_ref, .depth = depth, .expected = expected};
    tr_ref f = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &fanner_behavior, &init, sizeof init, &f));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, f, T_FAN, 0));
    assert_true(tu_recv_u64(e, R_COUNT, 60000) == expected);
    tu_expect_silence(e, 100);
    assert_int_equal(atomic_load(&g_violations), 0);
    assert_int_equal(atomic_load(&g_send_errors), 0);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_no_double_scheduling_many_senders),
        TU_TEST(test_no_double_scheduling_many_actors),
        TU_TEST(test_self_ping_chain),
        TU_TEST(test_self_fan_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
