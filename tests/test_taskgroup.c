/* test_taskgroup — task groups: every task's result reaches the owner in
 * one done message; the first failure cancels the siblings and the owner
 * gets the first failure and the later ones; single tasks are cancelled
 * without failing the group; tasks are added and listed while the group
 * runs (from a handler and from a foreign thread); cancelling the group
 * cancels every task (a draining one is killed after its grace);
 * keep_open waits for close; argument errors. */
#include "testutil.h"

#include <troupe/taskgroup.h>

enum {
    T_TICK = 1,     /* worker: the delay has passed */
    T_GO,           /* worker: finish now (WAIT_GO / FAIL_ON_GO) */
    T_FAIL_NOW,     /* worker: fail during its drain */
    R_RESULT = 100, /* tag of task results */
    R_STOPPED,      /* value: id << 32 | (uint32_t)reason */
    R_GROUP_REF,    /* host: the group's ref id */
    R_CHILD_EXIT,   /* host: (uint32_t)reason of its child */
    R_CHILD_TEXT,   /* host: bytes, the child's failure text */
    R_ADMIN,        /* admin: step << 32 | (uint32_t)value */
};

enum {
    W_RESULT_AFTER, /* reports value after delay_ms, then stops */
    W_FAIL_AFTER,   /* fails with TR_EPROTO "bad <id>" after delay_ms */
    W_IDLE,         /* waits for cancellation */
    W_WAIT_GO,      /* reports value on T_GO, then stops */
    W_FAIL_ON_GO,   /* fails with TR_EPROTO "bad <id>" on T_GO */
    W_DRAIN_FAIL,   /* cancelled: drains, then fails TR_ESYS */
    W_DRAIN_FOREVER /* cancelled: drains and never finishes */
};

typedef struct worker {
    tr_ref report;
    uint32_t id;
    uint32_t mode;
    int64_t delay_ms;
    uint64_t value;
} worker;

static int worker_start(tr_ctx *ctx, void *state) {
    worker *w = state;
    if (w->mode != W_RESULT_AFTER && w->mode != W_FAIL_AFTER)
        return 0;
    if (w->delay_ms <= 0)
        return tr_send_tag(ctx, tr_self(ctx), T_TICK);
    tr_msg *m = tr_msg_new(T_TICK);
    int rc =
        tr_send_after(tr_ctx_runtime(ctx), tr_self(ctx), w->delay_ms, &m, NULL);
    if (rc != 0)
        (void)tr_msg_destroy(&m);
    return rc;
}

static int worker_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    worker *w = state;
    switch (tr_msg_tag(msg)) {
    case T_TICK:
    case T_GO:
        if (w->mode == W_FAIL_AFTER || w->mode == W_FAIL_ON_GO)
            return tr_fail(ctx, TR_EPROTO, "bad %u", w->id);
        if (tr_task_result_u64(ctx, R_RESULT, w->value) != 0)
            return TR_EPROTO;
        return TR_STOP;
    case T_FAIL_NOW:
        return tr_fail(ctx, TR_ESYS, "cleanup failed %u", w->id);
    default:
        return 0;
    }
}

static int worker_cancel(tr_ctx *ctx, void *state, int reason) {
    worker *w = state;
    (void)reason;
    if (w->mode == W_DRAIN_FAIL) {
        (void)tr_send_tag(ctx, tr_self(ctx), T_FAIL_NOW);
        return TR_DRAIN;
    }
    return w->mode == W_DRAIN_FOREVER ? TR_DRAIN : 0;
}

static void worker_stop(tr_ctx *ctx, void *state, int reason) {
    worker *w = state;
    tu_report(ctx, w->report, R_STOPPED,
              ((uint64_t)w->id << 32) | (uint32_t)reason);
}

static const tr_behavior worker_beh = {
    .name = "worker",
    .handle = worker_handle,
    .on_start = worker_start,
    .on_stop = worker_stop,
    .on_cancel = worker_cancel,
    .state_size = sizeof(worker),
};

/* Same worker, with a short grace: drains are cut after 150 ms. */
#define SHORT_GRACE_MS 150
static const tr_behavior drainer_beh = {
    .name = "drainer",
    .handle = worker_handle,
    .on_start = worker_start,
    .on_stop = worker_stop,
    .on_cancel = worker_cancel,
    .state_size = sizeof(worker),
    .grace_ms = SHORT_GRACE_MS,
};

/* Specs refer to their worker init; both live in the test's frame until
 * the start call, which copies them. */
typedef struct spec_set {
    char names[8][16];
    worker init[8];
    tr_task_spec spec[8];
    size_t n;
} spec_set;

static void spec_add(spec_set *s, const tr_behavior *beh, tr_ref report,
                     uint32_t mode, int64_t delay_ms, uint64_t value) {
    size_t i = s->n++;
    snprintf(s->names[i], sizeof s->names[i], "t%zu", i);
    s->init[i] = (worker){report, (uint32_t)i, mode, delay_ms, value};
    s->spec[i] =
        (tr_task_spec){s->names[i], beh, &s->init[i], sizeof s->init[i], 0};
}

#include "evlog.h"

#define ALL_BITS UINT64_MAX
#define HIGH_BITS 0xFFFFFFFF00000000ull

/* The reason worker `id` stopped with (waiting for its report); fails if
 * it reported more than once so far. */
