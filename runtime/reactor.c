/* Design notes
 * ------------
 * One thread owns an epoll instance. Its wait timeout is the earliest
 * timer deadline; adding an earlier timer, or stopping, writes an eventfd
 * registered in the same epoll set. Timers and watches are guarded by one
 * mutex; messages are delivered outside it (the delivery is a lock-free
 * mailbox push) so a slow receiver can never stall timer bookkeeping.
 * fd watches are edge-triggered (EPOLLET): one message per readiness edge,
 * and the actor drains until EAGAIN. This is also what ZeroMQ's ZMQ_FD
 * requires. A watch's epoll data is its id (index + generation), so an
 * event for a watch removed meanwhile is recognised and ignored. */
#include "runtime/reactor.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "runtime/log.h"
#include "runtime/platform.h"
#include "troupe/error.h"

#define MAX_EVENTS 64

int tr__reactor_init(tr__reactor *r, tr__deliver_fn deliver, tr__tick_fn tick,
                     tr__free_msg_fn free_msg, void *arg) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    tr__timerheap_init(&r->timers);
    r->deliver = deliver;
    r->tick = tick;
    r->free_msg = free_msg;
    r->arg = arg;
    r->sleeping_until = INT64_MAX;
    r->sigfd = -1;
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    r->wakefd = tr__eventfd_open();
    if (r->epfd < 0 || r->wakefd < 0) {
        tr__log(TR_LOG_ERROR, "reactor: epoll/eventfd: %s", strerror(errno));
        return TR_ESYS;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->wakefd, &ev) != 0) {
        tr__log(TR_LOG_ERROR, "reactor: epoll_ctl: %s", strerror(errno));
        return TR_ESYS;
    }
    return 0;
}

/* Fires due timers; returns the next deadline (INT64_MAX if none). Called
 * with the lock held, and delivers under it: a delivery is a lock-free
 * mailbox push, and holding the lock is what makes tr_timer_cancel's
 * promise exact (no tick after a successful cancel). */
static int64_t fire_due(tr__reactor *r) {
    int64_t now = tr__now_ns();
    tr__timer *t;
    uint64_t n = 0;
    while ((t = tr__timerheap_top(&r->timers)) != NULL && t->deadline <= now) {
        void *m;
        uint64_t to = t->to;
        if (t->period > 0) {
            m = r->tick(t->tag, ++t->ticks);
            t->deadline = t->deadline > INT64_MAX - t->period
                              ? INT64_MAX
                              : t->deadline + t->period;
            if (t->deadline <= now) /* fell behind: skip, don't burst */
                t->deadline =
                    now > INT64_MAX - t->period ? INT64_MAX : now + t->period;
            tr__timerheap_update(&r->timers, t);
        } else {
            m = t->msg;
            tr__timerheap_remove(&r->timers, t);
        }
        if (m != NULL && r->deliver(r->arg, to, m) != 0) {
            r->free_msg(m);
            /* A periodic timer to a dead actor ends itself. */
            if (t->period > 0 && t->heap_pos != UINT32_MAX)
                tr__timerheap_remove(&r->timers, t);
        }
        n++;
    }
    atomic_fetch_add_explicit(&r->fired, n, memory_order_relaxed);
    t = tr__timerheap_top(&r->timers);
    return t != NULL ? t->deadline : INT64_MAX;
}

#define SIGNAL_ID 1 /* epoll data of the signalfd; watch ids are >= 2^32 */

int tr__reactor_signals(tr__reactor *r, const void *sigset,
                        void (*on_signal)(void *arg, int signo)) {
    r->sigfd = signalfd(-1, sigset, SFD_NONBLOCK | SFD_CLOEXEC);
    if (r->sigfd < 0) {
        tr__log(TR_LOG_ERROR, "signalfd: %s", strerror(errno));
        return TR_ESYS;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = SIGNAL_ID};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->sigfd, &ev) != 0) {
        tr__log(TR_LOG_ERROR, "epoll_ctl(signalfd): %s", strerror(errno));
        return TR_ESYS;
    }
    r->on_signal = on_signal;
    return 0;
}

static void read_signals(tr__reactor *r) {
    struct signalfd_siginfo si;
    while (read(r->sigfd, &si, sizeof si) == (ssize_t)sizeof si)
        r->on_signal(r->arg, (int)si.ssi_signo);
}

