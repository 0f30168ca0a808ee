/* bench_pipeline.c — the pipeline workload: N small items through
 * producer -> 2 worker processes -> sink (bench/README.md defines it; the
 * peers do not have it).
 *
 * Design notes
 * ------------
 * Built the way a troupe user would build it, from the public toolkit
 * only:
 *
 *   producer --ITEM--> router ==> proxy ~~ipc~~> worker (process 1) --+
 *   (local)            (local,    proxy ~~ipc~~> worker (process 2) --+
 *                      round robin)                                   |
 *   main <--SUMMARY-- sink (local, bounded) <~~ipc~~ OUT (id, result) -+
 *
 *   - The router is a supervised pool (tr_router_pool_spawn) whose
 *     routees are remote: the registered behaviour "bench.pipe_worker",
 *     one per worker process (tr_pool_start: 2 processes, 1 scheduler
 *     thread each; consecutive remote spawns go to the least loaded
 *     process). No restarts: a lost worker fails the run.
 *   - Each worker finds the sink by name in on_start (tr_main_lookup of
 *     "sink", which main's side registered with tr_name_register) and
 *     sends each result straight to it: one message per item each way,
 *     no reply, no forwarding stage in the main process. (The other
 *     choice, a reply the producer forwards to the sink, costs the main
 *     process a second hop per item.)
 *   - Items are BYTES (id, value: 16 bytes), results BYTES (id, result:
 *     16 bytes); value = splitmix64(id), result = PIPE_ROUNDS rounds of a
 *     64-bit mixer over value (a few ns: the per-item cost is the
 *     messaging).
 *
 * Backpressure, end to end, from the runtime only: the producer sends
 * PIPE_CHUNK items per turn and then a NEXT message to itself, so every
 * few dozen items it gives the runtime a chance to mute it. The sink is
 * bounded (TR_OVERFLOW_BACKPRESSURE, PIPE_SINK_LIMIT messages) and main's
 * runtime tracks mailbox depths (track_depth), so the main side of the
 * pool holds back the sink's cross-process credit while the sink's
 * mailbox is more than half a window deep; each worker process then
 * holds the worker's results back (tr_transport_stats.held) and mutes
 * the worker; the worker's mailbox fills, its process holds back the
 * credit for it, main's side holds the items and mutes the router's
 * sends to the worker's proxy, and the producer, sending to a muted (or
 * full: a pool's router is bounded) router, is muted in turn. Nothing in
 * this file counts credit. Where that chain still gives (RESULTS.md,
 * "pipeline"): a full router counts as overloaded, and an overloaded
 * actor is never muted (Pony's cycle guard, actors/mute.c), so it keeps
 * forwarding to proxies without credit, and the proxies' forwards reach a
 * link that may be far behind; main's link then holds those items
 * (held_peak): with a slow sink thousands to tens of thousands, flat in
 * N; at full speed, in some runs, bursts of up to half the items.
 *
 * The sink's checks (the run fails, exit 1, on any of them): every id is
 * in 1..N and arrives once, tracked with a sliding bitmap of
 * PIPE_WINDOW ids from the lowest id not yet seen (`base`), so the check
 * is exact and its memory does not grow past N = PIPE_WINDOW; an id
 * PIPE_WINDOW or more ahead of base also fails (a million items
 * reordered in flight: backpressure is broken, and the check would need
 * an unbounded bitmap). The largest distance seen (reorder_peak) is
 * reported. The sink sums the results; main recomputes
 * the sum sequentially after the timed region and compares. Each worker
 * sends its process id first: the two must differ and be the pool's.
 *
 * Timed region (work_s): as procpool, from before tr_pool_start to the
 * worker processes reaped (tr_runtime_shutdown, run returned, runtime
 * destroyed), so starting and stopping the processes is inside it.
 *
 * pipeline-slow: the same, with the sink busy-waiting `sink_ns` per item
 * (TROUPE_PIPE_SINK_NS, default PIPE_SLOW_SINK_NS: about 10x the
 * per-item time of the full-speed pipeline on the 2-vCPU machine of
 * RESULTS.md), so the producer could run ~10x ahead; the run shows that
 * memory stays flat instead (rss and the runtime's peaks, for N and 4N). */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

