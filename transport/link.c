/* Design notes
 * ------------
 * One link actor per process owns its ZeroMQ socket: ZeroMQ sockets are
 * not thread-safe, and an actor runs on one thread at a time, so the
 * socket needs no lock. The socket's ZMQ_FD is watched by the reactor
 * (edge-triggered, as ZeroMQ requires): on each readiness message, and
 * after every send, the link drains while ZMQ_EVENTS reports POLLIN.
 *
 * Batching: envelopes for a peer go into that peer's encoder; the first
 * one of a frame also queues a FLUSH message to the link itself, which
 * comes after everything already in the link's mailbox. So a burst of
 * sends becomes one frame, and a lone send goes out at once.
 *
 * Socket options, each set on purpose:
 *   ZMQ_LINGER 0          closing never blocks (shutdown has its own
 *                         BYE/reap protocol; libzmq#4660: we do not rely
 *                         on linger to deliver a tail).
 *   ZMQ_SNDHWM/RCVHWM     100000 messages: room for bursts; beyond, a send
 *                         blocks the link for up to ZMQ_SNDTIMEO.
 *   ZMQ_SNDTIMEO 2000 ms  a peer that does not read for 2 s is treated as
 *                         stuck: the frame is dropped and counted (logged).
 *   ZMQ_MAXMSGSIZE        the codec's max frame: a peer cannot make us
 *                         allocate more (LESSONS.md).
 *   ZMQ_ROUTER_MANDATORY  (main) a frame to a worker that is gone fails
 *                         loudly instead of vanishing.
 *   ZMQ_ROUTING_ID        (worker) "w<i>", so the main side knows who
 *                         speaks.
 *   ZMQ_RECONNECT_IVL 1   (worker) the main side may bind after we start.
 *   ZMQ_IMMEDIATE 1       (worker) queue only to a completed connection. */
#define _GNU_SOURCE
#include "transport/link.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "runtime/log.h"
#include "transport/proxy.h"
#include "troupe/lifecycle.h"
#include "troupe/mpack.h"

static _Atomic uint64_t drop_log_count;

static void set_int(void *sock, int opt, int v) {
    if (zmq_setsockopt(sock, opt, &v, sizeof v) != 0)
        tr__log(TR_LOG_WARN, "zmq_setsockopt(%d): %s", opt,
                zmq_strerror(zmq_errno()));
}

