/* tests/testutil.h — scaffolding shared by troupe's cmocka tests.
 *
 * Include it FIRST in every test file: it defines _GNU_SOURCE before any
 * system header (the build is -std=c17, which hides POSIX otherwise) and
 * includes cmocka with the headers cmocka needs before it.
 *
 * The pattern every runtime test follows:
 *
 *     tu_env *e = *state;               (from tu_setup, see TU_TEST)
 *     tu_env_init(e, 2);                runtime (2 workers) + an inbox
 *     tr_runtime_spawn(e->rt, ...);     actors get e->inbox_ref in init
 *     tu_env_start(e);                  tr_runtime_run on a helper thread
 *     v = tu_recv_u64(e, TAG, 5000);    results come back to the inbox
 *     tu_env_finish(e);                 stop + bounded join + destroy
 *
 * Rules:
 * - Never call a cmocka assert from a handler, on_start, on_stop, an
 *   offload function or a helper thread: cmocka longjmps to the main
 *   thread's test frame. Those report to the inbox (tu_report) or to
 *   atomics, and the main thread asserts.
 * - Every wait is bounded: tr_inbox_recv with a timeout, TU_ASSERT_EVENTUALLY,
 *   pthread_timedjoin_np. A hang becomes a failure message, not a ctest
 *   timeout.
 * - tu_teardown (registered by TU_TEST) stops and frees the runtime even
 *   when the test failed half-way, so the next test starts clean.
 */
#ifndef TROUPE_TESTUTIL_H
#define TROUPE_TESTUTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <troupe/troupe.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define TU_HAVE_VALGRIND_H 1
#endif
#endif

/* ---- sanitizer detection: stress sizes shrink under slow instrumentation */

#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TU_ASAN 1
#endif
#endif

/* How long tu_env_finish waits for tr_runtime_run to return after stop. */
#define TU_JOIN_MS 10000
/* A generous bound for "should arrive promptly" waits. */
#define TU_PROMPT_MS 5000

/* Divisor applied to stress sizes: 8 under TSan, 2 under ASan, 20 under
 * valgrind, times TROUPE_TEST_SCALE from the environment if set. */
static inline uint64_t tu_scale_divisor(void) {
    uint64_t d = 1;
#if defined(TU_TSAN)
    d *= 8;
#elif defined(TU_ASAN)
    d *= 2;
#endif
#if defined(TU_HAVE_VALGRIND_H)
    if (RUNNING_ON_VALGRIND)
        d *= 20;
#endif
    const char *s = getenv("TROUPE_TEST_SCALE");
    if (s != NULL) {
        unsigned long long v = strtoull(s, NULL, 10);
        if (v > 0)
            d *= (uint64_t)v;
    }
    return d;
}

/* n scaled down for slow builds, never below `floor`. */
static inline uint64_t tu_scaled(uint64_t n, uint64_t floor) {
    uint64_t v = n / tu_scale_divisor();
    return v < floor ? floor : v;
}

/* ---- time */

static inline int64_t tu_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + (int64_t)ts.tv_nsec / 1000000;
}

static inline int64_t tu_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + (int64_t)ts.tv_nsec;
}

static inline void tu_sleep_ms(int64_t ms) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)((ms % 1000) * 1000000);
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Polls `cond` every millisecond for up to timeout_ms; fails the test with
 * the condition's text if it never became true. Main thread only. */
