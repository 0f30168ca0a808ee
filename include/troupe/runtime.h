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

#include <stdbool.h>
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
    /* SIGINT and SIGTERM start an orderly shutdown (tr_runtime_shutdown);
     * a second signal stops at once; tr_runtime_exit_code then gives
     * 128 + the first signal. tr_runtime_create blocks both signals in
     * the calling thread (threads created afterwards inherit that) and in
     * every thread troupe starts, and reads them from a signalfd on the
     * reactor thread: no work is done in a signal handler. Create the
     * runtime before starting other threads. */
    bool handle_signals;
    /* Debug mode (also on when the environment has TROUPE_DEBUG=1):
     * reports handlers that block their worker longer than debug_block_ms
     * (0 = 100), messages a handler did not match (TR_UNHANDLED), sends
     * to dead actors, actors still alive at shutdown, and mailboxes deeper
     * than debug_mailbox_warn (0 = 10000); all through the log (warn). */
    bool debug;
    int64_t debug_block_ms;
    uint32_t debug_mailbox_warn;
    /* Maintain per-actor mailbox depths (tr_actor_mailbox_depth): one
     * atomic add per send. On in debug mode. */
    bool track_depth;
} tr_runtime_config;

/* Counters, summed over workers (approximate while the runtime runs). */
typedef struct tr_runtime_stats {
    uint64_t spawned;      /* actors spawned */
    uint64_t ended;        /* actors ended */
    uint64_t dead_letters; /* messages that reached an actor after it died */
    uint64_t late_replies; /* replies discarded: request already timed out */
    uint64_t timers_fired;
    uint64_t sends_refused; /* sends rejected with TR_ENOACTOR/TR_ESTOPPED */
    uint64_t unhandled;     /* handler returned TR_UNHANDLED */
    uint64_t muted; /* turns that ended muted (sent to an overloaded actor) */
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

/* The exit status a program should use after tr_runtime_run returned: 0,
 * or 128 + signal number when SIGINT (130) or SIGTERM (143) started the
 * shutdown (handle_signals). */
TR_API int tr_runtime_exit_code(const tr_runtime *rt);

/* Monotonic clock in milliseconds / nanoseconds (the time base of every
 * deadline in the API). */
TR_API int64_t tr_now_ms(void);
TR_API int64_t tr_now_ns(void);

#ifdef __cplusplus
}
#endif
#endif
