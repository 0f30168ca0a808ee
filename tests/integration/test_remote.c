/* Worker processes for real: this test program is also the worker (the
 * pool execs it again in worker mode), so main() registers the behaviours
 * and calls tr_worker_main() first, as every troupe program must.
 * Covers: placement and request/reply across processes, sends both ways,
 * kill -9 of a worker during requests (every request answered or failed
 * back with TR_ELOST, monitors get DOWN, the worker is replaced), and the
 * main process killed with -9 (its workers exit). */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include "child.h"
#include "testutil.h"

enum {
    T_SQ = 1,
    T_ANS,
    T_SLOW,
    T_GO,
    T_DONE,
    T_DOWN_SEEN,
    T_FAILED,
    T_SLOWER,
    T_LONG,
    T_PROBE,
    T_HELLO,
    T_QUIT,
    T_BYE,
    T_EXIT_SEEN
};

/* ---- the remote behaviour ---- */

static int square_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    (void)st;
    uint64_t v = tr_msg_u64(m);
    if (tr_msg_tag(m) == T_SLOW)
        usleep(200 * 1000); /* a CPU-heavy job, as far as we care */
    if (tr_msg_tag(m) == T_SLOWER)
        usleep(1000 * 1000); /* room for a CANCEL to arrive, even slowly */
    if (tr_msg_is_request(m)) {
        tr_msg *r = tr_msg_new_u64(T_ANS, v * v);
        return tr_reply(ctx, m, &r);
    }
    return tr_send_u64(ctx, tr_msg_sender(m), T_ANS, v + 1000);
}

static const tr_behavior square_beh = {.name = "square",
                                       .handle = square_handle};

/* Blocks its worker's only scheduler thread for good: the process looks
 * hung (no heartbeat answers). */
static int hang_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    (void)ctx;
    (void)st;
    (void)m;
    for (;;)
        pause();
    return 0;
}

static const tr_behavior hang_beh = {.name = "hang", .handle = hang_handle};

/* A slow consumer: 20 us per message; answers a request with the deepest
 * mailbox it saw (worker processes track depths). */
typedef struct slow_state {
    uint64_t seen, max_depth;
} slow_state;

static int slow_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    slow_state *s = st;
    int64_t d = tr_actor_mailbox_depth(tr_ctx_runtime(ctx), tr_self(ctx));
    if (d > (int64_t)s->max_depth)
        s->max_depth = (uint64_t)d;
    if (tr_msg_is_request(m)) {
        tr_msg *r = tr_msg_new_u64(T_ANS, (s->seen << 32) | s->max_depth);
        return tr_reply(ctx, m, &r);
    }
    s->seen++;
    usleep(20);
    return 0;
}

static const tr_behavior slow_beh = {.name = "slow",
                                     .handle = slow_handle,
                                     .state_size = sizeof(slow_state)};

/* For cancellation across processes: T_LONG runs until its requester
 * gives up (tr_request_cancelled), at most 8 s; it tells the requester
 * when it starts. T_PROBE answers with how it ended (100: cancelled,
 * 1000: ran out), 0 if no T_LONG ran. */
typedef struct longjob {
    uint64_t outcome;
} longjob;

static int longjob_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    longjob *j = st;
    if (tr_msg_tag(m) == T_PROBE)
        return tr_send_u64(ctx, tr_msg_sender(m), T_ANS, j->outcome);
    if (tr_msg_tag(m) == T_SLOWER) {
        usleep(1000 * 1000);
        return 0;
    }
    if (tr_msg_tag(m) != T_LONG)
        return TR_UNHANDLED;
    int rc = tr_send_tag(ctx, tr_msg_sender(m), T_GO);
    if (rc != 0)
        return rc;
    int64_t end = tr_now_ms() + 8000;
    bool gone = false;
    while (!(gone = tr_request_cancelled(ctx, m)) && tr_now_ms() < end)
        usleep(1000);
    j->outcome += gone ? 100 : 1000;
    return 0;
}

static const tr_behavior longjob_beh = {.name = "longjob",
                                        .handle = longjob_handle,
                                        .state_size = sizeof(longjob)};

/* Links across processes. "partner" remembers who said T_HELLO (a
 * stand-in for a main-side actor) and tells it T_BYE with its exit reason
 * when it ends; T_QUIT makes it fail with TR_EPROTO. */
typedef struct partner {
    tr_ref hello;
} partner;

static int partner_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    partner *p = st;
    if (tr_msg_tag(m) == T_HELLO) {
        p->hello = tr_msg_sender(m);
        return tr_send_tag(ctx, p->hello, T_ANS);
    }
    if (tr_msg_tag(m) == T_QUIT)
        return TR_EPROTO;
    return TR_UNHANDLED;
}

static void partner_stop(tr_ctx *ctx, void *st, int reason) {
    partner *p = st;
    if (!tr_ref_is_none(p->hello))
        (void)tr_send_u64(ctx, p->hello, T_BYE, (uint64_t)(int64_t)reason);
}

static const tr_behavior partner_beh = {.name = "partner",
                                        .handle = partner_handle,
                                        .on_stop = partner_stop,
                                        .state_size = sizeof(partner)};

