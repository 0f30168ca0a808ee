/* troupe_bench — troupe's side of the peer benchmarks (main.c: the
 * command line, the runtime around the workloads, failure reporting).
 *
 * Design notes
 * ------------
 * Implements the workloads of ../shared/peers/README.md with its command
 * line and output contract, so that the peers' run.sh can run troupe beside
 * CAF, Erlang, Go and Python:
 *
 *   troupe_bench pingpong [N]      N = 1,000,000 round trips
 *   troupe_bench counting [N]      N = 10,000,000 increments, then one get
 *   troupe_bench ring [H] [R]      H = 10,000,000 hops, R = 503 actors
 *   troupe_bench skynet [L]        L = 1,000,000 leaves (a power of 10)
 *   troupe_bench procpool-heavy [T]  T = 2,000 CPU-heavy tasks, 2 processes
 *   troupe_bench procpool-tiny [T]   T = 200,000 trivial tasks, 2 processes
 *   troupe_bench idle [N]          N = 1,000,000 idle actors
 *   troupe_bench pipeline [N]      N = 1,000,000 items, producer -> 2 worker
 *                                  processes -> sink (troupe's own workload,
 *                                  defined in README.md)
 *   troupe_bench pipeline-slow [N] N = 100,000 items, the sink ~10x slower
 *
 * and prints one line, "check=<n> work_s=<s>" (idle adds bytes_per_actor and
 * the RSS readings it comes from; pipeline adds items_per_s and the memory
 * peaks).
 *
 * The binary is also its own worker process: the procpool workloads' pool
 * re-executes it in worker mode, so main() registers the remote behaviour
 * and calls tr_worker_main() before anything else (it does not return in a
 * worker).
 *
 * Every workload runs on 2 worker threads (the peers' rule), overridable
 * with TROUPE_WORKERS=<n>; TROUPE_BATCH=<n> sets the per-turn batch (0, the
 * default, leaves the runtime's). TROUPE_BENCH_STATS=1 prints the runtime's
 * counters to stderr at the end (procpool: also its phases). The worker
 * processes of the procpool workloads run 1 scheduler thread each, and so
 * does their main process (TROUPE_WORKERS overrides).
 *
 * Structure. tr_runtime_run blocks its caller until quiescence, so it runs
 * on a "runner" thread, and main plays the part of CAF's scoped_actor: it
 * owns a tr_inbox, spawns the workload's actors with tr_runtime_spawn and
 * blocks on the inbox for the result. An "anchor" actor, spawned before the
 * runner starts, keeps the runtime from being quiescent before the workload
 * is spawned; its on_start message to the inbox tells main that the workers
 * are up, so worker start-up stays outside the timed region as the peers'
 * VM/actor-system start-up does. The timed region starts before the first
 * spawn and ends when main has the result (idle: when main knows that all N
 * actors have started). Afterwards main stops what is left (the ring nodes,
 * the anchor) with ordinary messages and waits for tr_runtime_run to return
 * at quiescence, so each run also checks that every actor really ended.
 *
 * The procpool workloads start the pool of worker processes inside the
 * timed region and end it with tr_runtime_shutdown (bench_pool.c).
 *
 * Files: main.c (this), bench_local.c (workloads 1-4), bench_pool.c
 * (workloads 5-6), bench_idle.c (workload 8), bench_pipeline.c
 * (pipeline), bench.h.
 *
 * Every check value is computed from the messages the actors exchanged. A
 * failing troupe call is printed with its error name and makes the run fail
 * (exit 1); nothing is retried or papered over. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_timedjoin_np */
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "bench.h"

/* ---- failure reporting ----------------------------------------------------
 */

/* Set by a handler whose troupe call failed; main gives up waiting. */
static atomic_bool g_failed;

/* Reports a failed troupe call made inside a handler and returns rc, so that
 * the handler ends its actor with that failure. */
int bench_actor_fail(int rc, const char *what) {
    fprintf(stderr, "troupe_bench: %s failed: %s (%s)\n", what, tr_err_name(rc),
            tr_strerror(rc));
    /* relaxed: a flag polled by main; the message above is the payload. */
    atomic_store_explicit(&g_failed, true, memory_order_relaxed);
    return rc;
}

int bench_unexpected(const char *who, const tr_msg *msg) {
    fprintf(stderr, "troupe_bench: %s got unexpected tag %" PRIu32 "\n", who,
            tr_msg_tag(msg));
    atomic_store_explicit(&g_failed, true, memory_order_relaxed);
    return TR_EPROTO;
}