int tr__link_open(tr__link *l) {
    int rc = tr__decoder_init(&l->dec, NULL);
    if (rc != 0)
        return rc;
    l->zctx = zmq_ctx_new();
    if (l->zctx == NULL)
        return TR_ESYS;
    l->sock = zmq_socket(l->zctx, l->main_side ? ZMQ_ROUTER : ZMQ_DEALER);
    if (l->sock == NULL)
        return TR_ESYS;
    set_int(l->sock, ZMQ_LINGER, 0);
    set_int(l->sock, ZMQ_SNDHWM, 100000);
    set_int(l->sock, ZMQ_RCVHWM, 100000);
    set_int(l->sock, ZMQ_SNDTIMEO, 2000);
    int64_t maxmsg = (int64_t)l->dec.lim.max_frame;
    zmq_setsockopt(l->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (l->main_side) {
        set_int(l->sock, ZMQ_ROUTER_MANDATORY, 1);
        if (zmq_bind(l->sock, l->endpoint) != 0) {
            tr__log(TR_LOG_ERROR, "pool: bind %s: %s", l->endpoint,
                    zmq_strerror(zmq_errno()));
            return TR_ESYS;
        }
    } else {
        char id[16];
        int n = snprintf(id, sizeof id, "w%u", l->index);
        zmq_setsockopt(l->sock, ZMQ_ROUTING_ID, id, (size_t)n);
        set_int(l->sock, ZMQ_RECONNECT_IVL, 1);
        set_int(l->sock, ZMQ_IMMEDIATE, 1);
        if (zmq_connect(l->sock, l->endpoint) != 0) {
            tr__log(TR_LOG_ERROR, "worker: connect %s: %s", l->endpoint,
                    zmq_strerror(zmq_errno()));
            return TR_ESYS;
        }
    }
    size_t sz = sizeof l->zfd;
    if (zmq_getsockopt(l->sock, ZMQ_FD, &l->zfd, &sz) != 0)
        return TR_ESYS;
    return 0;
}

static void peer_free_queues(tr__peer *p) {
    for (uint32_t i = 0; i < p->nwaiting; i++)
        tr__fwd_free(p->waiting[i]);
    free(p->waiting);
    p->waiting = NULL;
    p->nwaiting = p->capwaiting = 0;
}

void tr__link_close(tr__link *l) {
    for (unsigned i = 0; i < l->npeers; i++) {
        tr__peer *p = &l->peers[i];
        peer_free_queues(p);
        tr__encoder_free(&p->enc);
        tr__idmap_free(&p->proxies);
        tr__idmap_free(&p->spawning);
        free(p->reqs);
        if (p->pidfd >= 0)
            close(p->pidfd);
    }
    free(l->peers);
    l->peers = NULL;
    tr__idmap_free(&l->reverse);
    tr__idmap_free(&l->watching);
    tr__decoder_free(&l->dec);
    if (l->sock != NULL)
        zmq_close(l->sock);
    if (l->zctx != NULL)
        zmq_ctx_term(l->zctx);
    l->sock = l->zctx = NULL;
    if (l->path[0] != 0)
        unlink(l->path);
}

/* ---- sending ---- */

static void send_frame(tr__link *l, tr__peer *p, const void *data, size_t len) {
    int rc = 0;
    if (l->main_side)
        rc = zmq_send(l->sock, p->ident, p->identlen, ZMQ_SNDMORE);
    if (rc >= 0)
        rc = zmq_send(l->sock, data, len, 0);
    if (rc < 0)
        tr__log_sampled(&drop_log_count, TR_LOG_WARN,
                        "link: frame of %zu bytes to %s dropped: %s", len,
                        l->main_side ? p->ident : "main",
                        zmq_strerror(zmq_errno()));
}

static void flush_peer(tr__link *l, tr__peer *p) {
    const unsigned char *frame;
    size_t len;
    p->flush_sched = false;
    if (tr__encoder_finish(&p->enc, &frame, &len) == 0)
        send_frame(l, p, frame, len);
    tr__encoder_reset(&p->enc);
}

static void env_from_fwd(const tr__fwd *f, tr__env *env) {
    memset(env, 0, sizeof *env);
    env->kind = f->kind;
    env->flags = f->flags;
    env->sender = f->sender;
    env->target = f->target;
    env->req_id = f->req_id;
    env->aux = f->aux;
    env->tag = f->tag;
    env->pkind = TR_PAYLOAD_NONE;
    if (f->payload != NULL) {
        env->pkind = f->payload->kind;
        if (f->payload->kind == TR_PAYLOAD_U64)
            env->u64 = tr_msg_u64(f->payload);
        else
            env->data = tr_msg_data(f->payload, &env->len);
    }
}

static void queue_waiting(tr__peer *p, tr__fwd *f) {
    if (p->nwaiting == p->capwaiting &&
        !tr__grow((void **)&p->waiting, &p->capwaiting, p->nwaiting + 1,
                  sizeof *p->waiting, 16)) {
        tr__log(TR_LOG_ERROR, "link: out of memory queueing an envelope");
        tr__fwd_free(f);
        return;
    }
    p->waiting[p->nwaiting++] = f;
}

static void tell_proxy(tr_ctx *ctx, uint64_t proxy, uint32_t tag, uint64_t v);

/* Answers a request's requester with a failure (TR_TAG_REMOTE_FAILED). */
static void fail_request(tr_ctx *ctx, tr__link *l, uint64_t requester,
                         uint64_t req_id, int err) {
    tr_msg *m = tr_msg_new_u64(TR_TAG_REMOTE_FAILED, (uint64_t)(int64_t)err);
    if (m == NULL)
        return;
    m->flags |= TR__F_REPLY;
    m->req_id = req_id;
    if (tr__send(l->rt, ctx, (tr_ref){requester}, m) != 0)
        tr__msg_free(m);
}

/* An envelope that cannot reach its peer any more: nothing that waits for
 * an answer is left waiting (takes f). */
static void fail_fwd(tr_ctx *ctx, tr__link *l, tr__fwd *f, int err) {
    if (f->kind == TR__K_SPAWN)
        tell_proxy(ctx, f->sender, TR__PT_REMOTE_DOWN, (uint64_t)(int64_t)err);
    else if (f->kind == TR__K_REQUEST)
        fail_request(ctx, l, f->sender, f->req_id, err);
    tr__fwd_free(f);
}

/* Encodes f for its peer (takes f). */
static void enqueue(tr_ctx *ctx, tr__link *l, tr__fwd *f) {
    if (f->peer >= l->npeers) {
        tr__fwd_free(f);
        return;
    }
    tr__peer *p = &l->peers[f->peer];
    if (p->dead || (l->main_side && f->gen != 0 && f->gen != p->generation)) {
        fail_fwd(ctx, l, f, TR_ELOST);
        return;
    }
    if (!p->connected) {
        queue_waiting(p, f);
        return;
    }
    /* Main side: what waits for an answer is listed, so a lost worker
     * fails it back (requests) or ends it (spawns). */
    if (l->main_side && f->kind == TR__K_REQUEST &&
        tr__grow((void **)&p->reqs, &p->capreqs, p->nreqs + 1, sizeof *p->reqs,
                 16))
        p->reqs[p->nreqs++] = (tr__pending_req){f->sender, f->req_id};
    if (l->main_side && f->kind == TR__K_SPAWN)
        (void)tr__idmap_put(&p->spawning, f->sender, 1);
    tr__env env;
    env_from_fwd(f, &env);
    int rc = tr__encoder_add(&p->enc, &env);
    if (rc == TR_EAGAIN) {
        flush_peer(l, p);
        rc = tr__encoder_add(&p->enc, &env);
    }
    if (rc != 0)
        tr__log(TR_LOG_WARN, "link: envelope (kind %u, tag 0x%x) refused: %s",
                f->kind, f->tag, tr_strerror(rc));
    else if (!p->flush_sched) {
        p->flush_sched = true;
        if (tr_send_u64(ctx, l->self, TR__LT_FLUSH, (uint64_t)(p - l->peers)) !=
            0)
            flush_peer(l, p);
    }
    tr__fwd_free(f);
}

static void send_env(tr_ctx *ctx, tr__link *l, unsigned peer, uint8_t kind,
                     uint64_t sender, uint64_t target, uint64_t req_id,
                     int64_t aux) {
    tr__fwd *f = calloc(1, sizeof *f);
    if (f == NULL)
        return;
    f->peer = peer;
    f->kind = kind;
    f->sender = sender;
    f->target = target;
    f->req_id = req_id;
    f->aux = aux;
    enqueue(ctx, l, f);
}

/* ---- delivering ---- */

/* Delivers a SEND/REQUEST/REPLY envelope to a local actor. */
static int deliver(tr_ctx *ctx, tr__link *l, const tr__env *env,
                   tr_ref sender) {
    tr_msg *m;
    if (env->kind == TR__K_REPLY && env->aux < 0)
        m = tr_msg_new_u64(TR_TAG_REMOTE_FAILED, (uint64_t)env->aux);
    else
        m = tr__msg_from_env(env);
    if (m == NULL)
        return TR_ENOMEM;
    m->sender = sender;
    if (env->kind == TR__K_REQUEST) {
        m->flags |= TR__F_REQUEST;
        m->req_id = env->req_id;
    } else if (env->kind == TR__K_REPLY) {
        m->flags |= TR__F_REPLY;
        m->req_id = env->req_id;
    }
    int rc = tr__send(l->rt, ctx, (tr_ref){env->target}, m);
    if (rc != 0)
        tr__msg_free(m);
    return rc;
}

/* Worker side: the local stand-in for a main-side actor (created on first
 * contact, so replies to tr_msg_sender go back over the link). */
static tr_ref reverse_proxy(tr_ctx *ctx, tr__link *l, uint64_t main_id) {
    uint64_t v;
    if (main_id == 0)
        return TR_REF_NONE;
    if (tr__idmap_get(&l->reverse, main_id, &v) &&
        tr_actor_alive(l->rt, (tr_ref){v}))
        return (tr_ref){v};
    tr__proxy init = {.link = l->self, .peer = 0, .remote = main_id};
    tr_ref r;
    if (tr_spawn(ctx, &tr__proxy_behavior, &init, sizeof init, &r) != 0)
        return TR_REF_NONE;
    (void)tr__idmap_put(&l->reverse, main_id, r.id);
    return r;
}

static void remove_req(tr__peer *p, uint64_t requester, uint64_t req_id) {
    for (uint32_t i = 0; i < p->nreqs; i++) {
        if (p->reqs[i].requester == requester && p->reqs[i].req_id == req_id) {
            p->reqs[i] = p->reqs[--p->nreqs];
            return;
        }
    }
}

static void load_add(tr__peer *p, int d) {
    uint32_t cur = __atomic_load_n(&p->load, __ATOMIC_RELAXED);
    if (d < 0 && cur == 0)
        return;
    __atomic_add_fetch(&p->load, (uint32_t)d, __ATOMIC_RELAXED);
}

static void tell_proxy(tr_ctx *ctx, uint64_t proxy, uint32_t tag, uint64_t v) {
    if (proxy != 0)
        (void)tr_send_u64(ctx, (tr_ref){proxy}, tag, v);
}

static void main_env(tr_ctx *ctx, tr__link *l, tr__peer *p,
                     const tr__env *env) {
    uint64_t proxy = 0;
    switch (env->kind) {
    case TR__K_HEARTBEAT:
        break; /* last_rx_ms is all it is for */
    case TR__K_HELLO:
        if (!p->connected) {
            p->connected = true;
            p->ever_connected = true;
            p->last_rx_ms = tr_now_ms();
            tr__log(TR_LOG_INFO, "pool: worker %s (pid %d) connected", p->ident,
                    (int)p->pid);
            uint32_t n = p->nwaiting;
            tr__fwd **w = p->waiting;
            p->waiting = NULL;
            p->nwaiting = p->capwaiting = 0;
            for (uint32_t i = 0; i < n; i++)
                enqueue(ctx, l, w[i]);
            free(w);
        }
        break;
    case TR__K_SPAWN_REPLY:
        /* load was counted when the spawn picked this worker (pool.c). */
        (void)tr__idmap_del(&p->spawning, env->target, NULL);
        if (env->aux == 0) {
            (void)tr__idmap_put(&p->proxies, env->sender, env->target);
            /* The proxy learns the actor's id and the process incarnation
             * (req_id) it lives in. */
            tr_msg *sp = tr_msg_new_u64(TR__PT_SPAWNED, env->sender);
            if (sp != NULL) {
                sp->req_id = p->generation;
                sp->sender = l->self;
                if (tr__send(l->rt, ctx, (tr_ref){env->target}, sp) != 0)
                    tr__msg_free(sp);
            }
        } else {
            load_add(p, -1);
            tell_proxy(ctx, env->target, TR__PT_REMOTE_DOWN,
                       (uint64_t)env->aux);
        }
        break;
    case TR__K_SEND:
    case TR__K_REPLY:
        if (env->kind == TR__K_REPLY)
            remove_req(p, env->target, env->req_id);
        (void)tr__idmap_get(&p->proxies, env->sender, &proxy);
        (void)deliver(ctx, l, env, (tr_ref){proxy});
        break;
    case TR__K_DOWN:
        if (tr__idmap_del(&p->proxies, env->sender, &proxy)) {
            load_add(p, -1);
            tell_proxy(ctx, proxy, TR__PT_REMOTE_DOWN, (uint64_t)env->aux);
        }
        break;
    default:
        break;
    }
}

static int spawn_local(tr_ctx *ctx, const tr__env *env, tr_ref *out) {
    tr_mp_reader r;
    tr_mp_reader_init(&r, env->data, env->len);
    uint32_t n;
    if (tr_mp_read_map(&r, &n) != 0)
        return TR_EPROTO;
    const char *name = NULL;
    size_t namelen = 0;
    const void *init = NULL;
    size_t initlen = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        size_t kl;
        if (tr_mp_read_str(&r, &k, &kl) != 0)
            return TR_EPROTO;
        if (kl == 8 && memcmp(k, "behavior", 8) == 0) {
            if (tr_mp_read_str(&r, &name, &namelen) != 0)
                return TR_EPROTO;
        } else if (kl == 4 && memcmp(k, "init", 4) == 0) {
            if (tr_mp_read_bin(&r, &init, &initlen) != 0)
                return TR_EPROTO;
        } else if (tr_mp_skip(&r) != 0) {
            return TR_EPROTO;
        }
    }
    const tr_behavior *beh = name ? tr__registry_find(name, namelen) : NULL;
    if (beh == NULL) {
        tr__log(TR_LOG_WARN, "worker: spawn of unregistered behaviour '%.*s'",
                (int)namelen, name ? name : "");
        return TR_ENOTFOUND;
    }
    if (initlen > beh->state_size)
        return TR_ETOOBIG;
    return tr_spawn(ctx, beh, init, initlen, out);
}

