/* test_scope — cancel scopes: a body that finishes in time completes (the
 * deadline timer is cancelled); move_on_after catches the cancellation,
 * fail_after ends the scope with TR_EXIT_TIMEOUT (its parent sees it); an
 * explicit cancel; a cancel from outside; nested scopes, where the nearest
 * deadline wins and cancelling the outer cancels the inner; cleanup runs
 * under cancellation; a draining body is killed after its grace; a request
 * in a scoped body is cut by the deadline (and dropped unhandled by its
 * target); a task group under a fail_after scope. */
#include "testutil.h"

#include <troupe/scope.h>
#include <troupe/taskgroup.h>

enum {
    T_GO = 1, /* body: finish now */
    T_FINISH, /* body: end of a drain */
    T_HOLD,   /* server: hold the worker until released */
    T_ASK,    /* server: the request */
    T_PROBE,  /* server: answers R_PROBED (after what was queued before) */
    R_RESULT = 100,
    R_STOPPED,    /* value: id << 32 | (uint32_t)reason */
    R_STARTED,    /* value: id << 32 */
    R_BODY_REF,   /* value: the body's ref id (id 0 only) */
    R_INNER_REF,  /* value: the inner scope's ref id */
    R_INNER_EXIT, /* value: (uint32_t)reason of the inner scope */
    R_SCOPE_REF,  /* host: the scope's ref id */
    R_CHILD_EXIT, /* host: (uint32_t)reason of the scope */
    R_REPLY_RC,   /* server: tr_reply's result */
    R_REPLY_SEEN, /* requester: got a reply (must not happen) */
    R_PROBED,     /* server: handled T_PROBE */
};

enum {
    B_IDLE,         /* waits for cancellation */
    B_RESULT_ON_GO, /* reports value on T_GO, then stops */
    B_FAIL_ON_GO,   /* fails with TR_EPROTO "boom" on T_GO */
    B_DRAIN_FOREVER,
    B_DRAIN_FINISH, /* cancelled: drains 30 ms, reports value, stops */
    B_NESTER,       /* starts an inner scope; stops when it ends */
    B_REQUESTER,    /* asks `server` (timeout -1) */
    B_GROUPER       /* starts a task group of two idle tasks */
};

typedef struct body {
    tr_ref report;
    uint32_t id;
    uint32_t mode;
    uint64_t value;
    tr_ref server;
    /* B_NESTER: the inner scope. */
    tr_scope_kind inner_kind;
    int64_t inner_timeout_ms; /* -1: none */
} body;

static const tr_behavior body_beh;
static const tr_behavior idle_task_beh;

static int body_start(tr_ctx *ctx, void *state) {
    body *b = state;
    tu_report(ctx, b->report, R_STARTED, (uint64_t)b->id << 32);
    if (b->id == 0)
        tu_report(ctx, b->report, R_BODY_REF, tr_self(ctx).id);
    switch (b->mode) {
    case B_NESTER: {
        tr_scope_config cfg =
            b->inner_kind == TR_SCOPE_FAIL
                ? tr_fail_after(b->inner_timeout_ms, b->report)
                : tr_move_on_after(b->inner_timeout_ms, b->report);
        body inner = {.report = b->report, .id = b->id + 1, .mode = B_IDLE};
        tr_ref ref = TR_REF_NONE;
        int rc =
            tr_scope_start(ctx, &cfg, &body_beh, &inner, sizeof inner, &ref);
        if (rc != 0)
            return rc;
        tu_report(ctx, b->report, R_INNER_REF, ref.id);
        return 0;
    }
    case B_REQUESTER: {
        tr_msg *q = tr_msg_new(T_ASK);
        int rc = tr_request(ctx, b->server, &q, -1, NULL);
        if (rc != 0)
            (void)tr_msg_destroy(&q);
        return rc;
    }
    case B_GROUPER: {
        body t = {.report = b->report, .mode = B_IDLE};
        body t1 = t;
        t.id = b->id + 1;
        t1.id = b->id + 2;
        tr_task_spec specs[2] = {
            {"a", &idle_task_beh, &t, sizeof t, 0},
            {"b", &idle_task_beh, &t1, sizeof t1, 0},
        };
        tr_group_config cfg = {.owner = b->report, .tasks = specs, .ntasks = 2};
        return tr_group_start(ctx, &cfg, NULL);
    }
    default:
        return 0;
    }
}

