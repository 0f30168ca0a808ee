/* The prodcons example as a real child process, with small sizes: local
 * consumers with several shapes (many producers and a channel of 1, one
 * producer and many consumers, a limit of 1), consumers in worker
 * processes, --help, and invalid options. Each run's summary line is
 * checked exactly: produced == consumed == P x N, no duplicate, nothing
 * missing or unknown, every consumer saw the end of the stream, the
 * service never had more than L calls at once (and more than one when
 * L > 1), and the channel stayed within its bound. Every run is bounded
 * in time; the worker processes of the remote run are collected while it
 * runs and must be gone once it has exited. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdbool.h>

#include "child.h"

#define PRODCONS TROUPE_EXAMPLES_DIR "/prodcons"
#define MAX_SEEN 64
#define RUN_MS 20000

static child g_child;
static bool g_running;
static pid_t g_seen[MAX_SEEN];
static unsigned g_nseen;

/* Starts the example with its stdout (and, with both, its stderr too) on
 * the pipe child.h reads. */
static void start(char *const argv[], bool both) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    g_nseen = 0;
    g_child.len = 0;
    g_child.buf[0] = 0;
    g_child.pid = fork();
    assert_true(g_child.pid >= 0);
    if (g_child.pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        if (both)
            dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    g_child.out = fds[0];
    g_running = true;
}

/* Adds the example's current worker processes to g_seen. */
static void collect_workers(void) {
    child_collect_workers(g_child.pid, g_seen, &g_nseen, MAX_SEEN);
}

/* Reads the output and collects worker processes until the example has
 * exited (left unreaped) or ms pass; then its exit status, once every
 * worker process seen is gone too (2 s of slack). */