static int stopped_reason(ev_log *l, uint32_t id) {
    size_t i = ev_find(l, R_STOPPED, (uint64_t)id << 32, HIGH_BITS);
    size_t n = 0;
    for (size_t k = 0; k < l->n; k++)
        n += l->ev[k].tag == R_STOPPED && (l->ev[k].value >> 32) == id;
    if (n != 1)
        fail_msg("worker %u: %zu stop reports, expected 1", id, n);
    return (int)(uint32_t)l->ev[i].value;
}

static tr_msg *take_done(ev_log *l, size_t *pos) {
    return ev_msg(l, TR_TAG_GROUP_DONE, pos);
}

static void assert_task(const tr_msg *done, size_t i, tr_task_state state,
                        int reason, const char *text) {
    tr_task_info ti;
    TU_ASSERT_OK(tr_group_done_task(done, i, &ti));
    char name[16];
    snprintf(name, sizeof name, "t%zu", i);
    assert_int_equal(ti.index, i);
    assert_string_equal(ti.name, name);
    if (ti.state != state)
        fail_msg("task %zu: state %s, expected %s (reason %d)", i,
                 tr_task_state_name(ti.state), tr_task_state_name(state),
                 ti.reason);
    assert_int_equal(ti.reason, reason);
    assert_string_equal(ti.text, text);
}

static uint64_t task_result(const tr_msg *done, size_t i) {
    tr_task_info ti;
    TU_ASSERT_OK(tr_group_done_task(done, i, &ti));
    assert_non_null(ti.result);
    assert_int_equal(tr_msg_tag(ti.result), R_RESULT);
    return tr_msg_u64(ti.result);
}

/* Polls the listing until task i is in `state` (bounded). */
static void await_task_state(tu_env *e, tr_ref g, size_t i,
                             tr_task_state state) {
    int64_t deadline = tu_now_ms() + TU_PROMPT_MS;
    tr_task_state last = TR_TASK_RUNNING;
    while (tu_now_ms() < deadline) {
        tr_msg *list = NULL;
        TU_ASSERT_OK(tr_group_list_sync(e->rt, g, TU_PROMPT_MS, &list));
        tr_task_info ti;
        TU_ASSERT_OK(tr_group_list_task(list, i, &ti));
        last = ti.state;
        TU_ASSERT_OK(tr_msg_destroy(&list));
        if (last == state)
            return;
        tu_sleep_ms(2);
    }
    fail_msg("task %zu: still %s, expected %s", i, tr_task_state_name(last),
             tr_task_state_name(state));
}

static tr_ref task_ref(tu_env *e, tr_ref g, size_t i) {
    tr_msg *list = NULL;
    TU_ASSERT_OK(tr_group_list_sync(e->rt, g, TU_PROMPT_MS, &list));
    tr_task_info ti;
    TU_ASSERT_OK(tr_group_list_task(list, i, &ti));
    TU_ASSERT_OK(tr_msg_destroy(&list));
    assert_false(tr_ref_is_none(ti.ref));
    return ti.ref;
}

/* ---- a host actor: starts a group from its own handler (so the group is
 * its child), forwards a done message sent to it, reports its child's
 * exit. */

typedef struct host {
    tr_ref inbox;
    const tr_group_config *cfg;
} host;

static int host_start(tr_ctx *ctx, void *state) {
    host *h = state;
    tr_ref g = TR_REF_NONE;
    int rc = tr_group_start(ctx, h->cfg, &g);
    if (rc != 0)
        return rc;
    tu_report(ctx, h->inbox, R_GROUP_REF, g.id);
    return 0;
}

static int host_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    host *h = state;
    if (tr_msg_tag(msg) == TR_TAG_GROUP_DONE)
        return tr_forward(ctx, h->inbox, msg) == 0 ? 0 : TR_EPROTO;
    return 0;
}

static void host_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    host *h = state;
    tu_report(ctx, h->inbox, R_CHILD_EXIT, (uint32_t)x->reason);
    tr_msg *t = tr_msg_new_bytes(R_CHILD_TEXT, x->text, strlen(x->text) + 1);
    if (t != NULL && tr_send(ctx, h->inbox, &t) != 0)
        (void)tr_msg_destroy(&t);
}

static const tr_behavior host_beh = {
    .name = "host",
    .handle = host_handle,
    .on_start = host_start,
    .on_child_exit = host_child_exit,
    .state_size = sizeof(host),
};

static tr_ref start_host(ev_log *l, const tr_group_config *cfg) {
    host h = {l->e->inbox_ref, cfg};
    TU_ASSERT_OK(tr_runtime_spawn(l->e->rt, &host_beh, &h, sizeof h, NULL));
    return (tr_ref){ev_u64(l, R_GROUP_REF)};
}

/* The host's report of its group's exit; returns its position. */
static size_t expect_child_exit(ev_log *l, int reason, const char *text) {
    size_t pos = ev_find(l, R_CHILD_EXIT, (uint32_t)reason, ALL_BITS);
    tr_msg *t = ev_msg(l, R_CHILD_TEXT, NULL);
    assert_string_equal((const char *)tr_msg_data(t, NULL), text);
    TU_ASSERT_OK(tr_msg_destroy(&t));
    return pos;
}

static void env_up(tu_env *e) {
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e); /* no quiescence stop between steps */
    tu_env_start(e);
}

