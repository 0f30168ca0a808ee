/* tests/test_tree_util.h — a scriptable "node" actor and a bookkeeping
 * table shared by test_tree.c and test_links.c (include after testutil.h).
 *
 * A node is numbered by the test (idx, 1..TT_MAX-1). It records its start,
 * its reference, its parent and its on_stop (count, reason, a global
 * sequence number, the time) in the tables below, and reports to the
 * test's inbox. Its children are numbered idx*8+1+i, so a test knows every
 * actor's number in advance: a top-level node 1 with 2 kids and depth 2 is
 * 1 -> {9, 10}, 9 -> {73, 74}, 10 -> {81, 82}.
 *
 * The tables are written from handlers and hooks (atomics, or the event
 * log's mutex) and read by the main thread after an inbox report (the
 * inbox hand-off orders them) or after tr_runtime_run returned. */
#ifndef TROUPE_TEST_TREE_UTIL_H
#define TROUPE_TEST_TREE_UTIL_H

#include "testutil.h"

#define TT_MAX 1024
#define TT_FANOUT 8

/* Messages to a node (tag; the u64 value in brackets). */
enum {
    TT_STOP = 1,   /* return TR_STOP */
    TT_FAIL,       /* return the (negative) code [code] */
    TT_FAIL_TEXT,  /* return tr_fail(ctx, code, "bad header 42") [code] */
    TT_WORK,       /* count it in tt_work[idx] (and report if asked) */
    TT_BLOCK,      /* report TT_R_BLOCKED, wait for tt_release, return 0 */
    TT_BLOCK_STOP, /* the same, then return TR_STOP */
    TT_PING,       /* report TT_R_PONG */
    TT_LINK,       /* tr_link [ref id] -> TT_R_RC */
    TT_UNLINK,     /* tr_unlink [ref id] -> TT_R_RC */
    TT_MONITOR,    /* tr_monitor [ref id] -> tt_mon_id[idx], TT_R_RC */
    TT_DEMONITOR,  /* tr_demonitor [monitor id] -> TT_R_RC */
    TT_TRAP,       /* tr_trap_exits [0/1] -> TT_R_RC (0) */
};

/* Reports to the inbox (tag; the u64 value). */
enum {
    TT_R_STARTED = 100, /* idx */
    TT_R_STOPPED,       /* idx */
    TT_R_CANCEL,        /* idx (on_cancel ran; with TT_F_REPORT_CANCEL) */
    TT_R_WORK,          /* idx << 32 | work count (TT_F_REPORT_WORK) */
    TT_R_BLOCKED,       /* idx */
    TT_R_PONG,          /* idx */
    TT_R_RC,            /* idx << 32 | (uint32_t)rc */
    TT_R_DOWN,          /* idx (event logged) */
    TT_R_EXIT,          /* idx (trapped exit logged) */
    TT_R_CHILD_EXIT,    /* idx of the child (event logged) */
};

/* Node flags. */
enum {
    TT_F_DRAIN = 1u << 0,         /* on_cancel returns TR_DRAIN */
    TT_F_REPORT_CANCEL = 1u << 1, /* on_cancel reports TT_R_CANCEL */
    TT_F_REPORT_WORK = 1u << 2,   /* TT_WORK reports TT_R_WORK */
    TT_F_TRAP = 1u << 3,          /* tr_trap_exits(true) in on_start */
    TT_F_ESCALATE = 1u << 4,      /* on_child_exit: a failed child fails me */
    TT_F_REPORT_CHILD = 1u << 5,  /* on_child_exit reports (and logs) */
};

typedef struct tt_node {
    tr_ref report_to;
    uint32_t idx;
    uint32_t kids;  /* children spawned in on_start */
    uint32_t depth; /* levels of kids below this node (0: none) */
    uint32_t flags;
    uint32_t kid_flags;         /* flags of every descendant */
    const tr_behavior *kid_beh; /* behaviour of every descendant; NULL:
                                   tt_beh */
} tt_node;

/* ---- bookkeeping */

