/* bench.h — shared by the files of troupe_bench (see main.c's design notes).
 * Internal to the benchmark binary; not part of troupe's API. */
#ifndef TROUPE_BENCH_H
#define TROUPE_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "troupe/troupe.h"

enum bench_tag {
    TAG_READY = 1, /* anchor / idle -> main: started */
    TAG_STOP,      /* -> an actor: end (idle replies TAG_ACK first) */
    TAG_RESULT,    /* -> main: the workload's result (u64) */
    TAG_PING,      /* ping -> pong: i */
    TAG_PONG,      /* pong -> ping: i */
    TAG_INC,       /* producer -> counter */
    TAG_GET,       /* producer -> counter, a request */
    TAG_VALUE,     /* counter -> producer, the reply (u64) */
    TAG_TOKEN,     /* ring: the token (u64) */
    TAG_LINK,      /* main -> ring node R: its successor, node 1 (u64 ref id) */
    TAG_NUM,       /* skynet child -> parent: a partial sum (u64) */
    TAG_ACK        /* idle -> main: 1 */
};

/* The runtime, its runner thread and main's inbox. */
typedef struct bench_env {
    tr_runtime *rt;
    tr_inbox *inbox;
    tr_ref main; /* the inbox's reference */
    tr_ref anchor;
    pthread_t runner;
    int run_rc;
    atomic_bool run_returned;
    double joined_at; /* bench_now() when bench_finish saw run return */
} bench_env;

/* Failure reporting. In a handler: print, flag the run as failed and return
 * rc (the actor ends with it). In main: print and exit(1) if rc < 0. */
int bench_actor_fail(int rc, const char *what);
int bench_unexpected(const char *who, const tr_msg *msg);
void bench_must(int rc, const char *what);

/* Main's next inbox message, which must carry `tag`; returns its u64. */
uint64_t bench_recv_u64(bench_env *env, uint32_t tag);
/* The same, the whole message: *out is the caller's to destroy. */
void bench_recv_msg(bench_env *env, uint32_t tag, tr_msg **out);
/* Monotonic seconds. */
double bench_now(void);
/* An unsigned environment setting (at most 4096), or dflt when unset;
 * exits 2 on a bad value. */
unsigned bench_env_unsigned(const char *name, unsigned dflt);
/* Ends the run and frees the runtime: waits for tr_runtime_run to return
 * (at most 20 s, then tr_runtime_stop) and destroys the inbox and the
 * runtime (which reaps worker processes). shutdown = false: stop the anchor
 * and let the runtime reach quiescence (every other actor must have ended);
 * true: tr_runtime_shutdown, which stops whatever still runs. */
void bench_finish(bench_env *env, bool shutdown);

/* Workloads 1-4 (bench_local.c): spawn, run, return the check value. The
 * timed region is the caller's. nodes: R slots for the ring's references. */
uint64_t bench_pingpong(bench_env *env, uint64_t n);
uint64_t bench_counting(bench_env *env, uint64_t n);
uint64_t bench_ring(bench_env *env, uint64_t hops, uint64_t r, tr_ref *nodes);
void bench_ring_stop(bench_env *env, uint64_t r, const tr_ref *nodes);
uint64_t bench_skynet(bench_env *env, uint64_t leaves);

/* Workload 8 (bench_idle.c): times itself and prints its own line. */
void bench_idle(bench_env *env, uint64_t n);

/* Workloads 5-6 (bench_pool.c). bench_pool_register registers the remote
 * task behaviour; main calls it before tr_worker_main, in both roles.
 * bench_pool times itself (pool start to workers reaped), ends the run with
 * bench_finish and prints its own line. */
enum bench_pool_kind { BENCH_POOL_HEAVY = 1, BENCH_POOL_TINY = 2 };
void bench_pool_register(void);
void bench_pool(bench_env *env, enum bench_pool_kind kind, uint64_t t);

/* The pipeline workload (bench_pipeline.c, in the pool binary too):
 * bench_pipeline_register registers the remote worker behaviour (before
 * tr_worker_main, in both roles); bench_pipeline times itself, ends the
 * run (bench_finish with shutdown) and prints its own line. slow: the
 * sink busy-waits per item (pipeline-slow). */
void bench_pipeline_register(void);
void bench_pipeline(bench_env *env, uint64_t n, bool slow);

#endif
