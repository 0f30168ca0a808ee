/* test_bounded — bounded mailboxes (troupe/bounded.h): every overflow
 * policy, the system lane (a full mailbox still takes a cancel and the
 * reply its actor waits for), a suspended sender resuming in order, and a
 * foreign thread waiting for room. */
#include "testutil.h"

#include "troupe/bounded.h"

enum { T_GATE = 1, T_ITEM, T_END, T_SEEN, T_STOPPED, T_NEXT, T_SENT };

#define MAXV 4096

/* A consumer whose first message (T_GATE) holds its turn until the test
 * opens the gate: meanwhile the test fills its mailbox. It records every
 * T_ITEM value; T_END reports how many to `report`. */
static _Atomic int gate_open;
static uint64_t seen[MAXV];
static uint32_t nseen;

typedef struct consumer {
    tr_ref report;
    uint32_t work_us; /* per item */
} consumer;

static int consumer_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    consumer *c = st;
    switch (tr_msg_tag(m)) {
    case T_GATE: {
        tu_report(ctx, c->report, T_GATE, 0);
        int64_t end = tr_now_ms() + 10000;
        while (!atomic_load(&gate_open) && tr_now_ms() < end)
            usleep(1000);
        return 0;
    }
    case T_ITEM:
        if (nseen < MAXV)
            seen[nseen++] = tr_msg_u64(m);
        if (c->work_us > 0)
            usleep(c->work_us);
        return 0;
    case T_END:
        tu_report(ctx, c->report, T_END, nseen);
        return 0;
    default:
        return TR_UNHANDLED;
    }
}

static void consumer_stop(tr_ctx *ctx, void *st, int reason) {
    consumer *c = st;
    tu_report(ctx, c->report, T_STOPPED, (uint64_t)(int64_t)reason);
}

static const tr_behavior consumer_beh = {.name = "consumer",
                                         .handle = consumer_handle,
                                         .on_stop = consumer_stop,
                                         .state_size = sizeof(consumer)};

static tr_ref gated(tu_env *e, uint32_t max, tr_overflow policy) {
    atomic_store(&gate_open, 0);
    nseen = 0;
    consumer c = {.report = e->inbox_ref};
    tr_ref r;
    TU_ASSERT_RC(tr_runtime_spawn_bounded(
                     e->rt, &consumer_beh, &c, sizeof c,
                     &(tr_mailbox_limit){.max_msgs = 0, .policy = policy},
                     &r),
                 TR_EINVAL);
    TU_ASSERT_OK(tr_runtime_spawn_bounded(
        e->rt, &consumer_beh, &c, sizeof c,
        &(tr_mailbox_limit){.max_msgs = max, .policy = policy}, &r));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, r, T_GATE, 0));
    assert_int_equal(tu_recv_u64(e, T_GATE, TU_PROMPT_MS), 0);
    return r; /* its turn is held: what is sent now stays queued */
}

/* Sends items 0..n-1 from here; returns how many sends succeeded. */
static uint32_t send_items(tu_env *e, tr_ref r, uint32_t n, int expect_rc) {
    uint32_t ok = 0;
    for (uint32_t i = 0; i < n; i++) {
        tr_msg *m = tr_msg_new_u64(T_ITEM, i);
        int rc = tr_runtime_send(e->rt, r, &m);
        if (rc == 0) {
            ok++;
        } else {
            assert_int_equal(rc, expect_rc);
            TU_ASSERT_OK(tr_msg_destroy(&m));
        }
    }
    return ok;
}

static uint32_t depth_of(tu_env *e, tr_ref r) {
    tr_mailbox_stats st;
    TU_ASSERT_OK(tr_mailbox_stats_get(e->rt, r, &st));
    return st.depth;
}

/* Opens the gate, waits for the mailbox to drain (T_END is an ordinary
 * message too), then asks for the count. */
static uint32_t open_and_count(tu_env *e, tr_ref r) {
    atomic_store(&gate_open, 1);
    TU_ASSERT_EVENTUALLY(depth_of(e, r) == 0, TU_PROMPT_MS);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, r, T_END, 0));
    return (uint32_t)tu_recv_u64(e, T_END, TU_PROMPT_MS);
}

/* The gate message still counts (its turn has not ended): room for
 * max - 1 more. */
static void test_reject(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref r = gated(e, 10, TR_OVERFLOW_REJECT);
    assert_int_equal(send_items(e, r, 25, TR_EAGAIN), 9);
    tr_mailbox_stats st;
    TU_ASSERT_OK(tr_mailbox_stats_get(e->rt, r, &st));
    assert_int_equal(st.rejected, 16);
    assert_int_equal(st.max_msgs, 10);
    assert_int_equal(open_and_count(e, r), 9);
    for (uint32_t i = 0; i < 9; i++)
        assert_int_equal(seen[i], i);
    tu_env_finish(e);
}

