/* bench_pool.c — workloads 5 and 6 of the peers' README: procpool-heavy
 * (T CPU-heavy tasks) and procpool-tiny (T trivial tasks) on a pool of 2
 * worker processes.
 *
 * Design notes
 * ------------
 * Main starts the pool (tr_pool_start: 2 processes, 1 scheduler thread
 * each) and spawns one local *dispatcher* actor. The dispatcher spawns the
 * remote *task* actors (tr_spawn_remote, so their proxies are its
 * children) and hands out the tasks k = 0..T-1 by credit, as the zmq_c
 * peer does: each task actor has `window` task messages in flight, and
 * each result message frees one credit for the actor that sent it, so a
 * faster process gets more tasks. When all T results are in, the
 * dispatcher sends their sum to main's inbox. Main then shuts the runtime
 * down (the proxies cancel their remote actors, tr_runtime_run returns,
 * tr_runtime_destroy says BYE to the workers and reaps them) and only then
 * stops the clock: starting the worker processes and shutting them down is
 * inside the timed region, as the README requires.
 *
 * The shape of the exchange, per workload (defaults; TROUPE_POOL_ACTORS,
 * _WINDOW and _BATCH override them for measurements, see README.md):
 *
 *   heavy: each task its own message (a u64) and each result its own
 *          message, as in the zmq_c and Python chunksize=1 rows. 2 task
 *          actors per process, 16 task messages in flight each (32 tasks,
 *          ~23 ms of work, queued per process). The window is deep
 *          because a round trip is slow while both cores run tasks: every
 *          hop (zmq I/O thread, reactor, scheduler thread, in each
 *          process) waits for a core. Measured here (T = 2000, work_s):
 *          zmq_c's W = 2 per process gives 0.9-0.95 s, 8 gives 0.80 s,
 *          16 gives 0.77-0.79 s, 32 and 64 give 0.76-0.78 s.
 *          Two actors rather than one: a worker process runs 1 scheduler
 *          thread, which also runs the link actor that owns its socket,
 *          and an actor handles everything in its mailbox in one turn (up
 *          to the batch), so the results of one actor's turn leave
 *          together (one frame) when the turn ends; with two actors, one
 *          computes while the other's results travel and its next tasks
 *          come back.
 *   tiny:  batches of 1000 task indices per message (the README allows a
 *          runtime to batch tiny tasks; Python's chunksize=1000 row does
 *          the same), 1 task actor per process, 2 messages in flight each.
 *          Every task index and every result still crosses the process
 *          boundary, 8 and 16 bytes each.
 *   TROUPE_POOL_BATCH=0 ("guided", as OpenMP's schedule) sends the tasks
 *          left / (2 x the messages in flight) per message: few large
 *          batches first, single tasks at the end.
 *
 * Messages (same binary, same host: integers travel in native byte order,
 * as in the zmq_c peer's raw frames):
 *   TAG_WHO   dispatcher -> task actor, u64 actor index; the actor answers
 *             TAG_PID with its process id, so the dispatcher checks that
 *             the task actors really are spread over both processes.
 *   TAG_TASK  one task, u64 k                 (a message of 1 task)
 *   TAG_TASKS n tasks, bytes: n x uint64 k     (a message of 2 or more)
 *   TAG_DONE  results, bytes: n x (uint64 k, uint64 result)
 * The dispatcher marks each k in a bitmap: a result for an unknown task, a
 * task answered twice or a lost result (a proxy that ends before the last
 * result) fails the run. check = the sum of the results received. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define POOL_PROCESSES 2
#define POOL_MAX_ACTORS 16
#define POOL_TASK_BEHAVIOR "bench.pool_task"
/* Tasks in one guided batch, at most: 4096 heavy tasks are ~3 s of one
 * handler, well inside the pool's hang timeout (10 s by default: a worker
 * whose link cannot answer heartbeats that long is killed as hung). */
#define POOL_GUIDED_MAX 4096

/* Tags of this file only, clear of bench.h's. */
enum pool_tag {
    TAG_WHO = 100,
    TAG_PID,
    TAG_TASK,
    TAG_TASKS,
    TAG_DONE,
};