/* Checks a troupe call made by main; exits on failure. */
void bench_must(int rc, const char *what) {
    if (rc < 0) {
        fprintf(stderr, "troupe_bench: %s failed: %s (%s)\n", what,
                tr_err_name(rc), tr_strerror(rc));
        exit(1);
    }
}

/* ---- the runtime, the runner thread, main's inbox -------------------------
 */

static void *bench_runner(void *arg) {
    bench_env *env = arg;
    env->run_rc = tr_runtime_run(env->rt);
    /* release: run_rc is visible to whoever sees the flag. */
    atomic_store_explicit(&env->run_returned, true, memory_order_release);
    return NULL;
}

/* Anchor: keeps the runtime alive between start-up and the workload. */
static int anchor_on_start(tr_ctx *ctx, void *state) {
    const tr_ref *main_ref = state;
    int rc = tr_send_tag(ctx, *main_ref, TAG_READY);
    return rc < 0 ? bench_actor_fail(rc, "anchor: send ready") : 0;
}

static int anchor_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)ctx;
    (void)state;
    return tr_msg_tag(msg) == TAG_STOP ? TR_STOP
                                       : bench_unexpected("anchor", msg);
}

static const tr_behavior anchor_behavior = {
    .name = "bench.anchor",
    .handle = anchor_handle,
    .on_start = anchor_on_start,
    .state_size = sizeof(tr_ref),
};

unsigned bench_env_unsigned(const char *name, unsigned dflt) {
    const char *s = getenv(name);
    if (s == NULL || *s == '\0')
        return dflt;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > 4096) {
        fprintf(stderr, "troupe_bench: bad %s=%s\n", name, s);
        exit(2);
    }
    return (unsigned)v;
}

/* Receives the next message on main's inbox into *out (caller frees).
 * Waits in short slices so that a failed handler or a runtime that returned
 * early ends the run with a message instead of a hang. */
static void bench_recv(bench_env *env, tr_msg **out) {
    for (;;) {
        int rc = tr_inbox_recv(env->inbox, 200, out);
        if (rc == 0)
            return;
        if (rc != TR_ETIMEDOUT)
            bench_must(rc, "tr_inbox_recv");
        if (atomic_load_explicit(&g_failed, memory_order_relaxed)) {
            fprintf(stderr, "troupe_bench: an actor failed; giving up\n");
            exit(1);
        }
        if (atomic_load_explicit(&env->run_returned, memory_order_acquire)) {
            fprintf(stderr,
                    "troupe_bench: tr_runtime_run returned (%s) while main "
                    "was still waiting for a message\n",
                    tr_err_name(env->run_rc));
            exit(1);
        }
    }
}

/* Receives a message that must have tag `tag` into *out (caller frees). */
void bench_recv_msg(bench_env *env, uint32_t tag, tr_msg **out) {
    bench_recv(env, out);
    if (tr_msg_tag(*out) != tag) {
        fprintf(stderr,
                "troupe_bench: main expected tag %" PRIu32 ", got %" PRIu32
                "\n",
                tag, tr_msg_tag(*out));
        exit(1);
    }
}

/* Receives a message that must have tag `tag`; returns its u64 value. */
uint64_t bench_recv_u64(bench_env *env, uint32_t tag) {
    tr_msg *msg;
    bench_recv_msg(env, tag, &msg);
    uint64_t value = tr_msg_u64(msg);
    bench_must(tr_msg_destroy(&msg), "tr_msg_destroy");
    return value;
}

/* workers: the default scheduler threads (TROUPE_WORKERS overrides).
 * track_depth: maintain mailbox depths (pipeline: the pool then holds
 * back the credit of a local actor that falls behind). */
static void bench_start(bench_env *env, unsigned workers, bool track_depth) {
    tr_runtime_config cfg = {
        .workers = bench_env_unsigned("TROUPE_WORKERS", workers),
        .batch = bench_env_unsigned("TROUPE_BATCH", 0),
        .track_depth = track_depth,
    };
    bench_must(tr_runtime_create(&env->rt, &cfg), "tr_runtime_create");
    if (cfg.workers != 0 && tr_runtime_workers(env->rt) != cfg.workers) {
        fprintf(stderr, "troupe_bench: expected %u workers, runtime has %u\n",
                cfg.workers, tr_runtime_workers(env->rt));
        exit(1);
    }
    bench_must(tr_inbox_create(env->rt, &env->inbox), "tr_inbox_create");
    env->main = tr_inbox_ref(env->inbox);
    bench_must(tr_runtime_spawn(env->rt, &anchor_behavior, &env->main,
                                sizeof env->main, &env->anchor),
               "spawn anchor");
    atomic_init(&env->run_returned, false);
    int err = pthread_create(&env->runner, NULL, bench_runner, env);
    if (err != 0) {
        fprintf(stderr, "troupe_bench: pthread_create: %s\n", strerror(err));
        exit(1);
    }
    (void)bench_recv_u64(env, TAG_READY); /* a worker runs the anchor */
}

