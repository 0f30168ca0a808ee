/* Design notes
 * ------------
 * Each worker has a next-to-run slot, a Chase-Lev deque, and shares one
 * mutex-protected FIFO inject queue.
 *   - A unit made runnable by a worker goes into that worker's `next` slot
 *     (the unit that was there moves to the deque's bottom). The receiver of
 *     a message thus runs right after its sender, on the same core, with the
 *     message still in cache: ping-pong and rings never cross cores.
 *   - A unit that used its whole batch yields: it goes to the inject queue
 *     (the back of the global line) unless this worker has nothing else to
 *     run. Every 61 turns a worker serves the inject queue first and takes
 *     its own oldest deque entry instead of the newest, so neither the
 *     global line nor the top of a LIFO deque can starve.
 *   - Idle workers spin a short while stealing (deque tops first; a
 *     victim's next slot only when the victim ran nothing for ~5 us, i.e.
 *     it is stuck in one long handler), then sleep on a futex. A unit
 *     placed only in a next slot wakes no one: its owner runs it next. The
 *     monitor (reactor thread, every ~1 ms while a worker is awake) wakes a
 *     thief when a next slot waits behind a turn that does not end. Wakeups are
 *     coalesced: a worker is woken only if none is spinning, and the woken
 *     worker counts as spinning, so a stream of sends wakes at most one
 *     thread per spin period (a futex wake costs ~1-2 us here).
 * Lost wakeups are excluded by a Dekker pair: a sleeper increments nidle
 * (seq_cst) then re-checks every queue; a producer publishes its unit, then
 * a seq_cst fence, then reads nidle. One of them sees the other. */
#include "runtime/sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/log.h"
#include "runtime/platform.h"
#include "runtime/pool.h"

#if defined(__SANITIZE_THREAD__)
#define TR__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TR__TSAN 1
#endif
#endif
#ifndef TR__TSAN
#define TR__TSAN 0
#endif

#define FAIR_PERIOD 61
#define SPIN_ROUNDS 32
#define STUCK_NS 5000

static __thread tr__worker *current_worker;

tr__worker *tr__sched_current(void) { return current_worker; }

static void **link_of(tr__sched *s, void *unit) {
    return (void **)((char *)unit + s->link_off);
}

static void inject(tr__sched *s, void *unit) {
    *link_of(s, unit) = NULL;
    pthread_mutex_lock(&s->inj_lock);
    if (s->inj_tail != NULL)
        *link_of(s, s->inj_tail) = unit;
    else
        s->inj_head = unit;
    s->inj_tail = unit;
    /* Relaxed: a hint read outside the lock; the lock orders the queue. */
    atomic_fetch_add_explicit(&s->inj_len, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->inj_lock);
}

