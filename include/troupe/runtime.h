/* troupe — the runtime: worker threads, reactor, timers, blocking offload.
 *
 * Lifecycle:
 *   tr_runtime_create -> (tr_runtime_spawn ...) -> tr_runtime_run
 *   -> tr_runtime_destroy
 * tr_runtime_run starts the worker threads and returns when every actor has
 * ended (quiescence) or tr_runtime_stop was called; then it stops the
 * workers, runs the on_stop cleanup of every actor still alive (reason
 * TR_EXIT_SHUTDOWN) and frees their mailboxes. tr_runtime_destroy frees
 * the rest. */
#ifndef TROUPE_RUNTIME_H
#define TROUPE_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tr_runtime tr_runtime;

typedef struct tr_runtime_config {
    /* Scheduler worker threads; 0 = number of online CPUs. */
    unsigned workers;
    /* Messages an actor handles per turn before yielding; 0 = 64. */
    unsigned batch;
    /* Threads of the blocking-offload pool; 0 = 4. */
    unsigned offload_threads;
    /* Offload jobs queued at most (further tr_offload: TR_EAGAIN); 0 = 4096. */
    unsigned offload_queue;
} tr_runtime_config;

/* Counters, summed over workers (approximate while the runtime runs). */
typedef struct tr_runtime_stats {
    uint64_t spawned;       /* actors spawned */
    uint64_t ended;         /* actors ended */
    uint64_t dead_letters;  /* messages that reached an actor after it died */
    uint64_t late_replies;  /* replies discarded: request already timed out */
    uint64_t timers_fired;
    uint64_t sends_refused; /* sends rejected with TR_ENOACTOR/TR_ESTOPPED */
} tr_runtime_stats;

/* Creates a runtime; cfg may be NULL for defaults. Calling thread: any. */
TR_API int tr_runtime_create(tr_runtime **out, const tr_runtime_config *cfg);

/* Runs until quiescence or tr_runtime_stop. Blocks the calling thread (which
 * is not a worker). Call once: TR_ESTATE the second time. */
TR_API int tr_runtime_run(tr_runtime *rt);

/* Requests stop; any thread, also a handler or a signal-free foreign thread.
 * Idempotent. After it, sends fail with TR_ESTOPPED. */
TR_API int tr_runtime_stop(tr_runtime *rt);

/* Frees the runtime (runs tr_runtime_stop + the run's shutdown if run was
 * never called or did not finish) and sets *rt to NULL. Not from a handler. */
TR_API void tr_runtime_destroy(tr_runtime **rt);

/* Number of worker threads. */
TR_API unsigned tr_runtime_workers(const tr_runtime *rt);

TR_API void tr_runtime_get_stats(const tr_runtime *rt, tr_runtime_stats *out);

/* Monotonic clock in milliseconds / nanoseconds (the time base of every
 * deadline in the API). */
TR_API int64_t tr_now_ms(void);
TR_API int64_t tr_now_ns(void);

#ifdef __cplusplus
}
#endif
#endif
