/* test_mute — backpressure by muting (actors/mute.c): an actor that sends
 * to an overloaded actor is parked after its turn (no thread blocks), in
 * order, until the target is relieved; a parked actor still gets its
 * system messages (cancel, kill, shutdown); an overloaded actor that dies
 * releases its muted senders. */
#include "testutil.h"

#include "actors/system.h"

enum { T_ITEM = 1, T_NEXT, T_SEEN, T_SENT, T_STOPPED };

/* A producer: each turn sends `burst` items to the sink and a NEXT to
 * itself, until `total`. */
typedef struct producer {
    tr_ref sink, report;
    uint32_t burst, total, sent;
} producer;

static int producer_start(tr_ctx *ctx, void *st) {
    (void)st;
    return tr_send_tag(ctx, tr_self(ctx), T_NEXT);
}

static int producer_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    producer *p = st;
    if (tr_msg_tag(m) != T_NEXT)
        return TR_UNHANDLED;
    for (uint32_t i = 0; i < p->burst && p->sent < p->total; i++) {
        int rc = tr_send_u64(ctx, p->sink, T_ITEM, p->sent++);
        if (rc != 0)
            return rc;
    }
    tu_report(ctx, p->report, T_SENT, p->sent);
    if (p->sent == p->total)
        return TR_STOP;
    return tr_send_tag(ctx, tr_self(ctx), T_NEXT);
}

static void producer_stop(tr_ctx *ctx, void *st, int reason) {
    producer *p = st;
    tu_report(ctx, p->report, T_STOPPED, (uint64_t)(int64_t)reason);
}

static const tr_behavior producer_beh = {.name = "producer",
                                         .handle = producer_handle,
                                         .on_start = producer_start,
                                         .on_stop = producer_stop,
                                         .state_size = sizeof(producer)};

/* A sink: checks order per producer (one producer here), reports every
 * `every` items. */
typedef struct sink {
    tr_ref report;
    uint64_t next, every;
    bool any_order; /* several producers */
} sink;

static int sink_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    sink *s = st;
    if (tr_msg_tag(m) != T_ITEM)
        return TR_UNHANDLED;
    if (!s->any_order && tr_msg_u64(m) != s->next)
        return TR_EPROTO; /* out of order: fails the sink */
    s->next++;
    if (s->next % s->every == 0)
        tu_report(ctx, s->report, T_SEEN, s->next);
    return 0;
}

static const tr_behavior sink_beh = {
    .name = "sink", .handle = sink_handle, .state_size = sizeof(sink)};

/* Drains the inbox until a T_SENT report of at least n; returns the last
 * T_SENT value seen. */
static uint64_t wait_sent(tu_env *e, uint64_t n) {
    for (;;) {
        tr_msg *m = tu_recv(e, TU_PROMPT_MS);
        uint32_t tag = tr_msg_tag(m);
        uint64_t v = tr_msg_u64(m);
        tr_msg_destroy(&m);
        if (tag == T_SENT && v >= n)
            return v;
    }
}

/* The next T_STOPPED's value (T_SENT reports before it are skipped). */
static int64_t next_stopped(tu_env *e) {
    for (;;) {
        tr_msg *m = tu_recv(e, TU_PROMPT_MS);
        uint32_t tag = tr_msg_tag(m);
        uint64_t v = tr_msg_u64(m);
        tr_msg_destroy(&m);
        if (tag == T_STOPPED)
            return (int64_t)v;
        assert_int_equal(tag, T_SENT);
    }
}

static void test_muted_producer_waits_then_resumes_in_order(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    sink si = {.report = e->inbox_ref, .every = 1000};
    tr_ref snk;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &sink_beh, &si, sizeof si, &snk));
    TU_ASSERT_OK(tr__overload_set(e->rt, NULL, snk, true));
    producer pi = {.sink = snk,
                   .report = e->inbox_ref,
                   .burst = 10,
                   .total = 1000};
    tr_ref prod;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &producer_beh, &pi, sizeof pi, &prod));
    tu_env_start(e);
    /* One turn (10 items) goes out, then the producer is parked. */
    assert_int_equal(tu_recv_u64(e, T_SENT, TU_PROMPT_MS), 10);
    tu_expect_silence(e, 300);
    assert_true(tu_stats(e).muted >= 1);
    assert_true(tr_actor_alive(e->rt, prod));
    /* Relieved: it runs on, every item arrives in order. */
    TU_ASSERT_OK(tr__overload_set(e->rt, NULL, snk, false));
    assert_int_equal(wait_sent(e, 1000), 1000);
    for (;;) { /* the sink's report of 1000, after the producer's end */
        tr_msg *m = tu_recv(e, TU_PROMPT_MS);
        uint32_t tag = tr_msg_tag(m);
        uint64_t v = tr_msg_u64(m);
        tr_msg_destroy(&m);
        if (tag == T_SEEN && v == 1000)
            break;
    }
    assert_true(tr_actor_alive(e->rt, snk));
    TU_ASSERT_OK(tr_cancel(e->rt, snk, TR_EXIT_CANCELLED, -1));
    tu_env_finish(e);
}

