/* No request to a worker process is ever left without an outcome, however
 * often its processes die. This program is also the worker (the pool execs
 * it again in worker mode): main() registers the behaviours and calls
 * tr_worker_main() first.
 *
 * The promise (remote.h): a request to an actor in a worker process is
 * answered, or failed back (TR_TAG_REMOTE_FAILED / TR_TAG_REQUEST_FAILED),
 * or, for a TR_REG_IDEMPOTENT behaviour, sent again to a new actor. Here
 * requests carry a 30 s timeout, far longer than the test waits: a request
 * the transport loses shows up as a lane that never drains. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>

#include "testutil.h"

enum { T_ASK = 1, T_ANS, T_STOP, T_DONE, T_READY, T_PEEK };

/* Longer than the whole test: a request that needs it was lost. */
#define REQ_TIMEOUT_MS 30000
/* Requests a lane keeps in flight (more than the pool's window below, so
 * the link also holds some back for want of credit). */
#define LANE_WINDOW 192u
#define POOL_WINDOW 64
/* Kill -9 of a random worker process this often, for this long. */
#define KILL_PERIOD_MS 100
#define KILL_PHASE_MS 3000
/* After the last kill, every lane must have its every outcome within
 * this (a restart and a resend take milliseconds; this is for loaded
 * machines and sanitizers). */
#define DRAIN_MS 10000

/* ---- the remote behaviours ---- */

/* Answers ASK v with 2v + 1. */
static int twice_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    (void)st;
    if (tr_msg_tag(m) != T_ASK || !tr_msg_is_request(m))
        return TR_UNHANDLED;
    tr_msg *r = tr_msg_new_u64(T_ANS, 2 * tr_msg_u64(m) + 1);
    if (r == NULL)
        return TR_ENOMEM;
    int rc = tr_reply(ctx, m, &r);
    if (rc != 0)
        tr_msg_destroy(&r);
    return rc;
}

static const tr_behavior twice_beh = {.name = "twice", .handle = twice_handle};

#define IDEM "loss.idem"   /* TR_REG_IDEMPOTENT: resent by its proxy */
#define PLAIN "loss.plain" /* at most once: failed back */

/* ---- a lane: keeps LANE_WINDOW requests in flight to one target ---- */

typedef enum lane_kind {
    LANE_DIRECT, /* a proxy of its own (tr_spawn_remote), replaced when it
                    ends (an idempotent proxy gives up after 5 quick
                    losses, a plain one ends at each loss) */
    LANE_POOL    /* a supervised router pool of 4 remote routees */
} lane_kind;

typedef struct lane_report {
    uint64_t answered, failed_remote, failed_request, timeouts, wrong, replaced,
        outstanding;
} lane_report;

typedef struct lane {
    lane_kind kind;
    char behavior[16];
    tr_ref report;
    tr_ref target;
    uint64_t mon; /* LANE_DIRECT: the monitor of target */
    bool stopping, done;
    uint64_t next; /* the next value to ask */
    /* Outstanding requests: id -> value (linear probing, no deletes in
     * the middle of a run: backward shift). */
    uint64_t ids[1024], vals[1024];
    uint32_t n;
    /* Values whose request failed while no target was alive: asked again
     * once there is one. */
    uint64_t again[1024];
    uint32_t nagain;
    lane_report rep;
} lane;

static uint32_t slot_of(uint64_t id) {
    return (uint32_t)((id * 0x9e3779b97f4a7c15u) >> 54); /* 0..1023 */
}

static void table_put(lane *l, uint64_t id, uint64_t v) {
    uint32_t i = slot_of(id);
    while (l->ids[i] != 0)
        i = (i + 1) & 1023u;
    l->ids[i] = id;
    l->vals[i] = v;
    l->n++;
}