static void handle_fd_event(tr__reactor *r, uint64_t id, uint32_t epev) {
    pthread_mutex_lock(&r->lock);
    uint32_t idx = (uint32_t)id - 1;
    if (idx >= r->nwatches || !r->watches[idx].used ||
        r->watches[idx].gen != (uint32_t)(id >> 32)) {
        pthread_mutex_unlock(&r->lock);
        return;
    }
    tr__watch w = r->watches[idx];
    pthread_mutex_unlock(&r->lock);
    uint32_t ev = 0;
    if (epev & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))
        ev |= w.events & 1u;
    if (epev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        ev |= w.events & 2u;
    if (ev == 0)
        ev = w.events;
    void *m = r->tick(w.tag, ev);
    if (m == NULL)
        return;
    int rc = r->deliver(r->arg, w.to, m);
    if (rc != 0) {
        r->free_msg(m);
        if (rc == TR_ENOACTOR) {
            tr__log(TR_LOG_INFO, "watch on fd %d removed: actor is dead", w.fd);
            (void)tr__reactor_unwatch(r, id);
        }
    }
}

static void *reactor_main(void *arg) {
    tr__reactor *r = arg;
    tr__thread_name("troupe-reactor");
    struct epoll_event evs[MAX_EVENTS];
    pthread_mutex_lock(&r->lock);
    while (!atomic_load_explicit(&r->stopping, memory_order_acquire)) {
        int64_t next = fire_due(r);
        r->sleeping_until = next;
        pthread_mutex_unlock(&r->lock);
        int timeout_ms = -1;
        if (next != INT64_MAX) {
            int64_t d = next - tr__now_ns();
            /* Round up: waking early just loops, waking late is a bug. */
            timeout_ms = d <= 0 ? 0 : (int)((d + 999999) / 1000000);
            if (d > (int64_t)1 << 40)
                timeout_ms = 1 << 20;
        }
        /* The monitor wakes a thief for a unit stuck behind a long turn
         * (nobody to wake with one worker) and runs the debug hook: with
         * neither, no 1 ms wakeups while a lone worker computes. */
        bool monitor = r->sched != NULL &&
                       (r->sched->n > 1 || r->monitor_hook != NULL) &&
                       tr__sched_monitor_wanted(r->sched);
        if (monitor && (timeout_ms < 0 || timeout_ms > 1))
            timeout_ms = 1;
        int n = epoll_wait(r->epfd, evs, MAX_EVENTS, timeout_ms);
        if (monitor) {
            int64_t now = tr__now_ns();
            if (now - r->last_monitor >= TR__MONITOR_NS) {
                r->last_monitor = now;
                tr__sched_monitor(r->sched);
                if (r->monitor_hook != NULL)
                    r->monitor_hook(r->arg);
            }
        }
        if (n < 0 && errno != EINTR)
            tr__log(TR_LOG_ERROR, "reactor: epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == 0)
                tr__eventfd_drain(r->wakefd);
            else if (evs[i].data.u64 == SIGNAL_ID)
                read_signals(r);
            else
                handle_fd_event(r, evs[i].data.u64, evs[i].events);
        }
        pthread_mutex_lock(&r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static void kick(void *arg) {
    tr__reactor *r = arg;
    tr__eventfd_signal(r->wakefd);
}

int tr__reactor_start(tr__reactor *r) {
    if (r->sched != NULL) {
        r->sched->kick_arg = r;
        r->sched->kick = kick;
    }
    if (pthread_create(&r->thread, NULL, reactor_main, r) != 0) {
        tr__log(TR_LOG_ERROR, "reactor: pthread_create failed");
        return TR_ESYS;
    }
    r->started = true;
    return 0;
}

void tr__reactor_stop(tr__reactor *r) {
    if (r->started) {
        atomic_store_explicit(&r->stopping, 1, memory_order_release);
        tr__eventfd_signal(r->wakefd);
        pthread_join(r->thread, NULL);
        r->started = false;
    }
}

void tr__reactor_destroy(tr__reactor *r) {
    tr__reactor_stop(r);
    tr__timer *t;
    while ((t = tr__timerheap_top(&r->timers)) != NULL) {
        if (t->msg != NULL)
            r->free_msg(t->msg);
        tr__timerheap_remove(&r->timers, t);
    }
    tr__timerheap_destroy(&r->timers);
    free(r->watches);
    free(r->free_watches);
    r->watches = NULL;
    r->free_watches = NULL;
    if (r->epfd >= 0)
        close(r->epfd);
    if (r->wakefd >= 0)
        close(r->wakefd);
    if (r->sigfd >= 0)
        close(r->sigfd);
    r->epfd = r->wakefd = r->sigfd = -1;
    pthread_mutex_destroy(&r->lock);
}

int tr__reactor_timer_add(tr__reactor *r, int64_t deadline_ns,
                          int64_t period_ns, uint64_t to, void *msg,
                          uint32_t tag, uint64_t *id) {
    pthread_mutex_lock(&r->lock);
    uint64_t tid =
        tr__timerheap_add(&r->timers, deadline_ns, period_ns, to, msg, tag);
    /* Wake the thread only if it sleeps past the new deadline: adding
     * 10^5 timers in a row costs one wakeup, not 10^5. */
    bool wake = tid != 0 && deadline_ns < r->sleeping_until;
    if (wake)
        r->sleeping_until = deadline_ns;
    pthread_mutex_unlock(&r->lock);
    if (tid == 0)
        return TR_ENOMEM;
    if (wake)
        tr__eventfd_signal(r->wakefd);
    if (id != NULL)
        *id = tid;
    return 0;
}

int tr__reactor_timer_cancel(tr__reactor *r, uint64_t id) {
    pthread_mutex_lock(&r->lock);
    tr__timer *t = tr__timerheap_get(&r->timers, id);
    void *msg = NULL;
    if (t != NULL) {
        msg = t->msg;
        tr__timerheap_remove(&r->timers, t);
    }
    pthread_mutex_unlock(&r->lock);
    if (t == NULL)
        return TR_ENOTFOUND;
    if (msg != NULL)
        r->free_msg(msg);
    return 0;
}

int tr__reactor_watch(tr__reactor *r, int fd, uint32_t events, uint64_t to,
                      uint32_t tag, uint64_t *id) {
    pthread_mutex_lock(&r->lock);
    uint32_t idx;
    if (r->nfree_watches > 0) {
        idx = r->free_watches[--r->nfree_watches];
    } else {
        if (r->nwatches == r->capwatches) {
            uint32_t ncap = r->capwatches ? r->capwatches * 2 : 16;
            tr__watch *nw = realloc(r->watches, ncap * sizeof *nw);
            uint32_t *nf =
                nw ? realloc(r->free_watches, ncap * sizeof *nf) : NULL;
            if (nw != NULL)
                r->watches = nw;
            if (nf == NULL) {
                pthread_mutex_unlock(&r->lock);
                return TR_ENOMEM;
            }
            r->free_watches = nf;
            r->capwatches = ncap;
        }
        idx = r->nwatches++;
        r->watches[idx].gen = 0;
    }
    tr__watch *w = &r->watches[idx];
    w->gen = (w->gen + 1) & 0x7fffffffu;
    if (w->gen == 0)
        w->gen = 1;
    w->fd = fd;
    w->events = events;
    w->tag = tag;
    w->to = to;
    w->used = true;
    uint64_t wid = ((uint64_t)w->gen << 32) | ((uint64_t)idx + 1);
    struct epoll_event ev = {.events = EPOLLET, .data.u64 = wid};
    if (events & 1u)
        ev.events |= EPOLLIN | EPOLLRDHUP;
    if (events & 2u)
        ev.events |= EPOLLOUT;
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int e = errno;
        w->used = false;
        r->free_watches[r->nfree_watches++] = idx;
        pthread_mutex_unlock(&r->lock);
        tr__log(TR_LOG_WARN, "tr_watch: epoll_ctl(fd %d): %s", fd, strerror(e));
        return e == ENOMEM ? TR_ENOMEM : TR_EINVAL;
    }
    pthread_mutex_unlock(&r->lock);
    *id = wid;
    return 0;
}

int tr__reactor_unwatch(tr__reactor *r, uint64_t id) {
    pthread_mutex_lock(&r->lock);
    uint32_t idx = (uint32_t)id - 1;
    if ((uint32_t)id == 0 || idx >= r->nwatches || !r->watches[idx].used ||
        r->watches[idx].gen != (uint32_t)(id >> 32)) {
        pthread_mutex_unlock(&r->lock);
        return TR_ENOTFOUND;
    }
    tr__watch *w = &r->watches[idx];
    /* The fd may already be closed by its owner: ignore EBADF/ENOENT. */
    (void)epoll_ctl(r->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->used = false;
    r->free_watches[r->nfree_watches++] = idx;
    pthread_mutex_unlock(&r->lock);
    return 0;
}
