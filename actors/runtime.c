/* The runtime object: composes the scheduler, the reactor (timers, fd
 * watches) and the offload pool around the actor slots, and implements the
 * public lifecycle, timer, watch and offload calls.
 *
 * Shutdown order (tr_runtime_run's end, or destroy): stop the workers,
 * then the offload pool and the reactor thread (their last deliveries are
 * refused: TR_ESTOPPED), then run every live actor's on_stop and free all
 * mailboxes, with no thread left that could race. */
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "actors/system.h"
#include "runtime/log.h"
#include "runtime/platform.h"
#include "runtime/pool.h"
#include "troupe/reactor.h"
#include "troupe/timer.h"

static int deliver(void *arg, uint64_t to, void *msg) {
    tr_runtime *rt = arg;
    tr_msg *m = msg;
    m->sender = TR_REF_NONE;
    return tr__send(rt, NULL, (tr_ref){to}, m);
}

static void *make_tick(uint32_t tag, uint64_t value) {
    return tr_msg_new_u64(tag, value);
}

static void free_msg(void *msg) { tr__msg_free(msg); }

static void *wrap_result(tr__job_fn fn, void *arg, uint32_t tag) {
    tr_msg *result = ((tr_offload_fn)fn)(arg);
    tr_msg *m = result != NULL ? result : tr_msg_new(tag);
    if (m != NULL)
        m->tag = tag;
    return m;
}

static _Atomic int runtimes_alive;

/* Reactor thread: SIGINT/SIGTERM read from the signalfd. */
static void on_signal(void *arg, int signo) {
    tr_runtime *rt = arg;
    int none = 0;
    atomic_compare_exchange_strong(&rt->exit_signal, &none, signo);
    tr__log(TR_LOG_WARN, "signal %d: %s", signo,
            atomic_load(&rt->shutdown_calls) == 0
                ? "orderly shutdown (again to stop at once)"
                : "stopping now");
    (void)tr_runtime_shutdown(rt);
}

static void debug_hook(void *arg) { tr__debug_monitor(arg); }

static bool env_flag(const char *name) {
    const char *v = getenv(name);
    return v != NULL && v[0] != 0 && strcmp(v, "0") != 0;
}

