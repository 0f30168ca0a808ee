/* test_tree_random — a seeded property test of the ownership tree.
 *
 * Each round builds a random forest (random depth and fan-out, a few
 * hundred to a few thousand actors) whose actors spawn their children
 * from on_start. Once all have started, the main thread gives them random
 * fates in a random order: stop normally, fail (with or without text),
 * be cancelled (some drain and finish, a few drain forever and are killed
 * after a short grace), be killed, or stay alive until the final
 * tr_runtime_shutdown. Some grow: when their fate message comes they
 * spawn new children (some of which end themselves at once), racing with
 * the teardown around them. Some actors escalate a failed child's exit
 * from on_child_exit, some link to or monitor an ancestor, some trap
 * exits. Right after tr_runtime_shutdown the main thread spawns a few
 * more top-level actors, racing with the end of the shutdown.
 *
 * Every actor logs its start (with its reference and tr_parent) and its
 * on_stop (with the reason), and parents log on_child_exit, into one
 * mutex-protected log ordered by an atomic sequence number. Invariants:
 *   - every actor started once and its on_stop (cleanup) ran exactly once,
 *     after its start (a late top-level actor may be refused, then it
 *     has neither, or accepted and never started, then on_stop still ran
 *     once, with TR_EXIT_SHUTDOWN);
 *   - tr_parent is the spawner (the root for top-level actors);
 *   - no orphan: every actor's on_stop ran before its parent's;
 *   - on_child_exit names a real child, once, with the reason its on_stop
 *     saw, after that on_stop and before the parent's;
 *   - a normal exit only where a handler returned TR_STOP;
 *   - tr_runtime_run returns after the shutdown, and stats.spawned ==
 *     stats.ended == the number of actors.
 *
 * Seeds: TROUPE_SEED (or TROUPE_TEST_SEED) picks the first seed, else a
 * fixed default; TROUPE_SEEDS the number of rounds (default 20, or 1 when
 * a seed is given). A failure names its seed:
 *   TROUPE_SEED=<n> ./test_tree_random */
#include "testutil.h"

#define DEFAULT_SEED 0x7265657473ull /* "trees" */
#define DEFAULT_ROUNDS 20
#define MAX_NODES 4096

enum { T_FATE = 1, T_FINISH };

enum fate {
    F_LEFT = 0,  /* alive until the shutdown */
    F_STOP,      /* handler returns TR_STOP */
    F_FAIL,      /* handler returns a failure code */
    F_FAIL_TEXT, /* handler returns tr_fail(code, text) */
    F_CANCEL,    /* tr_cancel from the main thread */
    F_KILL,      /* tr_kill from the main thread */
    F_GROW,      /* handler spawns the node's dynamic children */
};

enum drain {
    D_NONE = 0, /* on_cancel: stop now */
    D_FINISH,   /* on_cancel: drain, send self T_FINISH (-> TR_STOP) */
    D_FOREVER,  /* on_cancel: drain and never stop (killed after grace) */
};

typedef struct plan_node {
    int32_t parent; /* -1: top-level */
    uint32_t depth;
    uint32_t first_kid, nkids;   /* into g_kids: spawned from on_start */
    uint32_t first_dkid, ndkids; /* into g_dkids: spawned by F_GROW */
    bool dynamic;                /* spawned by F_GROW or late */
    bool late;                   /* top-level, spawned after shutdown */
    uint8_t fate;
    uint8_t drain;
    bool escalate;
    bool trap;
    int32_t link_to;    /* an ancestor, or -1 */
    int32_t monitor_of; /* an ancestor, or -1 */
    int fail_code;
} plan_node;

static plan_node g_plan[MAX_NODES];
static uint32_t g_kids[MAX_NODES];
static uint32_t g_dkids[MAX_NODES];
static uint32_t g_n;
static int g_late_rc[MAX_NODES]; /* tr_runtime_spawn's rc, late nodes */

static _Atomic uint64_t g_ref[MAX_NODES];
static _Atomic bool g_spawned[MAX_NODES]; /* dynamic: tr_spawn succeeded */
static _Atomic uint32_t g_started;
static _Atomic uint32_t g_spawn_errors;
static _Atomic uint64_t g_seq;

