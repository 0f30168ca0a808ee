/* test_tree — ownership and the stop sequence (lifecycle.h):
 * tr_parent; a stopping parent stops its children first, youngest first,
 * grandchildren before children; on_stop exactly once with the right
 * reason (normal, shutdown, cancelled, timeout, killed, failures with and
 * without text); draining under cancellation and the kill after the
 * grace; tr_kill of an actor with a deep mailbox; on_child_exit (and
 * escalation); tr_runtime_shutdown (order, a second call forces the stop,
 * a drainer that never stops); dead letters while stopping; failures stay
 * inside their actor. */
#include "testutil.h"

#include "test_tree_util.h"

/* ---- tr_parent */

static void test_parent_is_spawner_or_root(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tr_ref top = tt_spawn(e, &tt_beh, 1, 1, 2, 0); /* 1 -> 9 -> 73 */
    tr_ref other = tt_spawn(e, &tt_beh, 2, 0, 0, 0);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 4);

    tr_ref root = tr_runtime_root(e->rt);
    assert_false(tr_ref_is_none(root));
    assert_false(tr_ref_eq(root, top));
    assert_true(atomic_load(&tt_ref[1]) == top.id);
    assert_true(atomic_load(&tt_ref[2]) == other.id);
    /* Spawned from outside: the root. */
    assert_true(atomic_load(&tt_parent[1]) == root.id);
    assert_true(atomic_load(&tt_parent[2]) == root.id);
    /* Spawned from a hook: the spawner. */
    assert_true(atomic_load(&tt_parent[9]) == top.id);
    assert_true(atomic_load(&tt_parent[73]) == atomic_load(&tt_ref[9]));
    assert_true(atomic_load(&tt_start_seq[1]) < atomic_load(&tt_start_seq[9]));
    assert_true(atomic_load(&tt_start_seq[9]) < atomic_load(&tt_start_seq[73]));
    tu_env_finish(e);
}

/* ---- the stop sequence */

static void test_stop_stops_children_youngest_first(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tr_ref top = tt_spawn(e, &tt_beh, 1, 5, 1, 0); /* kids 9..13 */
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 6);
    for (uint32_t k = 9; k <= 13; k++)
        assert_true(tr_actor_alive(e->rt, tt_ref_of(k)));

    tt_send_main(e, top, TT_STOP, 0);
    tt_expect_n(e, TT_R_STOPPED, 6);
    const uint32_t order[] = {13, 12, 11, 10, 9, 1};
    tt_assert_stop_order(order, 6);
    for (uint32_t k = 9; k <= 13; k++)
        tt_assert_stopped(k, TR_EXIT_SHUTDOWN);
    tt_assert_stopped(1, TR_EXIT_NORMAL);

    /* Nothing is left: run returns by itself. */
    tu_env_expect_run_returns(e, TU_PROMPT_MS);
    tr_runtime_stats s = tu_stats(e);
    assert_int_equal(s.spawned, 6);
    assert_int_equal(s.ended, 6);
    tu_env_finish(e);
}

static void test_grandchildren_stop_before_children(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    /* 1 -> {9, 10}; 9 -> {73, 74}; 10 -> {81, 82} */
    tr_ref top = tt_spawn(e, &tt_beh, 1, 2, 2, 0);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 7);

    tt_send_main(e, top, TT_STOP, 0);
    tt_expect_n(e, TT_R_STOPPED, 7);
    const uint32_t order[] = {82, 81, 10, 74, 73, 9, 1};
    tt_assert_stop_order(order, 7);
    for (size_t k = 0; k + 1 < 7; k++)
        tt_assert_stopped(order[k], TR_EXIT_SHUTDOWN);
    tt_assert_stopped(1, TR_EXIT_NORMAL);
    tu_env_finish(e);
}

/* ---- exit reasons */