static int body_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    body *b = state;
    if (tr_msg_is_reply(msg)) {
        tu_report(ctx, b->report, R_REPLY_SEEN, b->id);
        return 0;
    }
    uint32_t tag = tr_msg_tag(msg);
    if (tag == T_GO && b->mode == B_FAIL_ON_GO)
        return tr_fail(ctx, TR_EPROTO, "boom");
    if ((tag == T_GO && b->mode == B_RESULT_ON_GO) || tag == T_FINISH) {
        if (tr_task_result_u64(ctx, R_RESULT, b->value) != 0)
            return TR_EPROTO;
        return TR_STOP;
    }
    return 0;
}

static int body_cancel(tr_ctx *ctx, void *state, int reason) {
    body *b = state;
    (void)reason;
    if (b->mode == B_DRAIN_FINISH) {
        tr_msg *m = tr_msg_new(T_FINISH);
        if (tr_send_after(tr_ctx_runtime(ctx), tr_self(ctx), 30, &m, NULL) != 0)
            (void)tr_msg_destroy(&m);
        return TR_DRAIN;
    }
    return b->mode == B_DRAIN_FOREVER ? TR_DRAIN : 0;
}

/* Cleanup: runs under cancellation too (shielded). */
static void body_stop(tr_ctx *ctx, void *state, int reason) {
    body *b = state;
    tu_report(ctx, b->report, R_STOPPED,
              ((uint64_t)b->id << 32) | (uint32_t)reason);
}

static void body_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    body *b = state;
    if (b->mode != B_NESTER)
        return;
    tu_report(ctx, b->report, R_INNER_EXIT, (uint32_t)x->reason);
    tr_stop(ctx); /* the inner scope is over: so is this body */
}

#define SHORT_GRACE_MS 150

static const tr_behavior body_beh = {
    .name = "body",
    .handle = body_handle,
    .on_start = body_start,
    .on_stop = body_stop,
    .on_cancel = body_cancel,
    .on_child_exit = body_child_exit,
    .state_size = sizeof(body),
    .grace_ms = SHORT_GRACE_MS,
};

/* Group tasks: report only their stop (no R_STARTED noise). */
static const tr_behavior idle_task_beh = {
    .name = "idle-task",
    .handle = tu_keeper_handle,
    .on_stop = body_stop,
    .state_size = sizeof(body),
};

/* ---- a server that answers a request only when released */

typedef struct server {
    tr_ref report;
    _Atomic int *release;
} server;

static int server_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    server *s = state;
    if (tr_msg_tag(msg) == T_HOLD) {
        /* Blocks this worker on purpose (bounded): the request queued
         * behind this message waits until the test releases it. */
        int64_t deadline = tu_now_ms() + 2 * TU_PROMPT_MS;
        while (!atomic_load(s->release) && tu_now_ms() < deadline)
            tu_sleep_ms(1);
        return 0;
    }
    if (tr_msg_tag(msg) == T_ASK && tr_msg_is_request(msg)) {
        tr_msg *r = tr_msg_new_u64(R_RESULT, 1);
        int rc = tr_reply(ctx, msg, &r);
        if (r != NULL)
            (void)tr_msg_destroy(&r);
        tu_report(ctx, s->report, R_REPLY_RC, (uint32_t)rc);
    }
    if (tr_msg_tag(msg) == T_PROBE)
        tu_report(ctx, s->report, R_PROBED, 0);
    return 0;
}

static const tr_behavior server_beh = {
    .name = "server",
    .handle = server_handle,
    .state_size = sizeof(server),
};

/* ---- a host actor that starts a scope from its handler (the scope is its
 * child) and reports how the scope ended */

typedef struct host {
    tr_ref inbox;
    tr_scope_kind kind;
    int64_t timeout_ms;
    body init;
} host;

static int host_start(tr_ctx *ctx, void *state) {
    host *h = state;
    tr_scope_config cfg = h->kind == TR_SCOPE_FAIL
                              ? tr_fail_after(h->timeout_ms, h->inbox)
                              : tr_move_on_after(h->timeout_ms, h->inbox);
    tr_ref s = TR_REF_NONE;
    int rc = tr_scope_start(ctx, &cfg, &body_beh, &h->init, sizeof h->init, &s);
    if (rc != 0)
        return rc;
    tu_report(ctx, h->inbox, R_SCOPE_REF, s.id);
    return 0;
}