#define PIPE_PROCESSES 2
#define PIPE_MAX_ACTORS 16 /* worker actors in all (TROUPE_PIPE_ACTORS) */
#define PIPE_WORKER_BEHAVIOR "bench.pipe_worker"
#define PIPE_SINK_NAME "sink"
/* Rounds of the mixer per item: a trivial transform (~4 ns). */
#define PIPE_ROUNDS 4
/* The sink's sliding bitmap (128 KiB): ids less than this far past base. */
#define PIPE_WINDOW (1u << 20)
/* The sink's bounded mailbox (messages). */
#define PIPE_SINK_LIMIT 1024u
/* Items the producer sends per turn. */
#define PIPE_CHUNK 64u
/* pipeline-slow's default per-item sink delay (see RESULTS.md): ~10x the
 * per-item time of the full-speed pipeline there (~3 us). */
#define PIPE_SLOW_SINK_NS 30000u

/* Tags of this file only, clear of bench.h's and bench_pool.c's. */
enum pipe_tag {
    TAG_ITEM = 120, /* producer -> router -> worker: BYTES (id, value) */
    TAG_OUT,        /* worker -> sink: BYTES (id, result) */
    TAG_HELLO,      /* worker -> sink: u64 its process id */
    TAG_NEXT,       /* producer -> itself: send the next chunk */
    TAG_SUMMARY     /* sink -> main: BYTES pipe_summary */
};

/* The value item `id` carries: splitmix64. */
static uint64_t pipe_value(uint64_t id) {
    uint64_t z = id * 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* The workers' transform: PIPE_ROUNDS rounds of murmur3's finaliser. */
static uint64_t pipe_mix(uint64_t v) {
    for (uint64_t r = 0; r < PIPE_ROUNDS; r++) {
        v ^= v >> 33;
        v *= 0xff51afd7ed558ccdu;
        v ^= v >> 29;
        v += r;
    }
    return v;
}

/* Sends a 16-byte BYTES message (id, x); the message is freed on
 * failure. */
static int send_pair(tr_ctx *ctx, tr_ref to, uint32_t tag, uint64_t id,
                     uint64_t x) {
    uint64_t pair[2] = {id, x};
    tr_msg *m = tr_msg_new_bytes(tag, pair, sizeof pair);
    if (m == NULL)
        return TR_ENOMEM;
    int rc = tr_send(ctx, to, &m);
    if (rc < 0)
        tr_msg_destroy(&m);
    return rc;
}

static int read_pair(const tr_msg *msg, uint64_t pair[2]) {
    size_t len = 0;
    const void *p = tr_msg_data(msg, &len);
    if (tr_msg_kind(msg) != TR_PAYLOAD_BYTES || len != 2 * sizeof(uint64_t))
        return TR_EPROTO;
    memcpy(pair, p, 2 * sizeof(uint64_t));
    return 0;
}

/* ---- the worker (lives in a worker process) ---------------------------------
 */

typedef struct worker_state {
    tr_ref sink;    /* a proxy for main's "sink" */
    unsigned fault; /* TROUPE_PIPE_FAULT, to test the sink's checks */
} worker_state;

static int worker_start(tr_ctx *ctx, void *state) {
    worker_state *w = state;
    w->fault = bench_env_unsigned("TROUPE_PIPE_FAULT", 0);
    int rc = tr_main_lookup(ctx, PIPE_SINK_NAME, &w->sink);
    if (rc < 0)
        return bench_actor_fail(rc, "pipe worker: tr_main_lookup(sink)");
    rc = tr_send_u64(ctx, w->sink, TAG_HELLO, (uint64_t)getpid());
    return rc < 0 ? bench_actor_fail(rc, "pipe worker: send hello") : 0;
}

static int worker_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    worker_state *w = state;
    if (tr_msg_tag(msg) != TAG_ITEM)
        return bench_unexpected("pipe worker", msg);
    uint64_t item[2];
    if (read_pair(msg, item) < 0)
        return bench_actor_fail(TR_EPROTO, "pipe worker: bad item");
    uint64_t result = pipe_mix(item[1]);
    /* Faults on item 1 (tests): 1 = its result twice, 2 = a wrong one. */
    if (item[0] == 1 && w->fault == 2)
        result ^= 1;
    int rc = send_pair(ctx, w->sink, TAG_OUT, item[0], result);
    if (rc == 0 && item[0] == 1 && w->fault == 1)
        rc = send_pair(ctx, w->sink, TAG_OUT, item[0], result);
    return rc < 0 ? bench_actor_fail(rc, "pipe worker: send result") : 0;
}

