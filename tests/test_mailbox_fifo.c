/* test_mailbox_fifo — per-sender FIFO under concurrent senders.
 *
 * Foreign threads (raw pthreads, tr_runtime_send*) and sender actors (which
 * send in chunks and re-schedule themselves, so they hop between workers
 * mid-stream) send sequenced messages to one receiver at the same time. Each
 * value encodes (sender id << 32 | seq); the receiver checks that every
 * sender's sequence arrives as 0, 1, 2, ... and reports totals. */
#include "testutil.h"

#define MAX_SENDERS 64

enum {
    T_SEQ = 1, /* value = sender << 32 | seq */
    T_GO,      /* start a sender actor */
    T_MORE,    /* a sender actor's next chunk */
    R_TOTAL = 100,
    R_VIOLATIONS,
    R_BAD_SENDER,
    R_SEQ_SUM_OK,
    R_SENDER_DONE,
    R_SEND_ERR,
};

/* ---- receiver */

typedef struct fifo_rx {
    /* init */
    tr_ref report_to;
    uint64_t expected_total;
    /* state */
    uint64_t next[MAX_SENDERS];
    uint64_t total;
    uint64_t violations;
    uint64_t bad_sender;
} fifo_rx;

static uint64_t seq_of_payload(tr_msg *msg, int *ok) {
    size_t len = 0;
    const void *data;
    *ok = 1;
    switch (tr_msg_kind(msg)) {
    case TR_PAYLOAD_U64:
        return tr_msg_u64(msg);
    case TR_PAYLOAD_BYTES:
        data = tr_msg_data(msg, &len);
        if (len == sizeof(uint64_t)) {
            uint64_t v;
            memcpy(&v, data, sizeof v);
            return v;
        }
        break;
    case TR_PAYLOAD_PTR:
        data = tr_msg_data(msg, &len);
        if (data != NULL && len == sizeof(uint64_t))
            return *(const uint64_t *)data;
        break;
    default:
        break;
    }
    *ok = 0;
    return 0;
}

static int fifo_rx_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    fifo_rx *st = state;
    if (tr_msg_tag(msg) != T_SEQ)
        return 0;
    int ok;
    uint64_t v = seq_of_payload(msg, &ok);
    uint64_t sid = v >> 32;
    uint64_t seq = v & 0xFFFFFFFFu;
    if (!ok || sid >= MAX_SENDERS) {
        st->bad_sender++;
    } else {
        if (seq != st->next[sid])
            st->violations++;
        st->next[sid] = seq + 1;
    }
    st->total++;
    if (st->total == st->expected_total) {
        uint64_t sum = 0;
        for (int i = 0; i < MAX_SENDERS; i++)
            sum += st->next[i];
        tu_report(ctx, st->report_to, R_TOTAL, st->total);
        tu_report(ctx, st->report_to, R_VIOLATIONS, st->violations);
        tu_report(ctx, st->report_to, R_BAD_SENDER, st->bad_sender);
        tu_report(ctx, st->report_to, R_SEQ_SUM_OK, sum == st->total);
    }
    return 0;
}

static const tr_behavior fifo_rx_behavior = {
    .name = "fifo-rx",
    .handle = fifo_rx_handle,
    .state_size = sizeof(fifo_rx),
};

/* ---- sender actor */

typedef struct fifo_tx {
    tr_ref target;
    tr_ref report_to;
    uint32_t sid;
    uint32_t count;
    uint32_t chunk;
    uint32_t sent;
} fifo_tx;

static int fifo_tx_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    fifo_tx *st = state;
    uint32_t tag = tr_msg_tag(msg);
    if (tag != T_GO && tag != T_MORE)
        return 0;
    for (uint32_t i = 0; i < st->chunk && st->sent < st->count; i++) {
        uint64_t v = ((uint64_t)st->sid << 32) | st->sent;
        int rc = tr_send_u64(ctx, st->target, T_SEQ, v);
        if (rc != 0) {
            tu_report(ctx, st->report_to, R_SEND_ERR, (uint64_t)(int64_t)rc);
            return TR_STOP;
        }
        st->sent++;
    }
    if (st->sent < st->count) {
        int rc = tr_send_tag(ctx, tr_self(ctx), T_MORE);
        if (rc != 0) {
            tu_report(ctx, st->report_to, R_SEND_ERR, (uint64_t)(int64_t)rc);
            return TR_STOP;
        }
        return 0;
    }
    tu_report(ctx, st->report_to, R_SENDER_DONE, st->sid);
    return TR_STOP;
}

