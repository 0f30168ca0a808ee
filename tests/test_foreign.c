/* test_foreign — threads troupe did not create (raw pthreads) send to
 * actors, spawn actors and own inboxes, while actors send too; totals are
 * exact; sends racing tr_runtime_stop either succeed or fail cleanly. */
#include "testutil.h"

enum {
    T_DATA = 1,
    T_GO,
    T_MORE,
    T_ECHO,
    T_ECHOED,
    R_FOREIGN = 100,
    R_ACTOR,
    R_SUM,
    R_MISMATCH,
    R_SPAWNED,
};

#define ACTOR_BIT (1ull << 63)

/* ---- receiver: counts by origin, checks tr_msg_sender */

typedef struct counter_rx {
    tr_ref report_to;
    uint64_t expected;
    uint64_t foreign;
    uint64_t from_actors;
    uint64_t sum;
    uint64_t mismatch;
} counter_rx;

static int counter_rx_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    counter_rx *st = state;
    if (tr_msg_tag(msg) != T_DATA)
        return 0;
    uint64_t v = 0;
    size_t len = 0;
    const void *data = tr_msg_data(msg, &len);
    if (tr_msg_kind(msg) == TR_PAYLOAD_U64)
        v = tr_msg_u64(msg);
    else if (tr_msg_kind(msg) == TR_PAYLOAD_BYTES && len == sizeof v)
        memcpy(&v, data, sizeof v);
    else
        st->mismatch++;
    bool from_actor = (v & ACTOR_BIT) != 0;
    bool has_sender = !tr_ref_is_none(tr_msg_sender(msg));
    if (from_actor != has_sender)
        st->mismatch++;
    if (from_actor)
        st->from_actors++;
    else
        st->foreign++;
    st->sum += v & ~ACTOR_BIT;
    if (st->foreign + st->from_actors == st->expected) {
        tu_report(ctx, st->report_to, R_FOREIGN, st->foreign);
        tu_report(ctx, st->report_to, R_ACTOR, st->from_actors);
        tu_report(ctx, st->report_to, R_SUM, st->sum);
        tu_report(ctx, st->report_to, R_MISMATCH, st->mismatch);
    }
    return 0;
}

static const tr_behavior counter_rx_behavior = {
    .name = "counter-rx",
    .handle = counter_rx_handle,
    .state_size = sizeof(counter_rx),
};

/* ---- chatter actor: sends values base..base+count-1 to every receiver */

#define MAX_RX 4

typedef struct chatter {
    tr_ref rx[MAX_RX];
    uint32_t nrx;
    uint64_t base;
    uint64_t count;
    uint64_t sent;
} chatter;

static _Atomic uint64_t g_actor_send_errors;

static int chatter_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    chatter *st = state;
    (void)msg;
    for (int k = 0; k < 50 && st->sent < st->count; k++, st->sent++) {
        for (uint32_t r = 0; r < st->nrx; r++) {
            if (tr_send_u64(ctx, st->rx[r], T_DATA,
                            ACTOR_BIT | (st->base + st->sent)) != 0)
                atomic_fetch_add(&g_actor_send_errors, 1);
        }
    }
    if (st->sent < st->count) {
        if (tr_send_tag(ctx, tr_self(ctx), T_MORE) != 0)
            atomic_fetch_add(&g_actor_send_errors, 1);
        return 0;
    }
    return TR_STOP;
}

static const tr_behavior chatter_behavior = {
    .name = "chatter",
    .handle = chatter_handle,
    .state_size = sizeof(chatter),
};

/* ---- raw pthread senders */

typedef struct raw_sender {
    tr_runtime *rt;
    const tr_ref *rx;
    uint32_t nrx;
    uint64_t base;
    uint64_t count;
    int errors;
} raw_sender;

static void *raw_sender_main(void *arg) {
    raw_sender *t = arg;
    for (uint64_t i = 0; i < t->count; i++) {
        uint64_t v = t->base + i;
        for (uint32_t r = 0; r < t->nrx; r++) {
            int rc;
            if (i % 2 == 0) {
                rc = tr_runtime_send_u64(t->rt, t->rx[r], T_DATA, v);
            } else {
                tr_msg *m = tr_msg_new_bytes(T_DATA, &v, sizeof v);
                rc = m ? tr_runtime_send(t->rt, t->rx[r], &m) : TR_ENOMEM;
                if (rc != 0 && m != NULL)
                    tr_msg_destroy(&m);
            }
            if (rc != 0)
                t->errors++;
        }
    }
    return NULL;
}

