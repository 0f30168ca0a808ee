/* test_links — monitors and links (lifecycle.h): one DOWN per monitor with
 * the reason, the id and the failure text; DOWN/noproc for a dead target;
 * no DOWN after tr_demonitor; an abnormal exit cancels linked actors with
 * the same reason, a normal one does not; trapped exits arrive as
 * TR_TAG_EXIT messages; linking to a dead actor (untrapped: the linker is
 * cancelled with TR_EXIT_NOPROC; trapped: an EXIT message); tr_unlink
 * stops the propagation both ways. */
#include "testutil.h"

#include "test_tree_util.h"

static uint64_t code64(int code) { return (uint64_t)(int64_t)code; }

/* Waits until node idx's slot is released: everything its death sends
 * (DOWN, link exits, the parent's exit) is queued by then. */
static void wait_dead(tu_env *e, uint32_t idx) {
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, tt_ref_of(idx)), TU_PROMPT_MS);
}

/* The single event of `kind` node `at` got. */
static tt_event only_event(int kind, uint32_t at) {
    tt_event ev[8];
    uint32_t n = tt_events_of(kind, at, ev, 8);
    if (n != 1)
        fail_msg("node %u: %u %s events, expected 1", at, n,
                 kind == TT_EV_DOWN ? "DOWN" : "EXIT");
    return ev[0];
}

static void node_monitors(tu_env *e, uint32_t watcher, uint32_t target,
                          int expect_rc) {
    tt_send_main(e, tt_ref_of(watcher), TT_MONITOR, tt_ref_of(target).id);
    TU_ASSERT_RC(tt_expect_rc(e, watcher), expect_rc);
}

static void node_links(tu_env *e, uint32_t from, uint32_t to) {
    tt_send_main(e, tt_ref_of(from), TT_LINK, tt_ref_of(to).id);
    TU_ASSERT_OK(tt_expect_rc(e, from));
}

/* Spawns top-level nodes 1..n with `flags`; waits for their starts. */
static void spawn_nodes(tu_env *e, uint32_t n, uint32_t flags) {
    for (uint32_t i = 1; i <= n; i++)
        tt_spawn(e, &tt_beh, i, 0, 0, flags);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, n);
}

/* ---- monitors */

static void test_monitor_one_down_with_reason(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    spawn_nodes(e, 4, 0); /* 1 watches 2 (fails), 3 watches 4 (tr_fail) */

    node_monitors(e, 1, 2, 0);
    uint64_t id12 = atomic_load(&tt_mon_id[1]);
    assert_true(id12 != 0);
    node_monitors(e, 3, 4, 0);
    uint64_t id34 = atomic_load(&tt_mon_id[3]);
    tr_ref r2 = tt_ref_of(2), r4 = tt_ref_of(4);

    tt_send_main(e, r2, TT_FAIL, code64(TR_EPROTO));
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 2);
    assert_int_equal(tt_expect(e, TT_R_DOWN), 1);
    tt_event d = only_event(TT_EV_DOWN, 1);
    assert_true(d.who.id == r2.id);
    assert_int_equal(d.reason, TR_EPROTO);
    assert_true(d.id == id12);
    assert_string_equal(d.text, "");

    tt_send_main(e, r4, TT_FAIL_TEXT, code64(TR_ETOOBIG));
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 4);
    assert_int_equal(tt_expect(e, TT_R_DOWN), 3);
    d = only_event(TT_EV_DOWN, 3);
    assert_true(d.who.id == r4.id);
    assert_int_equal(d.reason, TR_ETOOBIG);
    assert_true(d.id == id34);
    assert_string_equal(d.text, "bad header 42");

    /* Exactly one each; the watchers live on (a monitor is one-way). */
    wait_dead(e, 2);
    wait_dead(e, 4);
    tt_ping(e, 1);
    tt_ping(e, 3);
    tu_expect_silence(e, 50);
    only_event(TT_EV_DOWN, 1);
    only_event(TT_EV_DOWN, 3);
    assert_int_equal(atomic_load(&tt_stops[1]), 0);
    assert_int_equal(atomic_load(&tt_stops[3]), 0);
    tu_env_finish(e);
}

