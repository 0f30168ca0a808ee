/* The reactor thread: one epoll instance for fd readiness plus the timer
 * heap, whose earliest deadline is epoll_wait's timeout. It delivers
 * messages through a callback, so it knows nothing about actors. */
#ifndef TR_RUNTIME_REACTOR_H
#define TR_RUNTIME_REACTOR_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "runtime/sched.h"
#include "runtime/timerheap.h"

/* Delivers msg (a tr_msg *) to the actor with id `to`. Returns 0, or a
 * negative code (the reactor then frees msg via free_msg). */
typedef int (*tr__deliver_fn)(void *arg, uint64_t to, void *msg);
/* Makes a periodic tick message (U64 payload). */
typedef void *(*tr__tick_fn)(uint32_t tag, uint64_t value);
typedef void (*tr__free_msg_fn)(void *msg);

typedef struct tr__watch {
    int fd;
    uint32_t events;
    uint32_t tag;
    uint32_t gen;
    uint64_t to;
    bool used;
} tr__watch;

typedef struct tr__reactor {
    pthread_mutex_t lock; /* timers and watches */
    tr__timerheap timers;
    tr__watch *watches;
    uint32_t nwatches, capwatches;
    uint32_t *free_watches;
    uint32_t nfree_watches;
    int epfd;
    int wakefd;
    _Atomic int stopping;
    _Atomic uint64_t fired;
    int64_t sleeping_until; /* deadline the thread sleeps to; under lock */
    pthread_t thread;
    bool started;
    tr__deliver_fn deliver;
    tr__tick_fn tick;
    tr__free_msg_fn free_msg;
    void *arg;
    /* Scheduler to monitor (optional; set before tr__reactor_start). */
    tr__sched *sched;
    int64_t last_monitor;
    /* Extra monitor work (debug mode), same period. */
    void (*monitor_hook)(void *arg);
    /* signalfd (or -1) and what to do with each signal read from it. */
    int sigfd;
    void (*on_signal)(void *arg, int signo);
} tr__reactor;

int tr__reactor_init(tr__reactor *r, tr__deliver_fn deliver, tr__tick_fn tick,
                     tr__free_msg_fn free_msg, void *arg);
/* Starts the thread; if sched is set, also runs the scheduler monitor
 * every TR__MONITOR_NS while a worker is awake. */
int tr__reactor_start(tr__reactor *r);

#define TR__MONITOR_NS 1000000

/* Reads the signals in `mask` (already blocked in every thread) from a
 * signalfd on the reactor thread and calls on_signal for each. Before
 * tr__reactor_start. */
int tr__reactor_signals(tr__reactor *r, const void *sigset,
                        void (*on_signal)(void *arg, int signo));
/* Stops and joins the thread. Timers can still be added/cancelled (they
 * just never fire). */
void tr__reactor_stop(tr__reactor *r);
/* Stops (if needed) and frees; pending timers' messages are freed. */
void tr__reactor_destroy(tr__reactor *r);

/* deadline_ns on tr__now_ns's clock; period_ns > 0 for periodic (msg is
 * then NULL and tick() makes each message). Returns 0 and *id. */
int tr__reactor_timer_add(tr__reactor *r, int64_t deadline_ns,
                          int64_t period_ns, uint64_t to, void *msg,
                          uint32_t tag, uint64_t *id);
/* 0 if cancelled (message freed), TR_ENOTFOUND otherwise. */
int tr__reactor_timer_cancel(tr__reactor *r, uint64_t id);

int tr__reactor_watch(tr__reactor *r, int fd, uint32_t events, uint64_t to,
                      uint32_t tag, uint64_t *id);
int tr__reactor_unwatch(tr__reactor *r, uint64_t id);

#endif
