/* test_supervisor — strategies (which children restart, in which order,
 * exact counts), restart types on normal vs failure exits, intensity and
 * its sliding window, escalation through two supervisor levels, backoff
 * (lower bounds), shutdown grace (drain past the grace -> killed), brutal
 * kill, ordered start (also nested), start failure, runtime calls (sync
 * and from a handler), error codes, mailbox depth, orderly shutdown.
 *
 * Workers report to the test's inbox: R_START from on_start (the message's
 * sender is the child's reference), R_STOP from on_stop (id << 32 |
 * reason). The supervisor serializes starts and stops, and each report is
 * sent before the event that lets the supervisor go on, so the inbox
 * order is the order of events. Two kinds of fact are not ordered so, and
 * the tests wait for them instead of assuming them:
 * - what the boss's calls return (R_SUP, R_RC): the call lets the
 *   supervisor run on the other worker before the boss reports, so a
 *   child's R_START can come first (boss_rep);
 * - what follows a child's exit notice: the notice is sent after its
 *   R_STOP, and the actor's slot is released after the notice (family.c),
 *   so the supervisor's listing and tr_actor_alive can lag the report. */
#include "testutil.h"

#include <troupe/supervisor.h>

enum { W_CRASH = 1, W_EXIT, W_BLOCK, W_PING };
enum { B_WHICH = 10, B_START, B_WHICH_DEAD };
enum {
    R_START = 100, /* id */
    R_STOP,        /* id << 32 | (uint32_t)reason */
    R_CANCEL,      /* id */
    R_START_FAILED,
    R_SUP,        /* boss: the supervisor's ref id (0: g_boss_start_rc) */
    R_CHILD_EXIT, /* boss: (uint32_t)reason; text in g_exit_text */
    R_RC,         /* boss: (uint32_t)rc of a call */
    R_REPLY,      /* boss: see boss_handle */
};

#define MAXW 64
#define WF_DRAIN 1u

static _Atomic uint64_t g_report;       /* the inbox of the running test */
static _Atomic int g_fail_starts[MAXW]; /* on_start fails while > 0 */
static _Atomic int g_release;           /* lets W_BLOCK go */
static _Atomic int g_boss_start_rc;     /* the boss's tr_sup_start */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_exit_text[256];
static tr_ref g_reply_ref;
static char g_reply_first[TR_SUP_NAME_MAX];

typedef struct worker {
    uint32_t id, flags;
} worker;

/* Every report is also journaled: reports sent while the runtime stops
 * may never reach the inbox (see test_orderly_shutdown). */
#define JOURNAL_MAX 256
static uint64_t g_journal[JOURNAL_MAX]; /* tag << 48 | value, under g_lock */
static size_t g_njournal;

static void report(tr_ctx *ctx, uint32_t tag, uint64_t v) {
    pthread_mutex_lock(&g_lock);
    if (g_njournal < JOURNAL_MAX)
        g_journal[g_njournal++] = (uint64_t)tag << 48 | v;
    pthread_mutex_unlock(&g_lock);
    tu_report(ctx, (tr_ref){atomic_load(&g_report)}, tag, v);
}

/* The journal from entry `from` must be exactly these (tag, value) pairs. */
static void expect_journal(size_t from, const uint64_t *want, size_t n) {
    pthread_mutex_lock(&g_lock);
    size_t got = g_njournal - from;
    uint64_t copy[JOURNAL_MAX];
    memcpy(copy, &g_journal[from], got * sizeof *copy);
    pthread_mutex_unlock(&g_lock);
    if (got != n)
        fail_msg("journal: %zu entries, expected %zu", got, n);
    for (size_t i = 0; i < n; i++)
        if (copy[i] != want[i])
            fail_msg("journal[%zu] = 0x%" PRIx64 ", expected 0x%" PRIx64, i,
                     copy[i], want[i]);
}

static size_t journal_mark(void) {
    pthread_mutex_lock(&g_lock);
    size_t n = g_njournal;
    pthread_mutex_unlock(&g_lock);
    return n;
}

#define J(tag, v) ((uint64_t)(tag) << 48 | (uint64_t)(v))
#define JSTOP(id, reason) J(R_STOP, (uint64_t)(id) << 32 | (uint32_t)(reason))

static int w_on_start(tr_ctx *ctx, void *state) {
    worker *w = state;
    if (atomic_load(&g_fail_starts[w->id]) > 0) {
        atomic_fetch_sub(&g_fail_starts[w->id], 1);
        report(ctx, R_START_FAILED, w->id);
        return TR_EPROTO;
    }
    report(ctx, R_START, w->id);
    return 0;
}

static int w_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)ctx;
    (void)state;
    switch (tr_msg_tag(msg)) {
    case W_CRASH:
        return TR_EPROTO;
    case W_EXIT:
        return TR_STOP;
    case W_BLOCK:
        for (int i = 0; i < 5000 && !atomic_load(&g_release); i++)
            tu_sleep_ms(1);
        return 0;
    case W_PING:
        return 0;
    default:
        return TR_UNHANDLED;
    }
}

static void w_on_stop(tr_ctx *ctx, void *state, int reason) {
    worker *w = state;
    report(ctx, R_STOP, (uint64_t)w->id << 32 | (uint32_t)reason);
}

static int w_on_cancel(tr_ctx *ctx, void *state, int reason) {
    worker *w = state;
    (void)reason;
    report(ctx, R_CANCEL, w->id);
    return (w->flags & WF_DRAIN) ? TR_DRAIN : 0;
}

static const tr_behavior worker_beh = {
    .name = "worker",
    .handle = w_handle,
    .on_start = w_on_start,
    .on_stop = w_on_stop,
    .on_cancel = w_on_cancel,
    .state_size = sizeof(worker),
};

/* Static worker inits: specs used by nested supervisors must outlive the
 * tree. */
static const worker W[MAXW] = {
    {0, 0}, {1, 0}, {2, 0}, {3, 0}, {4, 0},
    {5, 0}, {6, 0}, {7, 0}, {8, 0}, {9, WF_DRAIN},
};

static tr_sup_spec spec(const char *name, uint32_t id, tr_restart restart,
                        int64_t shutdown_ms) {
    return (tr_sup_spec){.name = name,
                         .behavior = &worker_beh,
                         .init = &W[id],
                         .init_len = sizeof(worker),
                         .restart = restart,
                         .shutdown_ms = shutdown_ms};
}

/* ---- the boss: a plain actor that owns a supervisor ---- */

typedef struct boss {
    const tr_sup_config *cfg;
    const tr_sup_spec *specs;
    size_t n;
    tr_ref sup;
    uint64_t call;
} boss;