static void test_parked_actor_still_gets_cancel_and_kill(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    sink si = {.report = e->inbox_ref, .every = 1000000, .any_order = true};
    tr_ref snk;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &sink_beh, &si, sizeof si, &snk));
    TU_ASSERT_OK(tr__overload_set(e->rt, NULL, snk, true));
    producer pi = {.sink = snk,
                   .report = e->inbox_ref,
                   .burst = 5,
                   .total = 1000000};
    tr_ref p1, p2;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &producer_beh, &pi, sizeof pi, &p1));
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &producer_beh, &pi, sizeof pi, &p2));
    tu_env_start(e);
    assert_int_equal(tu_recv_u64(e, T_SENT, TU_PROMPT_MS), 5);
    assert_int_equal(tu_recv_u64(e, T_SENT, TU_PROMPT_MS), 5);
    tu_expect_silence(e, 200); /* both parked */
    /* Cancel reaches a parked actor (which first handles what was queued
     * before it: one more turn at most); so does a kill. */
    TU_ASSERT_OK(tr_cancel(e->rt, p1, TR_EXIT_CANCELLED, -1));
    assert_int_equal(next_stopped(e), TR_EXIT_CANCELLED);
    TU_ASSERT_OK(tr_kill(e->rt, p2));
    assert_int_equal(next_stopped(e), TR_EXIT_KILLED);
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, p1) &&
                             !tr_actor_alive(e->rt, p2),
                         TU_PROMPT_MS);
    TU_ASSERT_OK(tr_cancel(e->rt, snk, TR_EXIT_CANCELLED, -1));
    tu_env_finish(e);
}

static void test_overloaded_target_dies_releases_senders(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    sink si = {.report = e->inbox_ref, .every = 1000000};
    tr_ref snk;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &sink_beh, &si, sizeof si, &snk));
    TU_ASSERT_OK(tr__overload_set(e->rt, NULL, snk, true));
    producer pi = {
        .sink = snk, .report = e->inbox_ref, .burst = 3, .total = 1000000};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &producer_beh, &pi, sizeof pi, NULL));
    tu_env_start(e);
    assert_int_equal(tu_recv_u64(e, T_SENT, TU_PROMPT_MS), 3);
    tu_expect_silence(e, 200);
    /* The sink ends: the producer goes on (a turn may still reach the
     * stopping sink; then its sends fail, which ends it with
     * TR_ENOACTOR). */
    TU_ASSERT_OK(tr_cancel(e->rt, snk, TR_EXIT_CANCELLED, -1));
    assert_int_equal(next_stopped(e), TR_ENOACTOR);
    tu_env_finish(e);
}

/* Shutdown while producers are parked: everything ends. */
static void test_shutdown_with_parked_actors(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    sink si = {.report = e->inbox_ref, .every = 1000000, .any_order = true};
    tr_ref snk;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &sink_beh, &si, sizeof si, &snk));
    TU_ASSERT_OK(tr__overload_set(e->rt, NULL, snk, true));
    producer pi = {.sink = snk,
                   .report = e->inbox_ref,
                   .burst = 2,
                   .total = 1000000};
    for (int i = 0; i < 8; i++)
        TU_ASSERT_OK(
            tr_runtime_spawn(e->rt, &producer_beh, &pi, sizeof pi, NULL));
    tu_env_start(e);
    for (int i = 0; i < 8; i++)
        assert_int_equal(tu_recv_u64(e, T_SENT, TU_PROMPT_MS), 2);
    TU_ASSERT_OK(tr_runtime_shutdown(e->rt));
    tu_env_expect_run_returns(e, TU_JOIN_MS);
    tu_env_finish(e);
}

