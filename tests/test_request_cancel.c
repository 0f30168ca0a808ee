/* Cancellation travels with a request: when the requester gives up first
 * (its timeout fires, or it stops: tr_cancel, a cancel scope's deadline,
 * tr_kill, an orderly shutdown), a request still queued at the target is
 * dropped (never handled, counted as a dead letter); a handler already
 * working on it learns it from tr_request_cancelled and may stop early.
 *
 * Waits are on messages: a "busy" server holds its worker until the test
 * releases it, and a probe sent after the requester ended is queued behind
 * the request, so when the probe is answered the server has passed the
 * request (handled or dropped). */
#include "testutil.h"

#include <troupe/scope.h>

#include "evlog.h"

enum {
    T_BLOCK = 1, /* server: hold the worker until released */
    T_ASK,       /* server: a request it answers (reports T_HANDLED) */
    T_LONG,      /* server: a request it works on, polling for cancellation */
    T_PROBE,     /* server: reports R_PROBED */
    T_GO,        /* asker: request targets[value] */
    T_QUIT,      /* quitter: a request it ends on, unanswered */
    T_HANDLED = 100, /* server handled a T_ASK (value: the request's value) */
    T_TIMEOUT_SEEN,  /* asker: a TR_TAG_TIMEOUT (value: request id) */
    T_ASKED,         /* asker: tr_request's result (uint32) */
    T_ASKER_STOPPED, /* asker's on_stop (value: (uint32) reason) */
    T_STARTED,       /* server: began a T_LONG (value: first poll) */
    T_GAVE_UP,       /* server: left a T_LONG (1: cancelled, 0: ran out) */
    T_POLL_AGAIN,    /* server: a second poll after the first true one */
    T_NOT_REQUEST,   /* server: tr_request_cancelled on a plain message */
    R_PROBED,        /* server: handled T_PROBE (value: server id) */
    T_QUITTER_STOPPED,
};

/* ---- a server that can be held busy */

typedef struct server {
    tr_ref report;
    _Atomic int *release;
    uint32_t id;
} server;

static int server_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    server *s = st;
    switch (tr_msg_tag(m)) {
    case T_BLOCK: {
        /* Busy on purpose (bounded): requests queue up behind this. */
        int64_t deadline = tu_now_ms() + 2 * TU_PROMPT_MS;
        while (!atomic_load(s->release) && tu_now_ms() < deadline)
            tu_sleep_ms(1);
        return 0;
    }
    case T_PROBE:
        tu_report(ctx, s->report, T_NOT_REQUEST,
                  tr_request_cancelled(ctx, m) ? 1 : 0);
        tu_report(ctx, s->report, R_PROBED, s->id);
        return 0;
    case T_LONG: {
        /* Long work in steps, polling between them; bounded well past the
         * test's waits so a missed cancellation fails the test. */
        tu_report(ctx, s->report, T_STARTED,
                  tr_request_cancelled(ctx, m) ? 1 : 0);
        int64_t deadline = tu_now_ms() + 2 * TU_PROMPT_MS;
        bool gave_up = false;
        while (!(gave_up = tr_request_cancelled(ctx, m)) &&
               tu_now_ms() < deadline)
            tu_sleep_ms(1); /* one step of work */
        tu_report(ctx, s->report, T_GAVE_UP, gave_up ? 1 : 0);
        /* Looking does not consume: a second poll still says so. */
        tu_report(ctx, s->report, T_POLL_AGAIN,
                  tr_request_cancelled(ctx, m) ? 1 : 0);
        return 0;
    }
    default:
        break;
    }
    tu_report(ctx, s->report, T_HANDLED, tr_msg_u64(m));
    if (tr_msg_is_request(m)) {
        /* The requester may be gone (TR_ENOACTOR): the server lives on. */
        tr_msg *r = tr_msg_new_u64(T_ASK, 1);
        if (tr_reply(ctx, m, &r) != 0 && r != NULL)
            (void)tr_msg_destroy(&r);
    }
    return 0;
}

static const tr_behavior server_beh = {
    .name = "server", .handle = server_handle, .state_size = sizeof(server)};