static uint64_t range_sum(uint64_t base, uint64_t count) {
    return count * base + count * (count - 1) / 2;
}

static void test_foreign_threads_and_actors_exact_totals(void **state) {
    tu_env *e = *state;
    atomic_store(&g_actor_send_errors, 0);
    tu_env_init(e, 2);
    enum { NRX = 2, NTHREADS = 4, NACTORS = 3 };
    uint64_t per = tu_scaled(20000, 1000);
    uint64_t expected = (NTHREADS + NACTORS) * per;
    uint64_t expected_sum = 0;

    tr_ref rx[NRX];
    for (int r = 0; r < NRX; r++) {
        counter_rx init = {.report_to = e->inbox_ref, .expected = expected};
        TU_ASSERT_OK(tr_runtime_spawn(e->rt, &counter_rx_behavior, &init,
                                      sizeof init, &rx[r]));
    }
    tr_ref ch[NACTORS];
    for (int i = 0; i < NACTORS; i++) {
        chatter init;
        memset(&init, 0, sizeof init);
        for (int r = 0; r < NRX; r++)
            init.rx[r] = rx[r];
        init.nrx = NRX;
        init.base = (uint64_t)(NTHREADS + i) * per;
        init.count = per;
        expected_sum += range_sum(init.base, per);
        TU_ASSERT_OK(tr_runtime_spawn(e->rt, &chatter_behavior, &init,
                                      sizeof init, &ch[i]));
    }
    tu_env_start(e);

    raw_sender rs[NTHREADS];
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        rs[i] = (raw_sender){.rt = e->rt,
                             .rx = rx,
                             .nrx = NRX,
                             .base = (uint64_t)i * per,
                             .count = per};
        expected_sum += range_sum(rs[i].base, per);
        assert_int_equal(pthread_create(&th[i], NULL, raw_sender_main, &rs[i]),
                         0);
    }
    for (int i = 0; i < NACTORS; i++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, ch[i], T_GO, 0));
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(rs[i].errors, 0);
    }
    /* Four reports per receiver; the receivers' reports interleave. */
    int got[4] = {0};
    for (int n = 0; n < NRX * 4; n++) {
        tr_msg *m = tu_recv(e, n == 0 ? 60000 : TU_PROMPT_MS);
        uint32_t tag = tr_msg_tag(m);
        uint64_t v = tr_msg_u64(m);
        tr_msg_destroy(&m);
        switch (tag) {
        case R_FOREIGN:
            assert_true(v == NTHREADS * per);
            break;
        case R_ACTOR:
            assert_true(v == NACTORS * per);
            break;
        case R_SUM:
            assert_true(v == expected_sum);
            break;
        case R_MISMATCH:
            assert_int_equal(v, 0);
            break;
        default:
            fail_msg("unexpected report tag %" PRIu32, tag);
        }
        got[tag - R_FOREIGN]++;
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(got[i], NRX);
    tu_expect_silence(e, 100);
    assert_int_equal(atomic_load(&g_actor_send_errors), 0);
    tu_env_finish(e);
}

/* ---- foreign threads with their own inboxes, round trips via an echo */

typedef struct echo_req {
    uint64_t reply_to;
    uint64_t value;
} echo_req;

static int echo_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)state;
    size_t len = 0;
    const echo_req *rq = tr_msg_data(msg, &len);
    if (tr_msg_tag(msg) != T_ECHO || rq == NULL || len != sizeof *rq)
        return 0;
    tr_ref to = {rq->reply_to};
    (void)tr_send_u64(ctx, to, T_ECHOED, rq->value + 1);
    return 0;
}

static const tr_behavior echo_behavior = {
    .name = "echo",
    .handle = echo_handle,
};

typedef struct inbox_thread {
    tr_runtime *rt;
    tr_ref echo;
    uint32_t rounds;
    uint32_t idx;
    uint32_t ok;
    int errors;
    int first_err;
} inbox_thread;