static void *inject_pop(tr__sched *s) {
    if (atomic_load_explicit(&s->inj_len, memory_order_relaxed) == 0)
        return NULL;
    pthread_mutex_lock(&s->inj_lock);
    void *unit = s->inj_head;
    if (unit != NULL) {
        s->inj_head = *link_of(s, unit);
        if (s->inj_head == NULL)
            s->inj_tail = NULL;
        atomic_fetch_sub_explicit(&s->inj_len, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&s->inj_lock);
    return unit;
}

/* Wakes one sleeping worker, unless one is already spinning: that one will
 * find the work. The woken worker starts out spinning. */
static void wake_one(tr__sched *s) {
    unsigned zero = 0;
    if (!atomic_compare_exchange_strong_explicit(&s->nspinning, &zero, 1,
                                                 memory_order_seq_cst,
                                                 memory_order_relaxed))
        return;
    for (unsigned i = 0; i < s->n; i++) {
        tr__worker *w = &s->workers[i];
        uint32_t one = 1;
        if (atomic_load_explicit(&w->sleep_word, memory_order_relaxed) == 1 &&
            atomic_compare_exchange_strong_explicit(&w->sleep_word, &one, 0,
                                                    memory_order_seq_cst,
                                                    memory_order_relaxed)) {
            /* The spinning token passes to w (it decrements nspinning). */
            tr__futex_wake(&w->sleep_word, 1);
            return;
        }
    }
    atomic_fetch_sub_explicit(&s->nspinning, 1, memory_order_seq_cst);
}

static void notify(tr__sched *s) {
    /* seq_cst fence: our unit's publication is ordered before the reads of
     * nspinning/nidle (Dekker pair with the sleeper, see design notes).
     * ThreadSanitizer does not model fences (gcc refuses them under
     * -fsanitize=thread): there, a seq_cst RMW on nidle gives the same
     * order through synchronizes-with, at the price of a shared write. */
#if TR__TSAN
    atomic_fetch_add_explicit(&s->nidle, 0, memory_order_seq_cst);
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
    if (atomic_load_explicit(&s->nspinning, memory_order_seq_cst) == 0 &&
        atomic_load_explicit(&s->nidle, memory_order_seq_cst) > 0)
        wake_one(s);
}

void tr__sched_push(tr__sched *s, tr__worker *w, void *unit) {
    if (w != NULL && w->sched == s) {
        void *old =
            atomic_exchange_explicit(&w->next, unit, memory_order_acq_rel);
        /* A unit only in our next slot runs after this turn: no wakeup
         * (that would cost a futex call per ping-pong hop and keep the
         * other core spinning). If this turn runs long, the monitor sees
         * it and wakes a thief. A displaced unit is stealable work. */
        if (old == NULL)
            return;
        if (!tr__deque_push(&w->dq, old))
            inject(s, old);
    } else {
        inject(s, unit);
    }
    notify(s);
}

void tr__sched_monitor(tr__sched *s) {
    bool stuck = false;
    for (unsigned i = 0; i < s->n; i++) {
        tr__worker *w = &s->workers[i];
        uint64_t t = atomic_load_explicit(&w->ticks, memory_order_relaxed);
        if (t == w->mon_ticks &&
            atomic_load_explicit(&w->next, memory_order_relaxed) != NULL)
            stuck = true;
        w->mon_ticks = t;
    }
    if (stuck)
        notify(s);
}

bool tr__sched_monitor_wanted(tr__sched *s) {
    if (atomic_load_explicit(&s->nidle, memory_order_seq_cst) < s->n)
        return true;
    /* seq_cst store then load: Dekker pair with a waking worker's nidle
     * decrement then load of monitor_parked. */
    atomic_store_explicit(&s->monitor_parked, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&s->nidle, memory_order_seq_cst) < s->n) {
        atomic_store_explicit(&s->monitor_parked, 0, memory_order_relaxed);
        return true;
    }
    return false;
}

static void *take_next(tr__worker *w) {
    if (atomic_load_explicit(&w->next, memory_order_relaxed) == NULL)
        return NULL;
    /* Acquire: pairs with the exchange that put the unit there (another
     * thread's, if a thief raced us — harmless). */
    return atomic_exchange_explicit(&w->next, NULL, memory_order_acq_rel);
}

static void *find_local(tr__worker *w) {
    tr__sched *s = w->sched;
    void *unit;
    if (++w->local_ticks % FAIR_PERIOD == 0) {
        if ((unit = inject_pop(s)) != NULL)
            return unit;
        if ((unit = tr__deque_steal(&w->dq)) != NULL)
            return unit;
    }
    if ((unit = take_next(w)) != NULL)
        return unit;
    if ((unit = tr__deque_pop(&w->dq)) != NULL)
        return unit;
    return inject_pop(s);
}