/* ---- a local client that talks to a remote actor ---- */

typedef struct client {
    tr_ref remote, report;
    uint32_t requests; /* how many T_SLOW requests to keep in flight */
    uint32_t answered, failed;
} client;

static int client_start(tr_ctx *ctx, void *st) {
    client *c = st;
    uint64_t mon;
    int rc = tr_monitor(ctx, c->remote, &mon);
    if (rc != 0)
        return rc;
    if (c->requests == 0) {
        if ((rc = tr_send_u64(ctx, c->remote, T_SQ, 7)) != 0)
            return rc;
        tr_msg *q = tr_msg_new_u64(T_SQ, 12);
        return tr_request(ctx, c->remote, &q, 10000, NULL);
    }
    for (uint32_t i = 0; i < c->requests; i++) {
        tr_msg *q = tr_msg_new_u64(T_SLOW, i);
        if ((rc = tr_request(ctx, c->remote, &q, 20000, NULL)) != 0)
            return rc;
    }
    return tr_send_u64(ctx, c->report, T_GO, c->requests);
}

static int client_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    client *c = st;
    switch (tr_msg_tag(m)) {
    case TR_TAG_DOWN: {
        tr_exit x;
        if (tr_msg_exit(m, &x) != 0)
            return TR_EPROTO;
        tu_report(ctx, c->report, T_DOWN_SEEN, (uint64_t)(int64_t)x.reason);
        tu_report(ctx, c->report, T_DONE,
                  ((uint64_t)c->answered << 32) | c->failed);
        return TR_STOP;
    }
    case TR_TAG_REMOTE_FAILED:
        c->failed++;
        tu_report(ctx, c->report, T_FAILED, tr_msg_u64(m));
        return 0;
    case T_ANS:
        c->answered++;
        tu_report(ctx, c->report, T_ANS,
                  tr_msg_is_reply(m) ? tr_msg_u64(m) | (1ull << 40)
                                     : tr_msg_u64(m));
        return 0;
    default:
        return TR_UNHANDLED;
    }
}

static const tr_behavior client_beh = {.name = "client",
                                       .handle = client_handle,
                                       .on_start = client_start,
                                       .state_size = sizeof(client)};

static void pool_env(tu_env *e) {
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e); /* no quiescence while the test drives */
    TU_ASSERT_OK(tr_pool_start(e->rt, &(tr_pool_config){.processes = 2}));
    assert_int_equal(tr_pool_size(e->rt), 2);
}

static void test_request_reply_across_processes(void **state) {
    tu_env *e = *state;
    pool_env(e);
    tr_ref r;
    TU_ASSERT_OK(tr_runtime_spawn_remote(e->rt, "square", NULL, 0, &r));
    client c = {.remote = r, .report = e->inbox_ref};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &client_beh, &c, sizeof c, NULL));
    tu_env_start(e);
    /* A send (7 + 1000 back as a send) and a request (12 * 12 as reply),
     * in either order. */
    uint64_t a = tu_recv_u64(e, T_ANS, 10000);
    uint64_t b = tu_recv_u64(e, T_ANS, 10000);
    assert_true((a == 1007 && b == (144 | (1ull << 40))) ||
                (b == 1007 && a == (144 | (1ull << 40))));
    /* An unknown behaviour: the proxy ends with TR_ENOTFOUND. */
    tr_ref bad;
    TU_ASSERT_OK(tr_runtime_spawn_remote(e->rt, "no-such", NULL, 0, &bad));
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, bad), 10000);
    tu_env_finish(e);
}

static void test_kill9_worker_fails_requests_back(void **state) {
    tu_env *e = *state;
    pool_env(e);
    tr_ref r;
    TU_ASSERT_OK(tr_runtime_spawn_remote(e->rt, "square", NULL, 0, &r));
    client c = {.remote = r, .report = e->inbox_ref, .requests = 20};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &client_beh, &c, sizeof c, NULL));
    tu_env_start(e);
    assert_int_equal(tu_recv_u64(e, T_GO, 10000), 20);
    /* Let a request or two complete, then kill -9 every worker (the one
     * running the actor among them). */
    tu_sleep_ms(500);
    pid_t pids[2];
    for (unsigned i = 0; i < 2; i++) {
        pids[i] = tr_pool_worker_pid(e->rt, i);
        assert_true(pids[i] > 0);
        assert_int_equal(kill(pids[i], SIGKILL), 0);
    }
    /* Every request is answered or failed back; then the DOWN. */
    uint32_t failed = 0, answered = 0;
    for (;;) {
        tr_msg *m = tu_recv(e, 10000);
        uint32_t tag = tr_msg_tag(m);
        uint64_t v = tr_msg_u64(m);
        tr_msg_destroy(&m);
        if (tag == T_FAILED) {
            assert_int_equal((int64_t)v, TR_ELOST);
            failed++;
        } else if (tag == T_ANS) {
            answered++;
        } else if (tag == T_DOWN_SEEN) {
            assert_int_equal((int)(int64_t)v, TR_ELOST);
            break;
        }
    }
    uint64_t done = tu_recv_u64(e, T_DONE, 10000); /* the client's tally */
    assert_int_equal(done >> 32, answered);
    assert_int_equal(done & 0xffffffffu, failed);
    assert_int_equal(answered + failed, 20);
    assert_true(failed > 0);
    /* The workers were replaced: a new spawn works. */
    TU_ASSERT_EVENTUALLY(tr_pool_worker_pid(e->rt, 0) != pids[0] &&
                             tr_pool_worker_pid(e->rt, 1) != pids[1],
                         5000);
    TU_ASSERT_OK(tr_runtime_spawn_remote(e->rt, "square", NULL, 0, &r));
    client c2 = {.remote = r, .report = e->inbox_ref};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &client_beh, &c2, sizeof c2, NULL));
    uint64_t x = tu_recv_u64(e, T_ANS, 10000);
    uint64_t y = tu_recv_u64(e, T_ANS, 10000);
    assert_true(x + y == 1007 + (144 | (1ull << 40)));
    tu_env_finish(e);
}

