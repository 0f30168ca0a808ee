/* The public side of worker processes: the pool's start and stop, remote
 * spawn, and the worker-mode entry point. See troupe/remote.h for the
 * contract and transport/link.c for how the link works.
 *
 * Why exec and not a plain fork: the main process already runs threads
 * (workers, reactor) and owns a ZeroMQ context when the pool starts, and
 * a forked copy of such a process may only call async-signal-safe
 * functions. So the child execs the program itself (/proc/self/exe) at
 * once, in worker mode (TROUPE_WORKER=<endpoint>), and builds its own
 * runtime and ZeroMQ context from scratch. The program must register its
 * behaviours and call tr_worker_main() first in main() for that. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/log.h"
#include "runtime/platform.h"
#include "transport/link.h"
#include "transport/proxy.h"
#include "troupe/mpack.h"

static _Atomic uint64_t endpoint_seq;

static void pool_destroy(void *p) {
    tr__link *l = p;
    tr__link_stop_workers(l);
    tr__link_free(l);
}

TR_API int tr_pool_start(tr_runtime *rt, const tr_pool_config *cfg) {
    if (rt == NULL)
        return TR_EINVAL;
    tr__behavior_mark_raw_replies(&tr__proxy_behavior);
    tr__behavior_mark_pressure(&tr__proxy_behavior);
    tr__behavior_mark_pressure(&tr__link_behavior);
    if (rt->pool != NULL)
        return TR_ESTATE;
    unsigned n =
        cfg != NULL && cfg->processes > 0 ? cfg->processes : tr__cpu_count();
    if (n > 256)
        return TR_EINVAL;
    tr__link *l = tr__link_new(rt, TR__LINK_POOL, n);
    if (l == NULL)
        return TR_ENOMEM;
    l->worker_threads =
        cfg != NULL && cfg->worker_threads > 0 ? cfg->worker_threads : 1;
    l->grant = cfg == NULL || cfg->window == 0 ? 1024
               : cfg->window < 0                 ? 0
                                                 : (uint32_t)cfg->window;
    l->hang_timeout_ms = cfg == NULL || cfg->hang_timeout_ms == 0 ? 10000
                         : cfg->hang_timeout_ms < 0               ? -1
                                                    : cfg->hang_timeout_ms;
    /* A unique name in Linux's abstract socket namespace ("@"): no file
     * exists, so none can be left behind, even when the main process is
     * killed with -9. */
    snprintf(l->endpoint, sizeof l->endpoint, "ipc://@troupe-%d-%llu",
             (int)getpid(),
             (unsigned long long)atomic_fetch_add(&endpoint_seq, 1));
    int rc = tr__link_open(l);
    /* Start the processes here, so they exist when this returns (before
     * the runtime runs, too); the link watches them once it starts. */
    for (unsigned i = 0; rc == 0 && i < n; i++)
        rc = tr__link_start_worker(l, i);
    if (rc == 0)
        rc = tr__spawn_system(rt, &tr__link_behavior, &l, sizeof l, &l->self);
    if (rc != 0)
        tr__link_stop_workers(l);
    if (rc != 0) {
        tr__link_free(l);
        return rc;
    }
    rt->pool = l;
    rt->pool_destroy = pool_destroy;
    return 0;
}

TR_API unsigned tr_pool_size(tr_runtime *rt) {
    tr__link *l = rt != NULL ? rt->pool : NULL;
    return l != NULL ? l->npeers : 0;
}

TR_API int tr_pool_worker_pid(tr_runtime *rt, unsigned i) {
    tr__link *l = rt != NULL ? rt->pool : NULL;
    if (l == NULL || i >= l->npeers)
        return -1;
    /* Written by the link actor on another thread: a snapshot. */
    return (int)__atomic_load_n(&l->peers[i].pid, __ATOMIC_RELAXED);
}

/* Least loaded worker (a racy read of loads is fine: a hint). */
static unsigned pick_worker(tr__link *l) {
    unsigned best = 0;
    uint32_t best_load = UINT32_MAX;
    for (unsigned i = 0; i < l->npeers; i++) {
        uint32_t load = __atomic_load_n(&l->peers[i].load, __ATOMIC_RELAXED);
        if (load < best_load) {
            best_load = load;
            best = i;
        }
    }
    if (best_load != UINT32_MAX) /* UINT32_MAX: a worker that cannot run */
        __atomic_add_fetch(&l->peers[best].load, 1, __ATOMIC_RELAXED);
    return best;
}