/* ---- tests */

static void test_all_success(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    spec_set s = {.n = 0};
    static const int64_t delays[] = {30, 10, 20, 0};
    for (int i = 0; i < 4; i++)
        spec_add(&s, &worker_beh, e->inbox_ref, W_RESULT_AFTER, delays[i],
                 100 + (uint64_t)i);
    tr_group_config cfg = {
        .owner = e->inbox_ref, .tasks = s.spec, .ntasks = s.n};
    tr_ref g = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_group_start(e->rt, &cfg, &g));
    assert_false(tr_ref_is_none(g));

    size_t done_at = 0;
    tr_msg *done = take_done(&l, &done_at);
    tr_group_summary sum;
    TU_ASSERT_OK(tr_group_done_summary(done, &sum));
    assert_true(tr_ref_eq(sum.group, g));
    assert_int_equal(sum.status, TR_GROUP_OK);
    assert_int_equal(sum.reason, TR_EXIT_NORMAL);
    assert_int_equal(sum.ntasks, 4);
    assert_int_equal(sum.ndone, 4);
    assert_int_equal(sum.nfailed, 0);
    assert_int_equal(sum.ncancelled, 0);
    for (size_t i = 0; i < 4; i++) {
        assert_task(done, i, TR_TASK_DONE, TR_EXIT_NORMAL, "");
        assert_int_equal(task_result(done, i), 100 + i);
    }
    /* Every task's cleanup ran before the report. */
    assert_int_equal(ev_count(&l, R_STOPPED), 4);
    for (uint32_t i = 0; i < 4; i++)
        assert_int_equal(stopped_reason(&l, i), TR_EXIT_NORMAL);
    tr_task_info ti;
    TU_ASSERT_RC(tr_group_done_failure(done, 0, &ti), TR_EINVAL);
    TU_ASSERT_RC(tr_group_done_task(done, 4, &ti), TR_EINVAL);
    /* The result moves out: the caller owns it, the report keeps none. */
    tr_msg *r0 = NULL;
    TU_ASSERT_OK(tr_group_done_take_result(done, 0, &r0));
    assert_non_null(r0);
    assert_int_equal(tr_msg_u64(r0), 100);
    TU_ASSERT_OK(tr_msg_destroy(&r0));
    TU_ASSERT_OK(tr_group_done_task(done, 0, &ti));
    assert_null(ti.result);
    TU_ASSERT_OK(tr_msg_destroy(&done));
    /* The group ends right after its report. */
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, g), TU_PROMPT_MS);
    ev_free(&l);
    tu_env_finish(e);
}

/* t0 fails (on T_GO, sent once t4 is done); t1 drains and fails too; t2,
 * t3 are cancelled; t4 finished before. The group was started by a host
 * actor: the group ends with the first failure, which the host sees. */
static void test_first_failure_cancels_siblings(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    spec_set s = {.n = 0};
    spec_add(&s, &worker_beh, e->inbox_ref, W_FAIL_ON_GO, 0, 0);
    spec_add(&s, &worker_beh, e->inbox_ref, W_DRAIN_FAIL, 0, 0);
    spec_add(&s, &worker_beh, e->inbox_ref, W_IDLE, 0, 0);
    spec_add(&s, &worker_beh, e->inbox_ref, W_IDLE, 0, 0);
    spec_add(&s, &worker_beh, e->inbox_ref, W_RESULT_AFTER, 0, 104);
    s.spec[3].grace_ms = 1000; /* an explicit per-task grace */
    tr_group_config cfg = {.tasks = s.spec, .ntasks = s.n}; /* owner: host */
    tr_ref g = start_host(&l, &cfg);

    assert_int_equal(stopped_reason(&l, 4), TR_EXIT_NORMAL);
    await_task_state(e, g, 4, TR_TASK_DONE);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, task_ref(e, g, 0), T_GO, 0));

    size_t done_at = 0;
    tr_msg *done = take_done(&l, &done_at);
    tr_group_summary sum;
    TU_ASSERT_OK(tr_group_done_summary(done, &sum));
    assert_int_equal(sum.status, TR_GROUP_FAILED);
    assert_int_equal(sum.reason, TR_EPROTO);
    assert_int_equal(sum.ntasks, 5);
    assert_int_equal(sum.nfailed, 2);
    assert_int_equal(sum.ncancelled, 2);
    assert_int_equal(sum.ndone, 1);
    /* The exception group: the first failure, then the later one. */
    tr_task_info f;
    TU_ASSERT_OK(tr_group_done_failure(done, 0, &f));
    assert_int_equal(f.index, 0);
    assert_int_equal(f.reason, TR_EPROTO);
    assert_string_equal(f.text, "bad 0");
    TU_ASSERT_OK(tr_group_done_failure(done, 1, &f));
    assert_int_equal(f.index, 1);
    assert_int_equal(f.reason, TR_ESYS);
    assert_string_equal(f.text, "cleanup failed 1");
    TU_ASSERT_RC(tr_group_done_failure(done, 2, &f), TR_EINVAL);
    assert_task(done, 0, TR_TASK_FAILED, TR_EPROTO, "bad 0");
    assert_task(done, 1, TR_TASK_FAILED, TR_ESYS, "cleanup failed 1");
    assert_task(done, 2, TR_TASK_CANCELLED, TR_EXIT_CANCELLED, "");
    assert_task(done, 3, TR_TASK_CANCELLED, TR_EXIT_CANCELLED, "");
    assert_task(done, 4, TR_TASK_DONE, TR_EXIT_NORMAL, "");
    assert_int_equal(task_result(done, 4), 104);
    TU_ASSERT_OK(tr_msg_destroy(&done));
    assert_int_equal(ev_count(&l, R_STOPPED), 5);
    assert_int_equal(stopped_reason(&l, 0), TR_EPROTO);
    assert_int_equal(stopped_reason(&l, 1), TR_ESYS);
    assert_int_equal(stopped_reason(&l, 2), TR_EXIT_CANCELLED);
    assert_int_equal(stopped_reason(&l, 3), TR_EXIT_CANCELLED);
    /* The group itself failed with the first failure, after its report. */
    assert_true(expect_child_exit(&l, TR_EPROTO, "task 0 (t0) failed: bad 0") >
                done_at);
    ev_free(&l);
    tu_env_finish(e);
}