/* A supervisor's child placed in a worker process: started there, and
 * restarted by the supervisor's policy when its process is killed -9. */
static int one_child(tu_env *e, tr_ref sup, tr_sup_child_info *out) {
    tr_sup_child_info *kids = NULL;
    size_t n = 0;
    int rc = tr_sup_which_children_sync(e->rt, sup, 10000, &kids, &n);
    if (rc == 0 && n == 1)
        *out = kids[0];
    tr_sup_children_free(&kids);
    return rc == 0 && n == 1 ? 0 : -1;
}

static void test_supervisor_restarts_remote_child(void **state) {
    tu_env *e = *state;
    pool_env(e);
    tr_sup_spec spec = {.name = "sq",
                        .remote = "square",
                        .restart = TR_RESTART_PERMANENT,
                        .shutdown_ms = 1000};
    tr_sup_config sc = {.name = "remote-sup",
                        .strategy = TR_SUP_ONE_FOR_ONE,
                        .intensity = 5,
                        .period_ms = 5000};
    tr_sup_spec bad = spec;
    bad.remote = "";
    tr_ref sup;
    TU_ASSERT_RC(tr_sup_runtime_start(e->rt, &sc, &bad, 1, &sup), TR_EINVAL);
    TU_ASSERT_OK(tr_sup_runtime_start(e->rt, &sc, &spec, 1, &sup));
    tu_env_start(e);
    tr_sup_child_info k;
    TU_ASSERT_EVENTUALLY(one_child(e, sup, &k) == 0 &&
                             k.state == TR_SUP_CHILD_RUNNING,
                         10000);
    assert_int_equal(k.restarts, 0);
    tr_ref first = k.ref;
    client c = {.remote = first, .report = e->inbox_ref};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &client_beh, &c, sizeof c, NULL));
    uint64_t x = tu_recv_u64(e, T_ANS, 10000);
    uint64_t y = tu_recv_u64(e, T_ANS, 10000);
    assert_true(x + y == 1007 + (144 | (1ull << 40)));
    /* Its process dies: the client's monitor sees TR_ELOST, the
     * supervisor restarts the child in the restarted worker. */
    for (unsigned i = 0; i < 2; i++)
        assert_int_equal(kill(tr_pool_worker_pid(e->rt, i), SIGKILL), 0);
    assert_int_equal((int)(int64_t)tu_recv_u64(e, T_DOWN_SEEN, 10000),
                     TR_ELOST);
    (void)tu_recv_u64(e, T_DONE, 10000);
    TU_ASSERT_EVENTUALLY(one_child(e, sup, &k) == 0 && k.restarts == 1 &&
                             k.state == TR_SUP_CHILD_RUNNING &&
                             !tr_ref_eq(k.ref, first),
                         10000);
    assert_int_equal(k.last_exit, TR_ELOST);
    client c2 = {.remote = k.ref, .report = e->inbox_ref};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &client_beh, &c2, sizeof c2, NULL));
    x = tu_recv_u64(e, T_ANS, 10000);
    y = tu_recv_u64(e, T_ANS, 10000);
    assert_true(x + y == 1007 + (144 | (1ull << 40)));
    tu_env_finish(e);
}

/* At least once: requests to an idempotent behaviour survive the death
 * of its worker process (sent again to a new actor; the proxy lives on). */
static void test_idempotent_requests_retried(void **state) {
    tu_env *e = *state;
    pool_env(e);
    tr_ref r;
    TU_ASSERT_OK(tr_runtime_spawn_remote(e->rt, "square-idem", NULL, 0, &r));
    client c = {.remote = r, .report = e->inbox_ref, .requests = 20};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &client_beh, &c, sizeof c, NULL));
    tu_env_start(e);
    assert_int_equal(tu_recv_u64(e, T_GO, 10000), 20);
    tu_sleep_ms(500); /* a couple answered, most in flight or queued */
    for (unsigned i = 0; i < 2; i++)
        assert_int_equal(kill(tr_pool_worker_pid(e->rt, i), SIGKILL), 0);
    /* Every request is answered (none failed, no DOWN). */
    uint64_t seen = 0;
    for (unsigned n = 0; n < 20; n++) {
        uint64_t v = tu_recv_u64(e, T_ANS, 20000);
        assert_true(v & (1ull << 40)); /* a reply */
        uint64_t i = (v & ((1ull << 40) - 1));
        uint64_t root = 0;
        while (root * root < i)
            root++;
        assert_true(root * root == i && root < 20);
        seen |= 1ull << root;
    }
    /* A request may be answered twice (at least once): each value at
     * least once is what counts; duplicates are extra replies the
     * requester discards (only the first reply matches). */
    assert_int_equal(seen, (1ull << 20) - 1);
    assert_true(tr_actor_alive(e->rt, r));
    tr_transport_stats st;
    TU_ASSERT_OK(tr_transport_stats_get(e->rt, false, &st));
    assert_true(st.retried > 0);
    assert_true(st.peers_lost >= 1);
    tu_env_finish(e);
}

