/* The service example (examples/service.c) as a real multi-process
 * service: the service is a child process bound to a unique abstract ipc
 * endpoint (this test's pid in the name), its workers are its worker
 * processes, and the clients (examples/service_client.c) are child
 * processes too; the malformed-frame test speaks ZeroMQ itself. Each test
 * ends the service (SIGTERM; in one test it stops by itself when its
 * worker pool gives up) and checks its summary line against the clients'
 * counts exactly, its exit status, and that every worker process it had
 * is gone. Every wait is bounded; the teardown kills and reaps whatever a
 * failed test left running. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdbool.h>

#include <zmq.h>

#include "child.h"
#include "examples/service_wire.h"

#define SERVICE TROUPE_EXAMPLES_DIR "/service"
#define CLIENT TROUPE_EXAMPLES_DIR "/service_client"
#define MAX_CLIENTS 3
#define MAX_SEEN 64
#define MAX_ARGS 32

/* ---- child processes ---- */

static child g_server;
static bool g_server_running;
static child g_clients[MAX_CLIENTS];
static bool g_client_running[MAX_CLIENTS];
static char g_endpoint[96];
static unsigned g_run;
static pid_t g_seen[MAX_SEEN]; /* the service's worker processes */
static unsigned g_nseen;

/* child_start, with the child's stderr on the same pipe when asked (the
 * service's log lines are checked too). */
static void spawn(child *c, char *const argv[], bool with_stderr) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    c->len = 0;
    c->buf[0] = 0;
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        if (with_stderr)
            dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    c->out = fds[0];
}

/* Builds an argv: path, "--endpoint", the endpoint, then the NULL-ended
 * extra arguments. */
static void make_argv(char *argv[MAX_ARGS], const char *path, va_list ap) {
    int n = 0;
    argv[n++] = (char *)path;
    argv[n++] = "--endpoint";
    argv[n++] = g_endpoint;
    for (char *a; (a = va_arg(ap, char *)) != NULL && n < MAX_ARGS - 1;)
        argv[n++] = a;
    argv[n] = NULL;
}

/* Adds the example's current worker processes to g_seen. */
static void collect_workers(void) {
    child_collect_workers(g_server.pid, g_seen, &g_nseen, MAX_SEEN);
}

/* Reads the service's output until it holds `text` or ms pass. */
static bool server_wait_for(const char *text, int ms) {
    int64_t end = now_ms() + ms;
    while (strstr(g_server.buf, text) == NULL && now_ms() < end)
        read_until_lines(&g_server, 1 << 30, 20);
    return strstr(g_server.buf, text) != NULL;
}

/* Starts the service (NULL-ended extra arguments) on a fresh endpoint
 * and waits until it listens and a worker process of it is seen. */