enum { EV_START = 1, EV_STOP, EV_CHILD_EXIT };
typedef struct event {
    uint8_t kind;
    uint32_t node;
    uint64_t seq;
    uint64_t ref;    /* START: own ref; CHILD_EXIT: exit->who */
    uint64_t parent; /* START: tr_parent */
    int reason;      /* STOP, CHILD_EXIT */
} event;

#define LOG_CAP (3 * MAX_NODES + 64)
static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
static event g_log[LOG_CAP];
static uint32_t g_nlog;
static _Atomic uint32_t g_log_overflow;

static void log_event(uint8_t kind, uint32_t node, uint64_t ref,
                      uint64_t parent, int reason) {
    pthread_mutex_lock(&g_log_lock);
    /* The sequence number is taken under the lock: log order == seq
     * order, and the seq of an event follows everything that happened
     * before it in any thread (acq_rel through the lock). */
    uint64_t seq = atomic_fetch_add_explicit(&g_seq, 1, memory_order_relaxed);
    if (g_nlog < LOG_CAP)
        g_log[g_nlog++] = (event){kind, node, seq, ref, parent, reason};
    else
        atomic_fetch_add(&g_log_overflow, 1);
    pthread_mutex_unlock(&g_log_lock);
}

/* ---- the actor */

typedef struct rnode {
    uint32_t node;
} rnode;

static int rn_start(tr_ctx *ctx, void *state);
static int rn_handle(tr_ctx *ctx, void *state, tr_msg *msg);
static void rn_stop(tr_ctx *ctx, void *state, int reason);
static int rn_cancel(tr_ctx *ctx, void *state, int reason);
static void rn_child_exit(tr_ctx *ctx, void *state, const tr_exit *x);

static const tr_behavior rn_beh = {
    .name = "rnode",
    .handle = rn_handle,
    .on_start = rn_start,
    .on_stop = rn_stop,
    .on_cancel = rn_cancel,
    .on_child_exit = rn_child_exit,
    .state_size = sizeof(rnode),
};

/* Drains forever: a short grace keeps the rounds fast. */
static const tr_behavior rn_beh_stubborn = {
    .name = "rnode_stubborn",
    .handle = rn_handle,
    .on_start = rn_start,
    .on_stop = rn_stop,
    .on_cancel = rn_cancel,
    .on_child_exit = rn_child_exit,
    .state_size = sizeof(rnode),
    .grace_ms = 20,
};

static const tr_behavior *beh_of(uint32_t i) {
    return g_plan[i].drain == D_FOREVER ? &rn_beh_stubborn : &rn_beh;
}

static int rn_start(tr_ctx *ctx, void *state) {
    rnode *st = state;
    uint32_t i = st->node;
    const plan_node *p = &g_plan[i];
    tr_ref self = tr_self(ctx);
    atomic_store(&g_ref[i], self.id);
    log_event(EV_START, i, self.id, tr_parent(ctx).id, 0);
    if (p->trap)
        tr_trap_exits(ctx, true);
    /* Ancestors started before this actor was spawned: refs are set. */
    if (p->link_to >= 0)
        (void)tr_link(ctx, (tr_ref){atomic_load(&g_ref[p->link_to])});
    if (p->monitor_of >= 0)
        (void)tr_monitor(ctx, (tr_ref){atomic_load(&g_ref[p->monitor_of])},
                         NULL);
    for (uint32_t k = 0; k < p->nkids; k++) {
        rnode kid = {g_kids[p->first_kid + k]};
        if (tr_spawn(ctx, beh_of(kid.node), &kid, sizeof kid, NULL) != 0)
            atomic_fetch_add(&g_spawn_errors, 1);
    }
    atomic_fetch_add(&g_started, 1);
    /* A dynamic child with a fate of its own applies it at once. */
    if (p->dynamic && !p->late && p->fate != F_LEFT)
        (void)tr_send_tag(ctx, self, T_FATE);
    return 0;
}

static int grow(tr_ctx *ctx, const plan_node *p) {
    for (uint32_t k = 0; k < p->ndkids; k++) {
        rnode kid = {g_dkids[p->first_dkid + k]};
        /* Never refused: a node that handles a message is not stopping. */
        if (tr_spawn(ctx, beh_of(kid.node), &kid, sizeof kid, NULL) != 0)
            atomic_fetch_add(&g_spawn_errors, 1);
        else
            atomic_store(&g_spawned[kid.node], true);
    }
    return 0;
}