/* The task of workload 5, exactly the README's loop (the zmq_c peer's and
 * its sequential baseline's, which this is compared with). */
static uint64_t heavy_task(uint64_t k) {
    uint64_t acc = 0;
    for (uint64_t i = 0; i < 200000; i++) {
        uint64_t x = i + k;
        acc = (acc + x * x) % 1000003;
    }
    return acc;
}

static uint64_t tiny_task(uint64_t k) { return 2 * k; }

/* ---- the task actor (lives in a worker process) -----------------------------
 */

typedef struct task_state {
    uint32_t kind; /* from the spawn's init: BENCH_POOL_HEAVY / _TINY */
    uint64_t *out; /* results of one batch: (k, result) pairs */
    size_t out_cap;
} task_state;

static uint64_t run_task(const task_state *s, uint64_t k) {
    return s->kind == BENCH_POOL_HEAVY ? heavy_task(k) : tiny_task(k);
}

static int task_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    task_state *s = state;
    tr_ref from = tr_msg_sender(msg);
    switch (tr_msg_tag(msg)) {
    case TAG_WHO: {
        int rc = tr_send_u64(ctx, from, TAG_PID, (uint64_t)getpid());
        return rc < 0 ? bench_actor_fail(rc, "task: send pid") : 0;
    }
    case TAG_TASK: {
        uint64_t k = tr_msg_u64(msg);
        uint64_t pair[2] = {k, run_task(s, k)};
        tr_msg *done = tr_msg_new_bytes(TAG_DONE, pair, sizeof pair);
        if (done == NULL)
            return bench_actor_fail(TR_ENOMEM, "task: tr_msg_new_bytes");
        int rc = tr_send(ctx, from, &done);
        if (rc < 0) {
            tr_msg_destroy(&done);
            return bench_actor_fail(rc, "task: send result");
        }
        return 0;
    }
    case TAG_TASKS: {
        size_t len;
        const unsigned char *p = tr_msg_data(msg, &len);
        size_t n = len / sizeof(uint64_t);
        if (n == 0 || len % sizeof(uint64_t) != 0)
            return bench_actor_fail(TR_EPROTO, "task: bad batch");
        if (s->out_cap < 2 * n) {
            uint64_t *out = realloc(s->out, 2 * n * sizeof *out);
            if (out == NULL)
                return bench_actor_fail(TR_ENOMEM, "task: realloc");
            s->out = out;
            s->out_cap = 2 * n;
        }
        for (size_t i = 0; i < n; i++) {
            uint64_t k;
            memcpy(&k, p + i * sizeof k, sizeof k);
            s->out[2 * i] = k;
            s->out[2 * i + 1] = run_task(s, k);
        }
        tr_msg *done =
            tr_msg_new_bytes(TAG_DONE, s->out, 2 * n * sizeof *s->out);
        if (done == NULL)
            return bench_actor_fail(TR_ENOMEM, "task: tr_msg_new_bytes");
        int rc = tr_send(ctx, from, &done);
        if (rc < 0) {
            tr_msg_destroy(&done);
            return bench_actor_fail(rc, "task: send results");
        }
        return 0;
    }
    default:
        return bench_unexpected("task", msg);
    }
}

static void task_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)reason;
    task_state *s = state;
    free(s->out);
    s->out = NULL;
}

static const tr_behavior task_behavior = {
    .name = POOL_TASK_BEHAVIOR,
    .handle = task_handle,
    .on_stop = task_stop,
    .state_size = sizeof(task_state),
};

void bench_pool_register(void) {
    bench_must(tr_register(POOL_TASK_BEHAVIOR, &task_behavior), "tr_register");
}

/* ---- the dispatcher (main process) ------------------------------------------
 */