static tr_sup_spec g_boss_spec; /* B_START */

static int boss_on_start(tr_ctx *ctx, void *state) {
    boss *b = state;
    int rc = tr_sup_start(ctx, b->cfg, b->specs, b->n, &b->sup);
    atomic_store(&g_boss_start_rc, rc); /* before the report: read after it */
    report(ctx, R_SUP, rc == 0 ? b->sup.id : 0);
    return 0;
}

static int boss_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    boss *b = state;
    int rc;
    switch (tr_msg_tag(msg)) {
    case B_WHICH:
        rc = tr_sup_which_children(ctx, b->sup, &b->call);
        report(ctx, R_RC, (uint32_t)rc);
        return 0;
    case B_WHICH_DEAD:
        rc = tr_sup_which_children(ctx, (tr_ref){tr_msg_u64(msg)}, NULL);
        report(ctx, R_RC, (uint32_t)rc);
        return 0;
    case B_START:
        rc = tr_sup_start_child(ctx, b->sup, &g_boss_spec, &b->call);
        report(ctx, R_RC, (uint32_t)rc);
        return 0;
    case TR_TAG_SUP_REPLY: {
        /* R_REPLY: bit 63 = the call id matched, op << 40,
         * nchildren << 32, (uint32_t)result. */
        tr_sup_reply r;
        if (tr_sup_reply_read(msg, &r) != 0)
            return TR_UNHANDLED;
        tr_sup_child_info first;
        pthread_mutex_lock(&g_lock);
        g_reply_ref = r.ref;
        g_reply_first[0] = '\0';
        if (r.nchildren > 0 && tr_sup_reply_child(msg, 0, &first) == 0)
            memcpy(g_reply_first, first.name, sizeof first.name);
        pthread_mutex_unlock(&g_lock);
        report(ctx, R_REPLY,
               (uint64_t)(r.call_id == b->call) << 63 | (uint64_t)r.op << 40 |
                   (uint64_t)r.nchildren << 32 | (uint32_t)r.result);
        return 0;
    }
    default:
        return TR_UNHANDLED;
    }
}

static void boss_on_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    (void)state;
    pthread_mutex_lock(&g_lock);
    snprintf(g_exit_text, sizeof g_exit_text, "%s", x->text);
    pthread_mutex_unlock(&g_lock);
    report(ctx, R_CHILD_EXIT, (uint32_t)x->reason);
}

static const tr_behavior boss_beh = {
    .name = "boss",
    .handle = boss_handle,
    .on_start = boss_on_start,
    .on_child_exit = boss_on_child_exit,
    .state_size = sizeof(boss),
};

/* ---- helpers (main thread) ---- */

typedef struct rep {
    uint32_t tag;
    uint64_t v;
    tr_ref from;
} rep;

/* Reports that arrived ahead of the boss's report a test waited for
 * (boss_rep); next_rep hands them out first, in arrival order. */
#define HELD_MAX 16
static rep g_held[HELD_MAX];
static size_t g_nheld;

static rep recv_rep(tu_env *e, int64_t timeout_ms) {
    tr_msg *m = tu_recv(e, timeout_ms);
    rep r = {tr_msg_tag(m), tr_msg_u64(m), tr_msg_sender(m)};
    TU_ASSERT_OK(tr_msg_destroy(&m));
    return r;
}

static rep take_held(size_t i) {
    rep r = g_held[i];
    g_nheld--;
    memmove(&g_held[i], &g_held[i + 1], (g_nheld - i) * sizeof *g_held);
    return r;
}

static rep next_rep(tu_env *e, int64_t timeout_ms) {
    return g_nheld > 0 ? take_held(0) : recv_rep(e, timeout_ms);
}

/* The boss's next report with this tag (R_SUP, R_RC). A call the boss
 * makes in a handler lets the supervisor and its children run on the
 * other worker before the boss reports what the call returned, so their
 * reports may come first: they are held, in order, for next_rep. */
static rep boss_rep(tu_env *e, uint32_t tag) {
    for (size_t i = 0; i < g_nheld; i++)
        if (g_held[i].tag == tag)
            return take_held(i);
    for (;;) {
        rep r = recv_rep(e, TU_PROMPT_MS);
        if (r.tag == tag)
            return r;
        if (g_nheld == HELD_MAX)
            fail_msg("%d reports came before the boss's report %u", HELD_MAX,
                     tag);
        g_held[g_nheld++] = r;
    }
}

/* What the boss's last call returned. */
static void expect_boss_rc(tu_env *e, int rc) {
    rep r = boss_rep(e, R_RC);
    if ((uint32_t)r.v != (uint32_t)rc)
        fail_msg("boss: the call returned %d (%s), expected %d (%s)",
                 (int)(uint32_t)r.v, tu_err_text((int)(uint32_t)r.v), rc,
                 tu_err_text(rc));
}

/* No report, held or new, for ms milliseconds. */
static void expect_silence(tu_env *e, int64_t ms) {
    if (g_nheld > 0)
        fail_msg("expected no report, have report %u value 0x%" PRIx64,
                 g_held[0].tag, g_held[0].v);
    tu_expect_silence(e, ms);
}

static void expect_rep(tu_env *e, uint32_t tag, uint64_t v, rep *out) {
    rep r = next_rep(e, TU_PROMPT_MS);
    if (r.tag != tag || r.v != v)
        fail_msg("expected report %u value 0x%" PRIx64
                 ", got %u value 0x%" PRIx64,
                 tag, v, r.tag, r.v);
    if (out != NULL)
        *out = r;
}

static tr_ref expect_start(tu_env *e, uint32_t id) {
    rep r;
    expect_rep(e, R_START, id, &r);
    return r.from;
}

static void expect_stop(tu_env *e, uint32_t id, int reason) {
    expect_rep(e, R_STOP, (uint64_t)id << 32 | (uint32_t)reason, NULL);
}

/* A graceful stop: on_cancel ran, then on_stop with the shutdown reason. */
static void expect_shutdown(tu_env *e, uint32_t id) {
    expect_rep(e, R_CANCEL, id, NULL);
    expect_stop(e, id, TR_EXIT_SHUTDOWN);
}

static void env(tu_env *e, bool track_depth) {
    tr_runtime_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.workers = 2;
    cfg.track_depth = track_depth;
    tu_env_init_cfg(e, &cfg);
    atomic_store(&g_report, e->inbox_ref.id);
    for (int i = 0; i < MAXW; i++)
        atomic_store(&g_fail_starts[i], 0);
    atomic_store(&g_release, 0);
    atomic_store(&g_boss_start_rc, 0);
    g_nheld = 0;
    pthread_mutex_lock(&g_lock);
    g_njournal = 0;
    pthread_mutex_unlock(&g_lock);
}