static const tr_behavior worker_behavior = {
    .name = PIPE_WORKER_BEHAVIOR,
    .handle = worker_handle,
    .on_start = worker_start,
    .state_size = sizeof(worker_state),
};

void bench_pipeline_register(void) {
    bench_must(tr_register(PIPE_WORKER_BEHAVIOR, &worker_behavior),
               "tr_register pipe worker");
}

/* ---- the sink (main process) ------------------------------------------------
 */

/* What the sink tells main when every item is in. */
typedef struct pipe_summary {
    uint64_t count;        /* items received, each exactly once */
    uint64_t sum;          /* of the results */
    uint64_t reorder_peak; /* largest (id - base + 1) seen */
    uint64_t depth_peak;   /* the sink's bounded depth, sampled per item */
    uint64_t full;         /* times its mailbox reached its limit */
    uint64_t pids[PIPE_PROCESSES];
    uint64_t npids;
} pipe_summary;

typedef struct sink_state {
    tr_ref main;
    uint64_t n;
    uint64_t delay_ns; /* busy-wait per item (pipeline-slow) */
    uint32_t nworkers; /* TAG_HELLOs to expect */
    uint32_t hellos;
    uint64_t base; /* lowest id not received yet */
    pipe_summary s;
    bool done;
    uint64_t *bits; /* PIPE_WINDOW bits, bit id % PIPE_WINDOW: received */
} sink_state;

static bool bit_get(const sink_state *k, uint64_t id) {
    uint64_t i = id % PIPE_WINDOW;
    return (k->bits[i / 64] >> (i % 64)) & 1u;
}

static void bit_flip(sink_state *k, uint64_t id) {
    uint64_t i = id % PIPE_WINDOW;
    k->bits[i / 64] ^= (uint64_t)1 << (i % 64);
}

static int sink_take(tr_ctx *ctx, sink_state *k, const tr_msg *msg) {
    uint64_t out[2];
    if (read_pair(msg, out) < 0)
        return bench_actor_fail(TR_EPROTO, "sink: bad result");
    uint64_t id = out[0];
    const char *bad = id == 0 || id > k->n ? "out of range"
                      : id < k->base       ? "received twice"
                      : id - k->base >= PIPE_WINDOW
                          ? "beyond the reorder window"
                      : bit_get(k, id) ? "received twice"
                                       : NULL;
    if (bad != NULL) {
        fprintf(stderr,
                "troupe_bench: sink: item %" PRIu64
                " %s (lowest missing %" PRIu64 ", N %" PRIu64 ")\n",
                id, bad, k->base, k->n);
        return bench_actor_fail(TR_EPROTO, "sink: exactly-once check");
    }
    bit_flip(k, id);
    if (id - k->base + 1 > k->s.reorder_peak)
        k->s.reorder_peak = id - k->base + 1;
    while (k->base <= k->n && bit_get(k, k->base)) {
        bit_flip(k, k->base); /* clear it: the slot is reused PIPE_WINDOW on */
        k->base++;
    }
    k->s.sum += out[1];
    k->s.count++;
    tr_mailbox_stats ms;
    if (tr_mailbox_stats_get(tr_ctx_runtime(ctx), tr_self(ctx), &ms) == 0 &&
        ms.depth > k->s.depth_peak)
        k->s.depth_peak = ms.depth;
    if (k->delay_ns > 0) { /* pipeline-slow: a slow consumer, on purpose */
        int64_t until = tr_now_ns() + (int64_t)k->delay_ns;
        while (tr_now_ns() < until)
            ;
    }
    return 0;
}