static int rn_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    rnode *st = state;
    const plan_node *p = &g_plan[st->node];
    switch (tr_msg_tag(msg)) {
    case T_FATE:
        switch (p->fate) {
        case F_STOP:
            return TR_STOP;
        case F_FAIL:
            return p->fail_code;
        case F_FAIL_TEXT:
            return tr_fail(ctx, p->fail_code, "node %u failed", st->node);
        case F_GROW:
            return grow(ctx, p);
        default:
            return 0;
        }
    case T_FINISH:
        return TR_STOP;
    default:
        return 0; /* DOWN, trapped EXIT */
    }
}

static void rn_stop(tr_ctx *ctx, void *state, int reason) {
    rnode *st = state;
    (void)ctx;
    log_event(EV_STOP, st->node, 0, 0, reason);
}

static int rn_cancel(tr_ctx *ctx, void *state, int reason) {
    rnode *st = state;
    (void)reason;
    switch (g_plan[st->node].drain) {
    case D_FINISH:
        (void)tr_send_tag(ctx, tr_self(ctx), T_FINISH);
        return TR_DRAIN;
    case D_FOREVER:
        return TR_DRAIN;
    default:
        return 0;
    }
}

static void rn_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    rnode *st = state;
    log_event(EV_CHILD_EXIT, st->node, x->who.id, 0, x->reason);
    if (g_plan[st->node].escalate && x->reason < 0)
        (void)tr_fail(ctx, x->reason, "node %u: a child failed", st->node);
}

/* ---- plans */

static uint32_t rnd(uint64_t *s, uint32_t n) {
    return n == 0 ? 0 : (uint32_t)(tu_rand(s) % n);
}

static bool chance(uint64_t *s, uint32_t percent) {
    return rnd(s, 100) < percent;
}

static int32_t random_ancestor(uint64_t *s, uint32_t i) {
    uint32_t d = g_plan[i].depth;
    if (d == 0)
        return -1;
    uint32_t up = 1 + rnd(s, d);
    int32_t a = (int32_t)i;
    while (up-- > 0)
        a = g_plan[a].parent;
    return a;
}

static const int fail_codes[] = {TR_EPROTO, TR_EINVAL, TR_ESYS, TR_ETOOBIG};

/* Nodes are numbered so that a parent comes before its children and
 * siblings are numbered in spawn order: first the static forest (spawned
 * from on_start), then the dynamic children of F_GROW nodes, then the
 * late top-level nodes. Sets g_n, g_nstatic; returns the number of
 * top-level static nodes (0..ntop-1). */
static uint32_t g_nstatic;

static void set_traits(uint64_t *s, plan_node *p, uint32_t i,
                       uint32_t *forever) {
    p->fail_code = fail_codes[rnd(s, 4)];
    uint32_t d = rnd(s, 100);
    if (d < 10) {
        p->drain = D_FINISH;
    } else if (d < 12 && *forever < 4) {
        p->drain = D_FOREVER;
        (*forever)++;
    }
    p->escalate = chance(s, 20);
    p->trap = chance(s, 10);
    if (chance(s, 5))
        p->link_to = random_ancestor(s, i);
    if (chance(s, 5))
        p->monitor_of = random_ancestor(s, i);
}