/* Backpressure across the boundary: a producer far faster than its remote
 * consumer is muted (parked, no thread blocked) once the consumer's
 * window is in flight; the consumer's mailbox never holds much more than
 * the window, and nothing is lost or reordered. */
typedef struct flood {
    tr_ref remote, report;
    uint32_t sent, total;
} flood;

static int flood_start(tr_ctx *ctx, void *st) {
    (void)st;
    return tr_send_tag(ctx, tr_self(ctx), T_GO);
}

static int flood_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    flood *f = st;
    if (tr_msg_tag(m) == T_GO) {
        for (int i = 0; i < 50 && f->sent < f->total; i++) {
            int rc = tr_send_u64(ctx, f->remote, T_SQ, f->sent++);
            if (rc != 0)
                return rc;
        }
        if (f->sent < f->total)
            return tr_send_tag(ctx, tr_self(ctx), T_GO);
        tr_msg *q = tr_msg_new(T_SQ);
        return tr_request(ctx, f->remote, &q, 60000, NULL);
    }
    if (tr_msg_tag(m) == T_ANS) {
        tu_report(ctx, f->report, T_DONE, tr_msg_u64(m));
        return TR_STOP;
    }
    return TR_UNHANDLED;
}

static const tr_behavior flood_beh = {.name = "flood",
                                      .handle = flood_handle,
                                      .on_start = flood_start,
                                      .state_size = sizeof(flood)};

static void test_slow_worker_throttles_its_sender(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e);
    TU_ASSERT_OK(tr_pool_start(
        e->rt, &(tr_pool_config){.processes = 1, .window = 64}));
    tr_ref r;
    TU_ASSERT_OK(tr_runtime_spawn_remote(e->rt, "slow", NULL, 0, &r));
    flood f = {.remote = r, .report = e->inbox_ref, .total = 30000};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &flood_beh, &f, sizeof f, NULL));
    tu_env_start(e);
    uint64_t v = tu_recv_u64(e, T_DONE, 60000);
    assert_int_equal(v >> 32, 30000); /* all consumed before the request */
    print_message("consumer mailbox peak %llu\n", (unsigned long long)(v & 0xffffffffu));
    /* Its mailbox stayed within the window (plus the request). The depth
     * an actor reads of itself still counts the messages of its current
     * turn (a batch, 64 by default, is subtracted when the turn ends), so
     * the bound is window + batch. Without credit it would be ~20000. */
    assert_true((v & 0xffffffffu) <= 64 + 64 + 2);
    assert_true(tu_stats(e).muted > 0); /* the producer was parked */
    /* This side held envelopes back for want of credit, and holds none
     * once everything is consumed. (How many at once depends on how far
     * the producer gets before the proxy and the link react: see the
     * design notes of actors/mute.c.) */
    tr_transport_stats st;
    TU_ASSERT_OK(tr_transport_stats_get(e->rt, false, &st));
    print_message("held back at most %llu envelopes at once\n",
                  (unsigned long long)st.held_peak);
    assert_true(st.held_peak > 0);
    assert_int_equal(st.held, 0);
    tu_env_finish(e);
}

/* Cancellation travels with a request when its requester ends: a request
 * queued in the worker is dropped there, and a handler already running it
 * sees tr_request_cancelled and stops early. */
typedef struct asker2 {
    tr_ref remote, report;
    bool queued; /* true: behind a slow job; false: the long job itself */
} asker2;

static int asker2_start(tr_ctx *ctx, void *st) {
    asker2 *a = st;
    int rc;
    if (a->queued && (rc = tr_send_u64(ctx, a->remote, T_SLOWER, 0)) != 0)
        return rc;
    tr_msg *q = tr_msg_new_u64(T_LONG, 0);
    if ((rc = tr_request(ctx, a->remote, &q, -1, NULL)) != 0)
        return rc;
    if (a->queued) /* it cannot start before the slow job ends */
        tu_report(ctx, a->report, T_GO, 0);
    return 0;
}

static int asker2_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    asker2 *a = st;
    if (tr_msg_tag(m) == T_GO) { /* the long job started over there */
        tu_report(ctx, a->report, T_GO, 0);
        return 0;
    }
    if (tr_msg_tag(m) == T_ANS) {
        tu_report(ctx, a->report, T_DONE, tr_msg_u64(m));
        return 0;
    }
    return TR_UNHANDLED;
}