/* Ends on its first request without answering it: a dead target with a
 * request pending at its requester. */
static int quitter_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    (void)ctx;
    (void)st;
    return tr_msg_is_request(m) ? TR_STOP : 0;
}

static void quitter_stop(tr_ctx *ctx, void *st, int reason) {
    server *s = st;
    tu_report(ctx, s->report, T_QUITTER_STOPPED, (uint32_t)reason);
}

static const tr_behavior quitter_beh = {.name = "quitter",
                                        .handle = quitter_handle,
                                        .on_stop = quitter_stop,
                                        .state_size = sizeof(server)};

/* ---- the requester */

#define ASK_MAX 4

typedef struct asker {
    tr_ref report;
    tr_ref targets[ASK_MAX];
    int64_t timeout_ms;
    uint32_t ask_tag;  /* T_ASK or T_LONG */
    bool ask_on_start; /* request targets[0] from on_start */
} asker;

static int ask(tr_ctx *ctx, asker *a, uint64_t i) {
    tr_msg *q = tr_msg_new_u64(a->ask_tag, 1000 + i);
    int rc = tr_request(ctx, a->targets[i % ASK_MAX], &q, a->timeout_ms, NULL);
    if (q != NULL)
        (void)tr_msg_destroy(&q);
    tu_report(ctx, a->report, T_ASKED, (uint32_t)rc);
    return rc;
}

static int asker_start(tr_ctx *ctx, void *st) {
    asker *a = st;
    return a->ask_on_start ? ask(ctx, a, 0) : 0;
}

static int asker_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    asker *a = st;
    if (tr_msg_tag(m) == T_GO)
        return ask(ctx, a, tr_msg_u64(m));
    if (tr_msg_tag(m) == TR_TAG_TIMEOUT)
        tu_report(ctx, a->report, T_TIMEOUT_SEEN, tr_msg_request_id(m));
    return 0;
}

static void asker_stop(tr_ctx *ctx, void *st, int reason) {
    asker *a = st;
    tu_report(ctx, a->report, T_ASKER_STOPPED, (uint32_t)reason);
}

static const tr_behavior asker_beh = {.name = "asker",
                                      .handle = asker_handle,
                                      .on_start = asker_start,
                                      .on_stop = asker_stop,
                                      .state_size = sizeof(asker)};

static tr_ref spawn_server(tu_env *e, _Atomic int *release, uint32_t id) {
    server si = {e->inbox_ref, release, id};
    tr_ref r = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &server_beh, &si, sizeof si, &r));
    return r;
}

/* Releases the held servers, then probes each: once every probe is
 * answered, every request queued before it has been handled or dropped. */
static void release_and_probe(ev_log *l, _Atomic int *release,
                              const tr_ref *srv, uint32_t n) {
    atomic_store(release, 1);
    for (uint32_t i = 0; i < n; i++)
        TU_ASSERT_OK(tr_runtime_send_u64(l->e->rt, srv[i], T_PROBE, 0));
    for (uint32_t i = 0; i < n; i++)
        (void)ev_u64(l, R_PROBED);
}

/* ---- tests */

static void test_queued_request_dropped_after_timeout(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    ev_log l = {.e = e};
    static _Atomic int release;
    atomic_store(&release, 0);
    tr_ref srv = spawn_server(e, &release, 1);
    asker ai = {.report = e->inbox_ref,
                .targets = {srv},
                .timeout_ms = 100,
                .ask_tag = T_ASK};
    tr_ref ask_ref;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &ai, sizeof ai, &ask_ref));
    tu_env_start(e);
    tr_runtime_stats before = tu_stats(e);
    /* The server is held; the request (timeout 100 ms) waits behind that
     * and times out first. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, srv, T_BLOCK, 0));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, ask_ref, T_GO, 0));
    assert_int_equal(ev_u64(&l, T_ASKED), 0);
    assert_true(ev_u64(&l, T_TIMEOUT_SEEN) > 0);
    /* The server never handles it: no T_HANDLED, no late reply. */
    release_and_probe(&l, &release, &srv, 1);
    assert_int_equal(ev_count(&l, T_HANDLED), 0);
    tr_runtime_stats after = tu_stats(e);
    assert_int_equal(after.late_replies - before.late_replies, 0);
    assert_true(after.dead_letters - before.dead_letters >= 1);
    /* A request that is in time is still served. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, ask_ref, T_GO, 0));
    assert_int_equal(ev_u64(&l, T_HANDLED), 1000);
    ev_free(&l);
    tu_env_finish(e);
}

/* (a) The requester is cancelled (tr_cancel) while its request, with no
 * timeout, waits in a busy server's mailbox: the server drops it. */