static void test_exit_reasons(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    enum { N = 8 };
    tr_ref r[N + 1];
    for (uint32_t i = 1; i <= N; i++)
        r[i] = tt_spawn(e, i == 8 ? &tt_beh_plain : &tt_beh, i, 0, 0, 0);
    tu_spawn_keeper(e);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, N);

    tt_send_main(e, r[1], TT_STOP, 0);
    tt_send_main(e, r[2], TT_FAIL, (uint64_t)(int64_t)TR_EPROTO);
    tt_send_main(e, r[3], TT_FAIL_TEXT, (uint64_t)(int64_t)TR_ETOOBIG);
    TU_ASSERT_OK(tr_cancel(e->rt, r[4], TR_EXIT_CANCELLED, -1));
    TU_ASSERT_OK(tr_cancel(e->rt, r[5], TR_EXIT_TIMEOUT, -1));
    TU_ASSERT_OK(tr_cancel(e->rt, r[6], TR_ECANCELLED, -1));
    TU_ASSERT_OK(tr_kill(e->rt, r[7]));
    TU_ASSERT_OK(tr_cancel(e->rt, r[8], TR_EXIT_CANCELLED, -1));
    tt_expect_n(e, TT_R_STOPPED, N);

    tt_assert_stopped(1, TR_EXIT_NORMAL);
    tt_assert_stopped(2, TR_EPROTO);
    tt_assert_stopped(3, TR_ETOOBIG);
    tt_assert_stopped(4, TR_EXIT_CANCELLED);
    tt_assert_stopped(5, TR_EXIT_TIMEOUT);
    tt_assert_stopped(6, TR_ECANCELLED);
    tt_assert_stopped(7, TR_EXIT_KILLED);
    tt_assert_stopped(8, TR_EXIT_CANCELLED); /* no on_cancel: stop now */

    /* Dead now (all slots released: `ended` counts after the release;
     * the keeper keeps run from returning at quiescence, which would
     * turn the answers into TR_ESTOPPED): cancel and kill say so. */
    TU_ASSERT_EVENTUALLY(tu_stats(e).ended == N, TU_PROMPT_MS);
    for (uint32_t i = 1; i <= N; i++) {
        assert_false(tr_actor_alive(e->rt, r[i]));
        TU_ASSERT_RC(tr_cancel(e->rt, r[i], TR_EXIT_CANCELLED, -1),
                     TR_ENOACTOR);
        TU_ASSERT_RC(tr_kill(e->rt, r[i]), TR_ENOACTOR);
    }
    for (uint32_t i = 1; i <= N; i++)
        assert_int_equal(atomic_load(&tt_stops[i]), 1); /* not again */
    tu_env_finish(e);
}

/* The reason a child is stopped with follows how its parent ended:
 * shutdown when the parent stops or fails by itself, the parent's reason
 * when it was cancelled (cancelled, timeout), killed when it was killed. */
static void test_children_reason_follows_parent(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tr_ref r[6];
    for (uint32_t i = 1; i <= 5; i++)
        r[i] = tt_spawn(e, &tt_beh, i, 1, 1, 0); /* kid: i*8+1 */
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 10);

    tt_send_main(e, r[1], TT_STOP, 0);
    tt_send_main(e, r[2], TT_FAIL, (uint64_t)(int64_t)TR_EPROTO);
    TU_ASSERT_OK(tr_cancel(e->rt, r[3], TR_EXIT_CANCELLED, -1));
    TU_ASSERT_OK(tr_cancel(e->rt, r[4], TR_EXIT_TIMEOUT, -1));
    TU_ASSERT_OK(tr_kill(e->rt, r[5]));
    tt_expect_n(e, TT_R_STOPPED, 10);

    const int parent_reason[] = {0,
                                 TR_EXIT_NORMAL,
                                 TR_EPROTO,
                                 TR_EXIT_CANCELLED,
                                 TR_EXIT_TIMEOUT,
                                 TR_EXIT_KILLED};
    const int kid_reason[] = {0,
                              TR_EXIT_SHUTDOWN,
                              TR_EXIT_SHUTDOWN,
                              TR_EXIT_CANCELLED,
                              TR_EXIT_TIMEOUT,
                              TR_EXIT_KILLED};
    for (uint32_t i = 1; i <= 5; i++) {
        uint32_t kid = i * TT_FANOUT + 1;
        tt_assert_stopped(kid, kid_reason[i]);
        tt_assert_stopped(i, parent_reason[i]);
        const uint32_t order[] = {kid, i};
        tt_assert_stop_order(order, 2);
    }
    tu_env_finish(e);
}

/* ---- cancellation and draining */