/* See bench.h. Without shutdown, every actor but the anchor must have ended
 * by now: the run then also checks that they really do. */
void bench_finish(bench_env *env, bool shutdown) {
    if (shutdown)
        bench_must(tr_runtime_shutdown(env->rt), "tr_runtime_shutdown");
    else
        bench_must(tr_runtime_send_u64(env->rt, env->anchor, TAG_STOP, 0),
                   "send stop to anchor");
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 20;
    int err = pthread_timedjoin_np(env->runner, NULL, &deadline);
    if (err == ETIMEDOUT) {
        tr_runtime_stats st;
        tr_runtime_get_stats(env->rt, &st);
        fprintf(stderr,
                "troupe_bench: tr_runtime_run did not return "
                "within 20 s (spawned=%" PRIu64 " ended=%" PRIu64
                "); calling tr_runtime_stop\n",
                st.spawned, st.ended);
        bench_must(tr_runtime_stop(env->rt), "tr_runtime_stop");
        err = pthread_join(env->runner, NULL);
    }
    if (err != 0) {
        fprintf(stderr, "troupe_bench: joining the runner: %s\n",
                strerror(err));
        exit(1);
    }
    env->joined_at = bench_now();
    bench_must(env->run_rc, "tr_runtime_run");
    if (getenv("TROUPE_BENCH_STATS") != NULL) {
        tr_runtime_stats st;
        tr_runtime_get_stats(env->rt, &st);
        fprintf(stderr,
                "stats: spawned=%" PRIu64 " ended=%" PRIu64
                " dead_letters=%" PRIu64 " late_replies=%" PRIu64
                " timers_fired=%" PRIu64 " sends_refused=%" PRIu64 "\n",
                st.spawned, st.ended, st.dead_letters, st.late_replies,
                st.timers_fired, st.sends_refused);
    }
    tr_inbox_destroy(&env->inbox);
    tr_runtime_destroy(&env->rt);
}

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
/* ---- command line -----------------------------------------------------------
 */

static uint64_t arg_u64(int argc, char **argv, int i, uint64_t dflt) {
    if (i >= argc)
        return dflt;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(argv[i], &end, 10);
    if (errno != 0 || *end != '\0' || argv[i][0] == '-' || v == 0) {
        fprintf(stderr, "troupe_bench: bad size '%s' (a positive integer)\n",
                argv[i]);
        exit(2);
    }
    return (uint64_t)v;
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s pingpong [N] | counting [N] | ring [H] [R] | "
            "skynet [L] | procpool-heavy [T] | procpool-tiny [T] | idle [N] "
            "| pipeline [N] | pipeline-slow [N]\n"
            "  defaults: pingpong 1000000, counting 10000000, ring 10000000 "
            "503, skynet 1000000, procpool-heavy 2000, procpool-tiny 200000, "
            "idle 1000000, pipeline 1000000, pipeline-slow 100000\n"
            "  env: TROUPE_WORKERS (default 2), TROUPE_BATCH, "
            "TROUPE_BENCH_STATS=1,\n"
            "       TROUPE_POOL_ACTORS, TROUPE_POOL_WINDOW, "
            "TROUPE_POOL_BATCH (procpool; see bench/README.md),\n"
            "       TROUPE_PIPE_ACTORS, TROUPE_PIPE_SINK_NS (pipeline)\n",
            argv0);
}

#ifdef TROUPE_BENCH_LOCAL_ONLY
/* troupe_bench itself does not link the process pool (libzmq and its
 * dependencies would add ~3 MiB to every workload's peak RSS): the
 * procpool and pipeline workloads run in its sibling binary
 * troupe_bench_pool. */
static int exec_pool_binary(char **argv) {
    char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 32);
    if (n <= 0)
        return 1;
    path[n] = 0;
    char *slash = strrchr(path, '/');
    strcpy(slash != NULL ? slash + 1 : path, "troupe_bench_pool");
    execv(path, argv);
    fprintf(stderr, "troupe_bench: cannot run %s\n", path);
    return 1;
}
#endif