static void test_requester_cancelled_request_dropped(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    ev_log l = {.e = e};
    static _Atomic int release;
    atomic_store(&release, 0);
    tr_ref srv = spawn_server(e, &release, 1);
    asker ai = {.report = e->inbox_ref,
                .targets = {srv},
                .timeout_ms = -1,
                .ask_tag = T_ASK};
    tr_ref ask_ref;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &ai, sizeof ai, &ask_ref));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, srv, T_BLOCK, 0));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, ask_ref, T_GO, 0));
    assert_int_equal(ev_u64(&l, T_ASKED), 0);
    TU_ASSERT_OK(tr_cancel(e->rt, ask_ref, TR_EXIT_CANCELLED, -1));
    /* on_stop reports after the pending request was cancelled. */
    assert_int_equal((int)(uint32_t)ev_u64(&l, T_ASKER_STOPPED),
                     TR_EXIT_CANCELLED);
    tr_runtime_stats before = tu_stats(e);
    release_and_probe(&l, &release, &srv, 1);
    assert_int_equal(ev_count(&l, T_HANDLED), 0);
    tr_runtime_stats after = tu_stats(e);
    assert_true(after.dead_letters - before.dead_letters >= 1);
    assert_int_equal(after.late_replies - before.late_replies, 0);
    /* The server is fine: a new requester is served. */
    asker a2 = ai;
    tr_ref ask2;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &a2, sizeof a2, &ask2));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, ask2, T_GO, 0));
    assert_int_equal(ev_u64(&l, T_HANDLED), 1000);
    assert_int_equal(ev_count(&l, T_NOT_REQUEST), 1);
    assert_int_equal(ev_u64(&l, T_NOT_REQUEST), 0);
    ev_free(&l);
    tu_env_finish(e);
}

/* (b) The requester is a cancel scope's body; the scope's deadline fires
 * while the request waits at a busy server: the server drops it. */
static void test_scope_deadline_request_dropped(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    ev_log l = {.e = e};
    static _Atomic int release;
    atomic_store(&release, 0);
    tr_ref srv = spawn_server(e, &release, 1);
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, srv, T_BLOCK, 0));
    asker ai = {.report = e->inbox_ref,
                .targets = {srv},
                .timeout_ms = -1,
                .ask_tag = T_ASK,
                .ask_on_start = true};
    tr_scope_config cfg = tr_move_on_after(100, e->inbox_ref);
    tr_ref scope;
    TU_ASSERT_OK(tr_runtime_scope_start(e->rt, &cfg, &asker_beh, &ai, sizeof ai,
                                        &scope));
    assert_int_equal(ev_u64(&l, T_ASKED), 0);
    tr_msg *done = ev_msg(&l, TR_TAG_SCOPE_DONE, NULL);
    tr_scope_info si;
    TU_ASSERT_OK(tr_scope_done_info(done, &si));
    assert_int_equal(si.outcome, TR_SCOPE_CANCELLED_CAUGHT);
    TU_ASSERT_OK(tr_msg_destroy(&done));
    assert_int_equal((int)(uint32_t)ev_u64(&l, T_ASKER_STOPPED),
                     TR_EXIT_CANCELLED);
    tr_runtime_stats before = tu_stats(e);
    release_and_probe(&l, &release, &srv, 1);
    assert_int_equal(ev_count(&l, T_HANDLED), 0);
    tr_runtime_stats after = tu_stats(e);
    assert_true(after.dead_letters - before.dead_letters >= 1);
    assert_int_equal(after.late_replies - before.late_replies, 0);
    ev_free(&l);
    tu_env_finish(e);
}