/* Many producers muted and relieved over and over (TSan). */
static void test_mute_relieve_stress(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    sink si = {.report = e->inbox_ref, .every = 1000000};
    tr_ref snk;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &sink_beh, &si, sizeof si, &snk));
    tu_env_start(e);
    const uint32_t total = (uint32_t)tu_scaled(20000, 2000);
    producer pi = {.sink = snk,
                   .report = e->inbox_ref,
                   .burst = 7,
                   .total = total};
    /* One producer (the sink checks order per producer). */
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &producer_beh, &pi, sizeof pi, NULL));
    /* Cycles: overload, wait until the producer is parked (a new mute
     * counted), relieve; the producer must finish with every item in
     * order (the sink checks). */
    bool done = false;
    for (int cycle = 0; cycle < 200 && !done; cycle++) {
        uint64_t before = tu_stats(e).muted;
        TU_ASSERT_OK(tr__overload_set(e->rt, NULL, snk, true));
        int64_t until = tu_now_ms() + TU_PROMPT_MS;
        while (tu_stats(e).muted == before && !done) {
            assert_true(tu_now_ms() < until);
            tr_msg *m = NULL;
            if (tr_inbox_recv(e->inbox, 1, &m) == 0) {
                done = tr_msg_tag(m) == T_STOPPED;
                if (done) /* ended normally: all sent, none refused */
                    assert_int_equal(tr_msg_u64(m), TR_EXIT_NORMAL);
                tr_msg_destroy(&m);
            }
        }
        TU_ASSERT_OK(tr__overload_set(e->rt, NULL, snk, false));
    }
    while (!done) {
        tr_msg *m = tu_recv(e, TU_PROMPT_MS);
        done = tr_msg_tag(m) == T_STOPPED;
        if (done)
            assert_int_equal(tr_msg_u64(m), TR_EXIT_NORMAL);
        tr_msg_destroy(&m);
    }
    assert_true(tr_actor_alive(e->rt, snk)); /* it saw every item in order */
    TU_ASSERT_OK(tr__overload_set(e->rt, NULL, snk, false));
    assert_true(tu_stats(e).muted >= 1);
    TU_ASSERT_OK(tr_cancel(e->rt, snk, TR_EXIT_CANCELLED, -1));
    tu_env_finish(e);
}

/* A producer of messages under a runtime tag, as the transport's proxy
 * sends its forwards to the link: `data` marks them TR__F_DATA. */
#define T_CONTROL 0xFFFF7A01u

typedef struct tagged_producer {
    producer p;
    bool data;
} tagged_producer;

static int tagged_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    tagged_producer *t = st;
    if (tr_msg_tag(m) != T_NEXT)
        return TR_UNHANDLED;
    for (uint32_t i = 0; i < t->p.burst && t->p.sent < t->p.total; i++) {
        tr_msg *c = tr_msg_new_u64(T_CONTROL, t->p.sent++);
        if (c == NULL)
            return TR_ENOMEM;
        if (t->data)
            c->flags |= TR__F_DATA;
        int rc = tr_send(ctx, t->p.sink, &c);
        if (rc != 0) {
            tr_msg_destroy(&c);
            return rc;
        }
    }
    tu_report(ctx, t->p.report, T_SENT, t->p.sent);
    if (t->p.sent == t->p.total)
        return TR_STOP;
    return tr_send_tag(ctx, tr_self(ctx), T_NEXT);
}

static const tr_behavior tagged_beh = {.name = "tagged producer",
                                       .handle = tagged_handle,
                                       .on_start = producer_start,
                                       .on_stop = producer_stop,
                                       .state_size = sizeof(tagged_producer)};

static int swallow_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    (void)ctx;
    (void)st;
    return tr_msg_tag(m) == T_CONTROL ? 0 : TR_UNHANDLED;
}

static const tr_behavior swallow_beh = {.name = "swallow",
                                        .handle = swallow_handle};

/* Runtime-tagged messages never mute their sender (control must get
 * through to relieve the pressure), except user data carried under a
 * runtime tag (TR__F_DATA): a proxy's forwards to a link that is behind. */
static void test_control_tags_never_mute_but_data_does(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref snk;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &swallow_beh, NULL, 0, &snk));
    TU_ASSERT_OK(tr__overload_set(e->rt, NULL, snk, true));
    tagged_producer control = {
        .p = {.sink = snk, .report = e->inbox_ref, .burst = 10, .total = 200},
        .data = false};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &tagged_beh, &control,
                                  sizeof control, NULL));
    tu_env_start(e);
    /* Control: every turn goes out although the target is overloaded. */
    assert_int_equal(wait_sent(e, 200), 200);
    assert_int_equal(next_stopped(e), TR_EXIT_NORMAL);
    assert_int_equal(tu_stats(e).muted, 0);
    /* Data: one turn, then parked until the target is relieved. */
    tagged_producer data = control;
    data.data = true;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &tagged_beh, &data, sizeof data, NULL));
    assert_int_equal(tu_recv_u64(e, T_SENT, TU_PROMPT_MS), 10);
    tu_expect_silence(e, 300);
    assert_true(tu_stats(e).muted >= 1);
    TU_ASSERT_OK(tr__overload_set(e->rt, NULL, snk, false));
    assert_int_equal(wait_sent(e, 200), 200);
    assert_int_equal(next_stopped(e), TR_EXIT_NORMAL);
    TU_ASSERT_OK(tr_cancel(e->rt, snk, TR_EXIT_CANCELLED, -1));
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_muted_producer_waits_then_resumes_in_order),
        TU_TEST(test_parked_actor_still_gets_cancel_and_kill),
        TU_TEST(test_overloaded_target_dies_releases_senders),
        TU_TEST(test_shutdown_with_parked_actors),
        TU_TEST(test_mute_relieve_stress),
        TU_TEST(test_control_tags_never_mute_but_data_does),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