static void test_cancel_one_task(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    spec_set s = {.n = 0};
    spec_add(&s, &worker_beh, e->inbox_ref, W_IDLE, 0, 0);
    spec_add(&s, &worker_beh, e->inbox_ref, W_WAIT_GO, 0, 201);
    spec_add(&s, &worker_beh, e->inbox_ref, W_IDLE, 0, 0);
    tr_group_config cfg = {
        .owner = e->inbox_ref, .tasks = s.spec, .ntasks = s.n};
    tr_ref g = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_group_start(e->rt, &cfg, &g));

    TU_ASSERT_OK(tr_group_cancel_task_sync(e->rt, g, 0, TU_PROMPT_MS));
    await_task_state(e, g, 0, TR_TASK_CANCELLED);
    /* Already ended; never existed. */
    TU_ASSERT_RC(tr_group_cancel_task_sync(e->rt, g, 0, TU_PROMPT_MS),
                 TR_ENOTFOUND);
    TU_ASSERT_RC(tr_group_cancel_task_sync(e->rt, g, 99, TU_PROMPT_MS),
                 TR_EINVAL);
    TU_ASSERT_OK(tr_group_cancel_task_sync(e->rt, g, 2, TU_PROMPT_MS));
    await_task_state(e, g, 2, TR_TASK_CANCELLED);
    /* Cancelling single tasks does not fail the group: it still runs. */
    assert_true(tr_actor_alive(e->rt, g));
    assert_int_equal(ev_count(&l, TR_TAG_GROUP_DONE), 0);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, task_ref(e, g, 1), T_GO, 0));

    tr_msg *done = take_done(&l, NULL);
    tr_group_summary sum;
    TU_ASSERT_OK(tr_group_done_summary(done, &sum));
    assert_int_equal(sum.status, TR_GROUP_OK);
    assert_int_equal(sum.reason, TR_EXIT_NORMAL);
    assert_int_equal(sum.nfailed, 0);
    assert_int_equal(sum.ncancelled, 2);
    assert_int_equal(sum.ndone, 1);
    assert_task(done, 0, TR_TASK_CANCELLED, TR_EXIT_CANCELLED, "");
    assert_task(done, 1, TR_TASK_DONE, TR_EXIT_NORMAL, "");
    assert_int_equal(task_result(done, 1), 201);
    assert_task(done, 2, TR_TASK_CANCELLED, TR_EXIT_CANCELLED, "");
    TU_ASSERT_OK(tr_msg_destroy(&done));
    assert_int_equal(stopped_reason(&l, 0), TR_EXIT_CANCELLED);
    assert_int_equal(stopped_reason(&l, 1), TR_EXIT_NORMAL);
    assert_int_equal(stopped_reason(&l, 2), TR_EXIT_CANCELLED);
    /* The group has finished. */
    TU_ASSERT_RC(tr_group_cancel_task_sync(e->rt, g, 1, TU_PROMPT_MS),
                 TR_ESTATE);
    ev_free(&l);
    tu_env_finish(e);
}