static _Atomic uint64_t tt_seq; /* global order of starts and stops */
static _Atomic int tt_starts[TT_MAX];
static _Atomic int tt_stops[TT_MAX];
static _Atomic int tt_reason[TT_MAX];
static _Atomic uint64_t tt_start_seq[TT_MAX];
static _Atomic uint64_t tt_stop_seq[TT_MAX];
static _Atomic int64_t tt_stop_ms[TT_MAX];
static _Atomic uint64_t tt_ref[TT_MAX];
static _Atomic uint64_t tt_parent[TT_MAX];
static _Atomic uint64_t tt_work[TT_MAX];
static _Atomic uint64_t tt_mon_id[TT_MAX];
static _Atomic int tt_stop_send_rc[TT_MAX]; /* on_stop's report: its rc */
static _Atomic int tt_release;              /* lets TT_BLOCK handlers go */

/* DOWN, trapped EXIT and on_child_exit notices, in arrival order. */
enum { TT_EV_DOWN = 1, TT_EV_EXIT, TT_EV_CHILD };
typedef struct tt_event {
    int kind;
    uint32_t at; /* the node that got it */
    tr_ref who;
    int reason;
    uint64_t id;
    char text[64];
} tt_event;

#define TT_MAX_EVENTS 256
static pthread_mutex_t tt_ev_lock = PTHREAD_MUTEX_INITIALIZER;
static tt_event tt_events[TT_MAX_EVENTS];
static uint32_t tt_nevents;

static inline void tt_reset(void) {
    atomic_store(&tt_seq, 1);
    for (int i = 0; i < TT_MAX; i++) {
        atomic_store(&tt_starts[i], 0);
        atomic_store(&tt_stops[i], 0);
        atomic_store(&tt_reason[i], 12345);
        atomic_store(&tt_start_seq[i], 0);
        atomic_store(&tt_stop_seq[i], 0);
        atomic_store(&tt_stop_ms[i], 0);
        atomic_store(&tt_ref[i], 0);
        atomic_store(&tt_parent[i], 0);
        atomic_store(&tt_work[i], 0);
        atomic_store(&tt_mon_id[i], 0);
        atomic_store(&tt_stop_send_rc[i], 12345);
    }
    atomic_store(&tt_release, 0);
    pthread_mutex_lock(&tt_ev_lock);
    tt_nevents = 0;
    pthread_mutex_unlock(&tt_ev_lock);
}

static inline void tt_log_event(int kind, uint32_t at, const tr_exit *x) {
    pthread_mutex_lock(&tt_ev_lock);
    if (tt_nevents < TT_MAX_EVENTS) {
        tt_event *ev = &tt_events[tt_nevents++];
        ev->kind = kind;
        ev->at = at;
        ev->who = x->who;
        ev->reason = x->reason;
        ev->id = x->id;
        snprintf(ev->text, sizeof ev->text, "%s",
                 x->text != NULL ? x->text : "(null)");
    }
    pthread_mutex_unlock(&tt_ev_lock);
}

/* Copies the events of `kind` received by node `at` (main thread). */
static inline uint32_t tt_events_of(int kind, uint32_t at, tt_event *out,
                                    uint32_t max) {
    uint32_t n = 0;
    pthread_mutex_lock(&tt_ev_lock);
    for (uint32_t i = 0; i < tt_nevents; i++)
        if (tt_events[i].kind == kind && tt_events[i].at == at && n < max)
            out[n++] = tt_events[i];
    pthread_mutex_unlock(&tt_ev_lock);
    return n;
}

/* The node whose reference is r, or 0. */
static inline uint32_t tt_idx_of(tr_ref r) {
    if (r.id == 0)
        return 0;
    for (uint32_t i = 1; i < TT_MAX; i++)
        if (atomic_load(&tt_ref[i]) == r.id)
            return i;
    return 0;
}

static inline uint64_t tt_rc64(uint32_t idx, int rc) {
    return ((uint64_t)idx << 32) | (uint32_t)rc;
}

/* ---- the node actor */