static void worker_env(tr_ctx *ctx, tr__link *l, const tr__env *env) {
    switch (env->kind) {
    case TR__K_SPAWN: {
        tr_ref a;
        int rc = spawn_local(ctx, env, &a);
        uint64_t mon = 0;
        if (rc == 0 && (rc = tr_monitor(ctx, a, &mon)) == 0)
            (void)tr__idmap_put(&l->watching, mon, env->sender);
        send_env(ctx, l, 0, TR__K_SPAWN_REPLY, rc == 0 ? a.id : 0, env->sender,
                 env->req_id, rc);
        break;
    }
    case TR__K_SEND:
    case TR__K_REQUEST:
    case TR__K_REPLY: {
        int rc = deliver(ctx, l, env, reverse_proxy(ctx, l, env->sender));
        if (rc != 0 && env->kind == TR__K_REQUEST)
            send_env(ctx, l, 0, TR__K_REPLY, env->target, env->sender,
                     env->req_id, rc);
        break;
    }
    case TR__K_CANCEL:
        if (env->req_id != 0) { /* drop the request if not started yet */
            tr__req_cancel_note(l->rt, reverse_proxy(ctx, l, env->sender).id,
                                env->req_id);
        } else {
            if (env->flags & TR__ENV_F_KILL)
                (void)tr_kill(l->rt, (tr_ref){env->target});
            else
                (void)tr_cancel(l->rt, (tr_ref){env->target}, (int)env->aux,
                                -1);
        }
        break;
    case TR__K_HEARTBEAT: /* answer the main side's ping */
        send_env(ctx, l, 0, TR__K_HEARTBEAT, 0, 0, 0, env->aux);
        break;
    case TR__K_BYE:
        l->stopping = true;
        (void)tr_runtime_shutdown(l->rt);
        break;
    default:
        break;
    }
}