static tr_sup_config config(tr_sup_strategy strategy, uint32_t intensity,
                            int64_t period_ms) {
    tr_sup_config c = TR_SUP_CONFIG_INIT;
    c.strategy = strategy;
    c.intensity = intensity;
    c.period_ms = period_ms;
    return c;
}

/* Starts a supervisor from outside and waits for its n children. */
static tr_ref start_sup(tu_env *e, const tr_sup_config *cfg,
                        const tr_sup_spec *specs, size_t n, tr_ref *refs) {
    tr_ref sup = TR_REF_NONE;
    TU_ASSERT_OK(tr_sup_runtime_start(e->rt, cfg, specs, n, &sup));
    tu_env_start(e);
    for (size_t i = 0; i < n; i++) {
        const worker *w = specs[i].init;
        tr_ref r = expect_start(e, w->id);
        if (refs != NULL)
            refs[i] = r;
    }
    return sup;
}

/* Starts a boss that starts the supervisor; returns the supervisor. */
static tr_ref start_boss(tu_env *e, const tr_sup_config *cfg,
                         const tr_sup_spec *specs, size_t n, tr_ref *boss_ref) {
    boss b = {.cfg = cfg, .specs = specs, .n = n};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &boss_beh, &b, sizeof b, boss_ref));
    tu_env_start(e);
    rep r = boss_rep(e, R_SUP);
    TU_ASSERT_OK(atomic_load(&g_boss_start_rc));
    return (tr_ref){r.v};
}

static size_t which(tu_env *e, tr_ref sup, tr_sup_child_info **list) {
    size_t n = 0;
    TU_ASSERT_OK(
        tr_sup_which_children_sync(e->rt, sup, TU_PROMPT_MS, list, &n));
    return n;
}

static size_t count_children(tu_env *e, tr_ref sup) {
    tr_sup_child_info *list = NULL;
    size_t n = which(e, sup, &list);
    tr_sup_children_free(&list);
    return n;
}

/* The entry for name (the test fails if absent). */
static tr_sup_child_info child(tu_env *e, tr_ref sup, const char *name) {
    tr_sup_child_info *list = NULL, out;
    size_t n = which(e, sup, &list);
    size_t i = 0;
    while (i < n && strcmp(list[i].name, name) != 0)
        i++;
    if (i == n) {
        tr_sup_children_free(&list);
        fail_msg("child '%s' is not listed", name);
    }
    out = list[i];
    tr_sup_children_free(&list);
    return out;
}

static void assert_child(tu_env *e, tr_ref sup, const char *name, int state,
                         uint32_t restarts) {
    tr_sup_child_info c = child(e, sup, name);
    if (c.state != state || c.restarts != restarts)
        fail_msg("child '%s': state %s restarts %u, expected %s and %u", name,
                 tr_sup_child_state_name(c.state), c.restarts,
                 tr_sup_child_state_name(state), restarts);
    assert_true(tr_ref_is_none(c.ref) == (state != TR_SUP_CHILD_RUNNING));
}

static void crash(tu_env *e, tr_ref ref) {
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, ref, W_CRASH, 0));
}

static void exit_text_contains(const char *needle) {
    pthread_mutex_lock(&g_lock);
    bool found = strstr(g_exit_text, needle) != NULL;
    char copy[256];
    memcpy(copy, g_exit_text, sizeof copy);
    pthread_mutex_unlock(&g_lock);
    if (!found)
        fail_msg("exit text \"%s\" lacks \"%s\"", copy, needle);
}

/* ---- strategies ---- */

static void test_one_for_one(void **state) {
    tu_env *e = *state;
    env(e, false);
    tr_sup_config cfg = config(TR_SUP_ONE_FOR_ONE, 5, 10000);
    tr_sup_spec s[] = {spec("a", 1, TR_RESTART_PERMANENT, 1000),
                       spec("b", 2, TR_RESTART_PERMANENT, 1000),
                       spec("c", 3, TR_RESTART_PERMANENT, 1000)};
    tr_ref refs[3];
    tr_ref sup = start_sup(e, &cfg, s, 3, refs);
    crash(e, refs[1]);
    expect_stop(e, 2, TR_EPROTO);
    tr_ref b2 = expect_start(e, 2);
    expect_silence(e, 200);
    assert_false(tr_ref_eq(b2, refs[1]));
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, refs[1]), TU_PROMPT_MS);
    tr_sup_child_info *list = NULL;
    assert_int_equal(which(e, sup, &list), 3);
    const char *names[] = {"a", "b", "c"};
    const tr_ref now[] = {refs[0], b2, refs[2]};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(list[i].name, names[i]);
        assert_int_equal(list[i].state, TR_SUP_CHILD_RUNNING);
        assert_int_equal(list[i].restarts, i == 1 ? 1 : 0);
        assert_true(tr_ref_eq(list[i].ref, now[i]));
        assert_int_equal(list[i].mailbox_depth, -1); /* not tracked */
    }
    assert_int_equal(list[1].last_exit, TR_EPROTO);
    tr_sup_children_free(&list);
    assert_null(list);
    tu_env_finish(e);
}

static void test_one_for_all(void **state) {
    tu_env *e = *state;
    env(e, false);
    tr_sup_config cfg = config(TR_SUP_ONE_FOR_ALL, 5, 10000);
    tr_sup_spec s[] = {spec("a", 1, TR_RESTART_PERMANENT, 1000),
                       spec("b", 2, TR_RESTART_PERMANENT, 1000),
                       spec("c", 3, TR_RESTART_PERMANENT, 1000)};
    tr_ref refs[3];
    tr_ref sup = start_sup(e, &cfg, s, 3, refs);
    crash(e, refs[1]);
    expect_stop(e, 2, TR_EPROTO);
    expect_shutdown(e, 3); /* youngest first */
    expect_shutdown(e, 1);
    expect_start(e, 1); /* then in spec order */
    expect_start(e, 2);
    expect_start(e, 3);
    expect_silence(e, 200);
    for (int i = 0; i < 3; i++)
        assert_child(e, sup, s[i].name, TR_SUP_CHILD_RUNNING, 1);
    tu_env_finish(e);
}