static inline void tt_send(tr_ctx *ctx, tr_ref to, uint32_t tag, uint64_t v) {
    tu_report(ctx, to, tag, v);
}

static inline int tt_node_start(tr_ctx *ctx, void *state);
static inline int tt_node_handle(tr_ctx *ctx, void *state, tr_msg *msg);
static inline void tt_node_stop(tr_ctx *ctx, void *state, int reason);
static inline int tt_node_cancel(tr_ctx *ctx, void *state, int reason);
static inline void tt_node_child_exit(tr_ctx *ctx, void *state,
                                      const tr_exit *x);

/* The default node: default grace (TR_DEFAULT_GRACE_MS). */
__attribute__((unused)) static const tr_behavior tt_beh = {
    .name = "tt_node",
    .handle = tt_node_handle,
    .on_start = tt_node_start,
    .on_stop = tt_node_stop,
    .on_cancel = tt_node_cancel,
    .on_child_exit = tt_node_child_exit,
    .state_size = sizeof(tt_node),
};

/* No on_cancel (default: stop at once) and no on_child_exit. */
__attribute__((unused)) static const tr_behavior tt_beh_plain = {
    .name = "tt_plain",
    .handle = tt_node_handle,
    .on_start = tt_node_start,
    .on_stop = tt_node_stop,
    .state_size = sizeof(tt_node),
};

/* Short and long graces. */
__attribute__((unused)) static const tr_behavior tt_beh_grace200 = {
    .name = "tt_grace200",
    .handle = tt_node_handle,
    .on_start = tt_node_start,
    .on_stop = tt_node_stop,
    .on_cancel = tt_node_cancel,
    .on_child_exit = tt_node_child_exit,
    .state_size = sizeof(tt_node),
    .grace_ms = 200,
};

__attribute__((unused)) static const tr_behavior tt_beh_grace10s = {
    .name = "tt_grace10s",
    .handle = tt_node_handle,
    .on_start = tt_node_start,
    .on_stop = tt_node_stop,
    .on_cancel = tt_node_cancel,
    .on_child_exit = tt_node_child_exit,
    .state_size = sizeof(tt_node),
    .grace_ms = 10000,
};

static inline int tt_node_start(tr_ctx *ctx, void *state) {
    tt_node *st = state;
    uint32_t i = st->idx;
    if (i == 0 || i >= TT_MAX)
        return TR_EINVAL;
    atomic_store(&tt_start_seq[i], atomic_fetch_add(&tt_seq, 1));
    atomic_store(&tt_ref[i], tr_self(ctx).id);
    atomic_store(&tt_parent[i], tr_parent(ctx).id);
    atomic_fetch_add(&tt_starts[i], 1);
    if (st->flags & TT_F_TRAP)
        tr_trap_exits(ctx, true);
    if (st->depth > 0) {
        for (uint32_t k = 0; k < st->kids && k < TT_FANOUT; k++) {
            tt_node kid = {
                .report_to = st->report_to,
                .idx = i * TT_FANOUT + 1 + k,
                .kids = st->kids,
                .depth = st->depth - 1,
                .flags = st->kid_flags,
                .kid_flags = st->kid_flags,
                .kid_beh = st->kid_beh,
            };
            if (kid.idx >= TT_MAX)
                return TR_EINVAL;
            const tr_behavior *b = st->kid_beh != NULL ? st->kid_beh : &tt_beh;
            int rc = tr_spawn(ctx, b, &kid, sizeof kid, NULL);
            if (rc != 0)
                return rc;
        }
    }
    tt_send(ctx, st->report_to, TT_R_STARTED, i);
    return 0;
}

static inline void tt_node_stop(tr_ctx *ctx, void *state, int reason) {
    tt_node *st = state;
    uint32_t i = st->idx;
    if (i == 0 || i >= TT_MAX)
        return;
    atomic_store(&tt_stop_seq[i], atomic_fetch_add(&tt_seq, 1));
    atomic_store(&tt_reason[i], reason);
    atomic_store(&tt_stop_ms[i], tr_now_ms());
    atomic_fetch_add(&tt_stops[i], 1);
    /* Refused during the runtime's final cleanup (documented): then the
     * tables are what the test reads. */
    atomic_store(&tt_stop_send_rc[i],
                 tr_send_u64(ctx, st->report_to, TT_R_STOPPED, i));
}