static void handle_frame(tr_ctx *ctx, tr__link *l, tr__peer *p,
                         const void *data, size_t len) {
    uint32_t n = 0;
    int rc = tr__decoder_decode(&l->dec, data, len, &n);
    if (rc != 0) {
        tr__log(TR_LOG_WARN,
                "link: frame of %zu bytes from %s rejected "
                "(%s at byte %zu): %s",
                len, p ? p->ident : "main",
                tr__codec_reject_name(l->dec.reason), l->dec.offset,
                tr_strerror(rc));
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (l->main_side)
            main_env(ctx, l, p, &l->dec.envs[i]);
        else
            worker_env(ctx, l, &l->dec.envs[i]);
    }
}

static tr__peer *peer_by_ident(tr__link *l, const void *id, size_t len) {
    for (unsigned i = 0; i < l->npeers; i++)
        if (l->peers[i].identlen == len &&
            memcmp(l->peers[i].ident, id, len) == 0)
            return &l->peers[i];
    return NULL;
}

/* Reads every message the socket has (ZMQ_FD is edge-triggered). */
static void drain(tr_ctx *ctx, tr__link *l) {
    for (;;) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(l->sock, ZMQ_EVENTS, &events, &sz) != 0 ||
            !(events & ZMQ_POLLIN))
            return;
        zmq_msg_t part;
        zmq_msg_init(&part);
        tr__peer *p = l->main_side ? NULL : &l->peers[0];
        if (l->main_side) {
            if (zmq_msg_recv(&part, l->sock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&part);
                return;
            }
            p = peer_by_ident(l, zmq_msg_data(&part), zmq_msg_size(&part));
            zmq_msg_close(&part);
            zmq_msg_init(&part);
        }
        if (zmq_msg_recv(&part, l->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            return;
        }
        if (p == NULL) {
            tr__log(TR_LOG_WARN, "pool: frame from an unknown peer dropped");
        } else {
            p->last_rx_ms = tr_now_ms();
            handle_frame(ctx, l, p, zmq_msg_data(&part), zmq_msg_size(&part));
        }
        zmq_msg_close(&part);
    }
}