static void test_add_while_running_and_list(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    spec_set s = {.n = 0};
    spec_add(&s, &worker_beh, e->inbox_ref, W_WAIT_GO, 0, 300);
    spec_add(&s, &worker_beh, e->inbox_ref, W_RESULT_AFTER, 0, 301);
    spec_add(&s, &worker_beh, e->inbox_ref, W_RESULT_AFTER, 5, 302);
    tr_group_config cfg = {.owner = e->inbox_ref, .tasks = s.spec, .ntasks = 1};
    tr_ref g = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_group_start(e->rt, &cfg, &g));

    uint32_t idx = 99;
    TU_ASSERT_OK(tr_group_add_sync(e->rt, g, &s.spec[1], TU_PROMPT_MS, &idx));
    assert_int_equal(idx, 1);
    TU_ASSERT_OK(tr_group_add_sync(e->rt, g, &s.spec[2], TU_PROMPT_MS, &idx));
    assert_int_equal(idx, 2);
    /* A bad spec is refused before anything is sent. */
    tr_task_spec bad = s.spec[1];
    bad.init_len = sizeof(worker) + 1;
    TU_ASSERT_RC(tr_group_add_sync(e->rt, g, &bad, TU_PROMPT_MS, &idx),
                 TR_EINVAL);
    await_task_state(e, g, 1, TR_TASK_DONE);
    await_task_state(e, g, 2, TR_TASK_DONE);

    tr_msg *list = NULL;
    TU_ASSERT_OK(tr_group_list_sync(e->rt, g, TU_PROMPT_MS, &list));
    TU_ASSERT_OK(tr_group_reply_status(list, NULL));
    assert_int_equal(tr_group_list_count(list), 3);
    tr_ref refs[3];
    for (size_t i = 0; i < 3; i++) {
        tr_task_info ti;
        TU_ASSERT_OK(tr_group_list_task(list, i, &ti));
        char name[16];
        snprintf(name, sizeof name, "t%zu", i);
        assert_string_equal(ti.name, name);
        assert_int_equal(ti.index, i);
        assert_false(tr_ref_is_none(ti.ref));
        assert_null(ti.result);
        assert_int_equal(ti.state, i == 0 ? TR_TASK_RUNNING : TR_TASK_DONE);
        assert_int_equal(ti.reason, TR_EXIT_NORMAL);
        refs[i] = ti.ref;
    }
    tr_task_info ti;
    TU_ASSERT_RC(tr_group_list_task(list, 3, &ti), TR_EINVAL);
    TU_ASSERT_OK(tr_msg_destroy(&list));
    assert_false(tr_ref_eq(refs[0], refs[1]));
    assert_false(tr_ref_eq(refs[1], refs[2]));
    assert_true(tr_actor_alive(e->rt, refs[0]));

    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, refs[0], T_GO, 0));
    tr_msg *done = take_done(&l, NULL);
    tr_group_summary sum;
    TU_ASSERT_OK(tr_group_done_summary(done, &sum));
    assert_int_equal(sum.status, TR_GROUP_OK);
    assert_int_equal(sum.ntasks, 3);
    assert_int_equal(sum.ndone, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_task(done, i, TR_TASK_DONE, TR_EXIT_NORMAL, "");
        assert_int_equal(task_result(done, i), 300 + i);
    }
    TU_ASSERT_OK(tr_msg_destroy(&done));
    /* Adding to (or asking) a finished group. */
    TU_ASSERT_RC(tr_group_add_sync(e->rt, g, &s.spec[1], TU_PROMPT_MS, &idx),
                 TR_ESTATE);
    TU_ASSERT_RC(tr_group_list_sync(e->rt, g, TU_PROMPT_MS, &list), TR_ESTATE);
    assert_null(list);
    ev_free(&l);
    tu_env_finish(e);
}

/* ---- the asynchronous API, from an actor (tr_request / tr_reply) */

typedef struct admin {
    tr_ref inbox;
    tr_ref group;
    tr_ref mute; /* an actor that never answers */
    uint32_t step;
    worker init;
} admin;

enum { A_ADDED = 1, A_LISTED, A_LIST_STATE, A_CANCELLED, A_TIMEOUT };

static void admin_report(tr_ctx *ctx, admin *a, uint32_t step, int value) {
    tu_report(ctx, a->inbox, R_ADMIN, ((uint64_t)step << 32) | (uint32_t)value);
}

static int admin_start(tr_ctx *ctx, void *state) {
    admin *a = state;
    tr_task_spec spec = {"added", &worker_beh, &a->init, sizeof a->init, 0};
    a->step = A_ADDED;
    return tr_group_add(ctx, a->group, &spec, TU_PROMPT_MS, NULL);
}

static int admin_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    admin *a = state;
    if (!tr_msg_is_reply(msg) && tr_msg_tag(msg) != TR_TAG_TIMEOUT)
        return 0;
    uint32_t idx = 0;
    int rc = tr_group_reply_status(msg, &idx);
    switch (a->step) {
    case A_ADDED:
        admin_report(ctx, a, A_ADDED, rc == 0 ? (int)idx : rc);
        a->step = A_LISTED;
        return tr_group_list(ctx, a->group, TU_PROMPT_MS, NULL);
    case A_LISTED: {
        admin_report(ctx, a, A_LISTED,
                     rc == 0 ? (int)tr_group_list_count(msg) : rc);
        tr_task_info ti;
        if (tr_group_list_task(msg, 1, &ti) == 0 &&
            strcmp(ti.name, "added") == 0)
            admin_report(ctx, a, A_LIST_STATE, (int)ti.state);
        a->step = A_CANCELLED;
        return tr_group_cancel_task(ctx, a->group, 0, TU_PROMPT_MS, NULL);
    }
    case A_CANCELLED:
        admin_report(ctx, a, A_CANCELLED, rc);
        a->step = A_TIMEOUT;
        /* Asking an actor that is no group: the request times out. */
        return tr_group_list(ctx, a->mute, 20, NULL);
    case A_TIMEOUT:
        admin_report(ctx, a, A_TIMEOUT, rc);
        return TR_STOP;
    default:
        return 0;
    }
}

static const tr_behavior admin_beh = {
    .name = "admin",
    .handle = admin_handle,
    .on_start = admin_start,
    .state_size = sizeof(admin),
};

static int admin_value(ev_log *l, uint32_t step) {
    size_t i = ev_find(l, R_ADMIN, (uint64_t)step << 32, HIGH_BITS);
    return (int)(uint32_t)l->ev[i].value;
}