#define TU_ASSERT_EVENTUALLY(cond, timeout_ms)                                 \
    do {                                                                       \
        int64_t tu_deadline_ = tu_now_ms() + (int64_t)(timeout_ms);            \
        while (!(cond) && tu_now_ms() < tu_deadline_)                          \
            tu_sleep_ms(1);                                                    \
        if (!(cond))                                                           \
            fail_msg("not true within %lld ms: %s", (long long)(timeout_ms),   \
                     #cond);                                                   \
    } while (0)

/* ---- error-code assertions that print names, not 0xffff...fff3 */

static inline const char *tu_err_text(int rc) {
    const char *n = tr_err_name(rc);
    return n != NULL ? n : "(null name)";
}

#define TU_ASSERT_RC(expr, expected)                                           \
    do {                                                                       \
        int tu_rc_ = (expr);                                                   \
        int tu_ex_ = (expected);                                               \
        if (tu_rc_ != tu_ex_)                                                  \
            fail_msg("%s returned %d (%s), expected %d (%s)", #expr, tu_rc_,   \
                     tu_err_text(tu_rc_), tu_ex_, tu_err_text(tu_ex_));        \
    } while (0)

#define TU_ASSERT_OK(expr) TU_ASSERT_RC(expr, 0)

/* ---- randomness with a printed, replayable seed */

/* Seed from TROUPE_TEST_SEED if set, else from the clock; printed so a
 * failing run can be replayed: TROUPE_TEST_SEED=<n> ./test_x */
static inline uint64_t tu_seed(const char *what) {
    const char *s = getenv("TROUPE_TEST_SEED");
    uint64_t seed;
    if (s != NULL && *s != '\0')
        seed = (uint64_t)strtoull(s, NULL, 0);
    else
        seed = (uint64_t)tu_now_ns() ^ ((uint64_t)getpid() << 32);
    print_message("[ SEED     ] %s: seed=%" PRIu64
                  " (replay: TROUPE_TEST_SEED=%" PRIu64 ")\n",
                  what, seed, seed);
    return seed;
}

/* splitmix64 */
static inline uint64_t tu_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- the runtime + inbox environment */

typedef struct tu_env {
    tr_runtime *rt;
    tr_inbox *inbox;
    tr_ref inbox_ref;
    pthread_t runner;
    bool runner_started;
    bool runner_joined;
    int run_rc; /* written by the runner thread, read after the join */
} tu_env;

/* cmocka fixtures: a zeroed tu_env per test, torn down even on failure. */
static inline int tu_setup(void **state) {
    tu_env *e = calloc(1, sizeof *e);
    if (e == NULL)
        return -1;
    *state = e;
    return 0;
}

static inline int tu_env_join(tu_env *e, int64_t timeout_ms) {
    if (!e->runner_started || e->runner_joined)
        return 0;
    struct timespec abs;
    clock_gettime(CLOCK_REALTIME, &abs);
    abs.tv_sec += (time_t)(timeout_ms / 1000);
    abs.tv_nsec += (long)((timeout_ms % 1000) * 1000000);
    if (abs.tv_nsec >= 1000000000L) {
        abs.tv_sec += 1;
        abs.tv_nsec -= 1000000000L;
    }
    int rc = pthread_timedjoin_np(e->runner, NULL, &abs);
    if (rc == 0)
        e->runner_joined = true;
    return rc;
}

static inline int tu_teardown(void **state) {
    tu_env *e = *state;
    if (e == NULL)
        return 0;
    if (e->rt != NULL) {
        (void)tr_runtime_stop(e->rt);
        if (tu_env_join(e, TU_JOIN_MS) != 0) {
            /* The runner still uses e and the runtime: leak both rather
             * than free memory a live thread touches. */
            print_error("teardown: tr_runtime_run did not return within "
                        "%d ms of tr_runtime_stop; leaking the runtime\n",
                        TU_JOIN_MS);
            return -1;
        }
        if (e->inbox != NULL)
            tr_inbox_destroy(&e->inbox);
        tr_runtime_destroy(&e->rt);
    }
    free(e);
    *state = NULL;
    return 0;
}

#define TU_TEST(fn) cmocka_unit_test_setup_teardown(fn, tu_setup, tu_teardown)

static inline void tu_env_init_cfg(tu_env *e, const tr_runtime_config *cfg) {
    TU_ASSERT_OK(tr_runtime_create(&e->rt, cfg));
    assert_non_null(e->rt);
    TU_ASSERT_OK(tr_inbox_create(e->rt, &e->inbox));
    assert_non_null(e->inbox);
    e->inbox_ref = tr_inbox_ref(e->inbox);
    assert_false(tr_ref_is_none(e->inbox_ref));
}

static inline void tu_env_init(tu_env *e, unsigned workers) {
    tr_runtime_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.workers = workers;
    tu_env_init_cfg(e, &cfg);
}

static inline void *tu_runner_main(void *arg) {
    tu_env *e = arg;
    e->run_rc = tr_runtime_run(e->rt);
    return NULL;
}

/* Runs tr_runtime_run on a helper thread. */
static inline void tu_env_start(tu_env *e) {
    assert_false(e->runner_started);
    assert_int_equal(pthread_create(&e->runner, NULL, tu_runner_main, e), 0);
    e->runner_started = true;
}

/* Waits (bounded) for tr_runtime_run to return by itself (quiescence);
 * asserts it did and returned 0. */
static inline void tu_env_expect_run_returns(tu_env *e, int64_t timeout_ms) {
    if (tu_env_join(e, timeout_ms) != 0)
        fail_msg("tr_runtime_run did not return within %lld ms",
                 (long long)timeout_ms);
    TU_ASSERT_OK(e->run_rc);
}

/* Ends a test: stop, bounded join (run must return 0), destroy the inbox
 * and the runtime. */
static inline void tu_env_finish(tu_env *e) {
    TU_ASSERT_OK(tr_runtime_stop(e->rt));
    if (e->runner_started) {
        if (tu_env_join(e, TU_JOIN_MS) != 0)
            fail_msg("tr_runtime_run did not return within %d ms after "
                     "tr_runtime_stop",
                     TU_JOIN_MS);
        TU_ASSERT_OK(e->run_rc);
    }
    tr_inbox_destroy(&e->inbox);
    assert_null(e->inbox);
    tr_runtime_destroy(&e->rt);
    assert_null(e->rt);
}

/* ---- inbox helpers (main thread) */

/* The next message within timeout_ms, or the test fails. Caller owns it. */
static inline tr_msg *tu_recv(tu_env *e, int64_t timeout_ms) {
    tr_msg *m = NULL;
    int rc = tr_inbox_recv(e->inbox, timeout_ms, &m);
    if (rc != 0)
        fail_msg("tr_inbox_recv: expected a message within %lld ms, got %d "
                 "(%s)",
                 (long long)timeout_ms, rc, tu_err_text(rc));
    assert_non_null(m);
    return m;
}

/* The next message must be a U64 with this tag; returns its value. */
static inline uint64_t tu_recv_u64(tu_env *e, uint32_t tag,
                                   int64_t timeout_ms) {
    tr_msg *m = tu_recv(e, timeout_ms);
    uint32_t got = tr_msg_tag(m);
    tr_payload_kind kind = tr_msg_kind(m);
    uint64_t v = tr_msg_u64(m);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    if (got != tag)
        fail_msg("inbox: expected tag 0x%" PRIx32 ", got tag 0x%" PRIx32
                 " (value %" PRIu64 ")",
                 tag, got, v);
    if (kind != TR_PAYLOAD_U64)
        fail_msg("inbox: tag 0x%" PRIx32 ": expected a U64 payload, got kind "
                 "%d",
                 tag, (int)kind);
    return v;
}

/* Nothing may arrive at the inbox for `ms` milliseconds. */
static inline void tu_expect_silence(tu_env *e, int64_t ms) {
    tr_msg *m = NULL;
    int rc = tr_inbox_recv(e->inbox, ms, &m);
    if (rc == 0)
        fail_msg("inbox: expected no message for %lld ms, got tag 0x%" PRIx32
                 " value %" PRIu64,
                 (long long)ms, tr_msg_tag(m), tr_msg_u64(m));
    TU_ASSERT_RC(rc, TR_ETIMEDOUT);
}

/* ---- actors every test needs */

/* An actor that ignores every message: keeps tr_runtime_run from returning
 * at quiescence while a test works through the inbox, timers or offload. */
static inline int tu_keeper_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)ctx;
    (void)state;
    (void)msg;
    return 0;
}

static inline tr_ref tu_spawn_keeper(tu_env *e) {
    static const tr_behavior keeper = {
        .name = "keeper",
        .handle = tu_keeper_handle,
    };
    tr_ref ref = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &keeper, NULL, 0, &ref));
    assert_false(tr_ref_is_none(ref));
    return ref;
}

/* Reports from a handler to an inbox; a failed report is counted (the main
 * thread then times out waiting, and can print the count). */
static _Atomic unsigned long tu_report_failures;

static inline void tu_report(tr_ctx *ctx, tr_ref to, uint32_t tag,
                             uint64_t value) {
    if (tr_send_u64(ctx, to, tag, value) != 0)
        atomic_fetch_add_explicit(&tu_report_failures, 1, memory_order_relaxed);
}

static inline unsigned long tu_report_failures_get(void) {
    return atomic_load_explicit(&tu_report_failures, memory_order_relaxed);
}

static inline tr_runtime_stats tu_stats(const tu_env *e) {
    tr_runtime_stats s;
    memset(&s, 0, sizeof s);
    tr_runtime_get_stats(e->rt, &s);
    return s;
}

#endif