static bool table_take(lane *l, uint64_t id, uint64_t *v) {
    uint32_t i = slot_of(id);
    while (l->ids[i] != id) {
        if (l->ids[i] == 0)
            return false;
        i = (i + 1) & 1023u;
    }
    *v = l->vals[i];
    for (uint32_t j = (i + 1) & 1023u; l->ids[j] != 0; j = (j + 1) & 1023u) {
        uint32_t home = slot_of(l->ids[j]);
        if (((j - home) & 1023u) >= ((j - i) & 1023u)) {
            l->ids[i] = l->ids[j];
            l->vals[i] = l->vals[j];
            i = j;
        }
    }
    l->ids[i] = 0;
    l->n--;
    return true;
}

static int lane_new_target(tr_ctx *ctx, lane *l) {
    int rc;
    if (l->kind == LANE_POOL) {
        tr_router_pool_config cfg = {.how = TR_ROUTE_ROUND_ROBIN,
                                     .routee = {.name = "loss",
                                                .remote = l->behavior,
                                                .restart = TR_RESTART_PERMANENT,
                                                .shutdown_ms = 1000},
                                     .size = 4,
                                     .sup = {.name = "loss-pool",
                                             .strategy = TR_SUP_ONE_FOR_ONE,
                                             .intensity = 100000,
                                             .period_ms = 1000}};
        return tr_router_pool_spawn(ctx, &cfg, &l->target);
    }
    rc = tr_spawn_remote(ctx, l->behavior, NULL, 0, &l->target);
    if (rc == 0)
        rc = tr_monitor(ctx, l->target, &l->mon);
    return rc;
}

/* Asks v of the target; with no live target, keeps v for the next one. */
static int lane_ask(tr_ctx *ctx, lane *l, uint64_t v) {
    tr_msg *q = tr_msg_new_u64(T_ASK, v);
    if (q == NULL)
        return TR_ENOMEM;
    uint64_t id = 0;
    int rc = tr_request(ctx, l->target, &q, REQ_TIMEOUT_MS, &id);
    if (rc == TR_ENOACTOR && l->nagain < 1024) {
        tr_msg_destroy(&q);
        l->again[l->nagain++] = v;
        return 0;
    }
    if (rc != 0) {
        tr_msg_destroy(&q);
        return rc;
    }
    table_put(l, id, v);
    return 0;
}

static int lane_fill(tr_ctx *ctx, lane *l) {
    int rc = 0;
    while (rc == 0 && !l->stopping && l->n + l->nagain < LANE_WINDOW)
        rc = lane_ask(ctx, l, l->next++);
    return rc;
}

static int lane_tell(tr_ctx *ctx, lane *l, uint32_t tag) {
    l->rep.outstanding = l->n + l->nagain;
    tr_msg *m = tr_msg_new_bytes(tag, &l->rep, sizeof l->rep);
    if (m == NULL)
        return TR_ENOMEM;
    int rc = tr_send(ctx, l->report, &m);
    if (rc != 0)
        tr_msg_destroy(&m);
    return rc;
}

static int lane_check_done(tr_ctx *ctx, lane *l) {
    if (!l->stopping || l->done || l->n != 0 || l->nagain != 0)
        return 0;
    l->done = true;
    return lane_tell(ctx, l, T_DONE);
}

static int lane_start(tr_ctx *ctx, void *st) {
    lane *l = st;
    l->next = 1;
    int rc = lane_new_target(ctx, l);
    if (rc == 0)
        rc = lane_fill(ctx, l);
    if (rc == 0)
        rc = tr_send_tag(ctx, l->report, T_READY);
    return rc;
}