static inline int tt_node_cancel(tr_ctx *ctx, void *state, int reason) {
    tt_node *st = state;
    (void)reason;
    if (st->flags & TT_F_REPORT_CANCEL)
        tt_send(ctx, st->report_to, TT_R_CANCEL, st->idx);
    return (st->flags & TT_F_DRAIN) ? TR_DRAIN : 0;
}

static inline void tt_node_child_exit(tr_ctx *ctx, void *state,
                                      const tr_exit *x) {
    tt_node *st = state;
    if (st->flags & TT_F_REPORT_CHILD) {
        tt_log_event(TT_EV_CHILD, st->idx, x);
        tt_send(ctx, st->report_to, TT_R_CHILD_EXIT, tt_idx_of(x->who));
    }
    if ((st->flags & TT_F_ESCALATE) && x->reason < 0)
        (void)tr_fail(ctx, x->reason, "child %u failed", tt_idx_of(x->who));
}

static inline void tt_block(void) {
    int64_t deadline = tu_now_ms() + 10000;
    while (!atomic_load(&tt_release) && tu_now_ms() < deadline)
        tu_sleep_ms(1);
}

static inline int tt_node_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    tt_node *st = state;
    uint32_t i = st->idx;
    uint64_t v = tr_msg_u64(msg);
    switch (tr_msg_tag(msg)) {
    case TT_STOP:
        return TR_STOP;
    case TT_FAIL:
        return (int)(int64_t)v;
    case TT_FAIL_TEXT:
        return tr_fail(ctx, (int)(int64_t)v, "bad header %d", 42);
    case TT_WORK: {
        uint64_t n = atomic_fetch_add(&tt_work[i], 1) + 1;
        if (st->flags & TT_F_REPORT_WORK)
            tt_send(ctx, st->report_to, TT_R_WORK, ((uint64_t)i << 32) | n);
        return 0;
    }
    case TT_BLOCK:
    case TT_BLOCK_STOP:
        tt_send(ctx, st->report_to, TT_R_BLOCKED, i);
        tt_block();
        return tr_msg_tag(msg) == TT_BLOCK_STOP ? TR_STOP : 0;
    case TT_PING:
        tt_send(ctx, st->report_to, TT_R_PONG, i);
        return 0;
    case TT_LINK:
        tt_send(ctx, st->report_to, TT_R_RC,
                tt_rc64(i, tr_link(ctx, (tr_ref){v})));
        return 0;
    case TT_UNLINK:
        tt_send(ctx, st->report_to, TT_R_RC,
                tt_rc64(i, tr_unlink(ctx, (tr_ref){v})));
        return 0;
    case TT_MONITOR: {
        uint64_t id = 0;
        int rc = tr_monitor(ctx, (tr_ref){v}, &id);
        atomic_store(&tt_mon_id[i], id);
        tt_send(ctx, st->report_to, TT_R_RC, tt_rc64(i, rc));
        return 0;
    }
    case TT_DEMONITOR:
        tt_send(ctx, st->report_to, TT_R_RC, tt_rc64(i, tr_demonitor(ctx, v)));
        return 0;
    case TT_TRAP:
        tr_trap_exits(ctx, v != 0);
        tt_send(ctx, st->report_to, TT_R_RC, tt_rc64(i, 0));
        return 0;
    case TR_TAG_DOWN:
    case TR_TAG_EXIT: {
        tr_exit x;
        bool down = tr_msg_tag(msg) == TR_TAG_DOWN;
        if (tr_msg_exit(msg, &x) != 0) {
            x = (tr_exit){.who = TR_REF_NONE, .reason = 9999, .text = "?"};
        }
        tt_log_event(down ? TT_EV_DOWN : TT_EV_EXIT, i, &x);
        tt_send(ctx, st->report_to, down ? TT_R_DOWN : TT_R_EXIT, i);
        return 0;
    }
    default:
        return 0;
    }
}