static uint32_t make_plan(uint64_t *s, uint32_t n) {
    uint32_t ntop = 1 + rnd(s, 4);
    uint32_t maxdepth = 1 + rnd(s, 9);
    uint32_t deep_bias = rnd(s, 100); /* % of parents picked among recent */
    g_nstatic = n;
    for (uint32_t i = 0; i < n; i++) {
        plan_node *p = &g_plan[i];
        memset(p, 0, sizeof *p);
        p->link_to = p->monitor_of = -1;
        if (i < ntop) {
            p->parent = -1;
            p->depth = 0;
        } else {
            uint32_t par =
                chance(s, deep_bias) && i > 8 ? i - 1 - rnd(s, 8) : rnd(s, i);
            while (g_plan[par].depth >= maxdepth)
                par = (uint32_t)g_plan[par].parent;
            p->parent = (int32_t)par;
            p->depth = g_plan[par].depth + 1;
        }
    }
    /* Children lists (CSR), in node order. */
    for (uint32_t i = ntop; i < n; i++)
        g_plan[g_plan[i].parent].nkids++;
    uint32_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        g_plan[i].first_kid = at;
        at += g_plan[i].nkids;
        g_plan[i].nkids = 0;
    }
    for (uint32_t i = ntop; i < n; i++) {
        plan_node *par = &g_plan[g_plan[i].parent];
        g_kids[par->first_kid + par->nkids++] = i;
    }
    /* Fates and traits of the static forest. */
    uint32_t forever = 0;
    for (uint32_t i = 0; i < n; i++) {
        plan_node *p = &g_plan[i];
        uint32_t r = rnd(s, 100);
        p->fate = r < 10   ? F_STOP
                  : r < 20 ? F_FAIL
                  : r < 25 ? F_FAIL_TEXT
                  : r < 35 ? F_CANCEL
                  : r < 40 ? F_KILL
                  : r < 45 ? F_GROW
                           : F_LEFT;
        set_traits(s, p, i, &forever);
    }
    /* Dynamic children: leaves; a fate of their own or none. */
    uint32_t total = n, nd = 0;
    for (uint32_t i = 0; i < n; i++) {
        plan_node *p = &g_plan[i];
        if (p->fate != F_GROW)
            continue;
        p->first_dkid = nd;
        uint32_t want = 1 + rnd(s, 3);
        for (uint32_t k = 0; k < want && total < MAX_NODES - 8; k++) {
            plan_node *c = &g_plan[total];
            memset(c, 0, sizeof *c);
            c->link_to = c->monitor_of = -1;
            c->parent = (int32_t)i;
            c->depth = p->depth + 1;
            c->dynamic = true;
            uint32_t r = rnd(s, 100);
            c->fate = r < 20   ? F_STOP
                      : r < 40 ? F_FAIL
                      : r < 50 ? F_FAIL_TEXT
                               : F_LEFT;
            set_traits(s, c, total, &forever);
            g_dkids[nd++] = total++;
            p->ndkids++;
        }
    }
    /* Late top-level nodes: spawned right after tr_runtime_shutdown. */
    uint32_t nlate = rnd(s, 4);
    for (uint32_t k = 0; k < nlate; k++) {
        plan_node *c = &g_plan[total++];
        memset(c, 0, sizeof *c);
        c->link_to = c->monitor_of = -1;
        c->parent = -1;
        c->dynamic = c->late = true;
        c->fate = F_LEFT;
    }
    g_n = total;
    return ntop;
}

/* ---- one round */

static char g_fail_text[512];

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            snprintf(g_fail_text, sizeof g_fail_text, __VA_ARGS__);            \
            fail_msg("seed %" PRIu64 " (replay: TROUPE_SEED=%" PRIu64          \
                     "), %u actors: %s",                                       \
                     seed, seed, g_n, g_fail_text);                            \
        }                                                                      \
    } while (0)

typedef struct node_record {
    uint32_t starts, stops, child_exits_seen;
    uint64_t start_seq, stop_seq;
    uint64_t ref, parent_ref;
    int reason;
} node_record;

static node_record g_rec[MAX_NODES];

/* Totals over the rounds, printed at the end: the test must exercise every
 * kind of end. [0] failures, [1 + reason] for the TR_EXIT_* reasons. */
static uint64_t g_hist[TR_EXIT_NOPROC + 2];
static uint64_t g_child_exits, g_actors, g_grown, g_late_ok, g_late_unstarted;

static uint32_t node_of_ref(uint64_t ref) {
    for (uint32_t i = 0; i < g_n; i++)
        if (g_rec[i].ref == ref)
            return i;
    return UINT32_MAX;
}