/* Every way to end gives its reason in the DOWN; two monitors of one
 * target by one watcher give two DOWNs with their own ids. */
static void test_monitor_reasons_and_two_monitors(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    spawn_nodes(e, 5, 0); /* 1 watches 2..5 */
    node_monitors(e, 1, 2, 0);
    uint64_t first = atomic_load(&tt_mon_id[1]);
    node_monitors(e, 1, 2, 0);
    uint64_t second = atomic_load(&tt_mon_id[1]);
    assert_true(first != second);
    node_monitors(e, 1, 3, 0);
    node_monitors(e, 1, 4, 0);
    node_monitors(e, 1, 5, 0);

    tt_send_main(e, tt_ref_of(2), TT_STOP, 0);
    TU_ASSERT_OK(tr_cancel(e->rt, tt_ref_of(3), TR_EXIT_TIMEOUT, -1));
    TU_ASSERT_OK(tr_kill(e->rt, tt_ref_of(4)));
    TU_ASSERT_OK(tr_cancel(e->rt, tt_ref_of(5), TR_EXIT_CANCELLED, -1));
    uint32_t stopped = 0, downs = 0;
    while (stopped < 4 || downs < 5) {
        tr_msg *m = tu_recv(e, TU_PROMPT_MS);
        uint32_t tag = tr_msg_tag(m);
        TU_ASSERT_OK(tr_msg_destroy(&m));
        if (tag == TT_R_STOPPED)
            stopped++;
        else if (tag == TT_R_DOWN)
            downs++;
        else
            fail_msg("unexpected report 0x%x", tag);
    }
    tt_event ev[8];
    uint32_t n = tt_events_of(TT_EV_DOWN, 1, ev, 8);
    assert_int_equal(n, 5);
    const int want[] = {0,
                        0,
                        TR_EXIT_NORMAL,
                        TR_EXIT_TIMEOUT,
                        TR_EXIT_KILLED,
                        TR_EXIT_CANCELLED};
    bool seen_first = false, seen_second = false;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t who = tt_idx_of(ev[k].who);
        if (who < 2 || who > 5)
            fail_msg("DOWN from unknown actor %" PRIx64, ev[k].who.id);
        assert_int_equal(ev[k].reason, want[who]);
        if (who == 2) {
            seen_first |= ev[k].id == first;
            seen_second |= ev[k].id == second;
        }
    }
    assert_true(seen_first && seen_second);
    tu_env_finish(e);
}

static void test_monitor_dead_actor_noproc(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    spawn_nodes(e, 2, 0);
    tr_ref r2 = tt_ref_of(2);
    tt_send_main(e, r2, TT_STOP, 0);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 2);
    wait_dead(e, 2);

    node_monitors(e, 1, 2, 0);
    uint64_t id = atomic_load(&tt_mon_id[1]);
    assert_int_equal(tt_expect(e, TT_R_DOWN), 1);
    tt_event d = only_event(TT_EV_DOWN, 1);
    assert_true(d.who.id == r2.id);
    assert_int_equal(d.reason, TR_EXIT_NOPROC);
    assert_true(d.id == id);
    tt_ping(e, 1);
    tu_env_finish(e);
}

/* The target is alive when tr_monitor sends the request and dead when the
 * request reaches it: the DOWN (noproc) must still name the target. */