int main(int argc, char **argv) {
#ifdef TROUPE_BENCH_LOCAL_ONLY
    if (argc >= 2 && (strncmp(argv[1], "procpool-", 9) == 0 ||
                      strcmp(argv[1], "pipeline") == 0 ||
                      strcmp(argv[1], "pipeline-slow") == 0))
        return exec_pool_binary(argv);
#else
    /* First, in both roles: in a worker process this runs the worker and
     * exits. */
    bench_pool_register();
    bench_pipeline_register();
    bench_must(tr_worker_main(argc, argv), "tr_worker_main");
#endif
    if (argc < 2) {
        usage(argv[0]);
        return 2;
    }
    const char *w = argv[1];

    uint64_t size = 0, ring_r = 0;
    int pool_kind = 0;
    int pipeline = 0; /* 1: pipeline, 2: pipeline-slow */
    if (strcmp(w, "pingpong") == 0) {
        size = arg_u64(argc, argv, 2, 1000000);
    } else if (strcmp(w, "counting") == 0) {
        size = arg_u64(argc, argv, 2, 10000000);
    } else if (strcmp(w, "ring") == 0) {
        size = arg_u64(argc, argv, 2, 10000000);
        ring_r = arg_u64(argc, argv, 3, 503);
    } else if (strcmp(w, "skynet") == 0) {
        size = arg_u64(argc, argv, 2, 1000000);
        uint64_t p = 1;
        while (p < size && p <= UINT32_MAX / 10)
            p *= 10;
        if (p != size) {
            fprintf(stderr, "troupe_bench: skynet L must be a power of 10 "
                            "below 2^32\n");
            return 2;
        }
    } else if (strcmp(w, "procpool-heavy") == 0 ||
               strcmp(w, "procpool-tiny") == 0) {
        pool_kind = strcmp(w, "procpool-heavy") == 0 ? BENCH_POOL_HEAVY
                                                     : BENCH_POOL_TINY;
        size = arg_u64(argc, argv, 2,
                       pool_kind == BENCH_POOL_HEAVY ? 2000 : 200000);
        if (size > UINT32_MAX) { /* the dispatcher's bitmap: T bits */
            fprintf(stderr, "troupe_bench: procpool T must be < 2^32\n");
            return 2;
        }
    } else if (strcmp(w, "idle") == 0) {
        size = arg_u64(argc, argv, 2, 1000000);
    } else if (strcmp(w, "pipeline") == 0 ||
               strcmp(w, "pipeline-slow") == 0) {
        pipeline = strcmp(w, "pipeline") == 0 ? 1 : 2;
        size = arg_u64(argc, argv, 2, pipeline == 1 ? 1000000 : 100000);
    } else {
        usage(argv[0]);
        return 2;
    }

    bench_env env = {0};
    /* procpool: the main process only hands out tasks and collects
     * results, as the zmq_c peer's single thread does; the two cores
     * belong to the worker processes (a second, idle scheduler thread
     * here only spins: ~45 ms of their CPU over a run, measured).
     * pipeline keeps 2: its main process runs the producer, the router,
     * the proxies, the link and the sink (1 thread: ~3x slower). */
    bench_start(&env, pool_kind != 0 ? 1 : 2, pipeline != 0);
    if (strcmp(w, "idle") == 0) {
        bench_idle(&env, size);
        bench_finish(&env, false);
        return 0;
    }
#ifndef TROUPE_BENCH_LOCAL_ONLY
    if (pool_kind != 0) {
        bench_pool(&env, (enum bench_pool_kind)pool_kind, size);
        return 0;
    }
    if (pipeline != 0) {
        bench_pipeline(&env, size, pipeline == 2);
        return 0;
    }
#endif

    tr_ref *nodes = NULL;
    if (ring_r > 0) {
        nodes = calloc(ring_r, sizeof *nodes);
        if (nodes == NULL) {
            fprintf(stderr, "troupe_bench: out of memory\n");
            return 1;
        }
    }
    uint64_t check;
    double t0 = bench_now();
    if (strcmp(w, "pingpong") == 0)
        check = bench_pingpong(&env, size);
    else if (strcmp(w, "counting") == 0)
        check = bench_counting(&env, size);
    else if (strcmp(w, "ring") == 0)
        check = bench_ring(&env, size, ring_r, nodes);
    else
        check = bench_skynet(&env, size);
    double t1 = bench_now();

    printf("check=%" PRIu64 " work_s=%.6f\n", check, t1 - t0);
    fflush(stdout);
    if (nodes != NULL) {
        bench_ring_stop(&env, ring_r, nodes);
        free(nodes);
    }
    bench_finish(&env, false);
    return 0;
}