static void server_start(const char *first, ...) {
    snprintf(g_endpoint, sizeof g_endpoint, "ipc://@troupe-test-service-%d-%u",
             (int)getpid(), ++g_run);
    char *argv[MAX_ARGS];
    va_list ap;
    va_start(ap, first);
    int n = 0;
    argv[n++] = SERVICE;
    argv[n++] = "--endpoint";
    argv[n++] = g_endpoint;
    for (const char *a = first; a != NULL && n < MAX_ARGS - 1;
         a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    argv[n] = NULL;
    va_end(ap);
    g_nseen = 0;
    spawn(&g_server, argv, true);
    g_server_running = true;
    if (!server_wait_for("service: listening on", 20000))
        fail_msg("the service did not listen within 20 s: %s", g_server.buf);
    /* Its worker processes were forked before it listened; each shows as
     * a worker once it has exec'd. */
    int64_t end = now_ms() + 10000;
    for (collect_workers(); g_nseen == 0 && now_ms() < end; collect_workers())
        usleep(10 * 1000);
    assert_true(g_nseen >= 1);
}

/* Waits (20 s at most) for the service to exit with `expect`; every
 * worker process seen must be gone then (2 s of slack for a slow
 * machine), and every request it received must have had exactly one
 * answer. Returns the summary line. */
static const char *server_finish(int expect) {
    int code = wait_exit(&g_server, 20000);
    g_server_running = false;
    const char *line = last_line(&g_server);
    print_message("[ service  ] %s\n", line);
    if (code != expect)
        fail_msg("service exited %d, not %d; output:\n%s", code, expect,
                 g_server.buf);
    int64_t end = now_ms() + 2000;
    for (unsigned i = 0; i < g_nseen; i++) {
        while (kill(g_seen[i], 0) == 0 && now_ms() < end)
            usleep(10 * 1000);
        if (kill(g_seen[i], 0) == 0)
            fail_msg("worker process %d outlived the service", (int)g_seen[i]);
    }
    assert_true(strncmp(line, "accepted=", 9) == 0);
    assert_int_equal(field(line, "lost"), 0);
    assert_int_equal(field(line, "undeliverable"), 0);
    assert_int_equal(field(line, "received"),
                     field(line, "accepted") + field(line, "busy") +
                         field(line, "bad") + field(line, "shutdown_rejected"));
    assert_int_equal(field(line, "accepted"), field(line, "ok") +
                                                  field(line, "deadline") +
                                                  field(line, "failed"));
    return line;
}

/* SIGTERM: the service must stop cleanly and exit 0. */
static const char *server_stop(void) {
    collect_workers();
    assert_int_equal(kill(g_server.pid, SIGTERM), 0);
    const char *line = server_finish(0);
    assert_int_equal(field(line, "clean"), 1);
    return line;
}

static bool server_exited(void) {
    siginfo_t info = {0};
    return waitid(P_PID, (id_t)g_server.pid, &info,
                  WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid == g_server.pid;
}

static void client_start(unsigned i, ...) {
    char *argv[MAX_ARGS];
    va_list ap;
    va_start(ap, i);
    make_argv(argv, CLIENT, ap);
    va_end(ap);
    spawn(&g_clients[i], argv, false);
    g_client_running[i] = true;
}

/* What a client counted (its last line). */
struct counts {
    uint64_t sent, ok, deadline, failed, busy, bad, shutdown, unanswered;
};

/* Waits for client i (bounded), which must exit 0: every request it sent
 * got exactly one reply, every OK result was right. */
static struct counts client_finish(unsigned i, int ms) {
    int code = wait_exit(&g_clients[i], ms);
    g_client_running[i] = false;
    const char *line = last_line(&g_clients[i]);
    print_message("[ client %u ] %s\n", i, line);
    if (code != 0)
        fail_msg("client %u exited %d: %s", i, code, line);
    assert_int_equal(field(line, "wrong"), 0);
    assert_int_equal(field(line, "duplicate"), 0);
    assert_int_equal(field(line, "invalid"), 0);
    struct counts c = {field(line, "sent"),     field(line, "ok"),
                       field(line, "deadline"), field(line, "failed"),
                       field(line, "busy"),     field(line, "bad"),
                       field(line, "shutdown"), field(line, "unanswered")};
    assert_int_equal(c.unanswered, 0);
    assert_int_equal(c.sent, c.ok + c.deadline + c.failed + c.busy + c.bad +
                                 c.shutdown);
    return c;
}

static void counts_add(struct counts *sum, const struct counts *c) {
    sum->sent += c->sent;
    sum->ok += c->ok;
    sum->deadline += c->deadline;
    sum->failed += c->failed;
    sum->busy += c->busy;
    sum->bad += c->bad;
    sum->shutdown += c->shutdown;
}

/* The service's summary must be exactly the clients' counts summed (plus
 * `extra_ok` / `extra_bad` answered to this test's own socket). */
static void assert_summary(const char *line, const struct counts *sum,
                           uint64_t extra_ok, uint64_t extra_bad) {
    assert_int_equal(field(line, "received"), sum->sent + extra_ok + extra_bad);
    assert_int_equal(field(line, "ok"), sum->ok + extra_ok);
    assert_int_equal(field(line, "deadline"), sum->deadline);
    assert_int_equal(field(line, "failed"), sum->failed);
    assert_int_equal(field(line, "busy"), sum->busy);
    assert_int_equal(field(line, "bad"), sum->bad + extra_bad);
    assert_int_equal(field(line, "shutdown_rejected"), sum->shutdown);
}

static int kill_leftovers(void **state) {
    (void)state;
    for (unsigned i = 0; i < MAX_CLIENTS; i++) {
        if (g_client_running[i]) {
            kill(g_clients[i].pid, SIGKILL);
            waitpid(g_clients[i].pid, NULL, 0);
            close(g_clients[i].out);
            g_client_running[i] = false;
        }
    }
    if (g_server_running) { /* its workers die with it (they watch it) */
        kill(g_server.pid, SIGKILL);
        waitpid(g_server.pid, NULL, 0);
        close(g_server.out);
        g_server_running = false;
    }
    return 0;
}

/* ---- (a) a normal run ---- */

static void test_normal_run_counts_exact(void **state) {
    (void)state;
    server_start(NULL);
    for (unsigned i = 0; i < 3; i++)
        client_start(i, "--requests", "300", "--concurrency", "8", "--work",
                     "20000", "--deadline-ms", "20000", NULL);
    struct counts sum = {0};
    for (unsigned i = 0; i < 3; i++) {
        struct counts c = client_finish(i, 25000);
        assert_int_equal(c.sent, 300);
        assert_int_equal(c.ok, 300);
        counts_add(&sum, &c);
    }
    const char *line = server_stop();
    assert_summary(line, &sum, 0, 0);
    assert_int_equal(field(line, "accepted"), 900);
    assert_int_equal(field(line, "ok"), 900);
}

/* ---- (b) deadlines ---- */

static void test_deadlines_exact_and_service_survives(void **state) {
    (void)state;
    server_start(NULL);
    /* 5 * 10^9 rounds take seconds; the deadline is 50 ms: every one is
     * answered DEADLINE, promptly, and the workers drop the jobs (they
     * see the deadline too), so nothing late comes back. */
    client_start(0, "--requests", "12", "--concurrency", "12", "--work",
                 "5000000000", "--deadline-ms", "50", "--wait-ms", "10000",
                 NULL);
    struct counts a = client_finish(0, 20000);
    assert_int_equal(a.sent, 12);
    assert_int_equal(a.deadline, 12);
    assert_int_equal(a.ok, 0);
    /* The service still serves, with workers free again. */
    client_start(1, "--requests", "200", "--work", "10000", "--deadline-ms",
                 "20000", NULL);
    struct counts b = client_finish(1, 25000);
    assert_int_equal(b.ok, 200);
    struct counts sum = {0};
    counts_add(&sum, &a);
    counts_add(&sum, &b);
    const char *line = server_stop();
    assert_summary(line, &sum, 0, 0);
    assert_int_equal(field(line, "deadline"), 12);
    assert_int_equal(field(line, "late_replies"), 0);
}

/* ---- (c) the rate limit ---- */

static void test_rate_limit_busy_at_once(void **state) {
    (void)state;
    /* 20 per second, 5 at once, 5 waiting at most. */
    server_start("--rate", "20", "--burst", "5", "--queue", "5", NULL);
    /* A burst of 100 at once: the first 5 run at once (the bucket is
     * full), 5 more wait for tokens, the rest are BUSY at once. */
    client_start(0, "--requests", "100", "--concurrency", "100", "--work",
                 "1000", "--deadline-ms", "20000", NULL);
    struct counts a = client_finish(0, 25000);
    assert_int_equal(a.sent, 100);
    assert_int_equal(a.ok + a.busy, 100);
    assert_true(a.ok >= 5);
    assert_true(a.busy >= 50);
    assert_int_equal(a.deadline, 0);
    /* Within the rate (10/s against 20/s) nothing is rejected. A job
     * takes about as long as the 100 ms between two sends, so the client
     * paces with requests open. */
    client_start(1, "--requests", "10", "--rate", "10", "--concurrency", "4",
                 "--work", "40000000", "--deadline-ms", "20000", NULL);
    struct counts b = client_finish(1, 25000);
    assert_int_equal(b.ok, 10);
    assert_int_equal(b.busy, 0);
    struct counts sum = {0};
    counts_add(&sum, &a);
    counts_add(&sum, &b);
    const char *line = server_stop();
    assert_summary(line, &sum, 0, 0);
    assert_int_equal(field(line, "busy"), a.busy);
}

/* ---- (d) malformed frames ---- */

static void raw_send(void *sock, const void *data, size_t len, int flags) {
    assert_int_equal(zmq_send(sock, data, len, flags), (int)len);
}

static void test_malformed_frames_bad_and_service_serves(void **state) {
    (void)state;
    server_start(NULL);
    void *zctx = zmq_ctx_new();
    assert_non_null(zctx);
    void *sock = zmq_socket(zctx, ZMQ_DEALER);
    assert_non_null(sock);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(sock, g_endpoint), 0);

    unsigned char f[SVC_REQ_SIZE + 1];
    svc_request rq = {77, 1000, 1000};
    /* Each bad one: its id (0 when the frame is too short to hold one). */
    const uint64_t bad_ids[] = {0, 77, 78, 79, 80, 81, 82, 0};
    raw_send(sock, "abc", 3, 0); /* too short */
    svc_request_encode(&rq, f);
    svc_put32(f, 0xdeadbeef); /* wrong magic */
    raw_send(sock, f, SVC_REQ_SIZE, 0);
    rq = (svc_request){78, 0, 1000}; /* no work */
    svc_request_encode(&rq, f);
    raw_send(sock, f, SVC_REQ_SIZE, 0);
    rq = (svc_request){79, 1000, 0}; /* no deadline */
    svc_request_encode(&rq, f);
    raw_send(sock, f, SVC_REQ_SIZE, 0);
    rq = (svc_request){80, 1000, SVC_MAX_DEADLINE_MS + 1};
    svc_request_encode(&rq, f);
    raw_send(sock, f, SVC_REQ_SIZE, 0);
    rq = (svc_request){81, 1000, 1000}; /* two frames */
    svc_request_encode(&rq, f);
    raw_send(sock, f, SVC_REQ_SIZE, ZMQ_SNDMORE);
    raw_send(sock, "x", 1, 0);
    rq = (svc_request){82, 1000, 1000}; /* one byte too many */
    svc_request_encode(&rq, f);
    f[SVC_REQ_SIZE] = 0;
    raw_send(sock, f, SVC_REQ_SIZE + 1, 0);
    raw_send(sock, "", 0, 0);             /* empty */
    rq = (svc_request){100, 1000, 10000}; /* and a good one */
    svc_request_encode(&rq, f);
    raw_send(sock, f, SVC_REQ_SIZE, 0);

    const size_t nbad = sizeof bad_ids / sizeof bad_ids[0];
    unsigned bad_seen[sizeof bad_ids / sizeof bad_ids[0]] = {0};
    unsigned ok_seen = 0;
    int64_t end = now_ms() + 10000;
    for (size_t got = 0; got < nbad + 1;) {
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        long left = (long)(end - now_ms());
        if (left <= 0)
            fail_msg("only %zu of %zu replies within 10 s", got, nbad + 1);
        if (zmq_poll(&item, 1, left) <= 0)
            continue;
        unsigned char buf[64];
        int n = zmq_recv(sock, buf, sizeof buf, 0);
        svc_reply rep;
        assert_int_equal(svc_reply_decode(buf, n > 0 ? (size_t)n : 0, &rep), 0);
        got++;
        if (rep.status == SVC_OK) {
            assert_int_equal(rep.id, 100);
            assert_int_equal(rep.result, svc_job_rounds(100, 0, 1000));
            ok_seen++;
            continue;
        }
        assert_int_equal(rep.status, SVC_BAD);
        size_t k = 0; /* the first bad id not yet matched */
        while (k < nbad && (bad_ids[k] != rep.id || bad_seen[k] > 0))
            k++;
        if (k == nbad)
            fail_msg("unexpected BAD reply for id %llu",
                     (unsigned long long)rep.id);
        bad_seen[k]++;
    }
    assert_int_equal(ok_seen, 1);
    zmq_close(sock);
    zmq_ctx_term(zctx);

    /* The service goes on serving. */
    client_start(0, "--requests", "100", "--work", "10000", "--deadline-ms",
                 "20000", NULL);
    struct counts c = client_finish(0, 25000);
    assert_int_equal(c.ok, 100);
    const char *line = server_stop();
    assert_summary(line, &c, 1, nbad);
    /* One log line per bad request. */
    unsigned logged = 0;
    for (const char *p = g_server.buf; (p = strstr(p, "bad request")) != NULL;
         p++)
        logged++;
    assert_int_equal(logged, nbad);
}

/* ---- (e) SIGTERM while clients are sending ---- */

static void test_sigterm_under_load_answers_everything(void **state) {
    (void)state;
    /* The linger (no request for 1 s before the socket closes) is the
     * margin for a client that was slow to send its last request. */
    server_start("--drain-ms", "5000", "--linger-ms", "1000", NULL);
    for (unsigned i = 0; i < 2; i++)
        client_start(i, "--requests", "10000000", "--concurrency", "16",
                     "--work", "200000", "--deadline-ms", "3000", NULL);
    /* Both clients have started (their first line), then run a while. */
    for (unsigned i = 0; i < 2; i++)
        read_until_lines(&g_clients[i], 1, 10000);
    usleep(700 * 1000);
    const char *line = server_stop(); /* exit 0, lost=0, no workers left */
    struct counts sum = {0};
    for (unsigned i = 0; i < 2; i++) {
        struct counts c = client_finish(i, 20000);
        assert_true(c.ok > 0);
        assert_true(c.shutdown > 0); /* it was still sending: told to stop */
        assert_true(c.sent < 10000000);
        counts_add(&sum, &c);
    }
    assert_summary(line, &sum, 0, 0);
    assert_true(field(line, "accepted") > 0);
}

/* ---- worker process killed: the supervisor restarts it ---- */

static void test_worker_killed_supervisor_restarts(void **state) {
    (void)state;
    /* One worker: while it is away, nothing else can serve. */
    server_start("--workers", "1", "--processes", "1", NULL);
    unsigned before = g_nseen;
    client_start(0, "--requests", "3000", "--concurrency", "8", "--work",
                 "100000", "--deadline-ms", "5000", NULL);
    read_until_lines(&g_clients[0], 1, 10000);
    usleep(300 * 1000);
    assert_int_equal(kill(g_seen[0], SIGKILL), 0);
    /* Its requests in flight fail (or time out); none is unanswered. */
    struct counts a = client_finish(0, 25000);
    assert_int_equal(a.busy, 0);
    assert_true(a.ok > 0);
    /* The pool starts a new process... */
    int64_t end = now_ms() + 10000;
    while (g_nseen == before && now_ms() < end) {
        collect_workers();
        usleep(20 * 1000);
    }
    assert_true(g_nseen > before);
    /* ...and the supervisor a new worker in it, which the router serves
     * (until then it holds the jobs): all OK. */
    client_start(1, "--requests", "200", "--work", "10000", "--deadline-ms",
                 "20000", NULL);
    struct counts b = client_finish(1, 25000);
    assert_int_equal(b.ok, 200);
    struct counts sum = {0};
    counts_add(&sum, &a);
    counts_add(&sum, &b);
    const char *line = server_stop();
    assert_summary(line, &sum, 0, 0);
}

/* ---- the pool gives up: the service stops by itself ---- */

static void test_pool_gives_up_service_stops_answering_all(void **state) {
    (void)state;
    /* One worker, so at most 4 restarts in 10 s (the service's pool
     * intensity is 4 per worker): the 5th loss makes the supervisor, and
     * with it the router, fail. The front then stops as on a signal. */
    server_start("--workers", "1", "--processes", "1", NULL);
    client_start(0, "--requests", "10000000", "--concurrency", "8", "--work",
                 "100000", "--deadline-ms", "3000", NULL);
    read_until_lines(&g_clients[0], 1, 10000);
    bool killed[MAX_SEEN] = {false};
    int64_t end = now_ms() + 20000;
    while (!server_exited() && now_ms() < end) {
        usleep(150 * 1000);
        collect_workers();
        for (unsigned i = 0; i < g_nseen; i++)
            if (!killed[i] && kill(g_seen[i], SIGKILL) == 0)
                killed[i] = true;
        read_until_lines(&g_server, 1 << 30, 1);
    }
    const char *line = server_finish(1); /* not a clean stop */
    assert_int_equal(field(line, "clean"), 0);
    assert_non_null(strstr(g_server.buf, "a part of the service ended"));
    /* Told SHUTTING_DOWN (or answered) like on a signal: nothing left
     * unanswered, and the counts agree. */
    struct counts c = client_finish(0, 20000);
    assert_summary(line, &c, 0, 0);
    assert_true(c.sent < 10000000);
}

/* ---- arguments ---- */

static void test_invalid_arguments(void **state) {
    (void)state;
    char *const zero[] = {SERVICE, "--workers", "0", NULL};
    child c;
    spawn(&c, zero, false);
    assert_int_equal(wait_exit(&c, 10000), 2);
    char *const bad[] = {CLIENT, "--deadline-ms", "x", NULL};
    spawn(&c, bad, false);
    assert_int_equal(wait_exit(&c, 10000), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_normal_run_counts_exact, kill_leftovers),
        cmocka_unit_test_teardown(test_deadlines_exact_and_service_survives,
                                  kill_leftovers),
        cmocka_unit_test_teardown(test_rate_limit_busy_at_once, kill_leftovers),
        cmocka_unit_test_teardown(test_malformed_frames_bad_and_service_serves,
                                  kill_leftovers),
        cmocka_unit_test_teardown(test_sigterm_under_load_answers_everything,
                                  kill_leftovers),
        cmocka_unit_test_teardown(test_worker_killed_supervisor_restarts,
                                  kill_leftovers),
        cmocka_unit_test_teardown(
            test_pool_gives_up_service_stops_answering_all, kill_leftovers),
        cmocka_unit_test_teardown(test_invalid_arguments, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