static const tr_behavior fifo_tx_behavior = {
    .name = "fifo-tx",
    .handle = fifo_tx_handle,
    .state_size = sizeof(fifo_tx),
};

/* ---- foreign sender threads */

typedef enum tx_mode {
    TX_U64 = 0,   /* tr_runtime_send_u64 */
    TX_MIXED = 1, /* tr_runtime_send with U64, BYTES and PTR messages */
} tx_mode;

typedef struct thread_tx {
    tr_runtime *rt;
    tr_ref target;
    uint32_t sid;
    uint32_t count;
    tx_mode mode;
    pthread_barrier_t *barrier;
    int errors; /* read by main after join */
    int first_err;
} thread_tx;

static void free_u64_box(void *p) { free(p); }

static void *thread_tx_main(void *arg) {
    thread_tx *t = arg;
    pthread_barrier_wait(t->barrier);
    for (uint32_t seq = 0; seq < t->count; seq++) {
        uint64_t v = ((uint64_t)t->sid << 32) | seq;
        int rc;
        if (t->mode == TX_U64 || seq % 3 == 0) {
            rc = tr_runtime_send_u64(t->rt, t->target, T_SEQ, v);
        } else {
            tr_msg *m;
            if (seq % 3 == 1) {
                m = tr_msg_new_bytes(T_SEQ, &v, sizeof v);
            } else {
                uint64_t *box = malloc(sizeof *box);
                if (box != NULL)
                    *box = v;
                m = box ? tr_msg_new_ptr(T_SEQ, box, sizeof *box, free_u64_box)
                        : NULL;
                if (m == NULL)
                    free(box);
            }
            if (m == NULL) {
                rc = TR_ENOMEM;
            } else {
                rc = tr_runtime_send(t->rt, t->target, &m);
                if (rc != 0)
                    tr_msg_destroy(&m);
            }
        }
        if (rc != 0) {
            if (t->errors++ == 0)
                t->first_err = rc;
            break;
        }
    }
    return NULL;
}

/* ---- the scenario */

typedef struct fifo_plan {
    unsigned workers;
    uint32_t threads;
    uint32_t actors;
    uint32_t per_sender;
    tx_mode mode;
} fifo_plan;