static void host_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    host *h = state;
    tu_report(ctx, h->inbox, R_CHILD_EXIT, (uint32_t)x->reason);
}

static const tr_behavior host_beh = {
    .name = "host",
    .handle = tu_keeper_handle,
    .on_start = host_start,
    .on_child_exit = host_child_exit,
    .state_size = sizeof(host),
};

#include "evlog.h"

static uint64_t stop_ev(uint32_t id, int reason) {
    return ((uint64_t)id << 32) | (uint32_t)reason;
}

#define ALL_BITS UINT64_MAX

/* Position of worker/body `id`'s stop report with exactly this reason. */
static size_t stopped_at(ev_log *l, uint32_t id, int reason) {
    return ev_find(l, R_STOPPED, stop_ev(id, reason), ALL_BITS);
}

static void expect_done(const tr_msg *done, tr_ref scope,
                        tr_scope_outcome outcome, int body_reason,
                        int scope_reason, const char *text) {
    tr_scope_info si;
    TU_ASSERT_OK(tr_scope_done_info(done, &si));
    assert_true(tr_ref_eq(si.scope, scope));
    if (si.outcome != outcome)
        fail_msg("scope outcome %s, expected %s (body reason %d)",
                 tr_scope_outcome_name(si.outcome),
                 tr_scope_outcome_name(outcome), si.body_reason);
    assert_int_equal(si.body_reason, body_reason);
    assert_int_equal(si.scope_reason, scope_reason);
    assert_string_equal(si.text, text);
}

/* Takes the next scope report, checks it, returns its position. */
static size_t take_done(ev_log *l, tr_ref scope, tr_scope_outcome outcome,
                        int body_reason, int scope_reason, const char *text) {
    size_t pos = 0;
    tr_msg *done = ev_msg(l, TR_TAG_SCOPE_DONE, &pos);
    expect_done(done, scope, outcome, body_reason, scope_reason, text);
    TU_ASSERT_OK(tr_msg_destroy(&done));
    return pos;
}

static void env_up(tu_env *e) {
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e); /* no quiescence stop between steps */
    tu_env_start(e);
}

static tr_ref start_host(ev_log *l, tr_scope_kind kind, int64_t timeout_ms,
                         uint32_t mode) {
    tu_env *e = l->e;
    host h = {e->inbox_ref, kind, timeout_ms,
              (body){.report = e->inbox_ref, .id = 0, .mode = mode}};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &host_beh, &h, sizeof h, NULL));
    return (tr_ref){ev_u64(l, R_SCOPE_REF)};
}

static int child_exit_reason(ev_log *l) {
    return (int)(uint32_t)ev_u64(l, R_CHILD_EXIT);
}

/* ---- tests */

/* The body finishes first: completed, with its result; the deadline timer
 * was cancelled (it never fires). */
static void test_completes_before_deadline(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    tr_scope_config cfg = tr_move_on_after(300, e->inbox_ref);
    body b = {.report = e->inbox_ref, .mode = B_RESULT_ON_GO, .value = 42};
    tr_ref s = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_scope_start(e->rt, &cfg, &body_beh, &b, sizeof b, &s));
    tr_ref bref = {ev_u64(&l, R_BODY_REF)};
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, bref, T_GO, 0));
    tr_msg *done = ev_msg(&l, TR_TAG_SCOPE_DONE, NULL);
    expect_done(done, s, TR_SCOPE_COMPLETED, TR_EXIT_NORMAL, TR_EXIT_NORMAL,
                "");
    tr_scope_info si;
    TU_ASSERT_OK(tr_scope_done_info(done, &si));
    assert_int_equal(si.deadline_ms, cfg.deadline_ms);
    assert_non_null(si.result);
    assert_int_equal(tr_msg_tag(si.result), R_RESULT);
    assert_int_equal(tr_msg_u64(si.result), 42);
    tr_msg *res = NULL;
    TU_ASSERT_OK(tr_scope_done_take_result(done, &res));
    assert_int_equal(tr_msg_u64(res), 42);
    TU_ASSERT_OK(tr_msg_destroy(&res));
    TU_ASSERT_OK(tr_scope_done_info(done, &si));
    assert_null(si.result);
    TU_ASSERT_OK(tr_msg_destroy(&done));
    (void)stopped_at(&l, 0, TR_EXIT_NORMAL);
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, s), TU_PROMPT_MS);
    /* Past the deadline: nothing fires, nothing arrives. */
    tu_expect_silence(e, 400);
    assert_int_equal(tu_stats(e).timers_fired, 0);
    TU_ASSERT_RC(tr_scope_cancel(e->rt, s), TR_ENOACTOR);
    ev_free(&l);
    tu_env_finish(e);
}