static void check_round(tu_env *e, uint64_t seed) {
    CHECK(atomic_load(&g_log_overflow) == 0, "event log overflow");
    memset(g_rec, 0, sizeof g_rec[0] * g_n);
    pthread_mutex_lock(&g_log_lock);
    uint32_t nlog = g_nlog;
    pthread_mutex_unlock(&g_log_lock);
    for (uint32_t k = 0; k < nlog; k++) {
        const event *ev = &g_log[k];
        CHECK(ev->node < g_n, "event for unknown node %u", ev->node);
        node_record *r = &g_rec[ev->node];
        if (ev->kind == EV_START) {
            r->starts++;
            r->start_seq = ev->seq;
            r->ref = ev->ref;
            r->parent_ref = ev->parent;
        } else if (ev->kind == EV_STOP) {
            r->stops++;
            r->stop_seq = ev->seq;
            r->reason = ev->reason;
        }
    }
    tr_ref root = tr_runtime_root(e->rt);
    uint32_t expected_actors = 0;
    for (uint32_t i = 0; i < g_n; i++) {
        const node_record *r = &g_rec[i];
        const plan_node *p = &g_plan[i];
        if (p->late) {
            int rc = g_late_rc[i];
            CHECK(rc == 0 || rc == TR_ESTOPPED,
                  "late node %u: tr_runtime_spawn returned %d", i, rc);
            if (rc != 0) {
                CHECK(r->starts == 0 && r->stops == 0,
                      "late node %u was refused but started %u / stopped "
                      "%u times",
                      i, r->starts, r->stops);
                continue;
            }
            g_late_ok++;
            expected_actors++;
            CHECK(r->stops == 1, "late node %u: on_stop ran %u times", i,
                  r->stops);
            CHECK(r->starts <= 1, "late node %u started %u times", i,
                  r->starts);
            if (r->starts == 0) {
                g_late_unstarted++;
                CHECK(r->reason == TR_EXIT_SHUTDOWN,
                      "late node %u, never started: on_stop reason %d", i,
                      r->reason);
                continue;
            }
        } else if (p->dynamic && !atomic_load(&g_spawned[i])) {
            CHECK(r->starts == 0 && r->stops == 0,
                  "dynamic node %u never spawned but started %u / stopped "
                  "%u times",
                  i, r->starts, r->stops);
            continue;
        } else {
            expected_actors++;
            g_grown += p->dynamic;
        }
        CHECK(r->starts == 1, "node %u started %u times", i, r->starts);
        CHECK(r->stops == 1,
              "node %u: on_stop ran %u times (fate %u, drain %u)", i, r->stops,
              p->fate, p->drain);
        CHECK(r->start_seq < r->stop_seq, "node %u stopped before it started",
              i);
        uint64_t want_parent = p->parent < 0 ? root.id : g_rec[p->parent].ref;
        CHECK(r->parent_ref == want_parent,
              "node %u: tr_parent %" PRIx64 ", spawned by %" PRIx64, i,
              r->parent_ref, want_parent);
        if (p->parent >= 0) {
            const node_record *pr = &g_rec[p->parent];
            CHECK(r->stop_seq < pr->stop_seq,
                  "orphan: node %u (reason %d) stopped at seq %" PRIu64
                  ", after its parent %d (reason %d) at seq %" PRIu64,
                  i, r->reason, r->stop_seq, p->parent, pr->reason,
                  pr->stop_seq);
        }
        if (r->reason == TR_EXIT_NORMAL)
            CHECK(p->fate == F_STOP || p->drain == D_FINISH,
                  "node %u ended normally but no handler returned TR_STOP "
                  "(fate %u, drain %u)",
                  i, p->fate, p->drain);
        bool known =
            r->reason == TR_EXIT_NORMAL || r->reason == TR_EXIT_SHUTDOWN ||
            r->reason == TR_EXIT_CANCELLED || r->reason == TR_EXIT_TIMEOUT ||
            r->reason == TR_EXIT_KILLED || r->reason == TR_EXIT_NOPROC;
        for (size_t c = 0; c < sizeof fail_codes / sizeof fail_codes[0]; c++)
            known |= r->reason == fail_codes[c];
        CHECK(known, "node %u: unexpected reason %d", i, r->reason);
        int reason = r->reason;
        g_hist[reason < 0 ? 0 : (reason <= TR_EXIT_NOPROC ? reason + 1 : 0)]++;
    }
    /* on_child_exit: a real child, once, with its on_stop reason, between
     * the child's on_stop and the parent's. */
    for (uint32_t k = 0; k < nlog; k++) {
        const event *ev = &g_log[k];
        if (ev->kind != EV_CHILD_EXIT)
            continue;
        g_child_exits++;
        uint32_t c = node_of_ref(ev->ref);
        CHECK(c != UINT32_MAX, "node %u: on_child_exit for unknown %" PRIx64,
              ev->node, ev->ref);
        CHECK(g_plan[c].parent == (int32_t)ev->node,
              "node %u: on_child_exit for node %u, not its child", ev->node, c);
        CHECK(++g_rec[c].child_exits_seen == 1,
              "node %u: on_child_exit twice for child %u", ev->node, c);
        CHECK(ev->reason == g_rec[c].reason,
              "node %u: on_child_exit reason %d, child %u's on_stop saw %d",
              ev->node, ev->reason, c, g_rec[c].reason);
        CHECK(g_rec[c].stop_seq < ev->seq && ev->seq < g_rec[ev->node].stop_seq,
              "node %u: on_child_exit for %u out of order", ev->node, c);
    }
    g_actors += expected_actors;
    tr_runtime_stats st = tu_stats(e);
    CHECK(st.spawned == expected_actors && st.ended == expected_actors,
          "stats: spawned %" PRIu64 ", ended %" PRIu64 ", actors %u",
          st.spawned, st.ended, expected_actors);
}