int tr__remote_spawn(tr_runtime *rt, tr_ctx *ctx, tr__link *l, uint32_t peer,
                     const char *key, const char *name, const void *init,
                     size_t init_len, uint32_t started_tag, tr_ref *out) {
    bool lookup = strcmp(key, "lookup") == 0;
    tr_mp_writer w;
    tr_mp_writer_init(&w);
    tr_mp_write_map(&w, lookup ? 1 : 2);
    tr_mp_write_cstr(&w, key);
    tr_mp_write_cstr(&w, name);
    if (!lookup) {
        tr_mp_write_cstr(&w, "init");
        tr_mp_write_bin(&w, init != NULL ? init : "", init_len);
    }
    tr_msg *payload = NULL;
    int rc = tr_mp_writer_to_msg(&w, 0, &payload);
    tr_mp_writer_free(&w);
    if (rc != 0)
        return rc;
    tr__proxy pi = {.link = l->self,
                    .peer = peer,
                    .owns = !lookup,
                    .started_tag = started_tag};
    if (!lookup && (tr__registry_flags(name) & TR_REG_IDEMPOTENT)) {
        size_t plen = 0;
        const void *pd = tr_msg_data(payload, &plen);
        if ((pi.respawn = tr_msg_new_msgpack(0, pd, plen)) == NULL) {
            tr_msg_destroy(&payload);
            return TR_ENOMEM;
        }
    }
    tr_ref proxy;
    rc =
        ctx != NULL
            ? tr_spawn(ctx, &tr__proxy_behavior, &pi, sizeof pi, &proxy)
            : tr_runtime_spawn(rt, &tr__proxy_behavior, &pi, sizeof pi, &proxy);
    if (rc != 0) {
        tr_msg_destroy(&payload);
        if (pi.respawn != NULL)
            tr_msg_destroy(&pi.respawn);
        return rc;
    }
    tr__fwd *f = calloc(1, sizeof *f);
    if (f == NULL) {
        tr_msg_destroy(&payload);
        (void)tr_kill(rt, proxy);
        return TR_ENOMEM;
    }
    f->peer = peer;
    f->kind = TR__K_SPAWN;
    f->sender = proxy.id;
    f->req_id = proxy.id;
    f->payload = payload;
    rc = tr__fwd_send(ctx, rt, l->self, f);
    if (rc != 0) {
        (void)tr_kill(rt, proxy);
        return rc;
    }
    if (out != NULL)
        *out = proxy;
    return 0;
}

int tr__remote_args_check(const char *name, const void *init,
                          size_t init_len) {
    if (name == NULL || name[0] == 0 || strlen(name) >= TR__REG_NAME_MAX ||
        (init == NULL && init_len > 0))
        return TR_EINVAL;
    if (init_len > TR_MSG_MAX_BYTES / 2)
        return TR_ETOOBIG;
    return 0;
}

/* Spawns `name` in the least loaded worker process (ctx NULL: from
 * outside). */
static int spawn_remote(tr_runtime *rt, tr_ctx *ctx, const char *name,
                        const void *init, size_t init_len,
                        uint32_t started_tag, tr_ref *out) {
    tr__link *l = rt->pool;
    if (l == NULL)
        return TR_ESTATE;
    int rc = tr__remote_args_check(name, init, init_len);
    if (rc != 0)
        return rc;
    return tr__remote_spawn(rt, ctx, l, pick_worker(l), "behavior", name, init,
                            init_len, started_tag, out);
}

int tr__node_spawn_placed(tr_ctx *ctx, const char *node, const char *name,
                          const void *init, size_t init_len,
                          uint32_t started_tag, tr_ref *out);

int tr__spawn_placed(tr_ctx *ctx, const char *node, const char *name,
                     const void *init, size_t init_len, uint32_t started_tag,
                     tr_ref *out) {
    if (node != NULL)
        return tr__node_spawn_placed(ctx, node, name, init, init_len,
                                     started_tag, out);
    return spawn_remote(tr_ctx_runtime(ctx), ctx, name, init, init_len,
                        started_tag, out);
}

TR_API int tr_spawn_remote(tr_ctx *ctx, const char *name, const void *init,
                           size_t init_len, tr_ref *out) {
    if (ctx == NULL)
        return TR_EINVAL;
    return spawn_remote(tr_ctx_runtime(ctx), ctx, name, init, init_len, 0,
                        out);
}