static void test_monitor_racing_death_names_target(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    spawn_nodes(e, 2, 0);
    tr_ref r2 = tt_ref_of(2);
    tt_send_main(e, r2, TT_BLOCK_STOP, 0);
    assert_int_equal(tt_expect(e, TT_R_BLOCKED), 2);
    node_monitors(e, 1, 2, 0); /* queued behind the blocked handler */
    uint64_t id = atomic_load(&tt_mon_id[1]);
    atomic_store(&tt_release, 1);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 2);
    assert_int_equal(tt_expect(e, TT_R_DOWN), 1);
    tt_event d = only_event(TT_EV_DOWN, 1);
    assert_true(d.id == id);
    assert_true(d.reason == TR_EXIT_NOPROC || d.reason == TR_EXIT_NORMAL);
    if (d.who.id != r2.id)
        fail_msg("DOWN for a monitor that raced with the target's death: "
                 "who = %" PRIx64 ", expected the target %" PRIx64
                 " (reason %s)",
                 d.who.id, r2.id, tr_exit_reason_name(d.reason));
    tu_env_finish(e);
}

static void test_demonitor_no_down(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    spawn_nodes(e, 2, 0);
    node_monitors(e, 1, 2, 0);
    uint64_t dropped = atomic_load(&tt_mon_id[1]);
    node_monitors(e, 1, 2, 0);
    uint64_t kept = atomic_load(&tt_mon_id[1]);
    tt_send_main(e, tt_ref_of(1), TT_DEMONITOR, dropped);
    TU_ASSERT_OK(tt_expect_rc(e, 1));
    tt_send_main(e, tt_ref_of(1), TT_DEMONITOR, dropped);
    TU_ASSERT_RC(tt_expect_rc(e, 1), TR_ENOTFOUND);

    tt_send_main(e, tt_ref_of(2), TT_FAIL, code64(TR_EPROTO));
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 2);
    assert_int_equal(tt_expect(e, TT_R_DOWN), 1);
    wait_dead(e, 2); /* any DOWN it sent is queued at 1 before the ping */
    tt_ping(e, 1);
    tt_event d = only_event(TT_EV_DOWN, 1);
    assert_true(d.id == kept);
    assert_int_equal(d.reason, TR_EPROTO);

    /* After its DOWN, a monitor is gone too. */
    tt_send_main(e, tt_ref_of(1), TT_DEMONITOR, kept);
    TU_ASSERT_RC(tt_expect_rc(e, 1), TR_ENOTFOUND);
    tu_env_finish(e);
}

/* ---- links */

static void test_link_abnormal_exit_cancels_other(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    /* Pairs (linker, linked): (1,2) 2 fails; (3,4) 3 fails; (5,6) 6 is
     * killed; (7,8) 8 is cancelled with timeout. */
    spawn_nodes(e, 8, 0);
    for (uint32_t i = 1; i <= 7; i += 2)
        node_links(e, i, i + 1);
    tt_send_main(e, tt_ref_of(2), TT_FAIL, code64(TR_EPROTO));
    tt_send_main(e, tt_ref_of(3), TT_FAIL_TEXT, code64(TR_ETOOBIG));
    TU_ASSERT_OK(tr_kill(e->rt, tt_ref_of(6)));
    TU_ASSERT_OK(tr_cancel(e->rt, tt_ref_of(8), TR_EXIT_TIMEOUT, -1));
    tt_expect_n(e, TT_R_STOPPED, 8);

    tt_assert_stopped(2, TR_EPROTO);
    tt_assert_stopped(1, TR_EPROTO);
    tt_assert_stopped(3, TR_ETOOBIG);
    tt_assert_stopped(4, TR_ETOOBIG);
    tt_assert_stopped(6, TR_EXIT_KILLED);
    tt_assert_stopped(5, TR_EXIT_KILLED);
    tt_assert_stopped(8, TR_EXIT_TIMEOUT);
    tt_assert_stopped(7, TR_EXIT_TIMEOUT);
    const uint32_t o12[] = {2, 1}, o34[] = {3, 4}, o56[] = {6, 5},
                   o78[] = {8, 7};
    tt_assert_stop_order(o12, 2);
    tt_assert_stop_order(o34, 2);
    tt_assert_stop_order(o56, 2);
    tt_assert_stop_order(o78, 2);
    tu_env_finish(e);
}