/* (c) The server is already working on the request when the requester is
 * cancelled: tr_request_cancelled turns true and the handler stops early. */
static void test_running_handler_sees_requester_cancelled(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    ev_log l = {.e = e};
    static _Atomic int release;
    atomic_store(&release, 0);
    tr_ref srv = spawn_server(e, &release, 1);
    asker ai = {.report = e->inbox_ref,
                .targets = {srv},
                .timeout_ms = -1,
                .ask_tag = T_LONG};
    tr_ref ask_ref;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &ai, sizeof ai, &ask_ref));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, ask_ref, T_GO, 0));
    assert_int_equal(ev_u64(&l, T_ASKED), 0);
    assert_int_equal(ev_u64(&l, T_STARTED), 0); /* not cancelled yet */
    int64_t t0 = tu_now_ms();
    TU_ASSERT_OK(tr_cancel(e->rt, ask_ref, TR_EXIT_CANCELLED, -1));
    assert_int_equal(ev_u64(&l, T_GAVE_UP), 1);
    assert_int_equal(ev_u64(&l, T_POLL_AGAIN), 1);
    /* Well before the handler's own bound (2 * TU_PROMPT_MS). */
    assert_true(tu_now_ms() - t0 < TU_PROMPT_MS);
    assert_int_equal((int)(uint32_t)ev_u64(&l, T_ASKER_STOPPED),
                     TR_EXIT_CANCELLED);
    ev_free(&l);
    tu_env_finish(e);
}

/* (c') Same with the requester alive and its timeout firing: the handler
 * learns it from the note (the requester has not ended). */
static void test_running_handler_sees_timeout(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    ev_log l = {.e = e};
    static _Atomic int release;
    atomic_store(&release, 0);
    tr_ref srv = spawn_server(e, &release, 1);
    asker ai = {.report = e->inbox_ref,
                .targets = {srv},
                .timeout_ms = 50,
                .ask_tag = T_LONG};
    tr_ref ask_ref;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &ai, sizeof ai, &ask_ref));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, ask_ref, T_GO, 0));
    assert_int_equal(ev_u64(&l, T_ASKED), 0);
    assert_true(ev_u64(&l, T_TIMEOUT_SEEN) > 0);
    assert_int_equal(ev_u64(&l, T_GAVE_UP), 1);
    assert_int_equal(ev_u64(&l, T_POLL_AGAIN), 1);
    assert_true(tr_actor_alive(e->rt, ask_ref));
    assert_int_equal(ev_count(&l, T_ASKER_STOPPED), 0);
    ev_free(&l);
    tu_env_finish(e);
}

/* (d) The requester is killed with several requests pending at several
 * targets, one of which has ended meanwhile (a dead target): the live ones
 * drop theirs, nothing is sent to the dead one, nothing leaks (ASan), the
 * timeout timers are cancelled. */
static void test_killed_with_requests_to_several_targets(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 3); /* two held by the servers, one for the rest */
    ev_log l = {.e = e};
    static _Atomic int release;
    atomic_store(&release, 0);
    tr_ref srv[2] = {spawn_server(e, &release, 1),
                     spawn_server(e, &release, 2)};
    server qi = {e->inbox_ref, &release, 3};
    tr_ref quitter;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &quitter_beh, &qi, sizeof qi, &quitter));
    asker ai = {.report = e->inbox_ref,
                .targets = {srv[0], srv[1], quitter},
                .timeout_ms = 60000,
                .ask_tag = T_ASK};
    tr_ref ask_ref;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &ai, sizeof ai, &ask_ref));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, srv[0], T_BLOCK, 0));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, srv[1], T_BLOCK, 0));
    static const uint64_t to[] = {0, 1, 0, 2, 1};
    for (size_t i = 0; i < sizeof to / sizeof to[0]; i++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, ask_ref, T_GO, to[i]));
    for (size_t i = 0; i < sizeof to / sizeof to[0]; i++)
        assert_int_equal(ev_u64(&l, T_ASKED), 0);
    assert_int_equal((int)(uint32_t)ev_u64(&l, T_QUITTER_STOPPED),
                     TR_EXIT_NORMAL);
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, quitter), TU_PROMPT_MS);
    TU_ASSERT_OK(tr_kill(e->rt, ask_ref));
    assert_int_equal((int)(uint32_t)ev_u64(&l, T_ASKER_STOPPED),
                     TR_EXIT_KILLED);
    tr_runtime_stats before = tu_stats(e);
    release_and_probe(&l, &release, srv, 2);
    assert_int_equal(ev_count(&l, T_HANDLED), 0);
    assert_int_equal(ev_count(&l, T_TIMEOUT_SEEN), 0);
    tr_runtime_stats after = tu_stats(e);
    assert_true(after.dead_letters - before.dead_letters >= 4);
    assert_int_equal(after.late_replies - before.late_replies, 0);
    ev_free(&l);
    tu_env_finish(e);
}