static void test_cancel_drain_keeps_handling(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tr_ref d = tt_spawn(e, &tt_beh, 1, 0, 0,
                        TT_F_DRAIN | TT_F_REPORT_CANCEL | TT_F_REPORT_WORK);
    tr_ref s = tt_spawn(e, &tt_beh, 2, 0, 0, TT_F_REPORT_CANCEL);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 2);

    int64_t t0 = tr_now_ms();
    TU_ASSERT_OK(tr_cancel(e->rt, d, TR_EXIT_CANCELLED, -1));
    assert_int_equal(tt_expect(e, TT_R_CANCEL), 1);
    /* Draining: ordinary messages are still handled, in order. */
    for (uint64_t k = 1; k <= 5; k++)
        tt_send_main(e, d, TT_WORK, 0);
    for (uint64_t k = 1; k <= 5; k++)
        assert_int_equal(tt_expect(e, TT_R_WORK), (1ull << 32) | k);
    assert_true(tr_actor_alive(e->rt, d));
    assert_int_equal(atomic_load(&tt_stops[1]), 0);
    /* It ends when a handler says so, long before the 5 s grace, with
     * the reason it was cancelled with (lifecycle.h). */
    tt_send_main(e, d, TT_STOP, 0);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 1);
    tt_assert_stopped(1, TR_EXIT_CANCELLED);
    assert_true(atomic_load(&tt_stop_ms[1]) - t0 < TR_DEFAULT_GRACE_MS);
    assert_int_equal(atomic_load(&tt_work[1]), 5);

    /* Without TR_DRAIN, on_cancel runs and the actor stops at once. */
    TU_ASSERT_OK(tr_cancel(e->rt, s, TR_EXIT_CANCELLED, -1));
    assert_int_equal(tt_expect(e, TT_R_CANCEL), 2);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 2);
    tt_assert_stopped(2, TR_EXIT_CANCELLED);
    tu_env_finish(e);
}

static void test_drainer_killed_after_grace(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    const uint32_t fl = TT_F_DRAIN | TT_F_REPORT_CANCEL | TT_F_REPORT_WORK;
    tr_ref a = tt_spawn(e, &tt_beh_grace200, 1, 0, 0, fl);
    tr_ref b = tt_spawn(e, &tt_beh_grace10s, 2, 0, 0, fl);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 2);

    /* The behaviour's grace (200 ms). */
    int64_t t1 = tr_now_ms();
    TU_ASSERT_OK(tr_cancel(e->rt, a, TR_EXIT_CANCELLED, -1));
    assert_int_equal(tt_expect(e, TT_R_CANCEL), 1);
    tt_send_main(e, a, TT_WORK, 0); /* still handled during the grace */
    assert_int_equal(tt_expect(e, TT_R_WORK), (1ull << 32) | 1);
    assert_int_equal(tu_recv_u64(e, TT_R_STOPPED, 3000), 1);
    tt_assert_stopped(1, TR_EXIT_KILLED);
    int64_t took = atomic_load(&tt_stop_ms[1]) - t1;
    if (took < 200 || took > 3000)
        fail_msg("drainer with a 200 ms grace killed after %lld ms",
                 (long long)took);

    /* tr_cancel's grace overrides the behaviour's (10 s). */
    int64_t t2 = tr_now_ms();
    TU_ASSERT_OK(tr_cancel(e->rt, b, TR_EXIT_CANCELLED, 100));
    assert_int_equal(tt_expect(e, TT_R_CANCEL), 2);
    assert_int_equal(tu_recv_u64(e, TT_R_STOPPED, 3000), 2);
    tt_assert_stopped(2, TR_EXIT_KILLED);
    took = atomic_load(&tt_stop_ms[2]) - t2;
    if (took < 100 || took > 3000)
        fail_msg("drainer cancelled with a 100 ms grace killed after %lld ms",
                 (long long)took);
    tu_env_finish(e);
}

/* ---- tr_kill */