static void test_async_api_from_actor(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    tr_ref mute = tu_spawn_keeper(e);
    spec_set s = {.n = 0};
    spec_add(&s, &worker_beh, e->inbox_ref, W_IDLE, 0, 0);
    tr_group_config cfg = {.owner = e->inbox_ref,
                           .tasks = s.spec,
                           .ntasks = s.n,
                           .keep_open = true};
    tr_ref g = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_group_start(e->rt, &cfg, &g));

    admin a = {.inbox = e->inbox_ref, .group = g, .mute = mute};
    a.init = (worker){e->inbox_ref, 1, W_IDLE, 0, 0};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &admin_beh, &a, sizeof a, NULL));
    assert_int_equal(admin_value(&l, A_ADDED), 1);
    assert_int_equal(admin_value(&l, A_LISTED), 2);
    assert_int_equal(admin_value(&l, A_LIST_STATE), TR_TASK_RUNNING);
    assert_int_equal(admin_value(&l, A_CANCELLED), 0);
    assert_int_equal(admin_value(&l, A_TIMEOUT), TR_ETIMEDOUT);
    assert_int_equal(stopped_reason(&l, 0), TR_EXIT_CANCELLED);
    /* keep_open: no report while task 1 runs, nor after, until close. */
    await_task_state(e, g, 0, TR_TASK_CANCELLED);
    tu_expect_silence(e, 50);
    TU_ASSERT_OK(tr_group_cancel_task_sync(e->rt, g, 1, TU_PROMPT_MS));
    assert_int_equal(stopped_reason(&l, 1), TR_EXIT_CANCELLED);
    await_task_state(e, g, 1, TR_TASK_CANCELLED);
    tu_expect_silence(e, 50);
    TU_ASSERT_OK(tr_group_close(e->rt, g));
    tr_msg *done = take_done(&l, NULL);
    tr_group_summary sum;
    TU_ASSERT_OK(tr_group_done_summary(done, &sum));
    assert_int_equal(sum.status, TR_GROUP_OK);
    assert_int_equal(sum.ntasks, 2);
    assert_int_equal(sum.ncancelled, 2);
    tr_task_info ti;
    TU_ASSERT_OK(tr_group_done_task(done, 1, &ti));
    assert_string_equal(ti.name, "added");
    assert_int_equal(ti.state, TR_TASK_CANCELLED);
    TU_ASSERT_OK(tr_msg_destroy(&done));
    /* Asking a group that has ended: refused at once. */
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, g), TU_PROMPT_MS);
    TU_ASSERT_RC(tr_group_close(e->rt, g), TR_ESTATE);
    ev_free(&l);
    tu_env_finish(e);
}

/* Cancelling the group cancels every task; a draining task is killed
 * after its grace; the owner still gets the done message; the group ends
 * with the reason it was cancelled with. */
static void test_cancel_group(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    spec_set s = {.n = 0};
    spec_add(&s, &worker_beh, e->inbox_ref, W_IDLE, 0, 0);
    spec_add(&s, &drainer_beh, e->inbox_ref, W_DRAIN_FOREVER, 0, 0);
    spec_add(&s, &worker_beh, e->inbox_ref, W_IDLE, 0, 0);
    tr_group_config cfg = {
        .owner = e->inbox_ref, .tasks = s.spec, .ntasks = s.n};
    tr_ref g = start_host(&l, &cfg);
    await_task_state(e, g, 2, TR_TASK_RUNNING);

    int64_t t0 = tu_now_ms();
    TU_ASSERT_OK(tr_cancel(e->rt, g, TR_EXIT_CANCELLED, -1));
    size_t done_at = 0;
    tr_msg *done = take_done(&l, &done_at);
    int64_t waited = tu_now_ms() - t0;
    /* The drainer had its whole grace before it was killed. */
    if (waited < SHORT_GRACE_MS - 2)
        fail_msg("done after %lld ms, before the drainer's grace",
                 (long long)waited);
    tr_group_summary sum;
    TU_ASSERT_OK(tr_group_done_summary(done, &sum));
    assert_int_equal(sum.status, TR_GROUP_CANCELLED);
    assert_int_equal(sum.reason, TR_EXIT_CANCELLED);
    assert_int_equal(sum.ntasks, 3);
    assert_int_equal(sum.ncancelled, 3);
    assert_int_equal(sum.nfailed, 0);
    assert_task(done, 0, TR_TASK_CANCELLED, TR_EXIT_CANCELLED, "");
    assert_task(done, 1, TR_TASK_CANCELLED, TR_EXIT_KILLED, "");
    assert_task(done, 2, TR_TASK_CANCELLED, TR_EXIT_CANCELLED, "");
    TU_ASSERT_OK(tr_msg_destroy(&done));
    assert_int_equal(ev_count(&l, R_STOPPED), 3);
    assert_int_equal(stopped_reason(&l, 0), TR_EXIT_CANCELLED);
    assert_int_equal(stopped_reason(&l, 1), TR_EXIT_KILLED);
    assert_int_equal(stopped_reason(&l, 2), TR_EXIT_CANCELLED);
    assert_true(expect_child_exit(&l, TR_EXIT_CANCELLED, "") > done_at);
    /* Adding to a group that was cancelled: refused. */
    TU_ASSERT_RC(tr_group_add_sync(e->rt, g, &s.spec[0], TU_PROMPT_MS, NULL),
                 TR_ESTATE);
    ev_free(&l);
    tu_env_finish(e);
}