/* ---- worker processes (main side) ---- */

static int pidfd_open_(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

int tr__link_start_worker(tr__link *l, unsigned i) {
    tr__peer *p = &l->peers[i];
    char idx[16], threads[16], parent[24];
    snprintf(idx, sizeof idx, "%u", i);
    snprintf(threads, sizeof threads, "%u", l->worker_threads);
    snprintf(parent, sizeof parent, "%d", (int)getpid());
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return TR_ESYS;
    exe[n] = 0;
    /* Everything the child needs is prepared before fork: between fork
     * and exec it only makes system calls (async-signal-safe), as a child
     * of a multi-threaded process must. */
    char *argv[] = {exe, NULL};
    char env_ep[200], env_idx[64], env_thr[64], env_par[64];
    snprintf(env_ep, sizeof env_ep, "TROUPE_WORKER=%s", l->endpoint);
    snprintf(env_idx, sizeof env_idx, "TROUPE_WORKER_INDEX=%s", idx);
    snprintf(env_thr, sizeof env_thr, "TROUPE_WORKER_THREADS=%s", threads);
    snprintf(env_par, sizeof env_par, "TROUPE_WORKER_PARENT=%s", parent);
    extern char **environ;
    size_t ne = 0;
    while (environ[ne] != NULL)
        ne++;
    char **envp = calloc(ne + 5, sizeof *envp);
    if (envp == NULL)
        return TR_ENOMEM;
    size_t k = 0;
    for (size_t e = 0; e < ne; e++)
        if (strncmp(environ[e], "TROUPE_WORKER", 13) != 0)
            envp[k++] = environ[e];
    envp[k++] = env_ep;
    envp[k++] = env_idx;
    envp[k++] = env_thr;
    envp[k++] = env_par;
    pid_t parent_pid = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* Its own process group: a terminal's Ctrl-C goes to the main
         * process, which shuts the workers down in order. (No
         * PR_SET_PDEATHSIG: it fires when the forking THREAD exits, and
         * workers restarted from a scheduler thread would die with it; the
         * worker watches its parent instead, see pool.c.) */
        setpgid(0, 0);
        if (getppid() != parent_pid)
            _exit(1);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(exe, argv, envp);
        _exit(127);
    }
    free(envp);
    if (pid < 0) {
        tr__log(TR_LOG_ERROR, "pool: fork: %s", strerror(errno));
        return TR_ESYS;
    }
    /* Relaxed atomics: pid and load are read by other threads as hints
     * (tr_pool_worker_pid, the spawn's choice of worker). */
    __atomic_store_n(&p->pid, pid, __ATOMIC_RELAXED);
    p->dead = false;
    p->connected = false;
    p->generation++;
    p->pidfd = pidfd_open_(pid);
    if (p->pidfd < 0)
        tr__log(TR_LOG_WARN,
                "pool: pidfd_open: %s (worker death is then "
                "noticed only by its closed connection)",
                strerror(errno));
    return 0;
}