static void test_kill_deep_mailbox(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tr_ref a = tt_spawn(e, &tt_beh, 1, 1, 2, 0); /* 1 -> 9 -> 73 */
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 3);
    uint64_t base = tu_stats(e).dead_letters;

    tt_send_main(e, a, TT_BLOCK, 0);
    assert_int_equal(tt_expect(e, TT_R_BLOCKED), 1);
    const uint64_t n = tu_scaled(100000, 20000);
    for (uint64_t k = 0; k < n; k++)
        tt_send_main(e, a, TT_WORK, k);
    TU_ASSERT_OK(tr_kill(e->rt, a));
    atomic_store(&tt_release, 1);

    tt_expect_n(e, TT_R_STOPPED, 3);
    const uint32_t order[] = {73, 9, 1};
    tt_assert_stop_order(order, 3);
    tt_assert_stopped(73, TR_EXIT_KILLED);
    tt_assert_stopped(9, TR_EXIT_KILLED);
    tt_assert_stopped(1, TR_EXIT_KILLED);
    uint64_t handled = atomic_load(&tt_work[1]);
    print_message("[ INFO     ] killed with %" PRIu64
                  " queued: handled %" PRIu64 "\n",
                  n, handled);
    if (handled * 100 > n)
        fail_msg("killed actor handled %" PRIu64 " of %" PRIu64
                 " queued messages",
                 handled, n);
    /* Every queued message it did not handle is a dead letter. */
    TU_ASSERT_EVENTUALLY(tu_stats(e).dead_letters - base >= n - handled,
                         TU_JOIN_MS);
    tu_env_expect_run_returns(e, TU_PROMPT_MS);
    tu_env_finish(e);
}

/* lifecycle.h: tr_kill "kills target at once (it handles no further
 * message ...)": a message queued before tr_kill returned is never
 * handled, whatever the handler was doing when the kill came. */
static void test_kill_handles_no_further_message(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tr_ref a = tt_spawn(e, &tt_beh, 1, 0, 0, 0);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 1);

    tt_send_main(e, a, TT_BLOCK, 0);
    assert_int_equal(tt_expect(e, TT_R_BLOCKED), 1);
    for (uint64_t k = 0; k < 1000; k++)
        tt_send_main(e, a, TT_WORK, k);
    TU_ASSERT_OK(tr_kill(e->rt, a));
    atomic_store(&tt_release, 1);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 1);
    tt_assert_stopped(1, TR_EXIT_KILLED);
    uint64_t handled = atomic_load(&tt_work[1]);
    if (handled != 0)
        fail_msg("after tr_kill returned, the killed actor still handled "
                 "%" PRIu64 " of the 1000 messages queued before the kill",
                 handled);
    tu_env_finish(e);
}

/* ---- on_child_exit */

static void test_on_child_exit_reasons(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tr_ref p = tt_spawn(e, &tt_beh, 1, 5, 1, TT_F_REPORT_CHILD); /* 9..13 */
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 6);

    const int reasons[] = {TR_EXIT_NORMAL, TR_EPROTO, TR_ETOOBIG,
                           TR_EXIT_CANCELLED, TR_EXIT_KILLED};
    for (uint32_t k = 0; k < 5; k++) {
        uint32_t kid = 9 + k;
        tr_ref kr = tt_ref_of(kid);
        switch (k) {
        case 0:
            tt_send_main(e, kr, TT_STOP, 0);
            break;
        case 1:
            tt_send_main(e, kr, TT_FAIL, (uint64_t)(int64_t)TR_EPROTO);
            break;
        case 2:
            tt_send_main(e, kr, TT_FAIL_TEXT, (uint64_t)(int64_t)TR_ETOOBIG);
            break;
        case 3:
            TU_ASSERT_OK(tr_cancel(e->rt, kr, TR_EXIT_CANCELLED, -1));
            break;
        default:
            TU_ASSERT_OK(tr_kill(e->rt, kr));
            break;
        }
        assert_int_equal(tt_expect(e, TT_R_STOPPED), kid);
        assert_int_equal(tt_expect(e, TT_R_CHILD_EXIT), kid);
        tt_assert_stopped(kid, reasons[k]);
        tt_event ev[8];
        uint32_t n = tt_events_of(TT_EV_CHILD, 1, ev, 8);
        assert_int_equal(n, k + 1);
        assert_true(ev[k].who.id == kr.id);
        assert_int_equal(ev[k].reason, reasons[k]);
        assert_int_equal(ev[k].id, 0);
        assert_string_equal(ev[k].text, k == 2 ? "bad header 42" : "");
    }
    /* The parent lives on, then stops normally; no more hook calls. */
    tt_ping(e, 1);
    tt_send_main(e, p, TT_STOP, 0);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 1);
    tt_assert_stopped(1, TR_EXIT_NORMAL);
    tt_event ev[8];
    assert_int_equal(tt_events_of(TT_EV_CHILD, 1, ev, 8), 5);
    tu_env_finish(e);
}

/* A failure reported from on_child_exit ends the parent with it (after
 * its other children, youngest first); on_child_exit is not called for
 * the children it stops itself. */