/* Reports to main once every item is in and every worker said hello. */
static int sink_maybe_done(tr_ctx *ctx, sink_state *k) {
    if (k->done || k->s.count < k->n || k->hellos < k->nworkers)
        return 0;
    k->done = true;
    if (k->base != k->n + 1)
        return bench_actor_fail(TR_ESTATE, "sink: count without every id");
    tr_mailbox_stats ms;
    int rc = tr_mailbox_stats_get(tr_ctx_runtime(ctx), tr_self(ctx), &ms);
    if (rc < 0)
        return bench_actor_fail(rc, "sink: tr_mailbox_stats_get");
    k->s.full = ms.full;
    tr_msg *m = tr_msg_new_bytes(TAG_SUMMARY, &k->s, sizeof k->s);
    if (m == NULL)
        return bench_actor_fail(TR_ENOMEM, "sink: summary");
    rc = tr_send(ctx, k->main, &m);
    if (rc < 0) {
        tr_msg_destroy(&m);
        return bench_actor_fail(rc, "sink: send summary");
    }
    return 0;
}

static int sink_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    sink_state *k = state;
    int rc;
    switch (tr_msg_tag(msg)) {
    case TAG_OUT:
        rc = sink_take(ctx, k, msg);
        break;
    case TAG_HELLO: {
        uint64_t pid = tr_msg_u64(msg);
        bool known = false;
        for (uint64_t i = 0; i < k->s.npids; i++)
            known |= k->s.pids[i] == pid;
        if (!known && k->s.npids < PIPE_PROCESSES)
            k->s.pids[k->s.npids++] = pid;
        else if (!known)
            return bench_unexpected("sink (a third worker process)", msg);
        k->hellos++;
        rc = 0;
        break;
    }
    default:
        return bench_unexpected("sink", msg);
    }
    return rc < 0 ? rc : sink_maybe_done(ctx, k);
}

static int sink_start(tr_ctx *ctx, void *state) {
    (void)ctx;
    sink_state *k = state;
    k->bits = calloc(PIPE_WINDOW / 64, sizeof *k->bits);
    return k->bits != NULL ? 0 : bench_actor_fail(TR_ENOMEM, "sink: calloc");
}

static void sink_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)reason;
    sink_state *k = state;
    free(k->bits);
    k->bits = NULL;
}

static const tr_behavior sink_behavior = {
    .name = "bench.pipe_sink",
    .handle = sink_handle,
    .on_start = sink_start,
    .on_stop = sink_stop,
    .state_size = sizeof(sink_state),
};

/* ---- the producer (main process) --------------------------------------------
 */

typedef struct producer_state {
    tr_ref router;
    uint64_t n;
    uint64_t next; /* the next id to send, 1..N */
} producer_state;

static int producer_start(tr_ctx *ctx, void *state) {
    producer_state *p = state;
    p->next = 1;
    int rc = tr_send_tag(ctx, tr_self(ctx), TAG_NEXT);
    return rc < 0 ? bench_actor_fail(rc, "producer: send next") : 0;
}

static int producer_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    producer_state *p = state;
    if (tr_msg_tag(msg) != TAG_NEXT)
        return bench_unexpected("producer", msg);
    for (uint32_t i = 0; i < PIPE_CHUNK && p->next <= p->n; i++, p->next++) {
        int rc =
            send_pair(ctx, p->router, TAG_ITEM, p->next, pipe_value(p->next));
        if (rc < 0)
            return bench_actor_fail(rc, "producer: send item");
    }
    if (p->next > p->n)
        return TR_STOP;
    /* The next chunk in a later turn: a muted producer stops here. */
    int rc = tr_send_tag(ctx, tr_self(ctx), TAG_NEXT);
    return rc < 0 ? bench_actor_fail(rc, "producer: send next") : 0;
}