static const tr_behavior asker2_beh = {.name = "asker2",
                                       .handle = asker2_handle,
                                       .on_start = asker2_start,
                                       .state_size = sizeof(asker2)};

/* Sends T_PROBE to the remote actor (state: its ref), reports the answer
 * as T_DONE to the runtime's inbox found in report. */
static tr_ref prober_report;

static int prober_start(tr_ctx *ctx, void *st) {
    return tr_send_tag(ctx, *(tr_ref *)st, T_PROBE);
}

static int prober_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    (void)st;
    if (tr_msg_tag(m) != T_ANS)
        return TR_UNHANDLED;
    tu_report(ctx, prober_report, T_DONE, tr_msg_u64(m));
    return TR_STOP;
}

static const tr_behavior prober_beh = {.name = "prober",
                                       .handle = prober_handle,
                                       .on_start = prober_start,
                                       .state_size = sizeof(tr_ref)};

static void cancel_with_requester(void **state, bool queued,
                                  uint64_t expect) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e);
    /* 2 threads in the worker: its link hears the CANCEL while the job
     * runs. */
    TU_ASSERT_OK(tr_pool_start(
        e->rt, &(tr_pool_config){.processes = 1, .worker_threads = 2}));
    tr_ref rem, r;
    TU_ASSERT_OK(tr_runtime_spawn_remote(e->rt, "longjob", NULL, 0, &rem));
    asker2 a = {.remote = rem, .report = e->inbox_ref, .queued = queued};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker2_beh, &a, sizeof a, &r));
    prober_report = e->inbox_ref;
    tu_env_start(e);
    assert_int_equal(tu_recv_u64(e, T_GO, 10000), 0);
    TU_ASSERT_OK(tr_cancel(e->rt, r, TR_EXIT_CANCELLED, -1));
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, r), 10000);
    /* A probe queued behind whatever runs there: how did the job end? */
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &prober_beh, &rem, sizeof rem, NULL));
    assert_int_equal(tu_recv_u64(e, T_DONE, 20000), expect);
    tu_env_finish(e);
}

static void test_queued_request_dropped_when_requester_ends(void **state) {
    cancel_with_requester(state, true, 0);
}

static void test_running_request_sees_requester_end(void **state) {
    cancel_with_requester(state, false, 100);
}

/* A local actor linked to a remote one: the remote's failure reaches it
 * as an EXIT (trapping) with the remote reason; a local linked actor that
 * ends takes the remote one down (its proxy ends and cancels it). */
typedef struct linker {
    tr_ref remote, report;
    bool trap, quiet; /* quiet: links only, no HELLO */
} linker;

static int linker_start(tr_ctx *ctx, void *st) {
    linker *k = st;
    tr_trap_exits(ctx, k->trap);
    int rc = tr_link(ctx, k->remote);
    if (rc != 0)
        return rc;
    if (k->quiet) {
        tu_report(ctx, k->report, T_GO, 1);
        return 0;
    }
    return tr_send_tag(ctx, k->remote, T_HELLO);
}

static int linker_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    linker *k = st;
    switch (tr_msg_tag(m)) {
    case T_ANS:
        tu_report(ctx, k->report, T_GO, 0);
        return 0;
    case T_BYE:
        tu_report(ctx, k->report, T_BYE, tr_msg_u64(m));
        return 0;
    case TR_TAG_EXIT: {
        tr_exit x;
        if (tr_msg_exit(m, &x) != 0)
            return TR_EPROTO;
        tu_report(ctx, k->report, T_EXIT_SEEN, (uint64_t)(int64_t)x.reason);
        return 0;
    }
    default:
        return TR_UNHANDLED;
    }
}

static const tr_behavior linker_beh = {.name = "linker",
                                       .handle = linker_handle,
                                       .on_start = linker_start,
                                       .state_size = sizeof(linker)};