/* move_on_after: the body is cancelled, its cleanup runs first, the owner
 * learns cancelled_caught, the scope ends normally. */
static void test_move_on_after(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    int64_t t0 = tu_now_ms();
    tr_ref s = start_host(&l, TR_SCOPE_MOVE_ON, 100, B_IDLE);
    size_t done_at = take_done(&l, s, TR_SCOPE_CANCELLED_CAUGHT,
                               TR_EXIT_CANCELLED, TR_EXIT_NORMAL, "");
    int64_t waited = tu_now_ms() - t0;
    if (waited < 98)
        fail_msg("scope cancelled after %lld ms, before its deadline",
                 (long long)waited);
    /* Cleanup ran, with the cancel reason, before the report. */
    assert_true(stopped_at(&l, 0, TR_EXIT_CANCELLED) < done_at);
    assert_int_equal(child_exit_reason(&l), TR_EXIT_NORMAL);
    assert_int_equal(ev_count(&l, R_STOPPED), 1);
    ev_free(&l);
    tu_env_finish(e);
}

/* fail_after: the owner learns timed_out; the scope ends with
 * TR_EXIT_TIMEOUT, which its parent sees; the body saw the timeout. */
static void test_fail_after(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    int64_t t0 = tu_now_ms();
    tr_ref s = start_host(&l, TR_SCOPE_FAIL, 100, B_IDLE);
    size_t done_at = take_done(&l, s, TR_SCOPE_TIMED_OUT, TR_EXIT_TIMEOUT,
                               TR_EXIT_TIMEOUT, "");
    assert_true(tu_now_ms() - t0 >= 98);
    assert_true(stopped_at(&l, 0, TR_EXIT_TIMEOUT) < done_at);
    assert_int_equal(child_exit_reason(&l), TR_EXIT_TIMEOUT);
    ev_free(&l);
    tu_env_finish(e);
}

/* A body that fails in time: the scope reports it and fails with it. */
static void test_body_failure(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    tr_ref s = start_host(&l, TR_SCOPE_FAIL, 10000, B_FAIL_ON_GO);
    tr_ref bref = {ev_u64(&l, R_BODY_REF)};
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, bref, T_GO, 0));
    (void)take_done(&l, s, TR_SCOPE_FAILED, TR_EPROTO, TR_EPROTO, "boom");
    (void)stopped_at(&l, 0, TR_EPROTO);
    assert_int_equal(child_exit_reason(&l), TR_EPROTO);
    ev_free(&l);
    tu_env_finish(e);
}

/* tr_scope_cancel before the deadline: cancelled_caught for both kinds;
 * a deadline already past cancels at once. */
static void test_explicit_cancel(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    for (int kind = TR_SCOPE_MOVE_ON; kind <= TR_SCOPE_FAIL; kind++) {
        tr_ref s = start_host(&l, (tr_scope_kind)kind, 10000, B_IDLE);
        (void)ev_u64(&l, R_BODY_REF); /* the body runs */
        TU_ASSERT_OK(tr_scope_cancel(e->rt, s));
        (void)take_done(&l, s, TR_SCOPE_CANCELLED_CAUGHT, TR_EXIT_CANCELLED,
                        TR_EXIT_NORMAL, "");
        (void)stopped_at(&l, 0, TR_EXIT_CANCELLED);
        assert_int_equal(child_exit_reason(&l), TR_EXIT_NORMAL);
    }
    /* A deadline in the past. */
    tr_scope_config cfg = {TR_SCOPE_MOVE_ON, tr_now_ms() - 1, e->inbox_ref};
    body b = {.report = e->inbox_ref, .mode = B_IDLE};
    tr_ref s = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_scope_start(e->rt, &cfg, &body_beh, &b, sizeof b, &s));
    (void)take_done(&l, s, TR_SCOPE_CANCELLED_CAUGHT, TR_EXIT_CANCELLED,
                    TR_EXIT_NORMAL, "");
    ev_free(&l);
    tu_env_finish(e);
}

/* tr_cancel of the scope itself (from outside): cancelled, not caught; the
 * scope ends with the reason it was cancelled with. */