static const tr_behavior producer_behavior = {
    .name = "bench.pipe_producer",
    .handle = producer_handle,
    .on_start = producer_start,
    .state_size = sizeof(producer_state),
};

/* ---- the coordinator: builds the pipeline, watches it -----------------------
 */

typedef struct coord_state {
    tr_ref main;
    uint64_t n;
    uint64_t delay_ns;
    uint32_t nworkers;
    tr_ref sink, router, producer;
} coord_state;

static int coord_start(tr_ctx *ctx, void *state) {
    coord_state *c = state;
    sink_state sink = {.main = c->main,
                       .n = c->n,
                       .delay_ns = c->delay_ns,
                       .nworkers = c->nworkers,
                       .base = 1};
    tr_mailbox_limit lim = {.max_msgs = PIPE_SINK_LIMIT,
                            .policy = TR_OVERFLOW_BACKPRESSURE};
    int rc = tr_spawn_bounded(ctx, &sink_behavior, &sink, sizeof sink, &lim,
                              &c->sink);
    if (rc < 0)
        return bench_actor_fail(rc, "coordinator: spawn sink");
    rc = tr_name_register(tr_ctx_runtime(ctx), PIPE_SINK_NAME, c->sink);
    if (rc < 0)
        return bench_actor_fail(rc, "coordinator: tr_name_register(sink)");
    tr_sup_config sup = TR_SUP_CONFIG_INIT;
    sup.name = "pipe.workers";
    sup.intensity = 0; /* a lost worker fails the run */
    tr_router_pool_config pool = {
        .how = TR_ROUTE_ROUND_ROBIN,
        .routee = {.name = "pipe.worker",
                   .remote = PIPE_WORKER_BEHAVIOR,
                   .restart = TR_RESTART_PERMANENT,
                   .shutdown_ms = TR_SUP_SHUTDOWN_DEFAULT},
        .size = c->nworkers,
        .sup = sup,
    };
    rc = tr_router_pool_spawn(ctx, &pool, &c->router);
    if (rc < 0)
        return bench_actor_fail(rc, "coordinator: tr_router_pool_spawn");
    producer_state prod = {.router = c->router, .n = c->n};
    rc = tr_spawn(ctx, &producer_behavior, &prod, sizeof prod, &c->producer);
    return rc < 0 ? bench_actor_fail(rc, "coordinator: spawn producer") : 0;
}

static int coord_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)ctx;
    (void)state;
    return bench_unexpected("pipe coordinator", msg);
}

/* The producer ends normally once it has sent every item; any other end
 * (the router failing because a worker was lost, the sink failing a
 * check) fails the run. During the shutdown this is not called. */
static void coord_child_exit(tr_ctx *ctx, void *state, const tr_exit *exit) {
    (void)ctx;
    coord_state *c = state;
    if (tr_ref_eq(exit->who, c->producer) && exit->reason == TR_EXIT_NORMAL)
        return;
    const char *who = tr_ref_eq(exit->who, c->producer) ? "producer"
                      : tr_ref_eq(exit->who, c->router) ? "router"
                      : tr_ref_eq(exit->who, c->sink)   ? "sink"
                                                        : "a child";
    fprintf(stderr, "troupe_bench: pipeline %s ended (%s)%s%s\n", who,
            tr_exit_reason_name(exit->reason), exit->text[0] ? ": " : "",
            exit->text);
    (void)bench_actor_fail(exit->reason < 0 ? exit->reason : TR_ESTATE,
                           "pipeline");
}

static const tr_behavior coord_behavior = {
    .name = "bench.pipe",
    .handle = coord_handle,
    .on_start = coord_start,
    .on_child_exit = coord_child_exit,
    .state_size = sizeof(coord_state),
};

/* ---- the workload -----------------------------------------------------------
 */

static long maxrss_kib(int who) {
    struct rusage ru;
    return getrusage(who, &ru) == 0 ? ru.ru_maxrss : -1;
}

