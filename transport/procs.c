/* Worker processes (POOL mode of the link, main side): starting them by
 * fork + exec, watching them (pidfd, a 100 ms poll, heartbeats), handling
 * their death, and stopping them at the end. See pool.c for why exec. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime/log.h"
#include "transport/link.h"

static int pidfd_open_(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/* Each worker process gets its own routing id, "w<i>.<n>" for the n-th
 * process of slot i (n is the peer's generation once it runs). A frame
 * a process sent just before it died may be read after its death was
 * handled; under the slot's name alone it would be taken for its
 * successor's: a stale HELLO would mark the new process connected before
 * it is (frames to it dropped, its own HELLO ignored, its spawns never
 * sent), a stale SPAWN_REPLY or DOWN would name an actor of the wrong
 * process. And libzmq's ROUTER ignores, for good, a connection whose
 * routing id is still held by a dead peer's pipe. With one id per process
 * the ROUTER and peer_by_ident (link.c) tell them apart. */
int tr__link_start_worker(tr__link *l, unsigned i) {
    tr__peer *p = &l->peers[i];
    unsigned gen = p->generation + 1;
    p->identlen = (size_t)snprintf(p->ident, sizeof p->ident, "w%u.%u", i, gen);
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
    char env_ep[200], env_idx[64], env_thr[64], env_par[64], env_win[64],
        env_hang[64], env_id[96];
    snprintf(env_ep, sizeof env_ep, "TROUPE_WORKER=%s", l->endpoint);
    snprintf(env_idx, sizeof env_idx, "TROUPE_WORKER_INDEX=%s", idx);
    snprintf(env_thr, sizeof env_thr, "TROUPE_WORKER_THREADS=%s", threads);
    snprintf(env_par, sizeof env_par, "TROUPE_WORKER_PARENT=%s", parent);
    snprintf(env_win, sizeof env_win, "TROUPE_WORKER_WINDOW=%u", l->grant);
    snprintf(env_hang, sizeof env_hang, "TROUPE_WORKER_HANG_MS=%lld",
             (long long)l->hang_timeout_ms);
    snprintf(env_id, sizeof env_id, "TROUPE_WORKER_ID=%s", p->ident);
    extern char **environ;
    size_t ne = 0;
    while (environ[ne] != NULL)
        ne++;
    char **envp = calloc(ne + 8, sizeof *envp);
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
    envp[k++] = env_win;
    envp[k++] = env_hang;
    envp[k++] = env_id;
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
    p->generation = gen;
    p->pidfd = pidfd_open_(pid);
    if (p->pidfd < 0)
        tr__log(TR_LOG_WARN,
                "pool: pidfd_open: %s (worker death is then "
                "noticed only by its closed connection)",
                strerror(errno));
    return 0;
}

bool tr__link_past_worker(const tr__link *l, const void *id, size_t len) {
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, id, len);
    buf[len] = 0;
    unsigned i, n;
    int end = 0;
    if (sscanf(buf, "w%u.%u%n", &i, &n, &end) != 2 || (size_t)end != len ||
        i >= l->npeers)
        return false;
    return n < l->peers[i].generation;
}

/* The link learns of worker i's death through its pidfd (readable when
 * the process exits). */
void tr__link_watch_worker(tr__link *l, unsigned i) {
    tr__peer *p = &l->peers[i];
    if (p->pidfd >= 0 && tr_watch(l->rt, p->pidfd, TR_READABLE, l->self,
                                  TR__LT_DEAD, &p->pidwatch) != 0)
        tr__log(TR_LOG_WARN, "pool: cannot watch worker %u's pidfd", i);
}

/* A worker process died: everything it ran is lost; start a new one. */
void tr__link_worker_lost(tr_ctx *ctx, tr__link *l, unsigned i) {
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
    /* Everything it ran is lost: failed back, proxies ended. */
    tr__link_peer_lost(ctx, l, p, TR_ELOST);
    /* Start a new one, unless it keeps dying before it even says HELLO
     * (a worker that cannot start would be restarted in a tight loop).
     * Killed from outside (SIGKILL, SIGTERM, SIGINT) is not a failed
     * start: a slow start under load must not make kill -9 fatal. */
    bool killed = WIFSIGNALED(status) &&
                  (WTERMSIG(status) == SIGKILL || WTERMSIG(status) == SIGTERM ||
                   WTERMSIG(status) == SIGINT);
    p->failed_starts =
        p->ever_connected || killed ? 0 : p->failed_starts + 1;
    p->ever_connected = false;
    if (!l->stopping && p->failed_starts < 3 &&
        tr__link_start_worker(l, i) == 0) {
        p->dead = false;
        tr__link_watch_worker(l, i);
    } else if (!l->stopping) {
        tr__log(TR_LOG_ERROR,
                "pool: worker %u failed to start %u times in a row; not "
                "restarted (spawns placed on it fail)",
                i, p->failed_starts);
        __atomic_store_n(&p->pid, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&p->load, UINT32_MAX, __ATOMIC_RELAXED);
    }
}

/* Heartbeats: ping every connected worker, reap the dead, kill the
 * silent. */
void tr__link_pool_tick(tr_ctx *ctx, tr__link *l) {
    for (unsigned i = 0; i < l->npeers; i++) {
        tr__peer *p = &l->peers[i];
        if (!p->dead && p->pid > 0)
            tr__link_worker_lost(ctx, l, i); /* reaps it if it exited */
        if (!p->connected || p->dead)
            continue;
        if (l->hang_timeout_ms > 0 &&
            tr_now_ms() - p->last_rx_ms > l->hang_timeout_ms) {
            tr__log(TR_LOG_WARN,
                    "pool: worker %u (pid %d) silent for %lld ms: killed "
                    "as hung",
                    i, (int)p->pid, (long long)(tr_now_ms() - p->last_rx_ms));
            p->last_rx_ms = tr_now_ms(); /* once; its pidfd does the rest */
            kill(p->pid, SIGKILL);
            continue;
        }
        tr__link_send_env(ctx, l, i, TR__K_HEARTBEAT, 0, 0, 0,
                          (int64_t)++p->hb_seq);
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
            (void)tr__link_send_frame(l, p, buf, len);
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