/* A linked actor that is cancelled through the link drains like any
 * cancelled actor (on_cancel sees the reason). */
static void test_link_cancel_runs_on_cancel(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tt_spawn(e, &tt_beh, 1, 0, 0,
             TT_F_DRAIN | TT_F_REPORT_CANCEL | TT_F_REPORT_WORK);
    tt_spawn(e, &tt_beh, 2, 0, 0, 0);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 2);
    node_links(e, 1, 2);
    tt_send_main(e, tt_ref_of(2), TT_FAIL, code64(TR_EPROTO));
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 2);
    assert_int_equal(tt_expect(e, TT_R_CANCEL), 1);
    tt_send_main(e, tt_ref_of(1), TT_WORK, 0);
    assert_int_equal(tt_expect(e, TT_R_WORK), (1ull << 32) | 1);
    tt_send_main(e, tt_ref_of(1), TT_STOP, 0);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 1);
    /* Drained: it ends with the reason the link cancelled it with. */
    tt_assert_stopped(1, TR_EPROTO);
    tu_env_finish(e);
}

static void test_link_normal_exit_does_not_propagate(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    spawn_nodes(e, 4, 0); /* (1,2): 2 stops; (3,4): 3 (the linker) stops */
    node_links(e, 1, 2);
    node_links(e, 3, 4);
    tt_send_main(e, tt_ref_of(2), TT_STOP, 0);
    tt_send_main(e, tt_ref_of(3), TT_STOP, 0);
    tt_expect_n(e, TT_R_STOPPED, 2);
    tt_assert_stopped(2, TR_EXIT_NORMAL);
    tt_assert_stopped(3, TR_EXIT_NORMAL);
    wait_dead(e, 2);
    wait_dead(e, 3);
    tt_ping(e, 1); /* the link exit is handled before the ping */
    tt_ping(e, 4);
    assert_int_equal(atomic_load(&tt_stops[1]), 0);
    assert_int_equal(atomic_load(&tt_stops[4]), 0);
    assert_true(tr_actor_alive(e->rt, tt_ref_of(1)));
    assert_true(tr_actor_alive(e->rt, tt_ref_of(4)));
    tu_env_finish(e);
}

static void test_trap_exits_gets_message(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tt_spawn(e, &tt_beh, 1, 0, 0, TT_F_TRAP);
    for (uint32_t i = 2; i <= 4; i++)
        tt_spawn(e, &tt_beh, i, 0, 0, 0);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 4);

    /* 1 traps: 2's failure (with text) arrives as a message. */
    node_links(e, 1, 2);
    tr_ref r2 = tt_ref_of(2);
    tt_send_main(e, r2, TT_FAIL_TEXT, code64(TR_ETOOBIG));
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 2);
    assert_int_equal(tt_expect(e, TT_R_EXIT), 1);
    tt_event x = only_event(TT_EV_EXIT, 1);
    assert_true(x.who.id == r2.id);
    assert_int_equal(x.reason, TR_ETOOBIG);
    assert_int_equal(x.id, 0);
    assert_string_equal(x.text, "bad header 42");
    tt_ping(e, 1);
    assert_int_equal(atomic_load(&tt_stops[1]), 0);

    /* A kill is trapped too. (The ping makes sure 3 has handled the link
     * request: a kill jumps 3's queue.) */
    node_links(e, 1, 3);
    tt_ping(e, 3);
    tr_ref r3 = tt_ref_of(3);
    TU_ASSERT_OK(tr_kill(e->rt, r3));
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 3);
    assert_int_equal(tt_expect(e, TT_R_EXIT), 1);
    tt_event ev[8];
    assert_int_equal(tt_events_of(TT_EV_EXIT, 1, ev, 8), 2);
    assert_true(ev[1].who.id == r3.id);
    assert_int_equal(ev[1].reason, TR_EXIT_KILLED);
    tt_ping(e, 1);

    /* Trapping off again: the next abnormal exit cancels 1. */
    tt_send_main(e, tt_ref_of(1), TT_TRAP, 0);
    TU_ASSERT_OK(tt_expect_rc(e, 1));
    node_links(e, 1, 4);
    tt_send_main(e, tt_ref_of(4), TT_FAIL, code64(TR_EPROTO));
    tt_expect_n(e, TT_R_STOPPED, 2);
    tt_assert_stopped(4, TR_EPROTO);
    tt_assert_stopped(1, TR_EPROTO);
    assert_int_equal(tt_events_of(TT_EV_EXIT, 1, ev, 8), 2);
    tu_env_finish(e);
}