static void test_cancel_from_outside(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    tr_ref s = start_host(&l, TR_SCOPE_MOVE_ON, 10000, B_IDLE);
    (void)ev_u64(&l, R_BODY_REF);
    TU_ASSERT_OK(tr_cancel(e->rt, s, TR_EXIT_CANCELLED, -1));
    (void)take_done(&l, s, TR_SCOPE_CANCELLED, TR_EXIT_CANCELLED,
                    TR_EXIT_CANCELLED, "");
    (void)stopped_at(&l, 0, TR_EXIT_CANCELLED);
    assert_int_equal(child_exit_reason(&l), TR_EXIT_CANCELLED);
    ev_free(&l);
    tu_env_finish(e);
}

/* An outer scope whose body (id 1) starts an inner scope (body id 2). */
static tr_ref start_nested(ev_log *l, tr_scope_config outer,
                           tr_scope_kind inner_kind, int64_t inner_ms,
                           tr_ref *inner) {
    tu_env *e = l->e;
    body b = {.report = e->inbox_ref,
              .id = 1,
              .mode = B_NESTER,
              .inner_kind = inner_kind,
              .inner_timeout_ms = inner_ms};
    tr_ref s = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_scope_start(e->rt, &outer, &body_beh, &b, sizeof b, &s));
    inner->id = ev_u64(l, R_INNER_REF);
    (void)ev_find(l, R_STARTED, (uint64_t)2 << 32, ALL_BITS);
    return s;
}

/* The outer deadline is nearer: it cancels the inner scope, which reports
 * "cancelled" (not caught) after the inner body's cleanup; then the outer
 * body stops and the outer scope reports cancelled_caught. */
static void test_nested_outer_deadline_wins(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    int64_t t0 = tu_now_ms();
    tr_ref inner = TR_REF_NONE;
    tr_ref outer = start_nested(&l, tr_move_on_after(100, e->inbox_ref),
                                TR_SCOPE_FAIL, 10000, &inner);
    size_t inner_at = take_done(&l, inner, TR_SCOPE_CANCELLED,
                                TR_EXIT_CANCELLED, TR_EXIT_CANCELLED, "");
    assert_true(tu_now_ms() - t0 >= 98);
    size_t outer_at = take_done(&l, outer, TR_SCOPE_CANCELLED_CAUGHT,
                                TR_EXIT_CANCELLED, TR_EXIT_NORMAL, "");
    /* Children before parents: inner body, inner scope, outer body. */
    size_t inner_body = stopped_at(&l, 2, TR_EXIT_CANCELLED);
    size_t outer_body = stopped_at(&l, 1, TR_EXIT_CANCELLED);
    assert_true(inner_body < inner_at);
    assert_true(inner_at < outer_body);
    assert_true(outer_body < outer_at);
    /* The outer body was stopping: no on_child_exit for the inner scope. */
    assert_int_equal(ev_count(&l, R_INNER_EXIT), 0);
    assert_false(tr_actor_alive(e->rt, inner));
    ev_free(&l);
    tu_env_finish(e);
}

/* The inner deadline is nearer: only the inner scope is cancelled (and
 * catches it); the outer body goes on and completes. */
static void test_nested_inner_deadline_wins(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    tr_ref inner = TR_REF_NONE;
    tr_ref outer = start_nested(&l, tr_fail_after(10000, e->inbox_ref),
                                TR_SCOPE_MOVE_ON, 50, &inner);
    size_t inner_at = take_done(&l, inner, TR_SCOPE_CANCELLED_CAUGHT,
                                TR_EXIT_CANCELLED, TR_EXIT_NORMAL, "");
    size_t outer_at = take_done(&l, outer, TR_SCOPE_COMPLETED, TR_EXIT_NORMAL,
                                TR_EXIT_NORMAL, "");
    assert_true(stopped_at(&l, 2, TR_EXIT_CANCELLED) < inner_at);
    /* The outer body heard the inner scope end normally, then stopped. */
    size_t ex = ev_find(&l, R_INNER_EXIT, TR_EXIT_NORMAL, ALL_BITS);
    size_t st = stopped_at(&l, 1, TR_EXIT_NORMAL);
    assert_true(inner_at < ex);
    assert_true(ex < st);
    assert_true(st < outer_at);
    ev_free(&l);
    tu_env_finish(e);
}