static void test_links_across_processes(void **state) {
    tu_env *e = *state;
    pool_env(e);
    tr_ref r1, r2, k1, k2, relay;
    TU_ASSERT_OK(tr_runtime_spawn_remote(e->rt, "partner", NULL, 0, &r1));
    TU_ASSERT_OK(tr_runtime_spawn_remote(e->rt, "partner", NULL, 0, &r2));
    linker l1 = {.remote = r1, .report = e->inbox_ref, .trap = true};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &linker_beh, &l1, sizeof l1, &k1));
    tu_env_start(e);
    assert_int_equal(tu_recv_u64(e, T_GO, 10000), 0);
    /* 1. The remote actor fails: its on_stop says BYE (TR_EPROTO), and
     * the trapping linked actor gets EXIT with that reason. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, r1, T_QUIT, 0));
    uint64_t got[2] = {0, 0}; /* BYE, EXIT: in either order */
    for (int i = 0; i < 2; i++) {
        tr_msg *m = tu_recv(e, 10000);
        uint32_t tag = tr_msg_tag(m);
        assert_true(tag == T_BYE || tag == T_EXIT_SEEN);
        got[tag == T_EXIT_SEEN] = tr_msg_u64(m);
        tr_msg_destroy(&m);
    }
    assert_int_equal((int64_t)got[0], TR_EPROTO);
    assert_int_equal((int64_t)got[1], TR_EPROTO);
    assert_true(tr_actor_alive(e->rt, k1)); /* it traps: lives on */
    /* 2. A non-trapping local actor linked to r2 is cancelled: the link
     * ends r2's proxy, which stops r2 over there (its BYE goes to the
     * actor that said HELLO: a relay that traps, linked to nothing). */
    linker rl = {.remote = r2, .report = e->inbox_ref, .trap = true};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &linker_beh, &rl, sizeof rl, &relay));
    assert_int_equal(tu_recv_u64(e, T_GO, 10000), 0);
    linker l2 = {
        .remote = r2, .report = e->inbox_ref, .trap = false, .quiet = true};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &linker_beh, &l2, sizeof l2, &k2));
    assert_int_equal(tu_recv_u64(e, T_GO, 10000), 1);
    TU_ASSERT_OK(tr_cancel(e->rt, k2, TR_EXIT_CANCELLED, -1));
    uint64_t bye = 0, ex = 0;
    for (int i = 0; i < 2; i++) {
        tr_msg *m = tu_recv(e, 10000);
        if (tr_msg_tag(m) == T_BYE)
            bye = tr_msg_u64(m);
        else if (tr_msg_tag(m) == T_EXIT_SEEN)
            ex = tr_msg_u64(m);
        else
            fail_msg("unexpected tag %u", tr_msg_tag(m));
        tr_msg_destroy(&m);
    }
    /* The remote actor stopped (not normally), with the reason its proxy
     * ended with, which the relay saw as the link's EXIT. */
    assert_true(bye != 0 && bye == ex);
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, r2), 10000);
    assert_true(tr_actor_alive(e->rt, relay));
    tu_env_finish(e);
}

/* Cancellation travels with a request across processes: a request that
 * times out while it waits behind slow work in the worker is dropped there
 * (never handled: no late reply comes back). */
typedef struct impatient {
    tr_ref remote, report;
} impatient;

static int impatient_start(tr_ctx *ctx, void *st) {
    impatient *c = st;
    int rc = tr_send_u64(ctx, c->remote, T_SLOWER, 1); /* 1 s of work */
    if (rc != 0)
        return rc;
    tr_msg *q = tr_msg_new_u64(T_SQ, 5);
    return tr_request(ctx, c->remote, &q, 50, NULL);
}

static int impatient_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    impatient *c = st;
    if (tr_msg_tag(m) == TR_TAG_TIMEOUT)
        tu_report(ctx, c->report, T_FAILED, 1);
    else if (tr_msg_tag(m) == T_ANS)
        tu_report(ctx, c->report, T_ANS, tr_msg_u64(m));
    return 0;
}

static const tr_behavior impatient_beh = {.name = "impatient",
                                          .handle = impatient_handle,
                                          .on_start = impatient_start,
                                          .state_size = sizeof(impatient)};

static void test_request_cancelled_in_worker(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e);
    /* Two scheduler threads in the worker: its link reads the CANCEL while
     * the slow work occupies the other thread. */
    TU_ASSERT_OK(tr_pool_start(
        e->rt, &(tr_pool_config){.processes = 1, .worker_threads = 2}));
    tr_ref r;
    TU_ASSERT_OK(tr_runtime_spawn_remote(e->rt, "square", NULL, 0, &r));
    impatient c = {r, e->inbox_ref};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &impatient_beh, &c, sizeof c, NULL));
    tu_env_start(e);
    assert_int_equal(tu_recv_u64(e, T_FAILED, 10000), 1); /* timed out */
    assert_int_equal(tu_recv_u64(e, T_ANS, 10000), 1001);  /* the slow send */
    tu_expect_silence(e, 300); /* the request never ran: no reply */
    assert_int_equal(tu_stats(e).late_replies, 0);
    tu_env_finish(e);
}

/* A worker that stops answering heartbeats is killed as hung and handled
 * like a dead one: DOWN with TR_ELOST. */
static void test_hung_worker_is_killed(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e);
    TU_ASSERT_OK(tr_pool_start(e->rt, &(tr_pool_config){.processes = 1,
                                                         .hang_timeout_ms =
                                                             500}));
    tr_ref h;
    TU_ASSERT_OK(tr_runtime_spawn_remote(e->rt, "hang", NULL, 0, &h));
    client c = {.remote = h, .report = e->inbox_ref, .requests = 1};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &client_beh, &c, sizeof c, NULL));
    tu_env_start(e);
    assert_int_equal(tu_recv_u64(e, T_GO, 10000), 1);
    int64_t t0 = tu_now_ms();
    /* The request fails back, then the DOWN: within the hang timeout plus
     * a heartbeat period or two. */
    assert_int_equal((int64_t)tu_recv_u64(e, T_FAILED, 10000), TR_ELOST);
    assert_int_equal((int)(int64_t)tu_recv_u64(e, T_DOWN_SEEN, 10000),
                     TR_ELOST);
    assert_true(tu_now_ms() - t0 >= 300);
    tu_env_finish(e);
}

/* Child mode for the next test: a main process with a pool, killed -9 by
 * the test. Prints its workers' pids, then waits. */
