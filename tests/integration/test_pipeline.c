/* The pipeline example as a real child process, its CPU stage in worker
 * processes: a default run (nothing lost, checksum and aggregate exact),
 * a run whose worker processes are killed -9 every 100 ms (requests
 * resent: still nothing lost, retried > 0), a slow sink (backpressure:
 * what is in flight stays bounded whatever the number of items), the
 * all-local mode, and invalid options.
 * Every run is bounded in time; the worker processes the example started
 * are collected while it runs (its children in /proc) and must all be
 * gone once it has exited. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdbool.h>

#include "child.h"

#define PIPELINE TROUPE_EXAMPLES_DIR "/pipeline"
#define MAX_SEEN 256

/* The running example (killed by the teardown if a test fails half-way;
 * its workers then die with it: PR_SET_PDEATHSIG) and every worker
 * process seen under it. */
static child g_child;
static bool g_running;
static pid_t g_seen[MAX_SEEN];
static unsigned g_nseen;

static void start(char *const argv[]) {
    g_nseen = 0;
    child_start(&g_child, argv);
    g_running = true;
}

/* Adds the example's current worker processes to g_seen. */
static void collect_workers(void) {
    child_collect_workers(g_child.pid, g_seen, &g_nseen, MAX_SEEN);
}

/* Reads the example's output and collects its workers until it exits
 * (it is left unreaped, for wait_exit) or ms pass. */
static void watch(int ms) {
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        siginfo_t info = {0};
        if (waitid(P_PID, (id_t)g_child.pid, &info,
                   WEXITED | WNOHANG | WNOWAIT) == 0 &&
            info.si_pid == g_child.pid)
            return;
        collect_workers();
        read_until_lines(&g_child, 1 << 30, 20);
    }
}

/* The exit status, once the example has exited within ms; then every
 * worker process seen must be gone (the example reaps them before it
 * exits; 2 s of slack for a slow machine). */
static int finish(int ms) {
    int code = wait_exit(&g_child, ms);
    g_running = false;
    int64_t end = now_ms() + 2000;
    for (unsigned i = 0; i < g_nseen; i++) {
        while (kill(g_seen[i], 0) == 0 && now_ms() < end)
            usleep(10 * 1000);
        if (kill(g_seen[i], 0) == 0)
            fail_msg("worker process %d outlived the example", (int)g_seen[i]);
    }
    return code;
}

static int kill_leftovers(void **state) {
    (void)state;
    if (g_running) {
        kill(g_child.pid, SIGKILL);
        waitpid(g_child.pid, NULL, 0);
        close(g_child.out);
        g_running = false;
    }
    return 0;
}

static void assert_clean_summary(const char *line, uint64_t items) {
    assert_int_equal(field(line, "produced"), items);
    assert_int_equal(field(line, "consumed"), items);
    assert_int_equal(field(line, "lost"), 0);
    assert_int_equal(field(line, "duplicates"), 0);
    assert_int_equal(field(line, "invalid"), 0);
    assert_int_equal(field(line, "malformed"), 0);
    assert_int_equal(field(line, "checksum_ok"), 1);
    assert_int_equal(field(line, "aggregate_ok"), 1);
    assert_int_equal(field(line, "complete"), 1);
    assert_int_equal(field(line, "interrupted"), 0);
    /* The documented order of the first fields. */
    assert_true(strncmp(line, "produced=", 9) == 0);
    const char *lost = strstr(line, " lost=");
    const char *retried = strstr(line, " retried=");
    assert_non_null(lost);
    assert_non_null(retried);
    assert_true(strstr(line, " consumed=") < lost && lost < retried);
    assert_non_null(strstr(line, " items_per_s="));
}

static void test_worker_processes(void **state) {
    (void)state;
    char *const argv[] = {PIPELINE, "--items", "20000", "--quiet", NULL};
    start(argv);
    read_until_lines(&g_child, 1, 10000);
    assert_non_null(strstr(g_child.buf, "in 2 processes"));
    watch(10000);
    assert_int_equal(finish(20000), 0);
    const char *line = last_line(&g_child);
    assert_clean_summary(line, 20000);
    assert_int_equal(field(line, "retried"), 0);
    assert_int_equal(field(line, "workers_killed"), 0);
    assert_true(g_nseen >= 2); /* the pool's two processes */
}