void bench_pipeline(bench_env *env, uint64_t n, bool slow) {
    uint32_t per_process = bench_env_unsigned("TROUPE_PIPE_ACTORS", 1);
    if (per_process == 0 || per_process * PIPE_PROCESSES > PIPE_MAX_ACTORS) {
        fprintf(stderr, "troupe_bench: TROUPE_PIPE_ACTORS must be 1..%d\n",
                PIPE_MAX_ACTORS / PIPE_PROCESSES);
        exit(2);
    }
    uint64_t delay_ns = 0;
    if (slow) {
        const char *s = getenv("TROUPE_PIPE_SINK_NS");
        delay_ns = PIPE_SLOW_SINK_NS;
        if (s != NULL && *s != '\0') {
            char *end;
            unsigned long long v = strtoull(s, &end, 10);
            if (*end != '\0' || v > 1000000000ull) {
                fprintf(stderr, "troupe_bench: bad TROUPE_PIPE_SINK_NS=%s\n",
                        s);
                exit(2);
            }
            delay_ns = v;
        }
    }
    coord_state init = {.main = env->main,
                        .n = n,
                        .delay_ns = delay_ns,
                        .nworkers = per_process * PIPE_PROCESSES};

    double t0 = bench_now();
    bench_must(
        tr_pool_start(env->rt, &(tr_pool_config){.processes = PIPE_PROCESSES,
                                                 .worker_threads = 1}),
        "tr_pool_start");
    bench_must(
        tr_runtime_spawn(env->rt, &coord_behavior, &init, sizeof init, NULL),
        "spawn pipeline");
    tr_msg *msg;
    bench_recv_msg(env, TAG_SUMMARY, &msg);
    pipe_summary s;
    size_t len = 0;
    const void *data = tr_msg_data(msg, &len);
    if (len != sizeof s) {
        fprintf(stderr, "troupe_bench: bad pipeline summary\n");
        exit(1);
    }
    memcpy(&s, data, sizeof s);
    bench_must(tr_msg_destroy(&msg), "tr_msg_destroy");
    /* Before the shutdown: held_peak is the main side's (items held for
     * the workers' credit). */
    tr_transport_stats ts;
    bench_must(tr_transport_stats_get(env->rt, false, &ts),
               "tr_transport_stats_get");
    tr_runtime_stats rs;
    tr_runtime_get_stats(env->rt, &rs);
    int pids_ok = 0;
    for (unsigned p = 0; p < PIPE_PROCESSES; p++) {
        int pid = tr_pool_worker_pid(env->rt, p);
        for (uint64_t i = 0; i < s.npids; i++)
            pids_ok += pid > 0 && s.pids[i] == (uint64_t)pid;
    }
    bench_finish(env, true); /* shutdown: the workers are reaped in it */
    double t1 = bench_now();

    /* Outside the timed region: the same sum, sequentially. */
    uint64_t expect = 0;
    for (uint64_t id = 1; id <= n; id++)
        expect += pipe_mix(pipe_value(id));
    if (s.count != n || s.sum != expect || pids_ok != PIPE_PROCESSES) {
        fprintf(stderr,
                "troupe_bench: pipeline check failed: count %" PRIu64
                " of %" PRIu64 ", sum 0x%016" PRIx64 " expected 0x%016" PRIx64
                ", %d of %d worker processes answered\n",
                s.count, n, s.sum, expect, pids_ok, PIPE_PROCESSES);
        exit(1);
    }
    double work = t1 - t0;
    printf("check=%" PRIu64 " work_s=%.6f items_per_s=%.0f rss_peak_kib=%ld "
           "rss_workers_peak_kib=%ld held_peak=%" PRIu64
           " sink_depth_peak=%" PRIu64 " sink_full=%" PRIu64
           " reorder_peak=%" PRIu64 " muted=%" PRIu64 " sink_ns=%" PRIu64
           " checksum=0x%016" PRIx64 "\n",
           s.count, work, (double)n / work, maxrss_kib(RUSAGE_SELF),
           maxrss_kib(RUSAGE_CHILDREN), ts.held_peak, s.depth_peak, s.full,
           s.reorder_peak, rs.muted, delay_ns, s.sum);
    fflush(stdout);
}