TR_API int tr_runtime_spawn_remote(tr_runtime *rt, const char *name,
                                   const void *init, size_t init_len,
                                   tr_ref *out) {
    if (rt == NULL)
        return TR_EINVAL;
    return spawn_remote(rt, NULL, name, init, init_len, 0, out);
}

/* ---- worker mode ---- */

TR_API int tr_main_lookup(tr_ctx *ctx, const char *name, tr_ref *out) {
    if (ctx == NULL || out == NULL)
        return TR_EINVAL;
    tr_runtime *rt = tr_ctx_runtime(ctx);
    tr__link *l = rt->main_link;
    if (l == NULL) {
        tr__log(TR_LOG_WARN, "tr_main_lookup: not in a worker process");
        return TR_ESTATE;
    }
    int rc = tr__remote_args_check(name, NULL, 0);
    if (rc != 0)
        return rc;
    return tr__remote_spawn(rt, ctx, l, 0, "lookup", name, NULL, 0, 0, out);
}

static void *watch_parent(void *arg) {
    pid_t parent = *(pid_t *)arg;
    tr__thread_name("troupe-parent");
    for (;;) {
        if (getppid() != parent)
            _exit(1); /* reparented: the main process is gone */
        usleep(50 * 1000);
    }
    return NULL;
}

TR_API int tr_worker_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    const char *ep = getenv("TROUPE_WORKER");
    if (ep == NULL || ep[0] == 0)
        return 0;
    const char *idx = getenv("TROUPE_WORKER_INDEX");
    const char *thr = getenv("TROUPE_WORKER_THREADS");
    const char *par = getenv("TROUPE_WORKER_PARENT");
    const char *win = getenv("TROUPE_WORKER_WINDOW");
    const char *hang = getenv("TROUPE_WORKER_HANG_MS");
    const char *id = getenv("TROUPE_WORKER_ID");
    /* A worker never outlives the main process: a thread watches the
     * parent (PR_SET_PDEATHSIG would follow the forking thread, not the
     * process) and ends this one within 50 ms of its death. */
    static pid_t parent;
    parent = par != NULL ? (pid_t)atoi(par) : getppid();
    if (parent != getppid())
        _exit(1);
    pthread_t watcher;
    if (pthread_create(&watcher, NULL, watch_parent, &parent) != 0)
        _exit(1);
    pthread_detach(watcher);
    tr__behavior_mark_raw_replies(&tr__proxy_behavior);
    tr__behavior_mark_pressure(&tr__proxy_behavior);
    tr__behavior_mark_pressure(&tr__link_behavior);
    /* Depths tracked: the link holds credit back for a busy actor. */
    tr_runtime_config cfg = {.workers = thr ? (unsigned)atoi(thr) : 1,
                             .track_depth = true};
    tr_runtime *rt = NULL;
    if (tr_runtime_create(&rt, &cfg) != 0)
        _exit(1);
    tr__link *l = tr__link_new(rt, TR__LINK_WORKER, 1);
    if (l == NULL)
        _exit(1);
    l->index = idx ? (unsigned)atoi(idx) : 0;
    if (id != NULL) /* its routing id: this process's, never reused */
        snprintf(l->routing_id, sizeof l->routing_id, "%s", id);
    /* The main side's window is both what it grants us and what we
     * grant it (it sends no HELLO). */
    l->grant = win != NULL ? (uint32_t)strtoul(win, NULL, 10) : 0;
    l->peers[0].window = l->grant;
    /* Heartbeat loss: the main side's hang timeout works both ways. */
    l->hang_timeout_ms = hang != NULL ? strtoll(hang, NULL, 10) : -1;
    snprintf(l->endpoint, sizeof l->endpoint, "%s", ep);
    rt->main_link = l;
    /* Here the link is an ordinary (counted) top-level actor: the worker
     * runs as long as it does, and BYE's orderly shutdown stops it last
     * (it is the oldest). Never muted, as a system link is: it delivers
     * to actors that may be muted, and it alone brings the CREDIT that
     * unmutes them (mute.c). */
    if (tr__link_open(l) != 0 ||
        tr_runtime_spawn(rt, &tr__link_behavior, &l, sizeof l, &l->self) != 0 ||
        tr__mute_exempt(rt, l->self) != 0)
        _exit(1);
    (void)tr_runtime_run(rt);
    tr_runtime_destroy(&rt);
    tr__link_free(l);
    exit(0);
}