static void test_kill9_workers_lose_nothing(void **state) {
    (void)state;
    /* About 2 s at the release build's rate (longer under sanitizers;
     * under TSan a worker process takes long enough to start that kills
     * every 100 ms would stop the pool restarting it). */
#ifdef CHILD_TSAN
    const uint64_t items = 30000;
    char *const argv[] = {PIPELINE, "--items", "30000", "--kill-worker-every",
                          "400",    "--quiet", NULL};
#else
    const uint64_t items = 500000;
    char *const argv[] = {PIPELINE, "--items", "500000", "--kill-worker-every",
                          "100",    "--quiet", NULL};
#endif
    start(argv);
    read_until_lines(&g_child, 1, 10000);
    watch(90000);
    assert_int_equal(finish(90000), 0);
    const char *line = last_line(&g_child);
    assert_clean_summary(line, items);
    uint64_t killed = field(line, "workers_killed");
    assert_true(killed > 0);
    assert_true(field(line, "retried") > 0);
    /* Each kill was replaced by a new process (seen as a new child). */
    assert_true(g_nseen > 2);
}

/* The sink is ~20x slower than the rest: the stages before it are muted,
 * so what is in flight does not grow with the number of items. */
static uint64_t slow_run(const char *items, uint64_t n) {
#ifdef CHILD_TSAN
    char slow[] = "400"; /* the rest is slower too */
#else
    char slow[] = "40";
#endif
    char *const argv[] = {PIPELINE,      "--items", (char *)items,
                          "--slow-sink", slow,      "--quiet",
                          NULL};
    start(argv);
    read_until_lines(&g_child, 1, 10000);
    assert_non_null(strstr(g_child.buf, "slow sink"));
    watch(60000);
    assert_int_equal(finish(60000), 0);
    const char *line = last_line(&g_child);
    assert_clean_summary(line, n);
    assert_true(field(line, "sink_full") > 0); /* the sink's limit held */
    assert_true(field(line, "peak_rss_kib") > 0);
    return field(line, "inflight_peak");
}

static void test_slow_sink_stays_bounded(void **state) {
    (void)state;
#ifdef CHILD_TSAN
    uint64_t small = slow_run("2000", 2000);
    uint64_t large = slow_run("8000", 8000);
#else
    uint64_t small = slow_run("10000", 10000);
    uint64_t large = slow_run("40000", 40000);
#endif
    /* Bounded by the windows and mailbox limits (4 routees x 1024 in the
     * worker processes, what the link holds back, 1024 queued at the
     * sink), not by the item count: 4x the items, not 4x in flight. */
    assert_true(small <= 12000);
    assert_true(large <= 12000);
}

static void test_local_mode(void **state) {
    (void)state;
    char *const argv[] = {PIPELINE,  "--items", "20000",
                          "--local", "--quiet", NULL};
    start(argv);
    read_until_lines(&g_child, 1, 10000);
    assert_non_null(strstr(g_child.buf, "local workers"));
    watch(10000);
    assert_int_equal(finish(20000), 0);
    const char *line = last_line(&g_child);
    assert_clean_summary(line, 20000);
    assert_int_equal(field(line, "retried"), 0);
    /* Routees, router, parse and sink bounded: a few limits' worth. */
    assert_true(field(line, "inflight_peak") <= 12000);
    assert_int_equal(g_nseen, 0); /* no worker process at all */
}

static void test_invalid_options(void **state) {
    (void)state;
    char *const both[] = {PIPELINE, "--local", "--kill-worker-every", "100",
                          NULL};
    start(both);
    assert_int_equal(finish(10000), 2);
    char *const zero[] = {PIPELINE, "--processes", "0", NULL};
    start(zero);
    assert_int_equal(finish(10000), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_worker_processes, kill_leftovers),
        cmocka_unit_test_teardown(test_kill9_workers_lose_nothing,
                                  kill_leftovers),
        cmocka_unit_test_teardown(test_slow_sink_stays_bounded,
                                  kill_leftovers),
        cmocka_unit_test_teardown(test_local_mode, kill_leftovers),
        cmocka_unit_test_teardown(test_invalid_options, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