/* ---- main-thread helpers */

/* Spawns a top-level node whose descendants get kid_flags and kid_beh. */
static inline tr_ref tt_spawn_ex(tu_env *e, const tr_behavior *beh,
                                 uint32_t idx, uint32_t kids, uint32_t depth,
                                 uint32_t flags, uint32_t kid_flags,
                                 const tr_behavior *kid_beh) {
    tt_node init = {.report_to = e->inbox_ref,
                    .idx = idx,
                    .kids = kids,
                    .depth = depth,
                    .flags = flags,
                    .kid_flags = kid_flags,
                    .kid_beh = kid_beh};
    tr_ref r = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, beh, &init, sizeof init, &r));
    assert_false(tr_ref_is_none(r));
    return r;
}

/* Spawns a top-level node; its descendants are plain tt_beh nodes. */
static inline tr_ref tt_spawn(tu_env *e, const tr_behavior *beh, uint32_t idx,
                              uint32_t kids, uint32_t depth, uint32_t flags) {
    return tt_spawn_ex(e, beh, idx, kids, depth, flags, 0, NULL);
}

static inline tr_ref tt_ref_of(uint32_t idx) {
    return (tr_ref){atomic_load(&tt_ref[idx])};
}

/* The next inbox message must have `tag`; returns its value. */
static inline uint64_t tt_expect(tu_env *e, uint32_t tag) {
    return tu_recv_u64(e, tag, TU_PROMPT_MS);
}

/* Receives n messages that must all have `tag` (values not checked). */
static inline void tt_expect_n(tu_env *e, uint32_t tag, uint32_t n) {
    for (uint32_t k = 0; k < n; k++)
        (void)tt_expect(e, tag);
}

/* The next message is TT_R_RC from node idx: returns the rc. */
static inline int tt_expect_rc(tu_env *e, uint32_t idx) {
    uint64_t v = tt_expect(e, TT_R_RC);
    if ((uint32_t)(v >> 32) != idx)
        fail_msg("TT_R_RC from node %u, expected node %u", (uint32_t)(v >> 32),
                 idx);
    return (int)(int32_t)(uint32_t)v;
}

static inline void tt_send_main(tu_env *e, tr_ref to, uint32_t tag,
                                uint64_t v) {
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, to, tag, v));
}

/* Sends TT_PING and expects the pong: the node is alive and handling. */
static inline void tt_ping(tu_env *e, uint32_t idx) {
    tt_send_main(e, tt_ref_of(idx), TT_PING, 0);
    uint64_t v = tt_expect(e, TT_R_PONG);
    assert_int_equal(v, idx);
}

/* on_stop of node idx ran exactly once, with `reason`. */
static inline void tt_assert_stopped(uint32_t idx, int reason) {
    int n = atomic_load(&tt_stops[idx]);
    int r = atomic_load(&tt_reason[idx]);
    if (n != 1)
        fail_msg("node %u: on_stop ran %d times, expected once", idx, n);
    if (r != reason)
        fail_msg("node %u: on_stop reason %d (%s), expected %d (%s)", idx, r,
                 tr_exit_reason_name(r), reason, tr_exit_reason_name(reason));
}

/* The on_stop of the nodes in `order` ran in exactly that order. */
static inline void tt_assert_stop_order(const uint32_t *order, size_t n) {
    for (size_t k = 1; k < n; k++) {
        uint64_t a = atomic_load(&tt_stop_seq[order[k - 1]]);
        uint64_t b = atomic_load(&tt_stop_seq[order[k]]);
        if (a == 0 || b == 0 || a >= b)
            fail_msg("stop order: node %u (seq %" PRIu64
                     ") should stop before node %u (seq %" PRIu64 ")",
                     order[k - 1], a, order[k], b);
    }
}

#endif