static void test_on_child_exit_escalates(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tt_spawn(e, &tt_beh, 1, 3, 1, TT_F_ESCALATE | TT_F_REPORT_CHILD);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 4);

    tt_send_main(e, tt_ref_of(10), TT_FAIL, (uint64_t)(int64_t)TR_EPROTO);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 10);
    assert_int_equal(tt_expect(e, TT_R_CHILD_EXIT), 10);
    tt_expect_n(e, TT_R_STOPPED, 3);
    const uint32_t order[] = {10, 11, 9, 1};
    tt_assert_stop_order(order, 4);
    tt_assert_stopped(10, TR_EPROTO);
    tt_assert_stopped(11, TR_EXIT_SHUTDOWN);
    tt_assert_stopped(9, TR_EXIT_SHUTDOWN);
    tt_assert_stopped(1, TR_EPROTO);
    tt_event ev[8];
    assert_int_equal(tt_events_of(TT_EV_CHILD, 1, ev, 8), 1);
    tu_expect_silence(e, 50);
    tu_env_finish(e);
}

/* ---- failures stay inside their actor */

static void test_failure_is_contained(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tt_spawn(e, &tt_beh, 1, 2, 1, 0); /* a bystander family: 1, 9, 10 */
    enum { FAILERS = 200, FIRST = 300 };
    tr_ref f[FAILERS];
    for (uint32_t i = 0; i < FAILERS; i++)
        f[i] = tt_spawn(e, &tt_beh, FIRST + i, 0, 0, 0);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 3 + FAILERS);

    for (uint32_t i = 0; i < FAILERS; i++) {
        if (i % 2 == 0)
            tt_send_main(e, f[i], TT_FAIL, (uint64_t)(int64_t)TR_ESYS);
        else
            tt_send_main(e, f[i], TT_FAIL_TEXT, (uint64_t)(int64_t)TR_EINVAL);
    }
    tt_expect_n(e, TT_R_STOPPED, FAILERS);
    for (uint32_t i = 0; i < FAILERS; i++)
        tt_assert_stopped(FIRST + i, i % 2 == 0 ? TR_ESYS : TR_EINVAL);

    /* The bystanders are untouched and the runtime takes new work. */
    tt_ping(e, 1);
    tt_ping(e, 9);
    tt_ping(e, 10);
    assert_int_equal(atomic_load(&tt_stops[1]), 0);
    assert_int_equal(atomic_load(&tt_stops[9]), 0);
    assert_int_equal(atomic_load(&tt_stops[10]), 0);
    tt_spawn(e, &tt_beh, 2, 0, 0, 0);
    assert_int_equal(tt_expect(e, TT_R_STARTED), 2);
    tt_ping(e, 2);
    assert_int_not_equal(tu_env_join(e, 0), 0); /* still running */
    tu_env_finish(e);
}

/* ---- tr_runtime_shutdown */

static void test_shutdown_stops_tree_in_order(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    for (uint32_t i = 1; i <= 3; i++)
        tt_spawn(e, &tt_beh, i, 2, 1, 0); /* 1: 9,10  2: 17,18  3: 25,26 */
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 9);

    TU_ASSERT_OK(tr_runtime_shutdown(e->rt));
    tu_env_expect_run_returns(e, TU_JOIN_MS);
    const uint32_t order[] = {26, 25, 3, 18, 17, 2, 10, 9, 1};
    tt_assert_stop_order(order, 9);
    for (size_t k = 0; k < 9; k++)
        tt_assert_stopped(order[k], TR_EXIT_SHUTDOWN);
    tr_runtime_stats s = tu_stats(e);
    assert_int_equal(s.spawned, 9);
    assert_int_equal(s.ended, 9);
    TU_ASSERT_RC(tr_runtime_spawn(e->rt, &tt_beh, NULL, 0, NULL), TR_ESTOPPED);
    tu_env_finish(e);
}

/* The on_stop of an orderly shutdown may send (actor.h: sends are refused
 * only during the runtime's final cleanup), and these sends return 0. A
 * message accepted for an inbox that is still open must reach it: the
 * inbox outlives tr_runtime_run, and the message is neither for a dead
 * receiver (not a dead letter) nor refused. */