/* A group with no task finishes at once; with keep_open it waits for
 * close, even after its tasks have all finished. */
static void test_empty_and_keep_open(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    tr_group_config empty = {.owner = e->inbox_ref};
    tr_ref g = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_group_start(e->rt, &empty, &g));
    tr_msg *done = take_done(&l, NULL);
    tr_group_summary sum;
    TU_ASSERT_OK(tr_group_done_summary(done, &sum));
    assert_int_equal(sum.status, TR_GROUP_OK);
    assert_int_equal(sum.ntasks, 0);
    TU_ASSERT_OK(tr_msg_destroy(&done));

    tr_group_config open = {.owner = e->inbox_ref, .keep_open = true};
    TU_ASSERT_OK(tr_runtime_group_start(e->rt, &open, &g));
    spec_set s = {.n = 0};
    spec_add(&s, &worker_beh, e->inbox_ref, W_RESULT_AFTER, 0, 7);
    uint32_t idx = 99;
    TU_ASSERT_OK(tr_group_add_sync(e->rt, g, &s.spec[0], TU_PROMPT_MS, &idx));
    assert_int_equal(idx, 0);
    assert_int_equal(stopped_reason(&l, 0), TR_EXIT_NORMAL);
    await_task_state(e, g, 0, TR_TASK_DONE);
    tu_expect_silence(e, 100);
    s.init[0].id = 1;
    TU_ASSERT_OK(tr_group_add_sync(e->rt, g, &s.spec[0], TU_PROMPT_MS, &idx));
    assert_int_equal(idx, 1);
    TU_ASSERT_OK(tr_group_close(e->rt, g));
    done = take_done(&l, NULL);
    TU_ASSERT_OK(tr_group_done_summary(done, &sum));
    assert_int_equal(sum.status, TR_GROUP_OK);
    assert_int_equal(sum.ntasks, 2);
    assert_int_equal(sum.ndone, 2);
    assert_int_equal(task_result(done, 0), 7);
    assert_int_equal(task_result(done, 1), 7);
    TU_ASSERT_OK(tr_msg_destroy(&done));
    assert_int_equal(stopped_reason(&l, 1), TR_EXIT_NORMAL);
    ev_free(&l);
    tu_env_finish(e);
}

/* A group killed before its tasks have reported (tr_kill: no drain, its
 * tasks are killed with it) still reports, from its cleanup; a group alive
 * at runtime stop is cleaned up without a report (ASan checks leaks). */
static void test_killed_and_shutdown(void **state) {
    tu_env *e = *state;
    env_up(e);
    ev_log l = {.e = e};
    spec_set s = {.n = 0};
    spec_add(&s, &worker_beh, e->inbox_ref, W_IDLE, 0, 0);
    spec_add(&s, &drainer_beh, e->inbox_ref, W_DRAIN_FOREVER, 0, 0);
    tr_group_config cfg = {
        .owner = e->inbox_ref, .tasks = s.spec, .ntasks = s.n};
    tr_ref g = start_host(&l, &cfg);
    await_task_state(e, g, 1, TR_TASK_RUNNING);
    TU_ASSERT_OK(tr_kill(e->rt, g));
    size_t done_at = 0;
    tr_msg *done = take_done(&l, &done_at);
    tr_group_summary sum;
    TU_ASSERT_OK(tr_group_done_summary(done, &sum));
    assert_int_equal(sum.status, TR_GROUP_CANCELLED);
    assert_int_equal(sum.reason, TR_EXIT_KILLED);
    assert_int_equal(sum.ncancelled, 2);
    assert_task(done, 0, TR_TASK_CANCELLED, TR_EXIT_KILLED, "");
    assert_task(done, 1, TR_TASK_CANCELLED, TR_EXIT_KILLED, "");
    TU_ASSERT_OK(tr_msg_destroy(&done));
    assert_int_equal(stopped_reason(&l, 0), TR_EXIT_KILLED);
    assert_int_equal(stopped_reason(&l, 1), TR_EXIT_KILLED);
    assert_true(expect_child_exit(&l, TR_EXIT_KILLED, "") > done_at);

    /* Alive at stop: a group with a running task and a stored result. */
    spec_set s2 = {.n = 0};
    spec_add(&s2, &worker_beh, e->inbox_ref, W_IDLE, 0, 0);
    spec_add(&s2, &worker_beh, e->inbox_ref, W_RESULT_AFTER, 0, 5);
    tr_group_config cfg2 = {
        .owner = e->inbox_ref, .tasks = s2.spec, .ntasks = s2.n};
    TU_ASSERT_OK(tr_runtime_group_start(e->rt, &cfg2, &g));
    await_task_state(e, g, 1, TR_TASK_DONE);
    ev_free(&l);
    tu_env_finish(e);
}

/* A blocking call from a handler is refused (it would block a worker). */
static int sync_caller_start(tr_ctx *ctx, void *state) {
    tr_ref *inbox = state;
    tr_msg *list = NULL;
    int rc = tr_group_list_sync(tr_ctx_runtime(ctx), *inbox, 10, &list);
    tu_report(ctx, *inbox, R_ADMIN, (uint32_t)rc);
    return TR_STOP;
}