TR_API int tr_runtime_create(tr_runtime **out, const tr_runtime_config *cfg) {
    if (out == NULL)
        return TR_EINVAL;
    *out = NULL;
    tr_runtime *rt = aligned_alloc(64, (sizeof *rt + 63) & ~(size_t)63);
    if (rt == NULL)
        return TR_ENOMEM;
    memset(rt, 0, sizeof *rt);
    if (cfg != NULL)
        rt->cfg = *cfg;
    if (rt->cfg.workers == 0)
        rt->cfg.workers = tr__cpu_count();
    if (rt->cfg.workers > 1024)
        rt->cfg.workers = 1024;
    if (rt->cfg.batch == 0)
        rt->cfg.batch = 64;
    if (rt->cfg.offload_threads == 0)
        rt->cfg.offload_threads = 4;
    if (rt->cfg.offload_queue == 0)
        rt->cfg.offload_queue = 4096;
    rt->debug = rt->cfg.debug || env_flag("TROUPE_DEBUG");
    rt->track_depth = rt->cfg.track_depth || rt->debug;
    rt->debug_block_ns =
        tr__ms_to_ns(rt->cfg.debug_block_ms > 0 ? rt->cfg.debug_block_ms : 100);
    rt->debug_mailbox_warn =
        rt->cfg.debug_mailbox_warn > 0 ? rt->cfg.debug_mailbox_warn : 10000;
    pthread_mutex_init(&rt->slots_lock, NULL);
    pthread_mutex_init(&rt->cancel_lock, NULL);
    pthread_mutex_init(&rt->mute_lock, NULL);
    rt->foreign.rt = rt;
    int rc = TR_ENOMEM;
    if (tr__sched_init(&rt->sched, rt->cfg.workers, tr__actor_run,
                       tr__quiescent, rt, offsetof(tr__actor, sched_link)) != 0)
        goto fail_sched;
    rt->ctxs = calloc(rt->cfg.workers, sizeof *rt->ctxs);
    if (rt->ctxs == NULL)
        goto fail_ctxs;
    for (unsigned i = 0; i < rt->cfg.workers; i++) {
        rt->ctxs[i].rt = rt;
        rt->ctxs[i].w = &rt->sched.workers[i];
        rt->sched.workers[i].user = &rt->ctxs[i];
    }
    rc = tr__reactor_init(&rt->reactor, deliver, make_tick, free_msg, rt);
    if (rc != 0)
        goto fail_reactor;
    rt->reactor.sched = &rt->sched;
    if (rt->debug)
        rt->reactor.monitor_hook = debug_hook;
    if (rt->cfg.handle_signals) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        /* Blocked here (threads created later inherit it) and in every
         * troupe thread, so only the signalfd sees them. */
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        /* An inherited SIG_IGN (background jobs of a script, some test
         * runners) would discard the signals before the signalfd sees
         * them; blocked, the default action never runs. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(SIGINT, &dfl, NULL);
        sigaction(SIGTERM, &dfl, NULL);
        tr__signals_claim();
        rc = tr__reactor_signals(&rt->reactor, &set, on_signal);
        if (rc != 0)
            goto fail_reactor;
    }
    rc = tr__reactor_start(&rt->reactor);
    if (rc != 0)
        goto fail_reactor;
    rc = tr__offload_init(&rt->offload, rt->cfg.offload_threads,
                          rt->cfg.offload_queue, deliver, wrap_result, free_msg,
                          rt);
    if (rc != 0)
        goto fail_offload;
    rc = tr__root_create(rt);
    if (rc != 0) {
        tr__offload_destroy(&rt->offload);
        goto fail_reactor;
    }
    atomic_fetch_add(&runtimes_alive, 1);
    *out = rt;
    return 0;
fail_offload:
    tr__offload_destroy(&rt->offload);
fail_reactor:
    tr__reactor_destroy(&rt->reactor);
fail_ctxs:
    free(rt->ctxs);
    tr__sched_destroy(&rt->sched);
fail_sched:
    pthread_mutex_destroy(&rt->slots_lock);
    pthread_mutex_destroy(&rt->cancel_lock);
    tr__mutes_destroy(rt);
    pthread_mutex_destroy(&rt->mute_lock);
    free(rt);
    return rc;
}

/* Stops every thread and cleans up every actor. Idempotent. */
static void finish(tr_runtime *rt) {
    if (atomic_exchange(&rt->run_state, 2) == 2)
        return;
    atomic_store_explicit(&rt->stopping, 1, memory_order_seq_cst);
    tr__offload_destroy(&rt->offload);
    /* The reactor's thread stops here; its timer table stays valid until
     * destroy, since the cleanups below cancel actors' timers. */
    tr__reactor_stop(&rt->reactor);
    /* Foreign pushes that passed the stopping check finish first
     * (tr__foreign_enter): then no one can touch a mailbox we drain. */
    while (atomic_load_explicit(&rt->foreign_inflight, memory_order_acquire) !=
           0)
        sched_yield();
    tr__actor_shutdown_all(rt);
}

TR_API int tr_runtime_run(tr_runtime *rt) {
    if (rt == NULL)
        return TR_EINVAL;
    if (tr__sched_current() != NULL)
        return TR_ESTATE; /* from a handler: would deadlock */
    int expect = 0;
    if (!atomic_compare_exchange_strong(&rt->run_state, &expect, 1))
        return TR_ESTATE;
    int rc = tr__sched_run(&rt->sched) == 0 ? 0 : TR_ESYS;
    finish(rt);
    return rc;
}

TR_API int tr_runtime_stop(tr_runtime *rt) {
    if (rt == NULL)
        return TR_EINVAL;
    /* seq_cst: sends that start after this see stopping. */
    atomic_store_explicit(&rt->stopping, 1, memory_order_seq_cst);
    tr__sched_stop(&rt->sched);
    return 0;
}

TR_API void tr_runtime_destroy(tr_runtime **prt) {
    if (prt == NULL || *prt == NULL)
        return;
    tr_runtime *rt = *prt;
    *prt = NULL;
    if (atomic_load(&rt->run_state) == 1) {
        tr__log(TR_LOG_ERROR,
                "tr_runtime_destroy while tr_runtime_run is running: "
                "stop it and let run return first");
        tr_runtime_stop(rt);
        return; /* leaking beats freeing memory other threads use */
    }
    tr_runtime_stop(rt);
    finish(rt);
    if (rt->node_destroy != NULL)
        rt->node_destroy(rt->node);
    if (rt->pool_destroy != NULL)
        rt->pool_destroy(rt->pool);
    if (rt->names_destroy != NULL)
        rt->names_destroy(rt->names);
    tr__reactor_destroy(&rt->reactor);
    for (unsigned i = 0; i < rt->cfg.workers; i++)
        free(rt->ctxs[i].free_slots);
    free(rt->ctxs);
    free(rt->gfree);
    tr__sched_destroy(&rt->sched);
    for (uint32_t c = 0; c < TR__MAX_CHUNKS; c++) {
        tr__actor *chunk =
            atomic_load_explicit(&rt->chunks[c], memory_order_relaxed);
        if (chunk == NULL)
            break;
        free((void *)((tr__chunk_head *)chunk)->depth);
        tr__bounds_free((tr__chunk_head *)chunk);
        free(chunk);
    }
    pthread_mutex_destroy(&rt->slots_lock);
    pthread_mutex_destroy(&rt->cancel_lock);
    tr__mutes_destroy(rt);
    pthread_mutex_destroy(&rt->mute_lock);
    free(rt);
    if (atomic_fetch_sub(&runtimes_alive, 1) == 1) {
        tr__pool_thread_flush();
        tr__pool_trim();
    }
}

TR_API int tr_runtime_exit_code(const tr_runtime *rt) {
    if (rt == NULL)
        return 1;
    int sig = atomic_load(&((tr_runtime *)rt)->exit_signal);
    return sig != 0 ? 128 + sig : 0;
}

TR_API unsigned tr_runtime_workers(const tr_runtime *rt) {
    return rt != NULL ? rt->cfg.workers : 0;
}

TR_API void tr_runtime_get_stats(const tr_runtime *rt, tr_runtime_stats *out) {
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    if (rt == NULL)
        return;
    const tr_ctx *all[2] = {&rt->foreign, NULL};
    out->spawned =
        atomic_load_explicit(&rt->foreign_spawned, memory_order_relaxed);
    out->sends_refused =
        atomic_load_explicit(&rt->foreign_refused, memory_order_relaxed);
    for (unsigned i = 0; i <= rt->cfg.workers; i++) {
        const tr_ctx *c = i < rt->cfg.workers ? &rt->ctxs[i] : all[0];
        out->spawned +=
            atomic_load_explicit(&c->st.spawned, memory_order_relaxed);
        out->ended += atomic_load_explicit(&c->st.ended, memory_order_relaxed);
        out->dead_letters +=
            atomic_load_explicit(&c->st.dead_letters, memory_order_relaxed);
        out->late_replies +=
            atomic_load_explicit(&c->st.late_replies, memory_order_relaxed);
        out->sends_refused +=
            atomic_load_explicit(&c->st.refused, memory_order_relaxed);
        out->unhandled +=
            atomic_load_explicit(&c->st.unhandled, memory_order_relaxed);
        out->muted += atomic_load_explicit(&c->st.muted, memory_order_relaxed);
    }
    out->timers_fired =
        atomic_load_explicit(&rt->reactor.fired, memory_order_relaxed);
}

TR_API int64_t tr_now_ms(void) { return tr__now_ns() / 1000000; }
TR_API int64_t tr_now_ns(void) { return tr__now_ns(); }

/* ---- timers ---- */

static int timer_add(tr_runtime *rt, tr_ref to, int64_t deadline_ns,
                     int64_t period_ns, tr_msg *m, uint32_t tag,
                     tr_timer_id *out) {
    if (atomic_load_explicit(&rt->stopping, memory_order_acquire))
        return TR_ESTOPPED;
    if (tr__slot_lookup(rt, to.id) == NULL)
        return TR_ENOACTOR;
    uint64_t id = 0;
    int rc = tr__reactor_timer_add(&rt->reactor, deadline_ns, period_ns, to.id,
                                   m, tag, &id);
    if (rc == 0 && out != NULL)
        out->id = id;
    return rc;
}

TR_API int tr_send_at(tr_runtime *rt, tr_ref to, int64_t deadline_ms,
                      tr_msg **msg, tr_timer_id *out) {
    if (rt == NULL || msg == NULL || *msg == NULL)
        return TR_EINVAL;
    if (tr__magic((*msg)) != TR__MSG_LIVE)
        return TR_EFREED;
    tr__worker *w = tr__sched_current();
    (*msg)->sender = (w != NULL && w->sched == &rt->sched)
                         ? ((tr_ctx *)w->user)->self
                         : TR_REF_NONE;
    int rc = timer_add(rt, to, tr__ms_to_ns(deadline_ms), 0, *msg, 0, out);
    if (rc == 0)
        *msg = NULL;
    return rc;
}

TR_API int tr_send_after(tr_runtime *rt, tr_ref to, int64_t delay_ms,
                         tr_msg **msg, tr_timer_id *out) {
    if (delay_ms < 0)
        return TR_EINVAL;
    if (rt == NULL || msg == NULL || *msg == NULL)
        return TR_EINVAL;
    if (tr__magic((*msg)) != TR__MSG_LIVE)
        return TR_EFREED;
    int rc = timer_add(rt, to, tr__after_ns(tr__now_ns(), delay_ms), 0, *msg, 0,
                       out);
    if (rc == 0)
        *msg = NULL;
    return rc;
}

TR_API int tr_send_every(tr_runtime *rt, tr_ref to, int64_t period_ms,
                         uint32_t tag, tr_timer_id *out) {
    if (rt == NULL || period_ms < 1)
        return TR_EINVAL;
    int64_t period = tr__ms_to_ns(period_ms);
    return timer_add(rt, to, tr__after_ns(tr__now_ns(), period_ms), period,
                     NULL, tag, out);
}

TR_API int tr_timer_cancel(tr_runtime *rt, tr_timer_id id) {
    if (rt == NULL || id.id == 0)
        return TR_EINVAL;
    return tr__reactor_timer_cancel(&rt->reactor, id.id);
}

/* ---- fd watches and offload ---- */

TR_API int tr_watch(tr_runtime *rt, int fd, uint32_t events, tr_ref to,
                    uint32_t tag, tr_watch_id *out) {
    if (rt == NULL || fd < 0 || out == NULL || events == 0 ||
        (events & ~(TR_READABLE | TR_WRITABLE)) != 0)
        return TR_EINVAL;
    if (atomic_load_explicit(&rt->stopping, memory_order_acquire))
        return TR_ESTOPPED;
    if (!tr_actor_alive(rt, to))
        return TR_ENOACTOR;
    return tr__reactor_watch(&rt->reactor, fd, events, to.id, tag, &out->id);
}

TR_API int tr_unwatch(tr_runtime *rt, tr_watch_id id) {
    if (rt == NULL || id.id == 0)
        return TR_EINVAL;
    return tr__reactor_unwatch(&rt->reactor, id.id);
}

TR_API int tr_offload(tr_runtime *rt, tr_offload_fn fn, void *arg, tr_ref to,
                      uint32_t tag) {
    if (rt == NULL || fn == NULL)
        return TR_EINVAL;
    if (atomic_load_explicit(&rt->stopping, memory_order_acquire))
        return TR_ESTOPPED;
    if (!tr_actor_alive(rt, to))
        return TR_ENOACTOR;
    return tr__offload_submit(&rt->offload, (tr__job_fn)fn, arg, to.id, tag);
}