/* The link learns of worker i's death through its pidfd (readable when
 * the process exits). */
static void watch_worker(tr__link *l, unsigned i) {
    tr__peer *p = &l->peers[i];
    if (p->pidfd >= 0 && tr_watch(l->rt, p->pidfd, TR_READABLE, l->self,
                                  TR__LT_DEAD, &p->pidwatch) != 0)
        tr__log(TR_LOG_WARN, "pool: cannot watch worker %u's pidfd", i);
}

/* A worker process died: everything it ran is lost; start a new one. */
static void worker_lost(tr_ctx *ctx, tr__link *l, unsigned i) {
    tr__peer *p = &l->peers[i];
    int status = 0;
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == 0)
        return; /* spurious */
    tr__log(TR_LOG_WARN, "pool: worker %u (pid %d) died (%s %d)", i,
            (int)p->pid, WIFSIGNALED(status) ? "signal" : "status",
            WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    if (p->pidfd >= 0) {
        (void)tr_unwatch(l->rt, p->pidwatch);
        close(p->pidfd);
        p->pidfd = -1;
    }
    p->dead = true;
    p->connected = false;
    p->flush_sched = false;
    tr__encoder_reset(&p->enc);
    /* What never left (the worker had not said HELLO yet) fails too. */
    uint32_t nw = p->nwaiting;
    tr__fwd **waiting = p->waiting;
    p->waiting = NULL;
    p->nwaiting = p->capwaiting = 0;
    for (uint32_t k = 0; k < nw; k++)
        fail_fwd(ctx, l, waiting[k], TR_ELOST);
    free(waiting);
    /* Requests in flight: failed back, distinctly (TR_ELOST). */
    for (uint32_t k = 0; k < p->nreqs; k++)
        fail_request(ctx, l, p->reqs[k].requester, p->reqs[k].req_id,
                     TR_ELOST);
    p->nreqs = 0;
    /* Spawns not answered yet: their proxies end too. */
    for (uint32_t k = 0; k < p->spawning.cap; k++) {
        uint64_t key = p->spawning.keys[k];
        if (key != TR__IDMAP_EMPTY && key != TR__IDMAP_GONE)
            tell_proxy(ctx, key, TR__PT_REMOTE_DOWN,
                       (uint64_t)(int64_t)TR_ELOST);
    }
    tr__idmap_free(&p->spawning);
    /* Its actors' proxies end with TR_ELOST: monitors, links and
     * supervisors take it from there. */
    for (uint32_t k = 0; k < p->proxies.cap; k++) {
        uint64_t key = p->proxies.keys[k];
        if (key != TR__IDMAP_EMPTY && key != TR__IDMAP_GONE)
            tell_proxy(ctx, p->proxies.vals[k], TR__PT_REMOTE_DOWN,
                       (uint64_t)(int64_t)TR_ELOST);
    }
    tr__idmap_free(&p->proxies);
    __atomic_store_n(&p->load, 0, __ATOMIC_RELAXED);
    /* Start a new one, unless it keeps dying before it even says HELLO
     * (a worker that cannot start would be restarted in a tight loop). */
    p->failed_starts = p->ever_connected ? 0 : p->failed_starts + 1;
    p->ever_connected = false;
    if (!l->stopping && p->failed_starts < 3 &&
        tr__link_start_worker(l, i) == 0) {
        p->dead = false;
        watch_worker(l, i);
    } else if (!l->stopping) {
        tr__log(TR_LOG_ERROR,
                "pool: worker %u failed to start %u times in a row; not "
                "restarted (spawns placed on it fail)",
                i, p->failed_starts);
        __atomic_store_n(&p->pid, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&p->load, UINT32_MAX, __ATOMIC_RELAXED);
    }
}