static void note_err(inbox_thread *t, int rc) {
    if (t->errors++ == 0)
        t->first_err = rc;
}

static void *inbox_thread_main(void *arg) {
    inbox_thread *t = arg;
    tr_inbox *ib = NULL;
    int rc = tr_inbox_create(t->rt, &ib);
    if (rc != 0) {
        note_err(t, rc);
        return NULL;
    }
    for (uint32_t i = 0; i < t->rounds; i++) {
        echo_req rq = {.reply_to = tr_inbox_ref(ib).id,
                       .value = ((uint64_t)t->idx << 32) | i};
        tr_msg *m = tr_msg_new_bytes(T_ECHO, &rq, sizeof rq);
        rc = tr_runtime_send(t->rt, t->echo, &m);
        if (rc != 0) {
            tr_msg_destroy(&m);
            note_err(t, rc);
            break;
        }
        tr_msg *reply = NULL;
        rc = tr_inbox_recv(ib, TU_PROMPT_MS, &reply);
        if (rc != 0) {
            note_err(t, rc);
            break;
        }
        if (tr_msg_tag(reply) == T_ECHOED && tr_msg_u64(reply) == rq.value + 1)
            t->ok++;
        else
            note_err(t, TR_EPROTO);
        tr_msg_destroy(&reply);
    }
    tr_inbox_destroy(&ib);
    if (ib != NULL)
        note_err(t, TR_ESTATE);
    return NULL;
}

static void test_foreign_threads_own_inboxes(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref echo = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &echo_behavior, NULL, 0, &echo));
    tu_env_start(e);
    enum { NTHREADS = 4 };
    uint32_t rounds = (uint32_t)tu_scaled(2000, 200);
    inbox_thread it[NTHREADS];
    pthread_t th[NTHREADS];
    for (uint32_t i = 0; i < NTHREADS; i++) {
        it[i] = (inbox_thread){
            .rt = e->rt, .echo = echo, .rounds = rounds, .idx = i};
        assert_int_equal(
            pthread_create(&th[i], NULL, inbox_thread_main, &it[i]), 0);
    }
    for (uint32_t i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        if (it[i].errors != 0)
            fail_msg("inbox thread %u: %d errors, first %d (%s)", i,
                     it[i].errors, it[i].first_err,
                     tu_err_text(it[i].first_err));
        assert_int_equal(it[i].ok, rounds);
    }
    tu_env_finish(e);
}

/* ---- foreign threads spawn actors concurrently */

typedef struct spawned {
    tr_ref report_to;
    uint64_t tag_value;
} spawned;

static int spawned_start(tr_ctx *ctx, void *state) {
    spawned *st = state;
    tu_report(ctx, st->report_to, R_SPAWNED, st->tag_value);
    return TR_STOP;
}

static int spawned_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)ctx;
    (void)state;
    (void)msg;
    return 0;
}

static const tr_behavior spawned_behavior = {
    .name = "spawned",
    .handle = spawned_handle,
    .on_start = spawned_start,
    .state_size = sizeof(spawned),
};

typedef struct spawner_thread {
    tr_runtime *rt;
    tr_ref report_to;
    uint32_t idx;
    uint32_t count;
    int errors;
} spawner_thread;

static void *spawner_thread_main(void *arg) {
    spawner_thread *t = arg;
    for (uint32_t i = 0; i < t->count; i++) {
        spawned init = {.report_to = t->report_to, .tag_value = t->idx};
        tr_ref ref = TR_REF_NONE;
        if (tr_runtime_spawn(t->rt, &spawned_behavior, &init, sizeof init,
                             &ref) != 0 ||
            tr_ref_is_none(ref))
            t->errors++;
    }
    return NULL;
}