/* Cancelling the outer scope cancels the inner one. */
static void test_cancel_outer_cancels_inner(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    tr_ref inner = TR_REF_NONE;
    tr_ref outer = start_nested(&l, tr_move_on_after(-1, e->inbox_ref),
                                TR_SCOPE_MOVE_ON, -1, &inner);
    assert_true(tr_actor_alive(e->rt, inner));
    TU_ASSERT_OK(tr_scope_cancel(e->rt, outer));
    size_t inner_at = take_done(&l, inner, TR_SCOPE_CANCELLED,
                                TR_EXIT_CANCELLED, TR_EXIT_CANCELLED, "");
    size_t outer_at = take_done(&l, outer, TR_SCOPE_CANCELLED_CAUGHT,
                                TR_EXIT_CANCELLED, TR_EXIT_NORMAL, "");
    size_t in = stopped_at(&l, 2, TR_EXIT_CANCELLED);
    size_t out = stopped_at(&l, 1, TR_EXIT_CANCELLED);
    assert_true(in < inner_at);
    assert_true(inner_at < out);
    assert_true(out < outer_at);
    assert_false(tr_actor_alive(e->rt, inner));
    ev_free(&l);
    tu_env_finish(e);
}

/* A draining body gets its grace, is killed after it, and its on_stop
 * sees TR_EXIT_KILLED; the scope reports only then. */
static void test_drain_killed_after_grace(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    int64_t t0 = tu_now_ms();
    tr_ref s = start_host(&l, TR_SCOPE_MOVE_ON, 100, B_DRAIN_FOREVER);
    size_t done_at = take_done(&l, s, TR_SCOPE_CANCELLED_CAUGHT, TR_EXIT_KILLED,
                               TR_EXIT_NORMAL, "");
    int64_t waited = tu_now_ms() - t0;
    if (waited < 100 + SHORT_GRACE_MS - 2)
        fail_msg("reported after %lld ms: before deadline + grace",
                 (long long)waited);
    assert_true(stopped_at(&l, 0, TR_EXIT_KILLED) < done_at);
    assert_int_equal(ev_count(&l, R_STOPPED), 1);
    assert_int_equal(child_exit_reason(&l), TR_EXIT_NORMAL);
    ev_free(&l);
    tu_env_finish(e);
}

/* A draining body that finishes within its grace ends normally, with its
 * result; the outcome is still cancelled_caught. */
static void test_drain_finishes_in_grace(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    tr_scope_config cfg = tr_move_on_after(50, e->inbox_ref);
    body b = {.report = e->inbox_ref, .mode = B_DRAIN_FINISH, .value = 77};
    tr_ref s = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_scope_start(e->rt, &cfg, &body_beh, &b, sizeof b, &s));
    tr_msg *done = ev_msg(&l, TR_TAG_SCOPE_DONE, NULL);
    /* A drained body ends with the reason it was cancelled with. */
    expect_done(done, s, TR_SCOPE_CANCELLED_CAUGHT, TR_EXIT_CANCELLED,
                TR_EXIT_NORMAL, "");
    tr_scope_info si;
    TU_ASSERT_OK(tr_scope_done_info(done, &si));
    assert_non_null(si.result);
    assert_int_equal(tr_msg_tag(si.result), R_RESULT);
    assert_int_equal(tr_msg_u64(si.result), 77);
    TU_ASSERT_OK(tr_msg_destroy(&done));
    (void)stopped_at(&l, 0, TR_EXIT_CANCELLED);
    ev_free(&l);
    tu_env_finish(e);
}

/* A request made by a scoped body, with no timeout of its own, is cut by
 * the scope's deadline: the body is cancelled with the request pending and
 * the cancellation travels with the request: the server, busy until now,
 * drops it unhandled (a dead letter), so no reply is even attempted. */