static void test_drop_newest(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref r = gated(e, 10, TR_OVERFLOW_DROP_NEWEST);
    assert_int_equal(send_items(e, r, 25, 0), 25); /* all "succeed" */
    assert_int_equal(open_and_count(e, r), 9);
    for (uint32_t i = 0; i < 9; i++) /* the oldest were kept */
        assert_int_equal(seen[i], i);
    tr_mailbox_stats st;
    TU_ASSERT_OK(tr_mailbox_stats_get(e->rt, r, &st));
    assert_int_equal(st.dropped, 16);
    tu_env_finish(e);
}

static void test_drop_oldest(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref r = gated(e, 10, TR_OVERFLOW_DROP_OLDEST);
    assert_int_equal(send_items(e, r, 25, 0), 25);
    assert_int_equal(open_and_count(e, r), 9); /* the 9 newest */
    for (uint32_t i = 0; i < 9; i++)
        assert_int_equal(seen[i], 16 + i);
    tr_mailbox_stats st;
    TU_ASSERT_OK(tr_mailbox_stats_get(e->rt, r, &st));
    assert_int_equal(st.dropped, 16);
    tu_env_finish(e);
}

/* A byte limit: 300-byte messages into 1000 bytes. */
static void test_byte_limit(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    atomic_store(&gate_open, 0);
    nseen = 0;
    consumer c = {.report = e->inbox_ref};
    tr_ref r;
    TU_ASSERT_OK(tr_runtime_spawn_bounded(
        e->rt, &consumer_beh, &c, sizeof c,
        &(tr_mailbox_limit){.max_msgs = 100,
                            .policy = TR_OVERFLOW_REJECT,
                            .max_bytes = 1000},
        &r));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, r, T_GATE, 0));
    assert_int_equal(tu_recv_u64(e, T_GATE, TU_PROMPT_MS), 0);
    static unsigned char blob[300];
    uint32_t ok = 0;
    for (int i = 0; i < 10; i++) {
        tr_msg *m = tr_msg_new_bytes(T_ITEM, blob, sizeof blob);
        int rc = tr_runtime_send(e->rt, r, &m);
        if (rc == 0)
            ok++;
        else {
            TU_ASSERT_RC(rc, TR_EAGAIN);
            TU_ASSERT_OK(tr_msg_destroy(&m));
        }
    }
    assert_int_equal(ok, 3);
    tr_mailbox_stats st;
    TU_ASSERT_OK(tr_mailbox_stats_get(e->rt, r, &st));
    assert_int_equal(st.bytes, 900);
    assert_int_equal(st.max_bytes, 1000);
    assert_int_equal(st.rejected, 7);
    assert_int_equal(open_and_count(e, r), 3);
    TU_ASSERT_OK(tr_mailbox_stats_get(e->rt, r, &st));
    assert_int_equal(st.bytes, 0);
    tu_env_finish(e);
}

/* The system lane: a full (rejecting) mailbox still takes a cancel. */
static void test_full_mailbox_still_takes_cancel(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref r = gated(e, 3, TR_OVERFLOW_REJECT);
    assert_int_equal(send_items(e, r, 10, TR_EAGAIN), 2);
    TU_ASSERT_OK(tr_cancel(e->rt, r, TR_EXIT_CANCELLED, -1));
    atomic_store(&gate_open, 1);
    assert_int_equal(tu_recv_u64(e, T_STOPPED, TU_PROMPT_MS),
                     TR_EXIT_CANCELLED);
    tu_env_finish(e);
}

/* A requester with a full mailbox still gets its reply. */
typedef struct asker {
    tr_ref server, report;
} asker;

static int asker_start(tr_ctx *ctx, void *st) {
    asker *a = st;
    /* Fill its own mailbox with items it will only see after the reply
     * (they queue behind this turn), then ask. */
    for (int i = 0; i < 5; i++) {
        int rc = tr_send_u64(ctx, tr_self(ctx), T_ITEM, (uint64_t)i);
        if (rc != 0 && rc != TR_EAGAIN)
            return rc;
    }
    tr_msg *q = tr_msg_new_u64(T_NEXT, 6);
    return tr_request(ctx, a->server, &q, 5000, NULL);
}

static int asker_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    asker *a = st;
    if (tr_msg_is_reply(m)) {
        tu_report(ctx, a->report, T_SEEN, tr_msg_u64(m));
        return TR_STOP;
    }
    return 0;
}