static void test_shutdown_reports_reach_inbox(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    for (uint32_t i = 1; i <= 3; i++)
        tt_spawn(e, &tt_beh, i, 2, 1, 0);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 9);

    TU_ASSERT_OK(tr_runtime_shutdown(e->rt));
    tu_env_expect_run_returns(e, TU_JOIN_MS);
    const uint32_t nodes[] = {1, 2, 3, 9, 10, 17, 18, 25, 26};
    for (size_t k = 0; k < 9; k++)
        TU_ASSERT_OK(atomic_load(&tt_stop_send_rc[nodes[k]]));
    uint32_t reports = 0;
    tr_msg *m = NULL;
    while (tr_inbox_recv(e->inbox, 0, &m) == 0) {
        reports += tr_msg_tag(m) == TT_R_STOPPED;
        TU_ASSERT_OK(tr_msg_destroy(&m));
    }
    if (reports != 9)
        fail_msg("9 on_stop sends to the inbox returned 0 during the orderly "
                 "shutdown; %u reached it (dead letters: %" PRIu64 ")",
                 reports, tu_stats(e).dead_letters);
    tu_env_finish(e);
}

/* Top-level actors spawned from outside while the orderly shutdown is
 * under way (the root is stopping and waits for a draining child) are
 * adopted and stopped too: the shutdown still completes, and every one of
 * them runs on_stop once. */
static _Atomic uint32_t g_late_started, g_late_stopped;

static int late_start(tr_ctx *ctx, void *state) {
    (void)ctx;
    (void)state;
    atomic_fetch_add(&g_late_started, 1);
    return 0;
}

static void late_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)state;
    (void)reason;
    atomic_fetch_add(&g_late_stopped, 1);
}

static const tr_behavior late_beh = {
    .name = "late",
    .handle = tu_keeper_handle,
    .on_start = late_start,
    .on_stop = late_stop,
};

enum { LATE_PER_THREAD = 1000 };

typedef struct late_spawner {
    tr_runtime *rt;
    uint32_t accepted, bad_rc;
} late_spawner;

static void *late_spawner_main(void *arg) {
    late_spawner *sp = arg;
    for (uint32_t k = 0; k < LATE_PER_THREAD; k++) {
        int rc = tr_runtime_spawn(sp->rt, &late_beh, NULL, 0, NULL);
        sp->accepted += rc == 0;
        sp->bad_rc += rc != 0 && rc != TR_ESTOPPED;
    }
    return NULL;
}

static void test_spawn_during_shutdown(void **state) {
    tu_env *e = *state;
    tt_reset();
    atomic_store(&g_late_started, 0);
    atomic_store(&g_late_stopped, 0);
    tu_env_init(e, 2);
    /* 1 -> 9: the shutdown waits for 1, which waits for 9 (draining). */
    tt_spawn_ex(e, &tt_beh, 1, 1, 1, 0, TT_F_DRAIN | TT_F_REPORT_CANCEL,
                &tt_beh_grace10s);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 2);

    TU_ASSERT_OK(tr_runtime_shutdown(e->rt));
    assert_int_equal(tt_expect(e, TT_R_CANCEL), 9);
    /* More spawning threads than cores: a spawner preempted in the middle
     * of a spawn meets a root that handles the adoption at once. */
    enum { THREADS = 4, LATE = THREADS * LATE_PER_THREAD };
    pthread_t th[THREADS];
    late_spawner sp[THREADS];
    for (uint32_t t = 0; t < THREADS; t++) {
        sp[t] = (late_spawner){.rt = e->rt};
        assert_int_equal(
            pthread_create(&th[t], NULL, late_spawner_main, &sp[t]), 0);
    }
    uint32_t accepted = 0, bad = 0;
    for (uint32_t t = 0; t < THREADS; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        accepted += sp[t].accepted;
        bad += sp[t].bad_rc;
    }
    assert_int_equal(bad, 0);
    if (accepted != LATE)
        fail_msg("only %u of %u spawns accepted while the shutdown waited for "
                 "a draining actor (stops: node 1 %d, node 9 %d)",
                 accepted, LATE, atomic_load(&tt_stops[1]),
                 atomic_load(&tt_stops[9]));
    tt_send_main(e, tt_ref_of(9), TT_STOP, 0);
    if (tu_env_join(e, 5000) != 0) {
        uint32_t started = atomic_load(&g_late_started);
        uint32_t stopped = atomic_load(&g_late_stopped);
        tr_runtime_stats s = tu_stats(e);
        (void)tr_runtime_shutdown(e->rt); /* force, so the test ends */
        fail_msg("orderly shutdown hung: of %u actors spawned during it, "
                 "%u started and %u stopped (spawned %" PRIu64
                 ", ended %" PRIu64 ")",
                 accepted, started, stopped, s.spawned, s.ended);
    }
    TU_ASSERT_OK(e->run_rc);
    tt_assert_stopped(9, TR_EXIT_SHUTDOWN); /* drained, then stopped */
    tt_assert_stopped(1, TR_EXIT_SHUTDOWN);
    assert_int_equal(atomic_load(&g_late_stopped), accepted);
    assert_true(atomic_load(&g_late_started) <= accepted);
    tr_runtime_stats s = tu_stats(e);
    assert_int_equal(s.spawned, 2 + accepted);
    assert_int_equal(s.ended, 2 + accepted);
    tu_env_finish(e);
}