static void test_rest_for_one(void **state) {
    tu_env *e = *state;
    env(e, false);
    tr_sup_config cfg = config(TR_SUP_REST_FOR_ONE, 5, 10000);
    tr_sup_spec s[] = {spec("a", 1, TR_RESTART_PERMANENT, 1000),
                       spec("b", 2, TR_RESTART_PERMANENT, 1000),
                       spec("c", 3, TR_RESTART_PERMANENT, 1000),
                       spec("d", 4, TR_RESTART_PERMANENT, 1000)};
    tr_ref refs[4];
    tr_ref sup = start_sup(e, &cfg, s, 4, refs);
    crash(e, refs[1]);
    expect_stop(e, 2, TR_EPROTO);
    expect_shutdown(e, 4);
    expect_shutdown(e, 3);
    expect_start(e, 2);
    expect_start(e, 3);
    expect_start(e, 4);
    expect_silence(e, 200);
    assert_child(e, sup, "a", TR_SUP_CHILD_RUNNING, 0);
    assert_true(tr_ref_eq(child(e, sup, "a").ref, refs[0]));
    for (int i = 1; i < 4; i++)
        assert_child(e, sup, s[i].name, TR_SUP_CHILD_RUNNING, 1);
    tu_env_finish(e);
}

/* one_for_all: a temporary sibling is stopped and deleted, a STOPPED one
 * stays stopped; two crashes restart twice. */
static void test_one_for_all_temporary_and_stopped(void **state) {
    tu_env *e = *state;
    env(e, false);
    tr_sup_config cfg = config(TR_SUP_ONE_FOR_ALL, 5, 10000);
    tr_sup_spec s[] = {spec("a", 1, TR_RESTART_PERMANENT, 1000),
                       spec("t", 2, TR_RESTART_TEMPORARY, 1000),
                       spec("c", 3, TR_RESTART_PERMANENT, 1000),
                       spec("off", 4, TR_RESTART_PERMANENT, 1000)};
    tr_ref refs[4];
    tr_ref sup = start_sup(e, &cfg, s, 4, refs);
    TU_ASSERT_OK(tr_sup_terminate_child_sync(e->rt, sup, "off", TU_PROMPT_MS));
    expect_shutdown(e, 4);
    crash(e, refs[0]);
    expect_stop(e, 1, TR_EPROTO);
    expect_shutdown(e, 3);
    expect_shutdown(e, 2);
    tr_ref a2 = expect_start(e, 1);
    expect_start(e, 3);
    expect_silence(e, 200);
    tr_sup_child_info *list = NULL;
    assert_int_equal(which(e, sup, &list), 3);
    assert_string_equal(list[0].name, "a");
    assert_string_equal(list[1].name, "c");
    assert_string_equal(list[2].name, "off");
    assert_int_equal(list[2].state, TR_SUP_CHILD_STOPPED);
    tr_sup_children_free(&list);
    crash(e, a2);
    expect_stop(e, 1, TR_EPROTO);
    expect_shutdown(e, 3);
    expect_start(e, 1);
    expect_start(e, 3);
    assert_child(e, sup, "a", TR_SUP_CHILD_RUNNING, 2);
    assert_child(e, sup, "c", TR_SUP_CHILD_RUNNING, 2);
    assert_child(e, sup, "off", TR_SUP_CHILD_STOPPED, 0);
    tu_env_finish(e);
}

/* ---- restart types ---- */

static void restart_types(void **state, uint32_t tag, int reason) {
    tu_env *e = *state;
    env(e, false);
    tr_sup_config cfg = config(TR_SUP_ONE_FOR_ONE, 5, 10000);
    tr_sup_spec s[] = {spec("p", 1, TR_RESTART_PERMANENT, 1000),
                       spec("t", 2, TR_RESTART_TRANSIENT, 1000),
                       spec("tmp", 3, TR_RESTART_TEMPORARY, 1000)};
    tr_ref refs[3];
    tr_ref sup = start_sup(e, &cfg, s, 3, refs);
    for (int i = 0; i < 3; i++) {
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, refs[i], tag, 0));
        expect_stop(e, (uint32_t)i + 1, reason);
        if (i == 0 || (i == 1 && reason != TR_EXIT_NORMAL))
            expect_start(e, (uint32_t)i + 1);
        expect_silence(e, 150);
    }
    /* tmp's spec goes, and t (normal exit) is listed as stopped, once the
     * supervisor has their exit notices: they trail the R_STOP reports. */
    const int t_state =
        reason == TR_EXIT_NORMAL ? TR_SUP_CHILD_STOPPED : TR_SUP_CHILD_RUNNING;
    TU_ASSERT_EVENTUALLY(count_children(e, sup) == 2 &&
                             child(e, sup, "t").state == t_state,
                         TU_PROMPT_MS);
    tr_sup_child_info *list = NULL;
    assert_int_equal(which(e, sup, &list), 2); /* tmp's spec is gone */
    assert_string_equal(list[0].name, "p");
    assert_int_equal(list[0].state, TR_SUP_CHILD_RUNNING);
    assert_int_equal(list[0].restarts, 1);
    assert_string_equal(list[1].name, "t");
    assert_int_equal(list[1].state, t_state);
    assert_int_equal(list[1].restarts, reason == TR_EXIT_NORMAL ? 0 : 1);
    assert_int_equal(list[1].last_exit, reason);
    tr_sup_children_free(&list);
    tu_env_finish(e);
}

static void test_restart_types_normal_exit(void **state) {
    restart_types(state, W_EXIT, TR_EXIT_NORMAL);
}

static void test_restart_types_failure(void **state) {
    restart_types(state, W_CRASH, TR_EPROTO);
}

/* ---- intensity and escalation ---- */