static const tr_behavior asker_beh = {.name = "asker",
                                      .handle = asker_handle,
                                      .on_start = asker_start,
                                      .state_size = sizeof(asker)};

static int doubler_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    (void)st;
    tr_msg *r = tr_msg_new_u64(T_SEEN, tr_msg_u64(m) * 2);
    return tr_reply(ctx, m, &r);
}

static const tr_behavior doubler_beh = {.name = "doubler",
                                        .handle = doubler_handle};

static void test_reply_reaches_full_requester(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref srv;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &doubler_beh, NULL, 0, &srv));
    asker a = {.server = srv, .report = e->inbox_ref};
    TU_ASSERT_OK(tr_runtime_spawn_bounded(
        e->rt, &asker_beh, &a, sizeof a,
        &(tr_mailbox_limit){.max_msgs = 2, .policy = TR_OVERFLOW_REJECT},
        NULL));
    tu_env_start(e);
    assert_int_equal(tu_recv_u64(e, T_SEEN, TU_PROMPT_MS), 12);
    TU_ASSERT_OK(tr_cancel(e->rt, srv, TR_EXIT_CANCELLED, -1));
    tu_env_finish(e);
}

/* Backpressure: a producer far faster than its bounded consumer is muted
 * (not blocked), resumes in order, loses nothing; the consumer's mailbox
 * stays near its limit. */
typedef struct producer {
    tr_ref sink, report;
    uint32_t sent, total, burst;
} producer;

static int producer_start(tr_ctx *ctx, void *st) {
    (void)st;
    return tr_send_tag(ctx, tr_self(ctx), T_NEXT);
}

static int producer_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    producer *p = st;
    (void)m;
    for (uint32_t i = 0; i < p->burst && p->sent < p->total; i++) {
        int rc = tr_send_u64(ctx, p->sink, T_ITEM, p->sent++);
        if (rc != 0)
            return rc;
    }
    if (p->sent < p->total)
        return tr_send_tag(ctx, tr_self(ctx), T_NEXT);
    int rc = tr_send_tag(ctx, p->sink, T_END);
    tu_report(ctx, p->report, T_SENT, p->sent);
    return rc != 0 ? rc : TR_STOP;
}

static const tr_behavior producer_beh = {.name = "producer",
                                         .handle = producer_handle,
                                         .on_start = producer_start,
                                         .state_size = sizeof(producer)};

static void test_backpressure_mutes_producer_in_order(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    atomic_store(&gate_open, 1);
    nseen = 0;
    consumer c = {.report = e->inbox_ref, .work_us = 200};
    tr_ref snk;
    TU_ASSERT_OK(tr_runtime_spawn_bounded(
        e->rt, &consumer_beh, &c, sizeof c,
        &(tr_mailbox_limit){.max_msgs = 32,
                            .policy = TR_OVERFLOW_BACKPRESSURE},
        &snk));
    producer p = {
        .sink = snk, .report = e->inbox_ref, .total = 2000, .burst = 8};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &producer_beh, &p, sizeof p, NULL));
    tu_env_start(e);
    assert_int_equal(tu_recv_u64(e, T_SENT, 30000), 2000);
    assert_int_equal(tu_recv_u64(e, T_END, 30000), 2000);
    for (uint32_t i = 0; i < 2000; i++)
        assert_int_equal(seen[i], i);
    tr_mailbox_stats st;
    TU_ASSERT_OK(tr_mailbox_stats_get(e->rt, snk, &st));
    assert_true(st.full > 0);
    assert_int_equal(st.dropped + st.rejected, 0);
    assert_true(tu_stats(e).muted > 0);
    tu_env_finish(e);
}

/* A foreign thread waits for room (or times out). */
static void test_foreign_send_waits(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref r = gated(e, 4, TR_OVERFLOW_BACKPRESSURE);
    assert_int_equal(send_items(e, r, 3, 0), 3); /* full now (4 with gate) */
    tr_msg *m = tr_msg_new_u64(T_ITEM, 3);
    TU_ASSERT_RC(tr_runtime_send_wait(e->rt, r, &m, 100), TR_ETIMEDOUT);
    assert_non_null(m);
    atomic_store(&gate_open, 1);
    TU_ASSERT_OK(tr_runtime_send_wait(e->rt, r, &m, 5000));
    assert_null(m);
    TU_ASSERT_EVENTUALLY(depth_of(e, r) == 0, TU_PROMPT_MS);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, r, T_END, 0));
    assert_int_equal(tu_recv_u64(e, T_END, TU_PROMPT_MS), 4);
    tu_env_finish(e);
}

/* Misuse gets a clear error: waiting from a handler (actors are muted
 * instead), stats of an unbounded actor, a bad limit. */
