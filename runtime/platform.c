/* Linux implementation of platform.h. */
#include "runtime/platform.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void tr__futex_wait(_Atomic uint32_t *word, uint32_t expected,
                    int64_t timeout_ns) {
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tsp = &ts;
    }
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, tsp,
            NULL, 0);
}

void tr__futex_wake(_Atomic uint32_t *word, int n) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

int64_t tr__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

unsigned tr__cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1u;
}

/* Relaxed: set before the threads that read it are created (creation
 * orders it) or, for later runtimes, racing harmlessly to the same value. */
static _Atomic int signals_claimed;

void tr__signals_claim(void) {
    atomic_store_explicit(&signals_claimed, 1, memory_order_relaxed);
}

void tr__thread_name(const char *name) {
    pthread_setname_np(pthread_self(), name);
    if (atomic_load_explicit(&signals_claimed, memory_order_relaxed)) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
    }
}

int tr__eventfd_open(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

void tr__eventfd_signal(int fd) {
    uint64_t one = 1;
    while (write(fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

void tr__eventfd_drain(int fd) {
    uint64_t v;
    while (read(fd, &v, sizeof v) < 0 && errno == EINTR) {
    }
}