static int lane_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    lane *l = st;
    uint64_t v = 0;
    int rc = 0;
    switch (tr_msg_tag(m)) {
    case T_ANS:
        if (!table_take(l, tr_msg_request_id(m), &v))
            return TR_EPROTO; /* the runtime passes one outcome per id */
        if (tr_msg_u64(m) == 2 * v + 1)
            l->rep.answered++;
        else
            l->rep.wrong++;
        break;
    case TR_TAG_REMOTE_FAILED:
    case TR_TAG_REQUEST_FAILED:
    case TR_TAG_TIMEOUT:
        if (!table_take(l, tr_msg_request_id(m), &v))
            return TR_EPROTO;
        if (tr_msg_tag(m) == TR_TAG_TIMEOUT)
            l->rep.timeouts++;
        else if (tr_msg_tag(m) == TR_TAG_REMOTE_FAILED)
            l->rep.failed_remote++;
        else
            l->rep.failed_request++;
        rc = lane_ask(ctx, l, v); /* every value is answered in the end */
        break;
    case TR_TAG_DOWN: {
        tr_exit x;
        if (tr_msg_exit(m, &x) != 0 || x.id != l->mon)
            return 0;
        /* Its proxy ended (lost, or gave up): a new one, and what
         * could not be asked meanwhile is asked of it. */
        l->rep.replaced++;
        if ((rc = lane_new_target(ctx, l)) != 0)
            return rc;
        uint32_t n = l->nagain;
        l->nagain = 0;
        for (uint32_t i = 0; i < n && rc == 0; i++)
            rc = lane_ask(ctx, l, l->again[i]);
        break;
    }
    case T_STOP:
        l->stopping = true;
        break;
    case T_PEEK: /* the test gave up waiting: what is still out */
        return lane_tell(ctx, l, T_PEEK);
    default:
        return TR_UNHANDLED;
    }
    if (rc == 0)
        rc = lane_fill(ctx, l);
    if (rc == 0)
        rc = lane_check_done(ctx, l);
    return rc;
}

static const tr_behavior lane_beh = {.name = "lane",
                                     .handle = lane_handle,
                                     .on_start = lane_start,
                                     .state_size = sizeof(lane)};

/* ---- helpers ---- */

static void loss_env(tu_env *e) {
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e); /* no quiescence while the test drives */
    TU_ASSERT_OK(
        tr_pool_start(e->rt, &(tr_pool_config){.processes = 2,
                                               .worker_threads = 1,
                                               .window = POOL_WINDOW}));
}

static tr_ref spawn_lane(tu_env *e, lane_kind kind, const char *behavior) {
    lane *l = calloc(1, sizeof *l);
    assert_non_null(l);
    l->kind = kind;
    snprintf(l->behavior, sizeof l->behavior, "%s", behavior);
    l->report = e->inbox_ref;
    tr_ref r;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &lane_beh, l, sizeof *l, &r));
    free(l);
    return r;
}

static void expect_ready(tu_env *e) {
    tr_msg *m = tu_recv(e, 10000);
    uint32_t got = tr_msg_tag(m);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    if (got != T_READY)
        fail_msg("inbox: expected a lane's READY, got tag %u", got);
}

/* The lane's report carried by m (T_DONE / T_PEEK); its index in refs. */
static unsigned lane_of(const tr_msg *m, const tr_ref *refs, unsigned n,
                        lane_report *out) {
    size_t len = 0;
    const void *d = tr_msg_data(m, &len);
    if (len != sizeof *out)
        fail_msg("inbox: a lane's report of %zu bytes", len);
    memcpy(out, d, sizeof *out);
    for (unsigned i = 0; i < n; i++)
        if (tr_ref_eq(refs[i], tr_msg_sender(m)))
            return i;
    fail_msg("inbox: a report from an unknown lane");
    return n;
}

/* Waits until every lane has drained (T_DONE) by `deadline`; past it,
 * asks those still out what they wait for, and fails. */