static void test_request_cut_by_deadline(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    static _Atomic int release;
    atomic_store(&release, 0);
    server sv = {e->inbox_ref, &release};
    tr_ref srv = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &server_beh, &sv, sizeof sv, &srv));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, srv, T_HOLD, 0));
    tr_scope_config cfg = tr_move_on_after(100, e->inbox_ref);
    body b = {.report = e->inbox_ref, .mode = B_REQUESTER, .server = srv};
    tr_ref s = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_scope_start(e->rt, &cfg, &body_beh, &b, sizeof b, &s));
    tr_ref bref = {ev_u64(&l, R_BODY_REF)};
    (void)take_done(&l, s, TR_SCOPE_CANCELLED_CAUGHT, TR_EXIT_CANCELLED,
                    TR_EXIT_NORMAL, "");
    (void)stopped_at(&l, 0, TR_EXIT_CANCELLED);
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, bref), TU_PROMPT_MS);
    /* Now the server gets to the request and drops it. The probe is
     * queued behind the request (sent after the body ended), so once it
     * is answered the request is behind the server too. */
    uint64_t dead_before = tu_stats(e).dead_letters;
    atomic_store(&release, 1);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, srv, T_PROBE, 0));
    (void)ev_u64(&l, R_PROBED);
    assert_int_equal(ev_count(&l, R_REPLY_RC), 0);
    assert_int_equal(ev_count(&l, R_REPLY_SEEN), 0);
    assert_true(tu_stats(e).dead_letters - dead_before >= 1);
    assert_int_equal(tu_stats(e).late_replies, 0);
    ev_free(&l);
    tu_env_finish(e);
}

/* A task group inside a fail_after scope: the deadline cancels the group,
 * which cancels its tasks with the timeout and still reports; then the
 * scope times out. */
static void test_group_under_fail_after(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    tr_scope_config cfg = tr_fail_after(100, e->inbox_ref);
    body b = {.report = e->inbox_ref, .mode = B_GROUPER};
    tr_ref s = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_scope_start(e->rt, &cfg, &body_beh, &b, sizeof b, &s));
    size_t gpos = 0;
    tr_msg *gdone = ev_msg(&l, TR_TAG_GROUP_DONE, &gpos);
    tr_group_summary sum;
    TU_ASSERT_OK(tr_group_done_summary(gdone, &sum));
    assert_int_equal(sum.status, TR_GROUP_CANCELLED);
    assert_int_equal(sum.reason, TR_EXIT_TIMEOUT);
    assert_int_equal(sum.ntasks, 2);
    assert_int_equal(sum.ncancelled, 2);
    for (size_t i = 0; i < 2; i++) {
        tr_task_info ti;
        TU_ASSERT_OK(tr_group_done_task(gdone, i, &ti));
        assert_string_equal(ti.name, i == 0 ? "a" : "b");
        assert_int_equal(ti.state, TR_TASK_CANCELLED);
        assert_int_equal(ti.reason, TR_EXIT_TIMEOUT);
    }
    TU_ASSERT_OK(tr_msg_destroy(&gdone));
    assert_true(stopped_at(&l, 1, TR_EXIT_TIMEOUT) < gpos);
    assert_true(stopped_at(&l, 2, TR_EXIT_TIMEOUT) < gpos);
    size_t done_at = take_done(&l, s, TR_SCOPE_TIMED_OUT, TR_EXIT_TIMEOUT,
                               TR_EXIT_TIMEOUT, "");
    size_t body_at = stopped_at(&l, 0, TR_EXIT_TIMEOUT);
    assert_true(gpos < body_at);
    assert_true(body_at < done_at);
    ev_free(&l);
    tu_env_finish(e);
}

/* A scope killed (no drain: its body is killed with it) still reports,
 * from its cleanup; a scope alive at runtime stop, with its deadline
 * pending, is cleaned up without a report (ASan checks leaks). */
static void test_killed_and_shutdown(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    tr_ref s = start_host(&l, TR_SCOPE_FAIL, 10000, B_DRAIN_FOREVER);
    (void)ev_u64(&l, R_BODY_REF);
    TU_ASSERT_OK(tr_kill(e->rt, s));
    size_t done_at = take_done(&l, s, TR_SCOPE_CANCELLED, TR_EXIT_KILLED,
                               TR_EXIT_KILLED, "");
    assert_true(stopped_at(&l, 0, TR_EXIT_KILLED) < done_at);
    assert_int_equal(child_exit_reason(&l), TR_EXIT_KILLED);

    tr_scope_config cfg = tr_fail_after(10000, e->inbox_ref);
    body b = {.report = e->inbox_ref, .mode = B_RESULT_ON_GO, .value = 1};
    TU_ASSERT_OK(
        tr_runtime_scope_start(e->rt, &cfg, &body_beh, &b, sizeof b, &s));
    (void)ev_u64(&l, R_BODY_REF);
    ev_free(&l);
    tu_env_finish(e);
}