static void test_intensity_exceeded(void **state) {
    tu_env *e = *state;
    env(e, false);
    static tr_sup_config cfg;
    cfg = config(TR_SUP_ONE_FOR_ONE, 2, 10000);
    static tr_sup_spec s[2];
    s[0] = spec("y", 1, TR_RESTART_PERMANENT, 1000);
    s[1] = spec("x", 2, TR_RESTART_PERMANENT, 1000);
    tr_ref boss_ref;
    tr_ref sup = start_boss(e, &cfg, s, 2, &boss_ref);
    expect_start(e, 1);
    tr_ref x = expect_start(e, 2);
    for (int i = 0; i < 2; i++) { /* two restarts are allowed */
        crash(e, x);
        expect_stop(e, 2, TR_EPROTO);
        x = expect_start(e, 2);
    }
    assert_child(e, sup, "x", TR_SUP_CHILD_RUNNING, 2);
    crash(e, x); /* the third is one too many */
    expect_stop(e, 2, TR_EPROTO);
    expect_shutdown(e, 1); /* the others are stopped first */
    expect_rep(e, R_CHILD_EXIT, (uint32_t)TR_ESTATE, NULL);
    exit_text_contains("restart intensity exceeded");
    expect_silence(e, 200);
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, sup), TU_PROMPT_MS);
    tr_sup_child_info *list = NULL;
    size_t n = 7;
    TU_ASSERT_RC(tr_sup_which_children_sync(e->rt, sup, 1000, &list, &n),
                 TR_ENOACTOR);
    assert_null(list);
    assert_int_equal(n, 0);
    /* A handler's call to the dead supervisor fails at once. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, boss_ref, B_WHICH_DEAD, sup.id));
    expect_boss_rc(e, TR_ENOACTOR);
    tu_env_finish(e);
}

static void test_intensity_window_slides(void **state) {
    tu_env *e = *state;
    env(e, false);
    static tr_sup_config cfg;
    cfg = config(TR_SUP_ONE_FOR_ONE, 1, 800);
    static tr_sup_spec s[1];
    s[0] = spec("x", 1, TR_RESTART_PERMANENT, 1000);
    tr_ref boss_ref;
    tr_ref sup = start_boss(e, &cfg, s, 1, &boss_ref);
    tr_ref x = expect_start(e, 1);
    crash(e, x);
    expect_stop(e, 1, TR_EPROTO);
    x = expect_start(e, 1);
    tu_sleep_ms(1000); /* the first restart leaves the window */
    crash(e, x);
    expect_stop(e, 1, TR_EPROTO);
    x = expect_start(e, 1);
    assert_child(e, sup, "x", TR_SUP_CHILD_RUNNING, 2);
    crash(e, x); /* two within 800 ms: too many */
    expect_stop(e, 1, TR_EPROTO);
    expect_rep(e, R_CHILD_EXIT, (uint32_t)TR_ESTATE, NULL);
    exit_text_contains("restart intensity exceeded");
    tu_env_finish(e);
}

/* boss -> outer (1 restart allowed) -> inner (none allowed) -> x. */
static const tr_sup_config esc_inner_cfg = {.strategy = TR_SUP_ONE_FOR_ONE,
                                            .intensity = 0};
static const tr_sup_spec esc_inner_kids[] = {{.name = "x",
                                              .behavior = &worker_beh,
                                              .init = &W[1],
                                              .init_len = sizeof(worker),
                                              .restart = TR_RESTART_PERMANENT,
                                              .shutdown_ms = 1000}};
static const tr_sup_args esc_inner_args = {&esc_inner_cfg, esc_inner_kids, 1};

static void test_escalation_two_levels(void **state) {
    tu_env *e = *state;
    env(e, false);
    static tr_sup_config cfg;
    cfg = config(TR_SUP_ONE_FOR_ONE, 1, 10000);
    static tr_sup_spec s[1];
    s[0] = (tr_sup_spec){.name = "inner",
                         .behavior = &tr_sup_behavior,
                         .init = &esc_inner_args,
                         .init_len = sizeof esc_inner_args,
                         .restart = TR_RESTART_PERMANENT,
                         .shutdown_ms = 5000};
    tr_ref boss_ref;
    tr_ref outer = start_boss(e, &cfg, s, 1, &boss_ref);
    tr_ref x = expect_start(e, 1);
    tr_ref inner = child(e, outer, "inner").ref;
    crash(e, x); /* inner fails, outer restarts it (1 of 1) */
    expect_stop(e, 1, TR_EPROTO);
    x = expect_start(e, 1);
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, inner), TU_PROMPT_MS);
    tr_sup_child_info ci = child(e, outer, "inner");
    assert_int_equal(ci.restarts, 1);
    assert_int_equal(ci.last_exit, TR_ESTATE);
    crash(e, x); /* inner fails again: outer exceeds, fails to the boss */
    expect_stop(e, 1, TR_EPROTO);
    expect_rep(e, R_CHILD_EXIT, (uint32_t)TR_ESTATE, NULL);
    exit_text_contains("restart intensity exceeded");
    exit_text_contains("'inner'");
    expect_silence(e, 200);
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, outer), TU_PROMPT_MS);
    tu_env_finish(e);
}

/* ---- backoff ---- */

static void test_backoff_delays_restarts(void **state) {
    tu_env *e = *state;
    env(e, false);
    tr_sup_config cfg = config(TR_SUP_ONE_FOR_ONE, 10, 60000);
    cfg.backoff_min_ms = 200;
    cfg.backoff_max_ms = 400;
    tr_sup_spec s[] = {spec("x", 1, TR_RESTART_PERMANENT, 1000)};
    tr_ref x;
    tr_ref sup = start_sup(e, &cfg, s, 1, &x);
    /* 200, then doubled to 400, then capped at 400; -2: ms truncation. */
    const int64_t expect_ms[] = {200, 400, 400};
    for (int i = 0; i < 3; i++) {
        int64_t t0 = tu_now_ms();
        crash(e, x);
        expect_stop(e, 1, TR_EPROTO);
        if (i == 0) { /* listed as restarting meanwhile, no reference */
            tr_sup_child_info c = child(e, sup, "x");
            if (c.state == TR_SUP_CHILD_RESTARTING)
                assert_true(tr_ref_is_none(c.ref));
            else /* the exit may not have reached it yet */
                assert_int_equal(c.state, TR_SUP_CHILD_RUNNING);
        }
        rep r = next_rep(e, 5000);
        int64_t took = tu_now_ms() - t0;
        assert_int_equal(r.tag, R_START);
        x = r.from;
        if (took < expect_ms[i] - 2)
            fail_msg("restart %d after %lld ms, expected >= %lld", i + 1,
                     (long long)took, (long long)expect_ms[i]);
    }
    assert_child(e, sup, "x", TR_SUP_CHILD_RUNNING, 3);
    tu_env_finish(e);
}