void tr__link_stop_workers(tr__link *l) {
    l->stopping = true;
    for (unsigned i = 0; i < l->npeers; i++) {
        tr__peer *p = &l->peers[i];
        if (p->dead || p->pid <= 0 || !p->connected)
            continue;
        unsigned char buf[64];
        tr__encoder_reset(&p->enc);
        tr__env env = {.kind = TR__K_BYE};
        const unsigned char *frame;
        size_t len;
        if (tr__encoder_add(&p->enc, &env) == 0 &&
            tr__encoder_finish(&p->enc, &frame, &len) == 0) {
            memcpy(buf, frame, len < sizeof buf ? len : sizeof buf);
            send_frame(l, p, buf, len);
        }
    }
    /* Reap: a worker gets 2 s after BYE, then SIGKILL. */
    int64_t until = tr_now_ms() + 2000;
    for (unsigned i = 0; i < l->npeers; i++) {
        tr__peer *p = &l->peers[i];
        if (p->pid <= 0)
            continue;
        int status;
        while (waitpid(p->pid, &status, WNOHANG) == 0) {
            if (tr_now_ms() > until) {
                kill(p->pid, SIGKILL);
                waitpid(p->pid, &status, 0);
                break;
            }
            usleep(1000);
        }
        __atomic_store_n(&p->pid, 0, __ATOMIC_RELAXED);
        p->dead = true;
    }
}