static void collect(tu_env *e, const tr_ref *refs, const char *const *names,
                    unsigned n, int64_t deadline, lane_report *total) {
    bool done[16] = {false};
    unsigned ndone = 0;
    while (ndone < n) {
        int64_t left = deadline - tu_now_ms();
        tr_msg *m = NULL;
        int rc = tr_inbox_recv(e->inbox, left > 0 ? left : 1, &m);
        if (rc == TR_ETIMEDOUT)
            break;
        TU_ASSERT_OK(rc);
        lane_report r;
        uint32_t tag = tr_msg_tag(m);
        unsigned i = lane_of(m, refs, n, &r);
        TU_ASSERT_OK(tr_msg_destroy(&m));
        assert_int_equal(tag, T_DONE);
        assert_false(done[i]);
        done[i] = true;
        ndone++;
        total->answered += r.answered;
        total->failed_remote += r.failed_remote;
        total->failed_request += r.failed_request;
        total->timeouts += r.timeouts;
        total->wrong += r.wrong;
        total->replaced += r.replaced;
    }
    if (ndone == n)
        return;
    for (unsigned i = 0; i < n; i++)
        if (!done[i])
            TU_ASSERT_OK(tr_runtime_send_u64(e->rt, refs[i], T_PEEK, 0));
    for (unsigned k = ndone; k < n; k++) {
        tr_msg *m = tu_recv(e, 5000);
        lane_report r;
        unsigned i = lane_of(m, refs, n, &r);
        TU_ASSERT_OK(tr_msg_destroy(&m));
        print_error("lane %u (%s): %" PRIu64 " requests without an outcome "
                    "(%" PRIu64 " answered, %" PRIu64 "+%" PRIu64
                    " failed back, %" PRIu64 " proxies replaced)\n",
                    i, names[i], r.outstanding, r.answered, r.failed_remote,
                    r.failed_request, r.replaced);
    }
    fail_msg("%u of %u lanes still wait for outcomes", n - ndone, n);
}

/* ---- tests ---- */

/* Worker processes killed -9 every 100 ms for 3 s under a full load of
 * requests: to direct proxies and through a supervised router pool, of an
 * idempotent behaviour (resent; after 5 quick losses a proxy gives up and
 * its requests are failed back) and of a plain one (failed back). Every
 * request gets its outcome promptly: each lane drains within DRAIN_MS of
 * the last kill, and no request ever waits for its timeout. */
static void test_no_request_lost_under_kills(void **state) {
    tu_env *e = *state;
    loss_env(e);
    uint64_t seed = tu_seed("kills");
    const struct {
        lane_kind kind;
        const char *behavior;
        const char *name;
    } lanes[] = {{LANE_DIRECT, IDEM, "idempotent proxy"},
                 {LANE_DIRECT, IDEM, "idempotent proxy"},
                 {LANE_POOL, IDEM, "idempotent pool"},
                 {LANE_DIRECT, PLAIN, "plain proxy"},
                 {LANE_POOL, PLAIN, "plain pool"}};
    enum { NLANES = sizeof lanes / sizeof lanes[0] };
    tr_ref refs[NLANES];
    const char *names[NLANES];
    for (unsigned i = 0; i < NLANES; i++) {
        refs[i] = spawn_lane(e, lanes[i].kind, lanes[i].behavior);
        names[i] = lanes[i].name;
    }
    tu_env_start(e);
    for (unsigned i = 0; i < NLANES; i++)
        expect_ready(e);
    tu_sleep_ms(300); /* under way */

    unsigned kills = 0;
    int64_t end = tu_now_ms() + KILL_PHASE_MS;
    while (tu_now_ms() < end) {
        int pid = tr_pool_worker_pid(e->rt, (unsigned)(tu_rand(&seed) % 2));
        if (pid > 0 && kill((pid_t)pid, SIGKILL) == 0)
            kills++;
        tu_sleep_ms(KILL_PERIOD_MS);
    }
    int64_t last_kill = tu_now_ms();
    for (unsigned i = 0; i < NLANES; i++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, refs[i], T_STOP, 0));
    lane_report total = {0};
    collect(e, refs, names, NLANES, last_kill + DRAIN_MS, &total);
    print_message("[ INFO     ] %u kills: %" PRIu64 " answered, %" PRIu64
                  " failed back (remote), %" PRIu64 " (request), %" PRIu64
                  " proxies replaced, drained %lld ms after the last kill\n",
                  kills, total.answered, total.failed_remote,
                  total.failed_request, total.replaced,
                  (long long)(tu_now_ms() - last_kill));
    assert_int_equal(total.timeouts, 0);
    assert_int_equal(total.wrong, 0);
    assert_true(kills >= 10);
    assert_true(total.answered > 0);
    tr_transport_stats st;
    TU_ASSERT_OK(tr_transport_stats_get(e->rt, false, &st));
    assert_true(st.retried > 0);
    tu_env_finish(e);
}