static void test_backoff_jitter_and_group(void **state) {
    tu_env *e = *state;
    env(e, false);
    tr_sup_config cfg = config(TR_SUP_ONE_FOR_ALL, 10, 60000);
    cfg.backoff_min_ms = 300;
    cfg.backoff_max_ms = 300;
    cfg.backoff_jitter_pct = 50;
    cfg.backoff_seed = 42;
    tr_sup_spec s[] = {spec("a", 1, TR_RESTART_PERMANENT, 1000),
                       spec("b", 2, TR_RESTART_PERMANENT, 1000)};
    tr_ref refs[2];
    tr_ref sup = start_sup(e, &cfg, s, 2, refs);
    int64_t t0 = tu_now_ms();
    crash(e, refs[1]);
    expect_stop(e, 2, TR_EPROTO);
    expect_shutdown(e, 1);
    /* Both wait: the whole group is listed as restarting. */
    TU_ASSERT_EVENTUALLY(child(e, sup, "a").state == TR_SUP_CHILD_RESTARTING &&
                             child(e, sup, "b").state ==
                                 TR_SUP_CHILD_RESTARTING,
                         1000);
    rep r = next_rep(e, 5000);
    int64_t took = tu_now_ms() - t0;
    assert_int_equal(r.tag, R_START);
    assert_int_equal(r.v, 1);
    expect_start(e, 2);
    if (took < 150 - 2) /* 300 minus at most 50 % jitter */
        fail_msg("group restart after %lld ms, expected >= 150",
                 (long long)took);
    tu_env_finish(e);
}

/* ---- shutdown policies ---- */

static void test_grace_then_kill(void **state) {
    tu_env *e = *state;
    env(e, false);
    tr_sup_config cfg = config(TR_SUP_ONE_FOR_ONE, 5, 10000);
    tr_sup_spec s[] = {spec("drainer", 9, TR_RESTART_PERMANENT, 300),
                       spec("polite", 2, TR_RESTART_PERMANENT, 5000),
                       spec("brutal", 3, TR_RESTART_PERMANENT, 0)};
    tr_ref sup = start_sup(e, &cfg, s, 3, NULL);
    /* Drains past its 300 ms grace: killed, on_stop sees KILLED. */
    int64_t t0 = tu_now_ms();
    TU_ASSERT_OK(tr_sup_terminate_child_sync(e->rt, sup, "drainer", 5000));
    int64_t took = tu_now_ms() - t0;
    expect_rep(e, R_CANCEL, 9, NULL);
    expect_stop(e, 9, TR_EXIT_KILLED);
    if (took < 300 - 2)
        fail_msg("terminate returned after %lld ms, before the grace",
                 (long long)took);
    assert_child(e, sup, "drainer", TR_SUP_CHILD_STOPPED, 0);
    /* Stops when asked: shutdown reason, well within its grace. */
    TU_ASSERT_OK(tr_sup_terminate_child_sync(e->rt, sup, "polite", 4000));
    expect_rep(e, R_CANCEL, 2, NULL);
    expect_stop(e, 2, TR_EXIT_SHUTDOWN);
    /* Brutal: no on_cancel, killed. */
    TU_ASSERT_OK(tr_sup_terminate_child_sync(e->rt, sup, "brutal", 4000));
    expect_stop(e, 3, TR_EXIT_KILLED);
    expect_silence(e, 150); /* and nothing restarts */
    tu_env_finish(e);
}

/* tr_runtime_shutdown: the supervisor stops its children youngest first
 * with their policies (the drainer is killed after its grace), then the
 * tree is down and run returns. Checked on the journal: the last reports
 * race with the runtime's stop and may never reach the inbox. */
static void test_orderly_shutdown(void **state) {
    tu_env *e = *state;
    env(e, false);
    tr_sup_config cfg = config(TR_SUP_ONE_FOR_ONE, 5, 10000);
    tr_sup_spec s[] = {spec("a", 1, TR_RESTART_PERMANENT, 1000),
                       spec("drainer", 9, TR_RESTART_PERMANENT, 200),
                       spec("c", 3, TR_RESTART_PERMANENT, 1000)};
    tr_ref sup = start_sup(e, &cfg, s, 3, NULL);
    size_t mark = journal_mark();
    int64_t t0 = tu_now_ms();
    TU_ASSERT_OK(tr_runtime_shutdown(e->rt));
    tu_env_expect_run_returns(e, TU_JOIN_MS);
    assert_true(tu_now_ms() - t0 >= 200 - 2); /* the drainer's grace */
    const uint64_t want[] = {J(R_CANCEL, 3), JSTOP(3, TR_EXIT_SHUTDOWN),
                             J(R_CANCEL, 9), JSTOP(9, TR_EXIT_KILLED),
                             J(R_CANCEL, 1), JSTOP(1, TR_EXIT_SHUTDOWN)};
    expect_journal(mark, want, sizeof want / sizeof want[0]);
    assert_false(tr_actor_alive(e->rt, sup));
    tu_env_finish(e);
}

/* ---- start ---- */

static const tr_sup_config nest_cfg = {
    .strategy = TR_SUP_ONE_FOR_ONE, .intensity = 1, .period_ms = 5000};
static const tr_sup_spec nest_kids[] = {{.name = "x",
                                         .behavior = &worker_beh,
                                         .init = &W[2],
                                         .init_len = sizeof(worker),
                                         .shutdown_ms = 1000},
                                        {.name = "y",
                                         .behavior = &worker_beh,
                                         .init = &W[3],
                                         .init_len = sizeof(worker),
                                         .shutdown_ms = 1000}};
static const tr_sup_args nest_args = {&nest_cfg, nest_kids, 2};

static void test_nested_start_order(void **state) {
    tu_env *e = *state;
    env(e, false);
    tr_sup_config cfg = config(TR_SUP_ONE_FOR_ONE, 1, 5000);
    tr_sup_spec s[] = {spec("a", 1, TR_RESTART_PERMANENT, 1000),
                       {.name = "inner",
                        .behavior = &tr_sup_behavior,
                        .init = &nest_args,
                        .init_len = sizeof nest_args,
                        .shutdown_ms = 5000},
                       spec("b", 4, TR_RESTART_PERMANENT, 1000)};
    tr_ref sup = TR_REF_NONE;
    TU_ASSERT_OK(tr_sup_runtime_start(e->rt, &cfg, s, 3, &sup));
    tu_env_start(e);
    for (uint32_t id = 1; id <= 4; id++) /* b waits for inner's children */
        expect_start(e, id);
    tr_ref inner = child(e, sup, "inner").ref;
    assert_int_equal(count_children(e, inner), 2);
    TU_ASSERT_OK(tr_cancel(e->rt, sup, TR_EXIT_CANCELLED, 10000));
    expect_rep(e, R_CANCEL, 4, NULL);
    expect_stop(e, 4, TR_EXIT_SHUTDOWN);
    expect_rep(e, R_CANCEL, 3, NULL);
    expect_stop(e, 3, TR_EXIT_SHUTDOWN);
    expect_rep(e, R_CANCEL, 2, NULL);
    expect_stop(e, 2, TR_EXIT_SHUTDOWN);
    expect_rep(e, R_CANCEL, 1, NULL);
    expect_stop(e, 1, TR_EXIT_SHUTDOWN);
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, sup), TU_PROMPT_MS);
    tu_env_finish(e);
}