static uint32_t xorshift(uint32_t *state) {
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* One pass over the other workers. steal_next: also take a victim's next
 * slot if the victim made no progress for STUCK_NS. */
static void *steal_round(tr__worker *w, bool steal_next) {
    tr__sched *s = w->sched;
    unsigned n = s->n;
    unsigned start = xorshift(&w->rng) % n;
    for (unsigned k = 0; k < n; k++) {
        tr__worker *v = &s->workers[(start + k) % n];
        if (v == w)
            continue;
        void *unit = tr__deque_steal(&v->dq);
        if (unit != NULL)
            return unit;
        if (steal_next &&
            atomic_load_explicit(&v->next, memory_order_relaxed) != NULL) {
            uint64_t t0 = atomic_load_explicit(&v->ticks, memory_order_relaxed);
            int64_t start_ns = tr__now_ns();
            while (tr__now_ns() - start_ns < STUCK_NS)
                tr__cpu_relax();
            if (atomic_load_explicit(&v->ticks, memory_order_relaxed) == t0) {
                unit = atomic_exchange_explicit(&v->next, NULL,
                                                memory_order_acq_rel);
                if (unit != NULL)
                    return unit;
            }
        }
    }
    return inject_pop(s);
}

/* Work this worker could take. Another worker's next slot does not count:
 * its owner runs it after its current turn (or the monitor intervenes). */
static bool any_work(tr__worker *w) {
    tr__sched *s = w->sched;
    if (atomic_load_explicit(&s->inj_len, memory_order_seq_cst) > 0 ||
        atomic_load_explicit(&w->next, memory_order_seq_cst) != NULL)
        return true;
    for (unsigned i = 0; i < s->n; i++)
        if (tr__deque_size(&s->workers[i].dq) > 0)
            return true;
    return false;
}

static void stop_spinning(tr__worker *w) {
    if (w->spinning) {
        w->spinning = false;
        atomic_fetch_sub_explicit(&w->sched->nspinning, 1,
                                  memory_order_seq_cst);
    }
}

static void signal_done(tr__sched *s) {
    atomic_store_explicit(&s->done, 1, memory_order_release);
    tr__futex_wake(&s->done, 1);
}

/* Blocks until there is work or stop. Returns a unit or NULL (stop). */
static void *find_work(tr__worker *w) {
    tr__sched *s = w->sched;
    for (;;) {
        if (atomic_load_explicit(&s->stopping, memory_order_acquire))
            return NULL;
        void *unit = find_local(w);
        if (unit != NULL) {
            if (w->spinning) {
                /* Hand the spinning role on: there may be more work. */
                stop_spinning(w);
                notify(s);
            }
            return unit;
        }
        if (!w->spinning) {
            w->spinning = true;
            atomic_fetch_add_explicit(&s->nspinning, 1, memory_order_seq_cst);
        }
        for (int round = 0; round < SPIN_ROUNDS && unit == NULL; round++) {
            unit = steal_round(w, round == SPIN_ROUNDS - 1);
            if (unit == NULL)
                for (int i = 0; i < 64; i++)
                    tr__cpu_relax();
        }
        if (unit != NULL) {
            stop_spinning(w);
            notify(s);
            return unit;
        }
        /* Sleep. */
        atomic_store_explicit(&w->sleep_word, 1, memory_order_seq_cst);
        stop_spinning(w);
        unsigned idle =
            atomic_fetch_add_explicit(&s->nidle, 1, memory_order_seq_cst) + 1;
        if (any_work(w) ||
            atomic_load_explicit(&s->stopping, memory_order_seq_cst)) {
            uint32_t one = 1;
            if (!atomic_compare_exchange_strong_explicit(
                    &w->sleep_word, &one, 0, memory_order_seq_cst,
                    memory_order_relaxed)) {
                /* A waker already picked us and passed us its spinning
                 * token. */
                w->spinning = true;
            } else if (!atomic_load_explicit(&s->stopping,
                                             memory_order_relaxed)) {
                /* Work came while we gave up spinning. Its producers saw
                 * us spinning and woke no one, trusting us to take it and
                 * hand the role on: spin again, so that taking a unit
                 * calls notify() and what is left wakes another worker
                 * (Go's findrunnable re-spins here too). Else a unit
                 * behind the one we take waits, with a worker asleep,
                 * until our turn ends, however long that is. Relaxed
                 * load: stopping only spares a spin that the loop's
                 * acquire load of it would end at once. */
                w->spinning = true;
                atomic_fetch_add_explicit(&s->nspinning, 1,
                                          memory_order_seq_cst);
            }
            atomic_fetch_sub_explicit(&s->nidle, 1, memory_order_seq_cst);
            continue;
        }
        if (idle == s->n && s->quiescent(s->arg)) {
            atomic_fetch_sub_explicit(&s->nidle, 1, memory_order_seq_cst);
            signal_done(s);
            return NULL;
        }
        while (atomic_load_explicit(&w->sleep_word, memory_order_acquire) == 1)
            tr__futex_wait(&w->sleep_word, 1, -1);
        /* Woken by wake_one (we hold a spinning token) or by stop. */
        atomic_fetch_sub_explicit(&s->nidle, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&s->monitor_parked, memory_order_seq_cst) &&
            atomic_exchange_explicit(&s->monitor_parked, 0,
                                     memory_order_seq_cst) &&
            s->kick != NULL)
            s->kick(s->kick_arg);
        if (!atomic_load_explicit(&s->stopping, memory_order_acquire))
            w->spinning = true;
        else if (w->spinning)
            stop_spinning(w);
    }
}