/* Requesters still waiting when the runtime shuts down: an orderly
 * shutdown stops the (younger) requester first, which cancels its request
 * at the still busy server; a hard stop then frees what is left without
 * sending anything. Nothing is handled, nothing leaks. */
static void test_pending_requests_at_shutdown(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    ev_log l = {.e = e};
    static _Atomic int release;
    atomic_store(&release, 0);
    tr_ref srv = spawn_server(e, &release, 1);
    asker ai = {.report = e->inbox_ref,
                .targets = {srv},
                .timeout_ms = 60000,
                .ask_tag = T_ASK};
    tr_ref a1, a2;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &ai, sizeof ai, &a1));
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &ai, sizeof ai, &a2));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, srv, T_BLOCK, 0));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, a1, T_GO, 0));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, a2, T_GO, 0));
    assert_int_equal(ev_u64(&l, T_ASKED), 0);
    assert_int_equal(ev_u64(&l, T_ASKED), 0);
    TU_ASSERT_OK(tr_runtime_shutdown(e->rt));
    /* Both askers stop (youngest first) while the server is held. */
    assert_int_equal((int)(uint32_t)ev_u64(&l, T_ASKER_STOPPED),
                     TR_EXIT_SHUTDOWN);
    assert_int_equal((int)(uint32_t)ev_u64(&l, T_ASKER_STOPPED),
                     TR_EXIT_SHUTDOWN);
    atomic_store(&release, 1);
    tu_env_expect_run_returns(e, TU_PROMPT_MS);
    /* The inbox keeps what reached it: nothing was handled. */
    assert_int_equal(ev_count(&l, T_HANDLED), 0);
    tr_msg *m = NULL;
    while (tr_inbox_recv(e->inbox, 0, &m) == 0) {
        assert_int_not_equal(tr_msg_tag(m), T_HANDLED);
        TU_ASSERT_OK(tr_msg_destroy(&m));
    }
    ev_free(&l);
    tu_env_finish(e);
}

/* A hard stop with requests pending: cleanup only (no notes, no sends);
 * the outcome is that run returns 0 and ASan finds the pending table and
 * the timeout messages freed. */
static void test_pending_requests_at_hard_stop(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    ev_log l = {.e = e};
    static _Atomic int release;
    atomic_store(&release, 0);
    tr_ref srv = spawn_server(e, &release, 1);
    asker ai = {.report = e->inbox_ref,
                .targets = {srv},
                .timeout_ms = 60000,
                .ask_tag = T_ASK};
    tr_ref a1;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &ai, sizeof ai, &a1));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, srv, T_BLOCK, 0));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, a1, T_GO, 0));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, a1, T_GO, 0));
    assert_int_equal(ev_u64(&l, T_ASKED), 0);
    assert_int_equal(ev_u64(&l, T_ASKED), 0);
    TU_ASSERT_OK(tr_runtime_stop(e->rt));
    atomic_store(&release, 1);
    ev_free(&l);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_queued_request_dropped_after_timeout),
        TU_TEST(test_requester_cancelled_request_dropped),
        TU_TEST(test_scope_deadline_request_dropped),
        TU_TEST(test_running_handler_sees_requester_cancelled),
        TU_TEST(test_running_handler_sees_timeout),
        TU_TEST(test_killed_with_requests_to_several_targets),
        TU_TEST(test_pending_requests_at_shutdown),
        TU_TEST(test_pending_requests_at_hard_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