/* For a hang: the actors that started and have not stopped, deepest
 * first (what the shutdown waits for). */
static void dump_unstopped(tu_env *e) {
    static uint8_t started[MAX_NODES], stopped[MAX_NODES];
    memset(started, 0, g_n);
    memset(stopped, 0, g_n);
    pthread_mutex_lock(&g_log_lock);
    for (uint32_t k = 0; k < g_nlog; k++) {
        if (g_log[k].kind == EV_START)
            started[g_log[k].node] = 1;
        else if (g_log[k].kind == EV_STOP)
            stopped[g_log[k].node] = 1;
    }
    pthread_mutex_unlock(&g_log_lock);
    tr_runtime_stats st = tu_stats(e);
    print_error("hang: stats spawned %" PRIu64 " ended %" PRIu64
                "; started but not stopped:\n",
                st.spawned, st.ended);
    uint32_t shown = 0;
    for (uint32_t i = g_n; i-- > 0 && shown < 40;) {
        if (!started[i] || stopped[i])
            continue;
        const plan_node *p = &g_plan[i];
        shown++;
        print_error("  node %u: parent %d depth %u fate %u drain %u "
                    "escalate %d trap %d link_to %d monitor_of %d "
                    "dynamic %d late %d kids %u+%u alive %d\n",
                    i, p->parent, p->depth, p->fate, p->drain, p->escalate,
                    p->trap, p->link_to, p->monitor_of, p->dynamic, p->late,
                    p->nkids, p->ndkids,
                    tr_actor_alive(e->rt, (tr_ref){atomic_load(&g_ref[i])}));
    }
}