static void test_foreign_threads_spawn(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tu_spawn_keeper(e);
    tu_env_start(e);
    tr_runtime_stats before = tu_stats(e);
    enum { NTHREADS = 4 };
    uint32_t per = (uint32_t)tu_scaled(500, 50);
    spawner_thread st[NTHREADS];
    pthread_t th[NTHREADS];
    for (uint32_t i = 0; i < NTHREADS; i++) {
        st[i] = (spawner_thread){
            .rt = e->rt, .report_to = e->inbox_ref, .idx = i, .count = per};
        assert_int_equal(
            pthread_create(&th[i], NULL, spawner_thread_main, &st[i]), 0);
    }
    for (uint32_t i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(st[i].errors, 0);
    }
    uint32_t per_thread[NTHREADS] = {0};
    for (uint32_t n = 0; n < NTHREADS * per; n++) {
        uint64_t idx = tu_recv_u64(e, R_SPAWNED, TU_PROMPT_MS);
        assert_true(idx < NTHREADS);
        per_thread[idx]++;
    }
    for (uint32_t i = 0; i < NTHREADS; i++)
        assert_int_equal(per_thread[i], per);
    tu_expect_silence(e, 100);
    TU_ASSERT_EVENTUALLY(tu_stats(e).ended - before.ended == NTHREADS * per,
                         TU_PROMPT_MS);
    assert_true(tu_stats(e).spawned - before.spawned == NTHREADS * per);
    tu_env_finish(e);
}

/* ---- sends racing tr_runtime_stop */

static _Atomic uint64_t g_dtor_calls;

static void count_dtor(void *p) {
    (void)p;
    atomic_fetch_add(&g_dtor_calls, 1);
}

typedef struct racer {
    tr_runtime *rt;
    tr_ref to;
    uint64_t created;
    uint64_t accepted;
    uint64_t refused;
    uint64_t other;
    int first_other;
    uint64_t ok_after_stopped; /* a success after an ESTOPPED */
} racer;

static void *racer_main(void *arg) {
    racer *t = arg;
    int64_t deadline = tu_now_ms() + 10000;
    uint64_t stopped_streak = 0;
    while (stopped_streak < 1000 && tu_now_ms() < deadline) {
        tr_msg *m = tr_msg_new_ptr(T_DATA, (void *)(uintptr_t)1, 0, count_dtor);
        if (m == NULL) {
            t->other++;
            break;
        }
        t->created++;
        int rc = tr_runtime_send(t->rt, t->to, &m);
        if (rc == 0) {
            t->accepted++;
            if (t->refused > 0)
                t->ok_after_stopped++;
        } else {
            tr_msg_destroy(&m);
            if (rc == TR_ESTOPPED) {
                t->refused++;
                stopped_streak++;
            } else if (t->other++ == 0) {
                t->first_other = rc;
            }
        }
    }
    return NULL;
}

static void test_foreign_sends_racing_stop(void **state) {
    tu_env *e = *state;
    atomic_store(&g_dtor_calls, 0);
    tu_env_init(e, 2);
    tr_ref sink = tu_spawn_keeper(e);
    tu_env_start(e);
    enum { NTHREADS = 4 };
    racer rc[NTHREADS];
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        rc[i] = (racer){.rt = e->rt, .to = sink};
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &rc[i]), 0);
    }
    tu_sleep_ms(50);
    TU_ASSERT_OK(tr_runtime_stop(e->rt));
    uint64_t created = 0;
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_true(rc[i].accepted > 0);
        assert_true(rc[i].refused >= 1000); /* stop took effect */
        if (rc[i].other != 0)               /* only 0 or TR_ESTOPPED */
            fail_msg("sender %d: %" PRIu64 " sends failed with neither 0 nor "
                     "TR_ESTOPPED, first: %d (%s)",
                     i, rc[i].other, rc[i].first_other,
                     tu_err_text(rc[i].first_other));
        assert_int_equal(rc[i].ok_after_stopped, 0); /* stop is sticky */
        created += rc[i].created;
    }
    tu_env_finish(e);
    /* Every payload freed exactly once: handled, dropped at shutdown, or
     * destroyed by the sender after a refusal. */
    uint64_t freed = atomic_load(&g_dtor_calls);
    if (freed != created)
        fail_msg("%" PRIu64 " messages created, %" PRIu64
                 " payload destructor calls",
                 created, freed);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_foreign_threads_and_actors_exact_totals),
        TU_TEST(test_foreign_threads_own_inboxes),
        TU_TEST(test_foreign_threads_spawn),
        TU_TEST(test_foreign_sends_racing_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