typedef struct dispatcher {
    tr_ref main;
    uint32_t kind;
    uint32_t nactors; /* task actors, spread over the processes */
    uint32_t window;  /* task messages in flight per task actor */
    uint32_t batch;   /* tasks per message; 0 = guided */
    uint64_t t;       /* tasks */
    uint64_t next;    /* next task to hand out */
    uint64_t got;     /* results received */
    uint64_t sum;
    bool done;
    uint8_t *seen;  /* bitmap of the tasks answered */
    uint64_t *buf;  /* one batch of task indices */
    uint32_t npids; /* TAG_PID answers received */
    tr_ref actors[POOL_MAX_ACTORS];
    uint64_t pids[POOL_MAX_ACTORS];
    uint32_t inflight[POOL_MAX_ACTORS]; /* task messages out per actor */
    double started, first_pid, last_pid, first_result; /* for the stats */
    double last_at[POOL_MAX_ACTORS];
    bool taper; /* shrink the window towards the end (see refill) */
} dispatcher;

/* Tasks in the next message: `batch`, or with batch = 0 ("guided", as
 * OpenMP's schedule): the tasks left / (2 x the messages in flight), so
 * the batches shrink towards the end and the processes finish together. */
static uint64_t next_batch(const dispatcher *d) {
    uint64_t left = d->t - d->next;
    uint64_t n = d->batch;
    if (n == 0) {
        n = left / (2 * (uint64_t)d->nactors * d->window);
        n = n < 1 ? 1 : n > POOL_GUIDED_MAX ? POOL_GUIDED_MAX : n;
    }
    return n < left ? n : left;
}

/* Sends actor i its next message of tasks (nothing when all are handed
 * out). */
static int send_tasks(tr_ctx *ctx, dispatcher *d, uint32_t i) {
    if (d->next >= d->t)
        return 0;
    uint64_t n = next_batch(d);
    tr_msg *m;
    if (n == 1) {
        m = tr_msg_new_u64(TAG_TASK, d->next++);
    } else {
        for (uint64_t j = 0; j < n; j++)
            d->buf[j] = d->next++;
        m = tr_msg_new_bytes(TAG_TASKS, d->buf, n * sizeof *d->buf);
    }
    if (m == NULL)
        return bench_actor_fail(TR_ENOMEM, "dispatcher: new task message");
    int rc = tr_send(ctx, d->actors[i], &m);
    if (rc < 0) {
        tr_msg_destroy(&m);
        return bench_actor_fail(rc, "dispatcher: send tasks");
    }
    d->inflight[i]++;
    return 0;
}

/* After actor i's results: tops its messages in flight up to the window.
 * Tapered (heavy, one task per message): to at most the tasks left /
 * (2 x actors), at least 1, so that when the last task is handed out each
 * process has only a task or two queued and both finish together, instead
 * of one idling while the other works off a full window. */
