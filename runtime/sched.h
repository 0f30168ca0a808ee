/* M:N scheduler: worker threads running "units" (actors) made runnable by
 * their owners. The scheduler knows nothing about actors: it calls
 * `run(worker, unit)` and gets back whether the unit wants to run again. */
#ifndef TR_RUNTIME_SCHED_H
#define TR_RUNTIME_SCHED_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/deque.h"

typedef struct tr__sched tr__sched;
typedef struct tr__worker tr__worker;

/* Runs one turn of unit on worker w. Returns true when the unit is still
 * runnable (it used its whole batch) and must be scheduled again. */
typedef bool (*tr__run_fn)(tr__worker *w, void *unit, void *arg);
/* Called by the last worker going idle: returns true when the program is
 * done (no live actors), which ends tr__sched_run. */
typedef bool (*tr__quiescent_fn)(void *arg);

struct tr__worker {
    tr__deque dq;
    /* Written by the owner (exchange) and by thieves (exchange). */
    alignas(64) void *_Atomic next;
    /* Owner increments per unit run (relaxed); thieves read it to tell a
     * worker stuck in one long handler from one making progress. */
    _Atomic uint64_t ticks;
    /* 1 while the worker sleeps or is about to; a waker CASes it to 0. */
    _Atomic uint32_t sleep_word;
    /* ticks seen by the monitor at its last pass (monitor thread only). */
    uint64_t mon_ticks;
    alignas(64) tr__sched *sched;
    unsigned index;
    bool spinning;
    uint32_t rng;
    uint64_t local_ticks;
    void *user; /* the actor layer's per-worker context */
    pthread_t thread;
};

struct tr__sched {
    unsigned n;
    tr__worker *workers;
    tr__run_fn run;
    tr__quiescent_fn quiescent;
    void *arg;
    size_t
        link_off; /* offset of the unit's `void *` link for the inject queue */

    alignas(64) pthread_mutex_t inj_lock;
    void *inj_head, *inj_tail;
    _Atomic size_t inj_len;

    alignas(64) _Atomic unsigned nidle;
    _Atomic unsigned nspinning;
    _Atomic int stopping;
    /* 0 while running; 1 when done (quiescent or stopped). Futex word. */
    _Atomic uint32_t done;
    /* 1 while the monitor sleeps without a period; a worker that wakes up
     * clears it and calls kick() so monitoring resumes. */
    _Atomic int monitor_parked;
    void (*kick)(void *arg);
    void *kick_arg;
};

int tr__sched_init(tr__sched *s, unsigned nworkers, tr__run_fn run,
                   tr__quiescent_fn quiescent, void *arg, size_t link_off);
void tr__sched_destroy(tr__sched *s);

/* Starts the workers; returns after they have all been joined, i.e. after
 * quiescence or tr__sched_stop. */
int tr__sched_run(tr__sched *s);
/* Any thread; idempotent. */
void tr__sched_stop(tr__sched *s);

/* Makes unit runnable. From a worker of this scheduler (w != NULL): into
 * w's next-to-run slot. From anywhere else (w == NULL): the inject queue. */
void tr__sched_push(tr__sched *s, tr__worker *w, void *unit);

/* The monitor (Go's sysmon), run every ~1 ms by the reactor thread while
 * any worker is awake: a unit waiting in the next slot of a worker that
 * has not finished a turn since the last pass (a long handler) gets an
 * idle worker woken to steal it. */
void tr__sched_monitor(tr__sched *s);
/* True when the monitor should run periodically (a worker is awake). If
 * not, marks the monitor parked (see monitor_parked). Monitor thread. */
bool tr__sched_monitor_wanted(tr__sched *s);

/* The worker the calling thread is, or NULL (not a worker of any
 * scheduler). */
tr__worker *tr__sched_current(void);

#endif