/* A top-level actor spawned during the shutdown is stopped first (it is
 * the youngest); the draining actor the root was waiting for keeps its
 * grace: it is not asked to stop a second time. */
static void test_spawn_during_shutdown_keeps_grace(void **state) {
    tu_env *e = *state;
    tt_reset();
    atomic_store(&g_late_started, 0);
    atomic_store(&g_late_stopped, 0);
    tu_env_init(e, 2);
    tt_spawn(e, &tt_beh_grace10s, 1, 0, 0, TT_F_DRAIN | TT_F_REPORT_CANCEL);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 1);

    int64_t t0 = tr_now_ms();
    TU_ASSERT_OK(tr_runtime_shutdown(e->rt));
    assert_int_equal(tt_expect(e, TT_R_CANCEL), 1);
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &late_beh, NULL, 0, NULL));
    TU_ASSERT_EVENTUALLY(atomic_load(&g_late_stopped) == 1, TU_PROMPT_MS);
    tu_sleep_ms(100);
    if (atomic_load(&tt_stops[1]) != 0)
        fail_msg("the draining actor (grace 10 s) was stopped %lld ms after "
                 "the shutdown began, with reason %s, once a late top-level "
                 "actor had stopped",
                 (long long)(atomic_load(&tt_stop_ms[1]) - t0),
                 tr_exit_reason_name(atomic_load(&tt_reason[1])));
    assert_true(tr_actor_alive(e->rt, tt_ref_of(1)));
    tt_send_main(e, tt_ref_of(1), TT_STOP, 0);
    tu_env_expect_run_returns(e, TU_JOIN_MS);
    tt_assert_stopped(1, TR_EXIT_SHUTDOWN); /* drained, cancelled by it */
    tu_env_finish(e);
}

/* Shutdown always terminates: a top-level actor that drains forever is
 * killed after its grace, then the next one is stopped. */
static void test_shutdown_kills_drainer_after_grace(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tt_spawn(e, &tt_beh, 1, 0, 0, 0);
    tt_spawn(e, &tt_beh_grace200, 2, 0, 0, TT_F_DRAIN);
    tt_spawn(e, &tt_beh, 3, 0, 0, 0);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 3);

    int64_t t0 = tr_now_ms();
    TU_ASSERT_OK(tr_runtime_shutdown(e->rt));
    tu_env_expect_run_returns(e, TU_JOIN_MS);
    const uint32_t order[] = {3, 2, 1};
    tt_assert_stop_order(order, 3);
    tt_assert_stopped(3, TR_EXIT_SHUTDOWN);
    tt_assert_stopped(2, TR_EXIT_KILLED);
    tt_assert_stopped(1, TR_EXIT_SHUTDOWN);
    assert_true(atomic_load(&tt_stop_ms[2]) - t0 >= 200);
    tu_env_finish(e);
}