static int refill(tr_ctx *ctx, dispatcher *d, uint32_t i) {
    uint32_t target = d->window;
    if (d->taper) {
        uint64_t left = d->t - d->next;
        uint64_t fair = (left + 2 * d->nactors - 1) / (2 * d->nactors);
        if (fair < target)
            target = fair > 0 ? (uint32_t)fair : 1;
    }
    while (d->inflight[i] < target && d->next < d->t) {
        int rc = send_tasks(ctx, d, i);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int dispatcher_start(tr_ctx *ctx, void *state) {
    dispatcher *d = state;
    d->started = bench_now();
    d->seen = calloc(d->t / 8 + 1, 1);
    d->buf = calloc(d->batch > 0 ? d->batch : POOL_GUIDED_MAX, sizeof *d->buf);
    if (d->seen == NULL || d->buf == NULL)
        return bench_actor_fail(TR_ENOMEM, "dispatcher: calloc");
    /* Consecutive remote spawns go to the least loaded process, which
     * counts each spawn at once: actor i lands in process i % 2. The
     * TAG_PID answers check it. */
    for (uint32_t i = 0; i < d->nactors; i++) {
        int rc = tr_spawn_remote(ctx, POOL_TASK_BEHAVIOR, &d->kind,
                                 sizeof d->kind, &d->actors[i]);
        if (rc < 0)
            return bench_actor_fail(rc, "dispatcher: tr_spawn_remote");
        rc = tr_send_u64(ctx, d->actors[i], TAG_WHO, i);
        if (rc < 0)
            return bench_actor_fail(rc, "dispatcher: send who");
    }
    /* Messages sent before a remote actor exists wait, in order, in its
     * proxy: the whole initial window goes out now. */
    for (uint32_t w = 0; w < d->window; w++)
        for (uint32_t i = 0; i < d->nactors; i++) {
            int rc = send_tasks(ctx, d, i);
            if (rc < 0)
                return rc;
        }
    return 0;
}

static int actor_index(const dispatcher *d, tr_ref from) {
    for (uint32_t i = 0; i < d->nactors; i++)
        if (tr_ref_eq(d->actors[i], from))
            return (int)i;
    return -1;
}

/* Every process must run nactors / processes task actors. */
static int check_placement(tr_ctx *ctx, const dispatcher *d) {
    tr_runtime *rt = tr_ctx_runtime(ctx);
    for (unsigned p = 0; p < POOL_PROCESSES; p++) {
        int pid = tr_pool_worker_pid(rt, p);
        uint32_t n = 0;
        for (uint32_t i = 0; i < d->nactors; i++)
            n += pid > 0 && d->pids[i] == (uint64_t)pid;
        if (n != d->nactors / POOL_PROCESSES) {
            fprintf(stderr,
                    "troupe_bench: worker process %u (pid %d) runs %" PRIu32
                    " task actors, expected %" PRIu32 "\n",
                    p, pid, n, d->nactors / POOL_PROCESSES);
            return bench_actor_fail(TR_ESTATE, "dispatcher: placement");
        }
    }
    return 0;
}

static int take_results(dispatcher *d, const tr_msg *msg) {
    size_t len;
    const unsigned char *p = tr_msg_data(msg, &len);
    if (len == 0 || len % (2 * sizeof(uint64_t)) != 0)
        return bench_actor_fail(TR_EPROTO, "dispatcher: bad results");
    for (size_t off = 0; off < len; off += 2 * sizeof(uint64_t)) {
        uint64_t pair[2];
        memcpy(pair, p + off, sizeof pair);
        uint64_t k = pair[0];
        if (k >= d->next || (d->seen[k / 8] & (1u << (k % 8))) != 0) {
            fprintf(stderr,
                    "troupe_bench: result for task %" PRIu64
                    " not handed out or answered twice\n",
                    k);
            return bench_actor_fail(TR_EPROTO, "dispatcher: results");
        }
        d->seen[k / 8] |= (uint8_t)(1u << (k % 8));
        d->sum += pair[1];
        d->got++;
    }
    return 0;
}

/* Reports the sum to main once every result is in and every task actor
 * has said where it runs (an actor that got no task, when T is small, may
 * answer TAG_WHO after the last result). */
static int maybe_finish(tr_ctx *ctx, dispatcher *d) {
    if (d->done || d->got < d->t || d->npids < d->nactors)
        return 0;
    int rc = check_placement(ctx, d);
    if (rc < 0)
        return rc;
    d->done = true;
    if (getenv("TROUPE_BENCH_STATS") != NULL)
        fprintf(stderr,
                "procpool dispatcher (s after its start): first actor up "
                "%.6f, last %.6f, first result %.6f, all results %.6f\n",
                d->first_pid - d->started, d->last_pid - d->started,
                d->first_result - d->started, bench_now() - d->started);
    if (getenv("TROUPE_BENCH_STATS") != NULL)
        for (uint32_t a = 0; a < d->nactors; a++)
            fprintf(stderr, "actor %u (pid %llu) last result at %.6f\n", a, (unsigned long long)d->pids[a], d->last_at[a] - d->started);
    rc = tr_send_u64(ctx, d->main, TAG_RESULT, d->sum);
    return rc < 0 ? bench_actor_fail(rc, "dispatcher: send result") : 0;
}

static int dispatcher_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    dispatcher *d = state;
    int i = actor_index(d, tr_msg_sender(msg));
    if (i < 0)
        return bench_unexpected("dispatcher", msg);
    switch (tr_msg_tag(msg)) {
    case TAG_PID:
        if (d->pids[i] != 0)
            return bench_unexpected("dispatcher (second pid)", msg);
        d->pids[i] = tr_msg_u64(msg);
        if (d->npids++ == 0)
            d->first_pid = bench_now();
        d->last_pid = bench_now();
        return maybe_finish(ctx, d);
    case TAG_DONE: {
        if (d->got == 0)
            d->first_result = bench_now();
        d->last_at[i] = bench_now();
        int rc = take_results(d, msg);
        if (d->inflight[i] > 0)
            d->inflight[i]--;
        if (rc == 0)
            rc = refill(ctx, d, (uint32_t)i);
        return rc < 0 ? rc : maybe_finish(ctx, d);
    }
    default:
        return bench_unexpected("dispatcher", msg);
    }
}

/* A task actor's proxy ended: its process died or the actor failed. Before
 * the last result that is a lost task; afterwards it is the shutdown. */
static void dispatcher_child_exit(tr_ctx *ctx, void *state,
                                  const tr_exit *exit) {
    (void)ctx;
    dispatcher *d = state;
    if (d->done)
        return;
    fprintf(stderr,
            "troupe_bench: task actor %" PRIu64 " ended (%s) after %" PRIu64
            " of %" PRIu64 " results\n",
            exit->who.id, tr_exit_reason_name(exit->reason), d->got, d->t);
    (void)bench_actor_fail(exit->reason < 0 ? exit->reason : TR_ELOST,
                           "a task actor");
}

static void dispatcher_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)reason;
    dispatcher *d = state;
    free(d->seen);
    free(d->buf);
    d->seen = NULL;
    d->buf = NULL;
}