static const tr_behavior sync_caller_beh = {
    .name = "sync-caller",
    .handle = tu_keeper_handle,
    .on_start = sync_caller_start,
    .state_size = sizeof(tr_ref),
};

static void test_errors(void **state) {
    tu_env *e = *state;
    env_up(e);
    tr_ref g = TR_REF_NONE;
    TU_ASSERT_RC(tr_runtime_group_start(e->rt, NULL, &g), TR_EINVAL);
    TU_ASSERT_RC(tr_runtime_group_start(NULL, NULL, &g), TR_EINVAL);
    tr_group_config cfg = {.owner = e->inbox_ref, .ntasks = 1};
    TU_ASSERT_RC(tr_runtime_group_start(e->rt, &cfg, &g), TR_EINVAL);
    worker w = {e->inbox_ref, 0, W_IDLE, 0, 0};
    tr_task_spec spec = {"x", NULL, &w, sizeof w, 0};
    cfg.tasks = &spec;
    TU_ASSERT_RC(tr_runtime_group_start(e->rt, &cfg, &g), TR_EINVAL);
    spec.beh = &worker_beh;
    spec.init_len = sizeof w + 1;
    TU_ASSERT_RC(tr_runtime_group_start(e->rt, &cfg, &g), TR_EINVAL);
    spec.init_len = sizeof w;
    spec.grace_ms = -2;
    TU_ASSERT_RC(tr_runtime_group_start(e->rt, &cfg, &g), TR_EINVAL);
    TU_ASSERT_RC(tr_group_start(NULL, &cfg, &g), TR_EINVAL);
    TU_ASSERT_RC(tr_group_add_sync(e->rt, g, NULL, 10, NULL), TR_EINVAL);
    TU_ASSERT_RC(tr_group_list_sync(e->rt, g, 10, NULL), TR_EINVAL);
    TU_ASSERT_RC(tr_group_cancel_task_sync(e->rt, g, 0, -2), TR_EINVAL);
    /* Accessors on the wrong message. */
    tr_msg *m = tr_msg_new_u64(7, 1);
    tr_group_summary sum;
    tr_task_info ti;
    tr_msg *res = NULL;
    TU_ASSERT_RC(tr_group_done_summary(m, &sum), TR_EPAYLOAD);
    TU_ASSERT_RC(tr_group_done_task(m, 0, &ti), TR_EPAYLOAD);
    TU_ASSERT_RC(tr_group_done_take_result(m, 0, &res), TR_EPAYLOAD);
    TU_ASSERT_RC(tr_group_reply_status(m, NULL), TR_EPAYLOAD);
    TU_ASSERT_RC(tr_group_list_task(m, 0, &ti), TR_EPAYLOAD);
    assert_int_equal(tr_group_list_count(m), 0);
    TU_ASSERT_RC(tr_task_result_take(m, &res), TR_EPAYLOAD);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    assert_string_equal(tr_task_state_name(TR_TASK_CANCELLING), "cancelling");
    /* Blocking call inside a handler. */
    tr_ref inbox = e->inbox_ref;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &sync_caller_beh, &inbox, sizeof inbox, NULL));
    assert_int_equal((int)(uint32_t)tu_recv_u64(e, R_ADMIN, TU_PROMPT_MS),
                     TR_ESTATE);
    /* A "never" grace (clamped, no overflow); a task failing in its drain
     * while the group is being cancelled makes the group FAILED. */
    ev_log l = {.e = e};
    spec_set s = {.n = 0};
    spec_add(&s, &worker_beh, e->inbox_ref, W_DRAIN_FAIL, 0, 0);
    s.spec[0].grace_ms = INT64_MAX;
    tr_group_config one = {
        .owner = e->inbox_ref, .tasks = s.spec, .ntasks = s.n};
    TU_ASSERT_OK(tr_runtime_group_start(e->rt, &one, &g));
    await_task_state(e, g, 0, TR_TASK_RUNNING);
    TU_ASSERT_OK(tr_cancel(e->rt, g, TR_EXIT_CANCELLED, -1));
    tr_msg *done = take_done(&l, NULL);
    TU_ASSERT_OK(tr_group_done_summary(done, &sum));
    assert_int_equal(sum.status, TR_GROUP_FAILED);
    assert_int_equal(sum.reason, TR_ESYS);
    assert_task(done, 0, TR_TASK_FAILED, TR_ESYS, "cleanup failed 0");
    TU_ASSERT_OK(tr_msg_destroy(&done));
    assert_int_equal(stopped_reason(&l, 0), TR_ESYS);
    ev_free(&l);
    /* A sync call to something that never answers times out, boundedly. */
    tr_ref mute = tu_spawn_keeper(e);
    int64_t t0 = tu_now_ms();
    tr_msg *list = NULL;
    TU_ASSERT_RC(tr_group_list_sync(e->rt, mute, 30, &list), TR_ETIMEDOUT);
    assert_true(tu_now_ms() - t0 >= 29);
    assert_null(list);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_all_success),
        TU_TEST(test_first_failure_cancels_siblings),
        TU_TEST(test_cancel_one_task),
        TU_TEST(test_add_while_running_and_list),
        TU_TEST(test_async_api_from_actor),
        TU_TEST(test_cancel_group),
        TU_TEST(test_empty_and_keep_open),
        TU_TEST(test_killed_and_shutdown),
        TU_TEST(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