static void test_start_failure_fails_supervisor(void **state) {
    tu_env *e = *state;
    env(e, false);
    static tr_sup_config cfg;
    cfg = config(TR_SUP_ONE_FOR_ONE, 5, 10000);
    static tr_sup_spec s[3];
    s[0] = spec("a", 1, TR_RESTART_PERMANENT, 1000);
    s[1] = spec("b", 2, TR_RESTART_PERMANENT, 1000);
    s[2] = spec("c", 3, TR_RESTART_PERMANENT, 1000);
    atomic_store(&g_fail_starts[2], 1);
    tr_ref boss_ref;
    (void)start_boss(e, &cfg, s, 3, &boss_ref);
    expect_start(e, 1);
    expect_rep(e, R_START_FAILED, 2, NULL);
    expect_stop(e, 2, TR_EPROTO);
    expect_shutdown(e, 1);
    expect_rep(e, R_CHILD_EXIT, (uint32_t)TR_EPROTO, NULL);
    exit_text_contains("child 'b' failed to start");
    expect_silence(e, 200); /* c never started */
    tu_env_finish(e);
}

/* ---- calls ---- */

static void test_runtime_calls(void **state) {
    tu_env *e = *state;
    env(e, false);
    tr_sup_config cfg = config(TR_SUP_ONE_FOR_ONE, 5, 10000);
    tr_sup_spec s[] = {spec("a", 1, TR_RESTART_PERMANENT, 1000)};
    tr_ref sup = start_sup(e, &cfg, s, 1, NULL);
    tr_runtime *rt = e->rt;
    const int64_t T = TU_PROMPT_MS;
    tr_sup_spec b = spec("b", 2, TR_RESTART_PERMANENT, 1000);
    tr_ref ref = TR_REF_NONE;
    TU_ASSERT_OK(tr_sup_start_child_sync(rt, sup, &b, T, &ref));
    assert_true(tr_ref_eq(expect_start(e, 2), ref));
    TU_ASSERT_RC(tr_sup_start_child_sync(rt, sup, &b, T, NULL), TR_EINVAL);
    tr_sup_spec bad = b;
    bad.name = "bad";
    bad.behavior = NULL;
    TU_ASSERT_RC(tr_sup_start_child_sync(rt, sup, &bad, T, NULL), TR_EINVAL);
    bad = b;
    bad.name = "0123456789012345678901234567890123456789012345678901234567890"
               "123456789";
    TU_ASSERT_RC(tr_sup_start_child_sync(rt, sup, &bad, T, NULL), TR_EINVAL);
    /* terminate keeps the spec; twice is fine */
    TU_ASSERT_OK(tr_sup_terminate_child_sync(rt, sup, "b", T));
    expect_rep(e, R_CANCEL, 2, NULL);
    expect_stop(e, 2, TR_EXIT_SHUTDOWN);
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(rt, ref), TU_PROMPT_MS);
    assert_child(e, sup, "b", TR_SUP_CHILD_STOPPED, 0);
    TU_ASSERT_OK(tr_sup_terminate_child_sync(rt, sup, "b", T));
    /* running children cannot be deleted or restarted by a call */
    TU_ASSERT_RC(tr_sup_delete_child_sync(rt, sup, "a", T), TR_ESTATE);
    TU_ASSERT_RC(tr_sup_restart_child_sync(rt, sup, "a", T, NULL), TR_ESTATE);
    TU_ASSERT_OK(tr_sup_restart_child_sync(rt, sup, "b", T, &ref));
    assert_true(tr_ref_eq(expect_start(e, 2), ref));
    assert_child(e, sup, "b", TR_SUP_CHILD_RUNNING, 0);
    TU_ASSERT_RC(tr_sup_terminate_child_sync(rt, sup, "nope", T), TR_ENOTFOUND);
    TU_ASSERT_RC(tr_sup_restart_child_sync(rt, sup, "nope", T, NULL),
                 TR_ENOTFOUND);
    TU_ASSERT_RC(tr_sup_delete_child_sync(rt, sup, "nope", T), TR_ENOTFOUND);
    TU_ASSERT_RC(tr_sup_delete_child_sync(rt, sup, "", T), TR_EINVAL);
    TU_ASSERT_OK(tr_sup_terminate_child_sync(rt, sup, "b", T));
    expect_rep(e, R_CANCEL, 2, NULL);
    expect_stop(e, 2, TR_EXIT_SHUTDOWN);
    TU_ASSERT_OK(tr_sup_delete_child_sync(rt, sup, "b", T));
    /* a temporary child's spec goes when it is terminated */
    tr_sup_spec t = spec("t", 3, TR_RESTART_TEMPORARY, 1000);
    TU_ASSERT_OK(tr_sup_start_child_sync(rt, sup, &t, T, NULL));
    expect_start(e, 3);
    TU_ASSERT_OK(tr_sup_terminate_child_sync(rt, sup, "t", T));
    expect_rep(e, R_CANCEL, 3, NULL);
    expect_stop(e, 3, TR_EXIT_SHUTDOWN);
    /* a child that fails to start is not kept; the error is its code */
    atomic_store(&g_fail_starts[4], 1);
    tr_sup_spec f = spec("f", 4, TR_RESTART_PERMANENT, 1000);
    TU_ASSERT_RC(tr_sup_start_child_sync(rt, sup, &f, T, NULL), TR_EPROTO);
    expect_rep(e, R_START_FAILED, 4, NULL);
    expect_stop(e, 4, TR_EPROTO);
    tr_sup_child_info *list = NULL;
    assert_int_equal(which(e, sup, &list), 1);
    assert_string_equal(list[0].name, "a");
    tr_sup_children_free(&list);
    expect_silence(e, 100);
    tu_env_finish(e);
}