static void run_round(tu_env *e, uint64_t seed) {
    uint64_t s = seed;
    const uint32_t nmax = (uint32_t)tu_scaled(2000, 300);
    const uint32_t nmin = nmax < 200 ? nmax : 200;
    uint32_t n = nmin + rnd(&s, nmax - nmin + 1);
    uint32_t ntop = make_plan(&s, n);

    atomic_store(&g_started, 0);
    atomic_store(&g_spawn_errors, 0);
    atomic_store(&g_seq, 1);
    atomic_store(&g_log_overflow, 0);
    for (uint32_t i = 0; i < g_n; i++) {
        atomic_store(&g_ref[i], 0);
        atomic_store(&g_spawned[i], false);
        g_late_rc[i] = 0;
    }
    pthread_mutex_lock(&g_log_lock);
    g_nlog = 0;
    pthread_mutex_unlock(&g_log_lock);

    memset(e, 0, sizeof *e);
    tu_env_init(e, 2);
    for (uint32_t i = 0; i < ntop; i++) {
        rnode init = {i};
        TU_ASSERT_OK(
            tr_runtime_spawn(e->rt, beh_of(i), &init, sizeof init, NULL));
    }
    tu_env_start(e);
    int64_t deadline = tu_now_ms() + 10000;
    while (atomic_load(&g_started) < g_nstatic && tu_now_ms() < deadline)
        tu_sleep_ms(1);
    CHECK(atomic_load(&g_started) == g_nstatic, "%u of %u actors started",
          atomic_load(&g_started), g_nstatic);
    CHECK(atomic_load(&g_spawn_errors) == 0, "%u spawns failed",
          atomic_load(&g_spawn_errors));

    /* Fates of the static forest, in a random order. */
    static uint32_t order[MAX_NODES];
    for (uint32_t i = 0; i < g_nstatic; i++)
        order[i] = i;
    for (uint32_t i = g_nstatic; i-- > 1;) {
        uint32_t j = rnd(&s, i + 1);
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    static const int cancel_reasons[] = {TR_EXIT_CANCELLED, TR_EXIT_TIMEOUT,
                                         TR_EXIT_SHUTDOWN, TR_EPROTO};
    static const int64_t graces[] = {-1, 0, 5, 50};
    for (uint32_t k = 0; k < g_nstatic; k++) {
        uint32_t i = order[k];
        tr_ref r = {atomic_load(&g_ref[i])};
        int rc = 0;
        switch (g_plan[i].fate) {
        case F_STOP:
        case F_FAIL:
        case F_FAIL_TEXT:
        case F_GROW:
            rc = tr_runtime_send_u64(e->rt, r, T_FATE, 0);
            break;
        case F_CANCEL:
            rc = tr_cancel(e->rt, r, cancel_reasons[rnd(&s, 4)],
                           graces[rnd(&s, 4)]);
            break;
        case F_KILL:
            rc = tr_kill(e->rt, r);
            break;
        default:
            break;
        }
        /* Dead already (an ancestor, a link, an escalation ended it), or
         * everyone is gone and run returned at quiescence. */
        CHECK(rc == 0 || rc == TR_ENOACTOR || rc == TR_ESTOPPED,
              "fate of node %u: rc %d", i, rc);
        if (rnd(&s, 64) == 0)
            tu_sleep_ms(1);
    }
    tu_sleep_ms(rnd(&s, 10));

    TU_ASSERT_OK(tr_runtime_shutdown(e->rt));
    for (uint32_t i = 0; i < g_n; i++) {
        if (!g_plan[i].late)
            continue;
        rnode init = {i};
        g_late_rc[i] =
            tr_runtime_spawn(e->rt, beh_of(i), &init, sizeof init, NULL);
    }
    if (tu_env_join(e, 15000) != 0) {
        dump_unstopped(e);
        CHECK(false, "tr_runtime_run did not return within 15 s of "
                     "tr_runtime_shutdown");
    }
    CHECK(e->run_rc == 0, "tr_runtime_run returned %d", e->run_rc);
    CHECK(atomic_load(&g_spawn_errors) == 0, "%u spawns failed",
          atomic_load(&g_spawn_errors));
    check_round(e, seed);
    tu_env_finish(e);
}

static uint64_t env_u64(const char *name, bool *set) {
    const char *v = getenv(name);
    *set = v != NULL && *v != '\0';
    return *set ? (uint64_t)strtoull(v, NULL, 0) : 0;
}

static void test_random_trees(void **state) {
    tu_env *e = *state;
    bool set = false, set2 = false, nset = false;
    uint64_t base = env_u64("TROUPE_SEED", &set);
    if (!set)
        base = env_u64("TROUPE_TEST_SEED", &set2);
    uint64_t rounds = env_u64("TROUPE_SEEDS", &nset);
    if (!set && !set2)
        base = DEFAULT_SEED;
    if (!nset || rounds == 0)
        rounds = (set || set2) ? 1 : DEFAULT_ROUNDS;
    print_message("[ SEED     ] seeds %" PRIu64 "..%" PRIu64
                  " (replay one: TROUPE_SEED=<n>)\n",
                  base, base + rounds - 1);
    int64_t t0 = tu_now_ms();
    for (uint64_t k = 0; k < rounds; k++)
        run_round(e, base + k);
    print_message("[ INFO     ] %" PRIu64 " rounds, %" PRIu64
                  " actors (%" PRIu64 " grown by a handler, %" PRIu64
                  " spawned during the shutdown, %" PRIu64
                  " of them never started) in %lld ms; ends: normal %" PRIu64
                  ", shutdown %" PRIu64 ", cancelled %" PRIu64
                  ", timeout %" PRIu64 ", killed %" PRIu64 ", noproc %" PRIu64
                  ", failed %" PRIu64 "; on_child_exit %" PRIu64 "\n",
                  rounds, g_actors, g_grown, g_late_ok, g_late_unstarted,
                  (long long)(tu_now_ms() - t0), g_hist[1 + TR_EXIT_NORMAL],
                  g_hist[1 + TR_EXIT_SHUTDOWN], g_hist[1 + TR_EXIT_CANCELLED],
                  g_hist[1 + TR_EXIT_TIMEOUT], g_hist[1 + TR_EXIT_KILLED],
                  g_hist[1 + TR_EXIT_NOPROC], g_hist[0], g_child_exits);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_random_trees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