static int child_main(void) {
    tr_runtime *rt;
    const char *hang = getenv("TEST_REMOTE_HANG_MS");
    tr_pool_config pc = {.processes = 2,
                         .hang_timeout_ms = hang ? atoll(hang) : 0};
    if (tr_runtime_create(&rt, NULL) != 0 || tr_pool_start(rt, &pc) != 0)
        return 1;
    tr_ref r;
    if (tr_runtime_spawn_remote(rt, "square", NULL, 0, &r) != 0)
        return 1;
    for (int i = 0; i < 500 && (tr_pool_worker_pid(rt, 0) <= 0 ||
                                tr_pool_worker_pid(rt, 1) <= 0);
         i++)
        usleep(10000);
    printf("pids %d %d\n", tr_pool_worker_pid(rt, 0),
           tr_pool_worker_pid(rt, 1));
    fflush(stdout);
    (void)tr_runtime_run(rt); /* until killed */
    return 0;
}

/* The child main process of the next test, killed by the teardown too
 * if the test fails half-way (no process is ever left behind). */
static pid_t g_child = -1;
static int w0 = 0, w1 = 0;

static int kill_leftovers(void **state) {
    (void)state;
    if (g_child > 0) {
        kill(g_child, SIGKILL);
        waitpid(g_child, NULL, 0);
        g_child = -1;
    }
    if (w0 > 0)
        kill(w0, SIGKILL);
    if (w1 > 0)
        kill(w1, SIGKILL);
    return 0;
}

static void test_main_killed_workers_exit(void **state) {
    (void)state;
    child c;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = 0;
    setenv("TEST_REMOTE_CHILD", "1", 1);
    char *const argv[] = {self, NULL};
    child_start(&c, argv);
    g_child = c.pid;
    unsetenv("TEST_REMOTE_CHILD");
    read_until_lines(&c, 1, 10000);
    assert_int_equal(sscanf(c.buf, "pids %d %d", &w0, &w1), 2);
    assert_true(w0 > 0 && w1 > 0);
    assert_int_equal(kill(w0, 0), 0);
    assert_int_equal(kill(c.pid, SIGKILL), 0);
    int status;
    waitpid(c.pid, &status, 0);
    g_child = -1;
    close(c.out);
    /* Each worker's parent-watch thread sees it: both go within ~50 ms
     * (no zombie: init reaps them). */
    int64_t end = tu_now_ms() + 5000;
    while ((kill(w0, 0) == 0 || kill(w1, 0) == 0) && tu_now_ms() < end)
        usleep(10000);
    assert_int_not_equal(kill(w0, 0), 0);
    assert_int_not_equal(kill(w1, 0), 0);
    w0 = w1 = 0;
}

/* A worker that runs but is not alive in the zombie sense either. */
static bool running(pid_t pid) {
    char path[64], st[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(st, 1, sizeof st - 1, f);
    fclose(f);
    st[n] = 0;
    const char *p = strrchr(st, ')'); /* "pid (comm) S ..." */
    return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* The main process stops answering (SIGSTOP: its sockets stay open, its
 * pid stays): the workers notice the heartbeats are gone and exit. */
static void test_main_hung_workers_exit(void **state) {
    (void)state;
    child c;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(n > 0);
    self[n] = 0;
    setenv("TEST_REMOTE_CHILD", "1", 1);
    setenv("TEST_REMOTE_HANG_MS", "1000", 1);
    char *const argv[] = {self, NULL};
    child_start(&c, argv);
    g_child = c.pid;
    unsetenv("TEST_REMOTE_CHILD");
    unsetenv("TEST_REMOTE_HANG_MS");
    read_until_lines(&c, 1, 10000);
    assert_int_equal(sscanf(c.buf, "pids %d %d", &w0, &w1), 2);
    assert_true(running(w0) && running(w1));
    assert_int_equal(kill(c.pid, SIGSTOP), 0);
    int64_t end = tu_now_ms() + 10000;
    while ((running(w0) || running(w1)) && tu_now_ms() < end)
        usleep(20000);
    assert_false(running(w0));
    assert_false(running(w1));
    kill(c.pid, SIGKILL);
    waitpid(c.pid, NULL, 0);
    g_child = -1;
    close(c.out);
    w0 = w1 = 0;
}

/* ---- a supervised pool of remote routees (router.h) ---- */

/* Asks n squares (1..n) through the router; reports the sum of the
 * answers (T_ANS) and (routees that answered << 48) | (answered << 32) |
 * failed (T_DONE). */
typedef struct pclient {
    tr_ref router, report;
    uint32_t left, answered, failed;
    uint64_t sum;
    tr_ref seen[8];
    uint32_t nseen;
} pclient;

static int pclient_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    pclient *c = st;
    switch (tr_msg_tag(m)) {
    case T_GO:
        if (c->left != 0)
            return TR_ESTATE;
        c->left = (uint32_t)tr_msg_u64(m);
        c->answered = c->failed = c->nseen = 0;
        c->sum = 0;
        for (uint64_t i = 1; i <= c->left; i++) {
            tr_msg *q = tr_msg_new_u64(T_SQ, i);
            int rc = tr_request(ctx, c->router, &q, 5000, NULL);
            if (rc != 0)
                return rc;
        }
        return 0;
    case T_ANS: {
        c->answered++;
        c->sum += tr_msg_u64(m);
        uint32_t i = 0;
        while (i < c->nseen && !tr_ref_eq(c->seen[i], tr_msg_sender(m)))
            i++;
        if (i == c->nseen && i < 8)
            c->seen[c->nseen++] = tr_msg_sender(m);
        break;
    }
    case TR_TAG_REMOTE_FAILED:  /* lost with its worker process */
    case TR_TAG_REQUEST_FAILED: /* its routee ended with it queued */
    case TR_TAG_TIMEOUT:
        c->failed++;
        break;
    default:
        return TR_UNHANDLED;
    }
    if (--c->left == 0) {
        tu_report(ctx, c->report, T_ANS, c->sum);
        tu_report(ctx, c->report, T_DONE,
                  ((uint64_t)c->nseen << 48) | ((uint64_t)c->answered << 32) |
                      c->failed);
    }
    return 0;
}

static const tr_behavior pclient_beh = {.name = "pclient",
                                        .handle = pclient_handle,
                                        .state_size = sizeof(pclient)};

/* One round of n requests: *answered, *routees (that answered); returns
 * answered + failed. */
static uint32_t pool_round(tu_env *e, tr_ref pc, uint32_t n,
                           uint32_t *answered, uint32_t *routees) {
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, pc, T_GO, n));
    uint64_t sum = tu_recv_u64(e, T_ANS, 15000);
    uint64_t done = tu_recv_u64(e, T_DONE, 15000);
    *answered = (uint32_t)(done >> 32) & 0xffff;
    *routees = (uint32_t)(done >> 48);
    if (*answered == n) /* every answer right: 1^2 + ... + n^2 */
        assert_int_equal(sum, (uint64_t)n * (n + 1) * (2 * n + 1) / 6);
    return *answered + (uint32_t)(done & 0xffffffffu);
}