static void test_second_shutdown_forces_stop(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    /* 1 -> 9, both drain and would take 10 s to be killed. */
    tt_spawn_ex(e, &tt_beh_grace10s, 1, 1, 1, TT_F_DRAIN | TT_F_REPORT_CANCEL,
                TT_F_DRAIN, &tt_beh_grace10s);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 2);

    TU_ASSERT_OK(tr_runtime_shutdown(e->rt));
    assert_int_equal(tt_expect(e, TT_R_CANCEL), 1);
    /* Draining: the orderly shutdown waits. */
    assert_int_not_equal(tu_env_join(e, 300), 0);
    int64_t t0 = tr_now_ms();
    TU_ASSERT_OK(tr_runtime_shutdown(e->rt));
    tu_env_expect_run_returns(e, 3000);
    assert_true(tr_now_ms() - t0 < 3000);
    tt_assert_stopped(9, TR_EXIT_SHUTDOWN);
    tt_assert_stopped(1, TR_EXIT_SHUTDOWN);
    const uint32_t order[] = {9, 1};
    tt_assert_stop_order(order, 2);
    tr_runtime_stats s = tu_stats(e);
    assert_int_equal(s.spawned, 2);
    assert_int_equal(s.ended, 2);
    tu_env_finish(e);
}

/* ---- dead letters */

/* A cancelled (non-draining) actor takes no ordinary message: while it
 * waits for a child to stop, and once it has handled the cancel. */
static void test_sends_to_stopping_actor_are_dead_letters(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    /* 1 -> 9; 9 drains until told to stop. */
    tr_ref p = tt_spawn_ex(e, &tt_beh, 1, 1, 1, 0,
                           TT_F_DRAIN | TT_F_REPORT_CANCEL, NULL);
    tr_ref b = tt_spawn(e, &tt_beh, 2, 0, 0, 0);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 3);
    enum { K = 100 };

    /* 1 is stopping (it asked 9 to stop) but not dead. */
    uint64_t base = tu_stats(e).dead_letters;
    TU_ASSERT_OK(tr_cancel(e->rt, p, TR_EXIT_CANCELLED, -1));
    assert_int_equal(tt_expect(e, TT_R_CANCEL), 9);
    for (uint32_t k = 0; k < K; k++)
        tt_send_main(e, p, TT_WORK, k); /* accepted: 1 is alive */
    TU_ASSERT_EVENTUALLY(tu_stats(e).dead_letters - base >= K, TU_PROMPT_MS);
    assert_int_equal(tu_stats(e).dead_letters - base, K);
    assert_true(tr_actor_alive(e->rt, p));
    assert_int_equal(atomic_load(&tt_work[1]), 0);
    tt_send_main(e, tt_ref_of(9), TT_STOP, 0);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 9);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 1);
    tt_assert_stopped(9, TR_EXIT_CANCELLED); /* drained, then stopped */
    tt_assert_stopped(1, TR_EXIT_CANCELLED);

    /* 2 is busy when the cancel and K messages arrive behind it. */
    base = tu_stats(e).dead_letters;
    tt_send_main(e, b, TT_BLOCK, 0);
    assert_int_equal(tt_expect(e, TT_R_BLOCKED), 2);
    TU_ASSERT_OK(tr_cancel(e->rt, b, TR_EXIT_CANCELLED, -1));
    for (uint32_t k = 0; k < K; k++)
        tt_send_main(e, b, TT_WORK, k);
    atomic_store(&tt_release, 1);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 2);
    tt_assert_stopped(2, TR_EXIT_CANCELLED);
    TU_ASSERT_EVENTUALLY(tu_stats(e).dead_letters - base >= K, TU_PROMPT_MS);
    assert_int_equal(tu_stats(e).dead_letters - base, K);
    assert_int_equal(atomic_load(&tt_work[2]), 0);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_parent_is_spawner_or_root),
        TU_TEST(test_stop_stops_children_youngest_first),
        TU_TEST(test_grandchildren_stop_before_children),
        TU_TEST(test_exit_reasons),
        TU_TEST(test_children_reason_follows_parent),
        TU_TEST(test_cancel_drain_keeps_handling),
        TU_TEST(test_drainer_killed_after_grace),
        TU_TEST(test_kill_deep_mailbox),
        TU_TEST(test_kill_handles_no_further_message),
        TU_TEST(test_on_child_exit_reasons),
        TU_TEST(test_on_child_exit_escalates),
        TU_TEST(test_failure_is_contained),
        TU_TEST(test_shutdown_stops_tree_in_order),
        TU_TEST(test_shutdown_reports_reach_inbox),
        TU_TEST(test_spawn_during_shutdown),
        TU_TEST(test_spawn_during_shutdown_keeps_grace),
        TU_TEST(test_shutdown_kills_drainer_after_grace),
        TU_TEST(test_second_shutdown_forces_stop),
        TU_TEST(test_sends_to_stopping_actor_are_dead_letters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
