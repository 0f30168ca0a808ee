/* Platform specifics (Linux): futex, clocks, CPU count, fd helpers.
 * Everything OS-specific the rest of the runtime needs sits behind this
 * header so that the other files read as portable C. */
#ifndef TR_RUNTIME_PLATFORM_H
#define TR_RUNTIME_PLATFORM_H

#include <stdatomic.h>
#include <stdint.h>

/* Sleeps while *word == expected, at most timeout_ns (-1 = forever).
 * Spurious returns are allowed; callers loop. */
void tr__futex_wait(_Atomic uint32_t *word, uint32_t expected,
                    int64_t timeout_ns);
/* Wakes up to n sleepers on word. */
void tr__futex_wake(_Atomic uint32_t *word, int n);

int64_t tr__now_ns(void);
/* ms -> ns and base + ms as ns, saturating at INT64_MAX ("never") instead
 * of overflowing (signed overflow is undefined behaviour). */
static inline int64_t tr__ms_to_ns(int64_t ms) {
    if (ms <= 0)
        return ms <= INT64_MIN / 1000000 ? INT64_MIN : ms * 1000000;
    return ms >= INT64_MAX / 1000000 ? INT64_MAX : ms * 1000000;
}
static inline int64_t tr__after_ns(int64_t base_ns, int64_t ms) {
    int64_t d = tr__ms_to_ns(ms);
    return d > INT64_MAX - base_ns ? INT64_MAX : base_ns + d;
}
unsigned tr__cpu_count(void);
/* Names the calling thread and, once some runtime reads SIGINT/SIGTERM
 * from a signalfd, blocks them in it (a signalfd only works if every
 * thread blocks the signal). Every thread troupe starts calls it. */
void tr__thread_name(const char *name);
/* Makes every later tr__thread_name block SIGINT and SIGTERM. */
void tr__signals_claim(void);

/* CPU relax hint for spin loops. */
static inline void tr__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* eventfd-style wakeup object for the reactor. */
int tr__eventfd_open(void);
void tr__eventfd_signal(int fd);
void tr__eventfd_drain(int fd);

#define TR__CACHELINE 64

#endif