static void test_errors(void **state) {
    tu_env *e = *state;
    env_up(e);
    body b = {.report = e->inbox_ref, .mode = B_IDLE};
    tr_scope_config cfg = tr_move_on_after(-1, e->inbox_ref);
    assert_int_equal(cfg.deadline_ms, -1);
    tr_ref s = TR_REF_NONE;
    TU_ASSERT_RC(
        tr_runtime_scope_start(e->rt, NULL, &body_beh, &b, sizeof b, &s),
        TR_EINVAL);
    TU_ASSERT_RC(tr_runtime_scope_start(e->rt, &cfg, NULL, &b, sizeof b, &s),
                 TR_EINVAL);
    TU_ASSERT_RC(
        tr_runtime_scope_start(e->rt, &cfg, &body_beh, &b, sizeof b + 1, &s),
        TR_EINVAL);
    TU_ASSERT_RC(tr_runtime_scope_start(e->rt, &cfg, &body_beh, NULL, 4, &s),
                 TR_EINVAL);
    cfg.kind = (tr_scope_kind)7;
    TU_ASSERT_RC(
        tr_runtime_scope_start(e->rt, &cfg, &body_beh, &b, sizeof b, &s),
        TR_EINVAL);
    cfg.kind = TR_SCOPE_FAIL;
    cfg.deadline_ms = -2;
    TU_ASSERT_RC(
        tr_runtime_scope_start(e->rt, &cfg, &body_beh, &b, sizeof b, &s),
        TR_EINVAL);
    TU_ASSERT_RC(tr_scope_start(NULL, &cfg, &body_beh, &b, sizeof b, &s),
                 TR_EINVAL);
    TU_ASSERT_RC(tr_scope_cancel(NULL, s), TR_EINVAL);
    tr_msg *m = tr_msg_new_u64(9, 9);
    tr_scope_info si;
    tr_msg *res = NULL;
    TU_ASSERT_RC(tr_scope_done_info(m, &si), TR_EPAYLOAD);
    TU_ASSERT_RC(tr_scope_done_take_result(m, &res), TR_EPAYLOAD);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    assert_int_equal(tr_deadline_remaining(-1), -1);
    assert_int_equal(tr_deadline_remaining(tr_now_ms() - 5), 0);
    assert_true(tr_deadline_remaining(tr_now_ms() + 10000) > 9000);
    assert_string_equal(tr_scope_outcome_name(TR_SCOPE_CANCELLED_CAUGHT),
                        "cancelled_caught");
    /* "Never" deadlines: no overflow, no timer; an explicit cancel ends
     * the scope. */
    assert_int_equal(tr_move_on_after(INT64_MAX, e->inbox_ref).deadline_ms, -1);
    ev_log l = {.e = e};
    cfg = (tr_scope_config){TR_SCOPE_FAIL, INT64_MAX, e->inbox_ref};
    TU_ASSERT_OK(
        tr_runtime_scope_start(e->rt, &cfg, &body_beh, &b, sizeof b, &s));
    (void)ev_u64(&l, R_BODY_REF);
    TU_ASSERT_OK(tr_scope_cancel(e->rt, s));
    tr_msg *done = ev_msg(&l, TR_TAG_SCOPE_DONE, NULL);
    expect_done(done, s, TR_SCOPE_CANCELLED_CAUGHT, TR_EXIT_CANCELLED,
                TR_EXIT_NORMAL, "");
    tr_scope_info info;
    TU_ASSERT_OK(tr_scope_done_info(done, &info));
    assert_int_equal(info.deadline_ms, -1);
    TU_ASSERT_OK(tr_msg_destroy(&done));
    assert_int_equal(tu_stats(e).timers_fired, 0);
    ev_free(&l);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_completes_before_deadline),
        TU_TEST(test_move_on_after),
        TU_TEST(test_fail_after),
        TU_TEST(test_body_failure),
        TU_TEST(test_explicit_cancel),
        TU_TEST(test_cancel_from_outside),
        TU_TEST(test_nested_outer_deadline_wins),
        TU_TEST(test_nested_inner_deadline_wins),
        TU_TEST(test_cancel_outer_cancels_inner),
        TU_TEST(test_drain_killed_after_grace),
        TU_TEST(test_drain_finishes_in_grace),
        TU_TEST(test_request_cut_by_deadline),
        TU_TEST(test_group_under_fail_after),
        TU_TEST(test_killed_and_shutdown),
        TU_TEST(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