static int finish(int ms) {
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        siginfo_t info = {0};
        if (waitid(P_PID, (id_t)g_child.pid, &info,
                   WEXITED | WNOHANG | WNOWAIT) == 0 &&
            info.si_pid == g_child.pid)
            break;
        collect_workers();
        read_until_lines(&g_child, 1 << 30, 20);
    }
    int code = wait_exit(&g_child, 1000);
    g_running = false;
    int64_t gone = now_ms() + 2000;
    for (unsigned i = 0; i < g_nseen; i++) {
        while (kill(g_seen[i], 0) == 0 && now_ms() < gone)
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

typedef struct params {
    unsigned producers, consumers, items, capacity, limit, service_ms;
    bool remote;
} params;

/* Runs the example with p, checks its exit status and summary line. */
static void run_and_check(const params *p) {
    char a[6][16];
    snprintf(a[0], sizeof a[0], "%u", p->producers);
    snprintf(a[1], sizeof a[1], "%u", p->consumers);
    snprintf(a[2], sizeof a[2], "%u", p->items);
    snprintf(a[3], sizeof a[3], "%u", p->capacity);
    snprintf(a[4], sizeof a[4], "%u", p->limit);
    snprintf(a[5], sizeof a[5], "%u", p->service_ms);
    char *argv[] = {
        PRODCONS,      "--producers", a[0],
        "--consumers", a[1],          "--items",
        a[2],          "--capacity",  a[3],
        "--limit",     a[4],          "--service-ms",
        a[5],          "--quiet",     p->remote ? "--remote-consumers" : NULL,
        NULL};
    start(argv, false);
    int code = finish(RUN_MS);
    const char *line = last_line(&g_child);
    if (code != 0)
        fail_msg("exit status %d; output:\n%s", code, g_child.buf);
    uint64_t total = (uint64_t)p->producers * p->items;
    assert_true(strncmp(line, "produced=", 9) == 0);
    assert_int_equal(field(line, "produced"), total);
    assert_int_equal(field(line, "consumed"), total);
    assert_int_equal(field(line, "duplicates"), 0);
    assert_int_equal(field(line, "missing"), 0);
    assert_int_equal(field(line, "invalid"), 0);
    char want[64];
    snprintf(want, sizeof want, "closed_seen=%u/%u ", p->consumers,
             p->consumers);
    if (strstr(line, want) == NULL)
        fail_msg("no '%s' in: %s", want, line);
    uint64_t conc = field(line, "max_concurrent");
    assert_true(conc <= p->limit);
    /* Consumers outnumber the permits, and calls take a while: the limit
     * is reached, so the limiter really let several in at once. */
    if (p->limit > 1 && p->consumers >= p->limit && p->service_ms > 0)
        assert_true(conc > 1);
    assert_true(conc >= 1);
    /* The channel filled (items come far faster than the service takes
     * them) and stayed within its bound: a producer is muted after the
     * put that finds the channel full, and puts the channel has not
     * handled yet count against its capacity too, so it holds at most
     * about 2 x capacity; add a few puts per producer at the start (the
     * producers race a channel that has not run yet, and its monitor,
     * a system message, wakes a muted producer for one more turn), and
     * the items on their way to a consumer (one each). Without the
     * channel's backpressure the peak would be about P x N. */
    uint64_t peak = field(line, "channel_peak");
    uint64_t bound =
        2 * (uint64_t)p->capacity + 4 * (uint64_t)p->producers + p->consumers;
    print_message("channel_peak %llu (capacity %u, bound %llu)\n",
                  (unsigned long long)peak, p->capacity,
                  (unsigned long long)bound);
    assert_true(peak >= p->capacity);
    assert_true(peak <= bound);
    assert_non_null(strstr(line, " items_per_s="));
    assert_non_null(strstr(g_child.buf, p->remote
                                            ? "consumers in worker processes"
                                            : "consumers -> limiter"));
    if (p->remote)
        assert_true(g_nseen >= 1); /* the pool's processes, now gone */
    else
        assert_int_equal(g_nseen, 0);
}

static void test_local_defaults_small(void **state) {
    (void)state;
    run_and_check(&(params){4, 6, 300, 16, 3, 1, false});
}

static void test_local_channel_of_one(void **state) {
    (void)state;
    /* Many producers, one slot, a limit of 1: one call at a time. */
    run_and_check(&(params){6, 2, 200, 1, 1, 0, false});
}

static void test_local_one_producer_many_consumers(void **state) {
    (void)state;
    run_and_check(&(params){1, 8, 1500, 4, 4, 1, false});
}

static void test_remote_consumers(void **state) {
    (void)state;
    run_and_check(&(params){3, 4, 200, 8, 2, 1, true});
}

static void test_help(void **state) {
    (void)state;
    char *const argv[] = {PRODCONS, "--help", NULL};
    start(argv, false);
    assert_int_equal(finish(RUN_MS), 0);
    assert_non_null(strstr(g_child.buf, "usage: prodcons"));
    assert_non_null(strstr(g_child.buf, "--remote-consumers"));
}

/* Exit status 2 and a message that names the problem; nothing runs. */
static void expect_invalid(char *const argv[], const char *message) {
    start(argv, true);
    assert_int_equal(finish(RUN_MS), 2);
    if (strstr(g_child.buf, message) == NULL)
        fail_msg("no '%s' in: %s", message, g_child.buf);
    assert_null(strstr(g_child.buf, "produced="));
    assert_int_equal(g_nseen, 0);
}

static void test_invalid_options(void **state) {
    (void)state;
    expect_invalid((char *const[]){PRODCONS, "--items", "0", NULL},
                   "--items needs a number in 1..");
    expect_invalid((char *const[]){PRODCONS, "--limit", NULL},
                   "--limit needs a number");
    expect_invalid((char *const[]){PRODCONS, "--capacity", "-3", NULL},
                   "--capacity needs a number");
    expect_invalid((char *const[]){PRODCONS, "--consumers", "12x", NULL},
                   "--consumers needs a number");
    expect_invalid((char *const[]){PRODCONS, "--bogus", NULL},
                   "unknown argument '--bogus'");
    expect_invalid((char *const[]){PRODCONS, "--processes", "3", NULL},
                   "--processes needs --remote-consumers");
    expect_invalid((char *const[]){PRODCONS, "--producers", "1024", "--items",
                                   "100000000", NULL},
                   "at most");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_local_defaults_small, kill_leftovers),
        cmocka_unit_test_teardown(test_local_channel_of_one, kill_leftovers),
        cmocka_unit_test_teardown(test_local_one_producer_many_consumers,
                                  kill_leftovers),
        cmocka_unit_test_teardown(test_remote_consumers, kill_leftovers),
        cmocka_unit_test_teardown(test_help, kill_leftovers),
        cmocka_unit_test_teardown(test_invalid_options, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