static int misuse_start(tr_ctx *ctx, void *st) {
    tr_ref *report = st;
    tr_msg *m = tr_msg_new_u64(1, 1);
    int rc = tr_runtime_send_wait(tr_ctx_runtime(ctx), *report, &m, 10);
    if (m != NULL)
        tr_msg_destroy(&m);
    tu_report(ctx, *report, 2, (uint64_t)(int64_t)rc);
    return 0;
}

static const tr_behavior misuse_beh = {.name = "misuse",
                                       .handle = tu_keeper_handle,
                                       .on_start = misuse_start,
                                       .state_size = sizeof(tr_ref)};

static void test_misuse_errors(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 1);
    tr_ref keeper = tu_spawn_keeper(e), r;
    tr_mailbox_stats ms;
    TU_ASSERT_RC(tr_mailbox_stats_get(e->rt, keeper, &ms), TR_ESTATE);
    TU_ASSERT_RC(tr_runtime_spawn_bounded(
                     e->rt, &consumer_beh, NULL, 0,
                     &(tr_mailbox_limit){.max_msgs = 0}, &r),
                 TR_EINVAL);
    TU_ASSERT_RC(tr_runtime_spawn_bounded(
                     e->rt, &consumer_beh, NULL, 0,
                     &(tr_mailbox_limit){.max_msgs = 4,
                                         .policy = (tr_overflow)9},
                     &r),
                 TR_EINVAL);
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &misuse_beh, &e->inbox_ref,
                                  sizeof e->inbox_ref, NULL));
    tu_env_start(e);
    assert_int_equal((int)(int64_t)tu_recv_u64(e, 2, TU_PROMPT_MS), TR_ESTATE);
    tu_env_finish(e);
}

/* The only child of sup is running with that many restarts. */
static bool restarted(tu_env *e, tr_ref sup, uint32_t restarts) {
    tr_sup_child_info *k = NULL;
    size_t n = 0;
    bool yes = tr_sup_which_children_sync(e->rt, sup, 5000, &k, &n) == 0 &&
               n == 1 && k[0].restarts == restarts &&
               k[0].state == TR_SUP_CHILD_RUNNING;
    tr_sup_children_free(&k);
    return yes;
}

/* A supervisor's child spec may carry a mailbox limit: every incarnation
 * is bounded, restarts included. */
static void test_supervised_child_is_bounded(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_mailbox_limit lim = {.max_msgs = 3, .policy = TR_OVERFLOW_REJECT};
    tr_sup_spec spec = {.name = "b",
                        .behavior = &consumer_beh,
                        .restart = TR_RESTART_PERMANENT,
                        .shutdown_ms = 100,
                        .mailbox = &lim};
    tr_sup_config sc = TR_SUP_CONFIG_INIT;
    sc.intensity = 5;
    tr_sup_spec bad = spec;
    bad.mailbox = &(tr_mailbox_limit){.max_msgs = 0};
    tr_ref sup;
    TU_ASSERT_RC(tr_sup_runtime_start(e->rt, &sc, &bad, 1, &sup), TR_EINVAL);
    TU_ASSERT_OK(tr_sup_runtime_start(e->rt, &sc, &spec, 1, &sup));
    tu_env_start(e);
    for (int round = 0; round < 2; round++) {
        tr_sup_child_info *kids = NULL;
        size_t n = 0;
        TU_ASSERT_OK(tr_sup_which_children_sync(e->rt, sup, 5000, &kids, &n));
        assert_int_equal(n, 1);
        tr_ref child = kids[0].ref;
        assert_int_equal(kids[0].restarts, (uint32_t)round);
        tr_sup_children_free(&kids);
        tr_mailbox_stats ms;
        TU_ASSERT_OK(tr_mailbox_stats_get(e->rt, child, &ms));
        assert_int_equal(ms.max_msgs, 3);
        /* Killed: restarted, bounded again. */
        TU_ASSERT_OK(tr_kill(e->rt, child));
        TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, child), TU_PROMPT_MS);
        /* (The condition is evaluated twice at the end: free each list.) */
        TU_ASSERT_EVENTUALLY(restarted(e, sup, (uint32_t)round + 1),
                             TU_PROMPT_MS);
    }
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_reject),
        TU_TEST(test_drop_newest),
        TU_TEST(test_drop_oldest),
        TU_TEST(test_byte_limit),
        TU_TEST(test_full_mailbox_still_takes_cancel),
        TU_TEST(test_reply_reaches_full_requester),
        TU_TEST(test_backpressure_mutes_producer_in_order),
        TU_TEST(test_foreign_send_waits),
        TU_TEST(test_misuse_errors),
        TU_TEST(test_supervised_child_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