/* Requests that wait in a proxy for its actor's spawn when the proxy
 * stops are failed back (TR_TAG_REMOTE_FAILED, TR_ELOST), not dropped.
 * The asker makes them and cancels the proxy in one turn (one sender,
 * FIFO: the proxy queues them first). The worker processes are stopped
 * (SIGSTOP), so the spawn is never answered: the cancelled proxy waits
 * for the answer through its grace (1 s), then is killed with the
 * requests still queued. */
#define QUEUED_ASKS 20u

typedef struct asker {
    tr_ref report;
    uint32_t answered, failed, other;
} asker;

static int asker_start(tr_ctx *ctx, void *st) {
    (void)st;
    tr_ref proxy;
    int rc = tr_spawn_remote(ctx, IDEM, NULL, 0, &proxy);
    for (uint64_t v = 0; rc == 0 && v < QUEUED_ASKS; v++) {
        tr_msg *q = tr_msg_new_u64(T_ASK, v);
        if ((rc = tr_request(ctx, proxy, &q, REQ_TIMEOUT_MS, NULL)) != 0)
            tr_msg_destroy(&q);
    }
    return rc != 0
               ? rc
               : tr_cancel(tr_ctx_runtime(ctx), proxy, TR_EXIT_CANCELLED, -1);
}

static int asker_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    asker *a = st;
    if (tr_msg_tag(m) == TR_TAG_REMOTE_FAILED &&
        (int64_t)tr_msg_u64(m) == TR_ELOST)
        a->failed++;
    else if (tr_msg_tag(m) == T_ANS)
        a->answered++;
    else
        a->other++;
    if (a->answered + a->failed + a->other < QUEUED_ASKS)
        return 0;
    tu_report(ctx, a->report, T_DONE,
              ((uint64_t)a->other << 40) | ((uint64_t)a->answered << 20) |
                  a->failed);
    return TR_STOP;
}

static const tr_behavior asker_beh = {.name = "asker",
                                      .handle = asker_handle,
                                      .on_start = asker_start,
                                      .state_size = sizeof(asker)};

static void test_queued_requests_failed_when_proxy_stops(void **state) {
    tu_env *e = *state;
    loss_env(e);
    pid_t pids[2];
    for (unsigned i = 0; i < 2; i++) {
        pids[i] = (pid_t)tr_pool_worker_pid(e->rt, i);
        assert_true(pids[i] > 0);
        assert_int_equal(kill(pids[i], SIGSTOP), 0);
    }
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh,
                                  &(asker){.report = e->inbox_ref},
                                  sizeof(asker), NULL));
    tu_env_start(e);
    tr_msg *m = NULL;
    int rc = tr_inbox_recv(e->inbox, TU_PROMPT_MS, &m);
    for (unsigned i = 0; i < 2; i++) /* before any assert can fail */
        (void)kill(pids[i], SIGCONT);
    TU_ASSERT_OK(rc);
    assert_int_equal(tr_msg_tag(m), T_DONE);
    uint64_t done = tr_msg_u64(m);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    assert_int_equal(done >> 40, 0);               /* other outcomes */
    assert_int_equal((done >> 20) & 0xfffff, 0);   /* answered */
    assert_int_equal(done & 0xfffff, QUEUED_ASKS); /* failed back */
    tu_env_finish(e);
}

int main(int argc, char **argv) {
    tr_register_flags(IDEM, &twice_beh, TR_REG_IDEMPOTENT);
    tr_register(PLAIN, &twice_beh);
    tr_worker_main(argc, argv); /* does not return in a worker */
    const struct CMUnitTest tests[] = {
        TU_TEST(test_queued_requests_failed_when_proxy_stops),
        TU_TEST(test_no_request_lost_under_kills),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