static const tr_behavior dispatcher_behavior = {
    .name = "bench.dispatcher",
    .handle = dispatcher_handle,
    .on_start = dispatcher_start,
    .on_stop = dispatcher_stop,
    .on_child_exit = dispatcher_child_exit,
    .state_size = sizeof(dispatcher),
};

/* ---- the workload -----------------------------------------------------------
 */

void bench_pool(bench_env *env, enum bench_pool_kind kind, uint64_t t) {
    bool heavy = kind == BENCH_POOL_HEAVY;
    uint32_t per_process =
        bench_env_unsigned("TROUPE_POOL_ACTORS", heavy ? 2 : 1);
    dispatcher init = {
        .main = env->main,
        .kind = (uint32_t)kind,
        .nactors = POOL_PROCESSES * per_process,
        .window = bench_env_unsigned("TROUPE_POOL_WINDOW", heavy ? 16 : 2),
        .batch = bench_env_unsigned("TROUPE_POOL_BATCH", heavy ? 1 : 1000),
        .taper = bench_env_unsigned("TROUPE_POOL_TAPER", heavy ? 1 : 0) != 0,
        .t = t,
    };
    if (per_process == 0 || init.nactors > POOL_MAX_ACTORS ||
        init.window == 0) {
        fprintf(stderr,
                "troupe_bench: TROUPE_POOL_ACTORS must be 1..%d, "
                "TROUPE_POOL_WINDOW >= 1\n",
                POOL_MAX_ACTORS / POOL_PROCESSES);
        exit(2);
    }

    double t0 = bench_now();
    bench_must(
        tr_pool_start(env->rt, &(tr_pool_config){.processes = POOL_PROCESSES,
                                                 .worker_threads = 1}),
        "tr_pool_start");
    double t_started = bench_now();
    bench_must(tr_runtime_spawn(env->rt, &dispatcher_behavior, &init,
                                sizeof init, NULL),
               "spawn dispatcher");
    uint64_t check = bench_recv_u64(env, TAG_RESULT);
    double t_result = bench_now();
    bench_finish(env, true); /* shutdown: the workers are reaped in it */
    double t1 = bench_now();

    printf("check=%" PRIu64 " work_s=%.6f\n", check, t1 - t0);
    fflush(stdout);
    if (getenv("TROUPE_BENCH_STATS") != NULL)
        fprintf(stderr,
                "procpool phases (s): pool_start=%.6f tasks=%.6f "
                "shutdown=%.6f destroy+reap=%.6f\n",
                t_started - t0, t_result - t_started, env->joined_at - t_result,
                t1 - env->joined_at);
}