static void test_handler_calls(void **state) {
    tu_env *e = *state;
    env(e, false);
    static tr_sup_config cfg;
    cfg = config(TR_SUP_ONE_FOR_ONE, 5, 10000);
    static tr_sup_spec s[1];
    s[0] = spec("a", 1, TR_RESTART_PERMANENT, 1000);
    tr_ref boss_ref;
    tr_ref sup = start_boss(e, &cfg, s, 1, &boss_ref);
    expect_start(e, 1);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, boss_ref, B_WHICH, 0));
    expect_boss_rc(e, 0);
    rep r = next_rep(e, TU_PROMPT_MS);
    assert_int_equal(r.tag, R_REPLY);
    assert_true(r.v >> 63); /* its call id */
    assert_int_equal((r.v >> 40) & 0xff, TR_SUP_OP_WHICH_CHILDREN);
    assert_int_equal((r.v >> 32) & 0xff, 1);
    assert_int_equal((uint32_t)r.v, 0);
    pthread_mutex_lock(&g_lock);
    assert_string_equal(g_reply_first, "a");
    pthread_mutex_unlock(&g_lock);
    g_boss_spec = spec("b", 2, TR_RESTART_PERMANENT, 1000);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, boss_ref, B_START, 0));
    expect_boss_rc(e, 0); /* b's R_START may come first */
    tr_ref b = expect_start(e, 2);
    r = next_rep(e, TU_PROMPT_MS); /* answered after b's on_start */
    assert_int_equal(r.tag, R_REPLY);
    assert_int_equal((r.v >> 40) & 0xff, TR_SUP_OP_START_CHILD);
    assert_int_equal((uint32_t)r.v, 0);
    pthread_mutex_lock(&g_lock);
    assert_true(tr_ref_eq(g_reply_ref, b));
    pthread_mutex_unlock(&g_lock);
    /* a bad spec is refused before anything is sent */
    g_boss_spec.behavior = NULL;
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, boss_ref, B_START, 0));
    expect_boss_rc(e, TR_EINVAL);
    assert_int_equal(count_children(e, sup), 2);
    tu_env_finish(e);
}

static void test_errors(void **state) {
    tu_env *e = *state;
    env(e, false);
    tr_runtime *rt = e->rt;
    tr_sup_config cfg = config(TR_SUP_ONE_FOR_ONE, 1, 1000);
    tr_sup_spec ok = spec("a", 1, TR_RESTART_PERMANENT, 1000);
    tr_sup_spec two[] = {ok, ok};
    TU_ASSERT_RC(tr_sup_runtime_start(rt, &cfg, two, 2, NULL), TR_EINVAL);
    TU_ASSERT_RC(tr_sup_runtime_start(rt, NULL, &ok, 1, NULL), TR_EINVAL);
    TU_ASSERT_RC(tr_sup_runtime_start(rt, &cfg, NULL, 1, NULL), TR_EINVAL);
    tr_sup_config bad = cfg;
    bad.strategy = (tr_sup_strategy)7;
    TU_ASSERT_RC(tr_sup_runtime_start(rt, &bad, &ok, 1, NULL), TR_EINVAL);
    bad = cfg;
    bad.backoff_min_ms = 100; /* max below min */
    TU_ASSERT_RC(tr_sup_runtime_start(rt, &bad, &ok, 1, NULL), TR_EINVAL);
    tr_sup_spec s = ok;
    s.init_len = sizeof(worker) + 1;
    TU_ASSERT_RC(tr_sup_runtime_start(rt, &cfg, &s, 1, NULL), TR_EINVAL);
    s = ok;
    s.restart = (tr_restart)9;
    TU_ASSERT_RC(tr_sup_runtime_start(rt, &cfg, &s, 1, NULL), TR_EINVAL);
    s = ok;
    s.shutdown_ms = -5;
    TU_ASSERT_RC(tr_sup_runtime_start(rt, &cfg, &s, 1, NULL), TR_EINVAL);
    tr_sup_args args = {&bad, &ok, 1}; /* a nested supervisor's bad config */
    s = (tr_sup_spec){.name = "n",
                      .behavior = &tr_sup_behavior,
                      .init = &args,
                      .init_len = sizeof args};
    TU_ASSERT_RC(tr_sup_runtime_start(rt, &cfg, &s, 1, NULL), TR_EINVAL);
    /* a supervisor with no children is fine; calls on it after it died */
    tr_ref sup = TR_REF_NONE;
    TU_ASSERT_OK(tr_sup_runtime_start(rt, &cfg, NULL, 0, &sup));
    (void)tu_spawn_keeper(e); /* run must not end at quiescence */
    tu_env_start(e);
    assert_int_equal(count_children(e, sup), 0);
    TU_ASSERT_OK(tr_cancel(rt, sup, TR_EXIT_CANCELLED, -1));
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(rt, sup), TU_PROMPT_MS);
    TU_ASSERT_RC(tr_sup_terminate_child_sync(rt, sup, "a", 1000), TR_ENOACTOR);
    TU_ASSERT_RC(tr_sup_start_child_sync(rt, sup, &ok, 1000, NULL),
                 TR_ENOACTOR);
    TU_ASSERT_RC(tr_sup_which_children_sync(
                     rt, sup, 1000, &(tr_sup_child_info *){NULL}, &(size_t){0}),
                 TR_ENOACTOR);
    tu_env_finish(e);
}

/* With depth tracking, which_children reports real mailbox depths. */
static void test_mailbox_depth(void **state) {
    tu_env *e = *state;
    env(e, true);
    tr_sup_config cfg = config(TR_SUP_ONE_FOR_ONE, 1, 1000);
    tr_sup_spec s[] = {spec("a", 1, TR_RESTART_PERMANENT, 1000)};
    tr_ref a;
    tr_ref sup = start_sup(e, &cfg, s, 1, &a);
    TU_ASSERT_EVENTUALLY(child(e, sup, "a").mailbox_depth == 0, 1000);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, a, W_BLOCK, 0));
    for (int i = 0; i < 5; i++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, a, W_PING, 0));
    int64_t d = child(e, sup, "a").mailbox_depth;
    atomic_store(&g_release, 1);
    assert_true(d >= 5 && d <= 6);
    TU_ASSERT_EVENTUALLY(child(e, sup, "a").mailbox_depth == 0, TU_PROMPT_MS);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_one_for_one),
        TU_TEST(test_one_for_all),
        TU_TEST(test_rest_for_one),
        TU_TEST(test_one_for_all_temporary_and_stopped),
        TU_TEST(test_restart_types_normal_exit),
        TU_TEST(test_restart_types_failure),
        TU_TEST(test_intensity_exceeded),
        TU_TEST(test_intensity_window_slides),
        TU_TEST(test_escalation_two_levels),
        TU_TEST(test_backoff_delays_restarts),
        TU_TEST(test_backoff_jitter_and_group),
        TU_TEST(test_grace_then_kill),
        TU_TEST(test_orderly_shutdown),
        TU_TEST(test_nested_start_order),
        TU_TEST(test_start_failure_fails_supervisor),
        TU_TEST(test_runtime_calls),
        TU_TEST(test_handler_calls),
        TU_TEST(test_errors),
        TU_TEST(test_mailbox_depth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