static void test_supervised_pool_of_remote_routees(void **state) {
    tu_env *e = *state;
    pool_env(e);
    tr_router_pool_config cfg = {
        .how = TR_ROUTE_ROUND_ROBIN,
        .routee = {.name = "sq",
                   .remote = "square",
                   .restart = TR_RESTART_PERMANENT,
                   .shutdown_ms = 1000},
        .size = 4,
        .sup = {.name = "sq-pool",
                .strategy = TR_SUP_ONE_FOR_ONE,
                .intensity = 20,
                .period_ms = 5000}};
    tr_ref router, pc;
    TU_ASSERT_OK(tr_runtime_router_pool_spawn(e->rt, &cfg, &router));
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &pclient_beh,
                                  &(pclient){.router = router, .report = e->inbox_ref},
                                  sizeof(pclient), &pc));
    tu_env_start(e);
    /* Requests made before the routees exist are held, then answered;
     * round robin over the 4 once all have started. */
    uint32_t answered, routees;
    int64_t end = tu_now_ms() + 10000;
    do {
        assert_true(tu_now_ms() < end);
        assert_int_equal(pool_round(e, pc, 40, &answered, &routees), 40);
        assert_int_equal(answered, 40);
    } while (routees < 4);
    /* Both worker processes die: requests in flight are failed back (none
     * vanish), the routees are restarted in the restarted workers and
     * the pool serves all 4 again. */
    for (unsigned i = 0; i < 2; i++)
        assert_int_equal(kill(tr_pool_worker_pid(e->rt, i), SIGKILL), 0);
    assert_int_equal(pool_round(e, pc, 40, &answered, &routees), 40);
    end = tu_now_ms() + 10000;
    do {
        assert_true(tu_now_ms() < end);
        assert_int_equal(pool_round(e, pc, 40, &answered, &routees), 40);
    } while (answered < 40 || routees < 4);
    tu_env_finish(e);
}

int main(int argc, char **argv) {
    tr_register("square", &square_beh);
    tr_register("hang", &hang_beh);
    tr_register("slow", &slow_beh);
    tr_register("longjob", &longjob_beh);
    tr_register("partner", &partner_beh);
    tr_register_flags("square-idem", &square_beh, TR_REG_IDEMPOTENT);
    tr_worker_main(argc, argv); /* does not return in a worker */
    if (getenv("TEST_REMOTE_CHILD") != NULL)
        return child_main();
    const struct CMUnitTest tests[] = {
        TU_TEST(test_request_reply_across_processes),
        TU_TEST(test_kill9_worker_fails_requests_back),
        TU_TEST(test_hung_worker_is_killed),
        TU_TEST(test_supervisor_restarts_remote_child),
        TU_TEST(test_idempotent_requests_retried),
        TU_TEST(test_slow_worker_throttles_its_sender),
        TU_TEST(test_links_across_processes),
        TU_TEST(test_queued_request_dropped_when_requester_ends),
        TU_TEST(test_running_request_sees_requester_end),
        TU_TEST(test_request_cancelled_in_worker),
        TU_TEST(test_supervised_pool_of_remote_routees),
        cmocka_unit_test_teardown(test_main_killed_workers_exit,
                                  kill_leftovers),
        cmocka_unit_test_teardown(test_main_hung_workers_exit,
                                  kill_leftovers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