/* lifecycle.h: "Linking to a dead actor delivers the exit (TR_EXIT_NOPROC)
 * at once", and an exit other than normal cancels an untrapping linker
 * with that reason. */
static void test_link_dead_actor_noproc(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tt_spawn(e, &tt_beh, 1, 0, 0, 0);
    tt_spawn(e, &tt_beh, 2, 0, 0, TT_F_TRAP);
    tt_spawn(e, &tt_beh, 3, 0, 0, 0);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 3);
    tr_ref r3 = tt_ref_of(3);
    tt_send_main(e, r3, TT_STOP, 0);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 3);
    wait_dead(e, 3);

    /* Trapped: an EXIT message, the linker lives. */
    node_links(e, 2, 3);
    assert_int_equal(tt_expect(e, TT_R_EXIT), 2);
    tt_event x = only_event(TT_EV_EXIT, 2);
    assert_true(x.who.id == r3.id);
    assert_int_equal(x.reason, TR_EXIT_NOPROC);
    tt_ping(e, 2);

    /* Untrapped: the linker is cancelled with noproc. */
    node_links(e, 1, 3);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 1);
    tt_assert_stopped(1, TR_EXIT_NOPROC);
    tu_env_finish(e);
}

/* The target is alive when tr_link sends the request and dead when the
 * request reaches it: the trapped EXIT (noproc) must name the target. */
static void test_link_racing_death_names_target(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tt_spawn(e, &tt_beh, 1, 0, 0, TT_F_TRAP);
    tt_spawn(e, &tt_beh, 2, 0, 0, 0);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 2);
    tr_ref r2 = tt_ref_of(2);
    tt_send_main(e, r2, TT_BLOCK_STOP, 0);
    assert_int_equal(tt_expect(e, TT_R_BLOCKED), 2);
    node_links(e, 1, 2); /* queued behind the blocked handler */
    atomic_store(&tt_release, 1);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 2);
    assert_int_equal(tt_expect(e, TT_R_EXIT), 1);
    tt_event x = only_event(TT_EV_EXIT, 1);
    assert_true(x.reason == TR_EXIT_NOPROC || x.reason == TR_EXIT_NORMAL);
    if (x.who.id != r2.id)
        fail_msg("EXIT for a link that raced with the target's death: who = "
                 "%" PRIx64 ", expected the target %" PRIx64 " (reason %s)",
                 x.who.id, r2.id, tr_exit_reason_name(x.reason));
    tu_env_finish(e);
}

/* After that raced exit, the target is dead: linking to it again must
 * deliver another noproc exit at once (lifecycle.h), not be taken for an
 * existing link. */