/* ---- the actor ---- */

static int link_start(tr_ctx *ctx, void *state) {
    tr__link *l = *(tr__link **)state;
    l->self = tr_self(ctx);
    int rc =
        tr_watch(l->rt, l->zfd, TR_READABLE, l->self, TR__LT_ZMQ, &l->zwatch);
    if (rc != 0)
        return rc;
    if (l->main_side) {
        /* The processes were started by tr_pool_start. */
        for (unsigned i = 0; i < l->npeers; i++)
            watch_worker(l, i);
        /* Heartbeats, and a poll for dead workers (pidfd is faster, but
         * not everywhere: valgrind, old kernels). */
        if ((rc = tr_send_every(l->rt, l->self, 100, TR__LT_TICK,
                                &l->tick)) != 0)
            return rc;
    } else {
        tr__peer *p = &l->peers[0];
        p->connected = true;
        tr__hello h = {.proto_min = TR__PROTO_VERSION_MIN,
                       .proto_max = TR__PROTO_VERSION,
                       .role = "worker",
                       .role_len = 6,
                       .pid = (uint64_t)getpid()};
        unsigned char buf[TR__HELLO_MAX];
        size_t len;
        if (tr__hello_encode(&h, buf, sizeof buf, &len) == 0) {
            tr__fwd *f = calloc(1, sizeof *f);
            if (f != NULL) {
                f->kind = TR__K_HELLO;
                f->payload = tr_msg_new_msgpack(0, buf, len);
                enqueue(ctx, l, f);
            }
        }
    }
    drain(ctx, l);
    return 0;
}

static int link_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    tr__link *l = *(tr__link **)state;
    switch (tr_msg_tag(msg)) {
    case TR__LT_ZMQ:
        break;
    case TR__LT_FWD: {
        void *f = NULL;
        if (tr_msg_take_ptr(msg, &f) == 0)
            enqueue(ctx, l, f);
        break;
    }
    case TR__LT_FLUSH: {
        uint64_t i = tr_msg_u64(msg);
        if (i < l->npeers && l->peers[i].flush_sched)
            flush_peer(l, &l->peers[i]);
        break;
    }
    case TR__LT_TICK: /* heartbeats: ping, and find the silent */
        for (unsigned i = 0; i < l->npeers; i++) {
            tr__peer *p = &l->peers[i];
            if (!p->dead && p->pid > 0)
                worker_lost(ctx, l, i); /* reaps it if it exited */
            if (!p->connected || p->dead)
                continue;
            if (l->hang_timeout_ms > 0 &&
                tr_now_ms() - p->last_rx_ms > l->hang_timeout_ms) {
                tr__log(TR_LOG_WARN,
                        "pool: worker %u (pid %d) silent for "
                        "%lld ms: killed as hung",
                        i, (int)p->pid,
                        (long long)(tr_now_ms() - p->last_rx_ms));
                p->last_rx_ms = tr_now_ms(); /* once; its pidfd does the rest */
                kill(p->pid, SIGKILL);
                continue;
            }
            send_env(ctx, l, i, TR__K_HEARTBEAT, 0, 0, 0, (int64_t)++p->hb_seq);
        }
        break;
    case TR__LT_DEAD:
        for (unsigned i = 0; i < l->npeers; i++)
            if (!l->peers[i].dead && l->peers[i].pid > 0)
                worker_lost(ctx, l, i);
        break;
    case TR_TAG_DOWN: { /* worker side: a spawned actor ended */
        tr_exit x;
        uint64_t proxy = 0;
        if (tr_msg_exit(msg, &x) == 0 &&
            tr__idmap_del(&l->watching, x.id, &proxy))
            send_env(ctx, l, 0, TR__K_DOWN, x.who.id, proxy, x.id, x.reason);
        break;
    }
    default:
        return TR_UNHANDLED;
    }
    drain(ctx, l); /* after any socket use, and on readiness */
    return 0;
}

const tr_behavior tr__link_behavior = {.name = "troupe.link",
                                       .handle = link_handle,
                                       .on_start = link_start,
                                       .state_size = sizeof(tr__link *),
                                       .grace_ms = 3000};