static bool others_waiting(tr__worker *w) {
    tr__sched *s = w->sched;
    return atomic_load_explicit(&s->inj_len, memory_order_relaxed) > 0 ||
           tr__deque_size(&w->dq) > 0 ||
           atomic_load_explicit(&w->next, memory_order_relaxed) != NULL;
}

static void *worker_main(void *arg) {
    tr__worker *w = arg;
    tr__sched *s = w->sched;
    char name[16];
    snprintf(name, sizeof name, "troupe-w%u", w->index);
    tr__thread_name(name);
    current_worker = w;
    void *unit;
    while ((unit = find_work(w)) != NULL) {
        for (;;) {
            atomic_store_explicit(
                &w->ticks,
                atomic_load_explicit(&w->ticks, memory_order_relaxed) + 1,
                memory_order_relaxed);
            if (!s->run(w, unit, s->arg))
                break;
            /* Still runnable after a full batch: yield to the back of the
             * global line if anyone else is waiting, else run on. */
            if (others_waiting(w) ||
                atomic_load_explicit(&s->stopping, memory_order_relaxed)) {
                inject(s, unit);
                notify(s);
                break;
            }
        }
    }
    current_worker = NULL;
    tr__pool_thread_flush();
    return NULL;
}

int tr__sched_init(tr__sched *s, unsigned nworkers, tr__run_fn run,
                   tr__quiescent_fn quiescent, void *arg, size_t link_off) {
    memset(s, 0, sizeof *s);
    s->n = nworkers;
    s->run = run;
    s->quiescent = quiescent;
    s->arg = arg;
    s->link_off = link_off;
    pthread_mutex_init(&s->inj_lock, NULL);
    s->workers = aligned_alloc(64, sizeof(tr__worker) * nworkers);
    if (s->workers == NULL)
        return -1;
    memset(s->workers, 0, sizeof(tr__worker) * nworkers);
    for (unsigned i = 0; i < nworkers; i++) {
        tr__worker *w = &s->workers[i];
        tr__deque_init(&w->dq);
        w->sched = s;
        w->index = i;
        w->rng = 0x9E3779B9u * (i + 1);
    }
    return 0;
}

void tr__sched_destroy(tr__sched *s) {
    free(s->workers);
    s->workers = NULL;
    pthread_mutex_destroy(&s->inj_lock);
}

void tr__sched_stop(tr__sched *s) {
    atomic_store_explicit(&s->stopping, 1, memory_order_seq_cst);
    for (unsigned i = 0; i < s->n; i++) {
        atomic_store_explicit(&s->workers[i].sleep_word, 0,
                              memory_order_seq_cst);
        tr__futex_wake(&s->workers[i].sleep_word, 1);
    }
    signal_done(s);
}

int tr__sched_run(tr__sched *s) {
    unsigned started = 0;
    for (; started < s->n; started++) {
        if (pthread_create(&s->workers[started].thread, NULL, worker_main,
                           &s->workers[started]) != 0) {
            tr__log(TR_LOG_ERROR, "pthread_create failed for worker %u",
                    started);
            tr__sched_stop(s);
            break;
        }
    }
    while (atomic_load_explicit(&s->done, memory_order_acquire) == 0)
        tr__futex_wait(&s->done, 0, -1);
    /* Done by quiescence or by stop: either way, stop the others. */
    tr__sched_stop(s);
    for (unsigned i = 0; i < started; i++)
        pthread_join(s->workers[i].thread, NULL);
    return started == s->n ? 0 : -1;
}