static void run_fifo(tu_env *e, const fifo_plan *plan) {
    assert_true(plan->threads + plan->actors <= MAX_SENDERS);
    tu_env_init(e, plan->workers);

    uint64_t expected =
        (uint64_t)(plan->threads + plan->actors) * plan->per_sender;
    fifo_rx rx_init;
    memset(&rx_init, 0, sizeof rx_init);
    rx_init.report_to = e->inbox_ref;
    rx_init.expected_total = expected;
    tr_ref rx = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &fifo_rx_behavior, &rx_init,
                                  offsetof(fifo_rx, next), &rx));

    tr_ref tx[MAX_SENDERS];
    for (uint32_t i = 0; i < plan->actors; i++) {
        fifo_tx init = {
            .target = rx,
            .report_to = e->inbox_ref,
            .sid = plan->threads + i,
            .count = plan->per_sender,
            .chunk = 16 + 7 * i, /* different paces interleave differently */
        };
        TU_ASSERT_OK(tr_runtime_spawn(e->rt, &fifo_tx_behavior, &init,
                                      sizeof init, &tx[i]));
    }
    tu_env_start(e);

    pthread_barrier_t barrier;
    assert_int_equal(pthread_barrier_init(&barrier, NULL, plan->threads + 1),
                     0);
    thread_tx tt[MAX_SENDERS];
    pthread_t th[MAX_SENDERS];
    for (uint32_t i = 0; i < plan->threads; i++) {
        tt[i] = (thread_tx){
            .rt = e->rt,
            .target = rx,
            .sid = i,
            .count = plan->per_sender,
            .mode = plan->mode,
            .barrier = &barrier,
        };
        assert_int_equal(pthread_create(&th[i], NULL, thread_tx_main, &tt[i]),
                         0);
    }
    /* Release the actors and the threads together. */
    for (uint32_t i = 0; i < plan->actors; i++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, tx[i], T_GO, 0));
    pthread_barrier_wait(&barrier);

    for (uint32_t i = 0; i < plan->threads; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&barrier);
    for (uint32_t i = 0; i < plan->threads; i++) {
        if (tt[i].errors != 0)
            fail_msg("sender thread %u: send failed with %d (%s)", i,
                     tt[i].first_err, tu_err_text(tt[i].first_err));
    }

    /* Reports: the receiver's four, and one R_SENDER_DONE per actor, in any
     * interleaving. */
    uint64_t total = UINT64_MAX, violations = UINT64_MAX, bad = UINT64_MAX,
             sum_ok = UINT64_MAX;
    uint32_t done = 0;
    int64_t wait_ms = 60000;
    while (total == UINT64_MAX || violations == UINT64_MAX ||
           bad == UINT64_MAX || sum_ok == UINT64_MAX || done < plan->actors) {
        tr_msg *m = tu_recv(e, wait_ms);
        uint64_t v = tr_msg_u64(m);
        uint32_t tag = tr_msg_tag(m);
        tr_msg_destroy(&m);
        switch (tag) {
        case R_TOTAL:
            total = v;
            break;
        case R_VIOLATIONS:
            violations = v;
            break;
        case R_BAD_SENDER:
            bad = v;
            break;
        case R_SEQ_SUM_OK:
            sum_ok = v;
            break;
        case R_SENDER_DONE:
            done++;
            break;
        case R_SEND_ERR:
            fail_msg("a sender actor's send failed: %d (%s)", (int)(int64_t)v,
                     tu_err_text((int)(int64_t)v));
            break;
        default:
            fail_msg("unexpected report tag %u", tag);
        }
    }
    assert_true(total == expected);
    if (violations != 0)
        fail_msg("per-sender FIFO violated %" PRIu64 " times in %" PRIu64
                 " messages",
                 violations, total);
    assert_int_equal(bad, 0);
    assert_int_equal(sum_ok, 1);
    /* Nothing beyond the expected total arrives. */
    tu_expect_silence(e, 100);
    tu_env_finish(e);
    assert_int_equal(tu_report_failures_get(), 0);
}

static void test_fifo_foreign_threads(void **state) {
    fifo_plan plan = {.workers = 2,
                      .threads = 4,
                      .actors = 0,
                      .per_sender = (uint32_t)tu_scaled(50000, 2000),
                      .mode = TX_U64};
    run_fifo(*state, &plan);
}

static void test_fifo_sender_actors(void **state) {
    fifo_plan plan = {.workers = 2,
                      .threads = 0,
                      .actors = 8,
                      .per_sender = (uint32_t)tu_scaled(25000, 1000),
                      .mode = TX_U64};
    run_fifo(*state, &plan);
}

static void test_fifo_threads_and_actors_together(void **state) {
    fifo_plan plan = {.workers = 2,
                      .threads = 4,
                      .actors = 4,
                      .per_sender = (uint32_t)tu_scaled(25000, 1000),
                      .mode = TX_U64};
    run_fifo(*state, &plan);
}

/* Kinds mixed in one stream (U64, BYTES, PTR) keep their order too. */
static void test_fifo_mixed_payload_kinds(void **state) {
    fifo_plan plan = {.workers = 2,
                      .threads = 4,
                      .actors = 2,
                      .per_sender = (uint32_t)tu_scaled(20000, 1000),
                      .mode = TX_MIXED};
    run_fifo(*state, &plan);
}

/* More workers than cores: more preemption inside the send path. */
static void test_fifo_many_workers(void **state) {
    fifo_plan plan = {.workers = 4,
                      .threads = 6,
                      .actors = 6,
                      .per_sender = (uint32_t)tu_scaled(10000, 500),
                      .mode = TX_U64};
    run_fifo(*state, &plan);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_fifo_foreign_threads),
        TU_TEST(test_fifo_sender_actors),
        TU_TEST(test_fifo_threads_and_actors_together),
        TU_TEST(test_fifo_mixed_payload_kinds),
        TU_TEST(test_fifo_many_workers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