static void test_relink_after_racing_death(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    tt_spawn(e, &tt_beh, 1, 0, 0, TT_F_TRAP);
    tt_spawn(e, &tt_beh, 2, 0, 0, 0);
    tu_env_start(e);
    tt_expect_n(e, TT_R_STARTED, 2);
    tt_send_main(e, tt_ref_of(2), TT_BLOCK_STOP, 0);
    assert_int_equal(tt_expect(e, TT_R_BLOCKED), 2);
    node_links(e, 1, 2);
    atomic_store(&tt_release, 1);
    assert_int_equal(tt_expect(e, TT_R_STOPPED), 2);
    assert_int_equal(tt_expect(e, TT_R_EXIT), 1);
    wait_dead(e, 2);

    node_links(e, 1, 2);
    tr_msg *m = NULL;
    int rc = tr_inbox_recv(e->inbox, 2000, &m);
    if (rc != 0)
        fail_msg("tr_link to a dead actor (after a link that raced with its "
                 "death) returned 0 but delivered no exit within 2 s");
    uint32_t tag = tr_msg_tag(m);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    assert_int_equal(tag, TT_R_EXIT);
    tt_event ev[8];
    assert_int_equal(tt_events_of(TT_EV_EXIT, 1, ev, 8), 2);
    assert_int_equal(ev[1].reason, TR_EXIT_NOPROC);
    assert_true(ev[1].who.id == tt_ref_of(2).id);
    tu_env_finish(e);
}

static void test_unlink_stops_propagation(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    spawn_nodes(e, 4, 0); /* (1,2): 2 fails; (3,4): 3 (the unlinker) fails */
    node_links(e, 1, 2);
    node_links(e, 3, 4);
    tt_send_main(e, tt_ref_of(1), TT_UNLINK, tt_ref_of(2).id);
    TU_ASSERT_OK(tt_expect_rc(e, 1));
    tt_send_main(e, tt_ref_of(3), TT_UNLINK, tt_ref_of(4).id);
    TU_ASSERT_OK(tt_expect_rc(e, 3));
    tt_send_main(e, tt_ref_of(1), TT_UNLINK, tt_ref_of(2).id);
    TU_ASSERT_RC(tt_expect_rc(e, 1), TR_ENOTFOUND);

    tt_send_main(e, tt_ref_of(2), TT_FAIL, code64(TR_EPROTO));
    tt_send_main(e, tt_ref_of(3), TT_FAIL, code64(TR_EPROTO));
    tt_expect_n(e, TT_R_STOPPED, 2);
    tt_assert_stopped(2, TR_EPROTO);
    tt_assert_stopped(3, TR_EPROTO);
    wait_dead(e, 2);
    wait_dead(e, 3);
    tt_ping(e, 1);
    tt_ping(e, 4);
    assert_int_equal(atomic_load(&tt_stops[1]), 0);
    assert_int_equal(atomic_load(&tt_stops[4]), 0);
    tu_env_finish(e);
}

static void test_link_misuse(void **state) {
    tu_env *e = *state;
    tt_reset();
    tu_env_init(e, 2);
    spawn_nodes(e, 1, 0);
    tt_send_main(e, tt_ref_of(1), TT_LINK, tt_ref_of(1).id);
    TU_ASSERT_RC(tt_expect_rc(e, 1), TR_EINVAL);
    tt_send_main(e, tt_ref_of(1), TT_DEMONITOR, 12345);
    TU_ASSERT_RC(tt_expect_rc(e, 1), TR_ENOTFOUND);
    tt_ping(e, 1);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_monitor_one_down_with_reason),
        TU_TEST(test_monitor_reasons_and_two_monitors),
        TU_TEST(test_monitor_dead_actor_noproc),
        TU_TEST(test_monitor_racing_death_names_target),
        TU_TEST(test_demonitor_no_down),
        TU_TEST(test_link_abnormal_exit_cancels_other),
        TU_TEST(test_link_cancel_runs_on_cancel),
        TU_TEST(test_link_normal_exit_does_not_propagate),
        TU_TEST(test_trap_exits_gets_message),
        TU_TEST(test_link_dead_actor_noproc),
        TU_TEST(test_link_racing_death_names_target),
        TU_TEST(test_relink_after_racing_death),
        TU_TEST(test_unlink_stops_propagation),
        TU_TEST(test_link_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
