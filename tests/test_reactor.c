/* test_reactor — fd readiness through tr_watch (edge-triggered), and a
 * ZeroMQ socket driven by its ZMQ_FD with the ZMQ_EVENTS drain loop.
 *
 * Every fd, socket, context and ipc path the tests make is recorded in a
 * fixture and released by the teardown, also when a test fails. */
#include "testutil.h"

#include <fcntl.h>
#include <sys/socket.h>

#if defined(__has_include)
#if __has_include(<zmq.h>)
#include <zmq.h>
#define HAVE_ZMQ 1
#endif
#endif

enum {
    T_READY = 1,
    T_KICK,
    R_EVENTS = 100,
    R_BYTES,
    R_EAGAIN,
    R_WRITTEN,
    R_ZMQ_TOTAL,
    R_ZMQ_ERR,
};

/* ---- fixture: resources to release even on failure */

#define MAX_FDS 8

typedef struct reactor_fixture {
    int fds[MAX_FDS];
    int nfds;
    void *zctx;
    void *zsock[2];
    char ipc_path[128];
} reactor_fixture;

static reactor_fixture g_fx;

static int fx_setup(void **state) {
    memset(&g_fx, 0, sizeof g_fx);
    for (int i = 0; i < MAX_FDS; i++)
        g_fx.fds[i] = -1;
    return tu_setup(state);
}

static int fx_teardown(void **state) {
    /* Stop the runtime first: no handler touches an fd or socket after. */
    int rc = tu_teardown(state);
#ifdef HAVE_ZMQ
    for (int i = 0; i < 2; i++) {
        if (g_fx.zsock[i] != NULL)
            zmq_close(g_fx.zsock[i]);
        g_fx.zsock[i] = NULL;
    }
    if (g_fx.zctx != NULL)
        zmq_ctx_term(g_fx.zctx);
    g_fx.zctx = NULL;
#endif
    if (g_fx.ipc_path[0] != '\0')
        unlink(g_fx.ipc_path);
    for (int i = 0; i < MAX_FDS; i++) {
        if (g_fx.fds[i] >= 0)
            close(g_fx.fds[i]);
        g_fx.fds[i] = -1;
    }
    return rc;
}

#define FX_TEST(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)

static void fx_track(int fd) {
    assert_true(g_fx.nfds < MAX_FDS);
    g_fx.fds[g_fx.nfds++] = fd;
}

static void make_pipe(int p[2]) {
    assert_int_equal(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    fx_track(p[0]);
    fx_track(p[1]);
}

/* ---- actors */

typedef struct fd_reader {
    tr_ref report_to;
    int fd;
    bool stop_after_event;
} fd_reader;

static int fd_reader_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    fd_reader *st = state;
    if (tr_msg_tag(msg) != T_READY)
        return 0;
    tu_report(ctx, st->report_to, R_EVENTS, tr_msg_u64(msg));
    char buf[4096];
    uint64_t got = 0;
    ssize_t n;
    for (;;) {
        n = read(st->fd, buf, sizeof buf);
        if (n > 0)
            got += (uint64_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else
            break;
    }
    bool eagain = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    tu_report(ctx, st->report_to, R_BYTES, got);
    tu_report(ctx, st->report_to, R_EAGAIN, eagain);
    return st->stop_after_event ? TR_STOP : 0;
}

static const tr_behavior fd_reader_behavior = {
    .name = "fd-reader",
    .handle = fd_reader_handle,
    .state_size = sizeof(fd_reader),
};

typedef struct fd_writer {
    tr_ref report_to;
    int fd;
} fd_writer;

static int fd_writer_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    fd_writer *st = state;
    if (tr_msg_tag(msg) != T_READY)
        return 0;
    tu_report(ctx, st->report_to, R_EVENTS, tr_msg_u64(msg));
    static const char chunk[4096] = {'x'};
    uint64_t put = 0;
    ssize_t n;
    for (;;) {
        n = write(st->fd, chunk, sizeof chunk);
        if (n > 0)
            put += (uint64_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else
            break;
    }
    bool eagain = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    tu_report(ctx, st->report_to, R_WRITTEN, put);
    tu_report(ctx, st->report_to, R_EAGAIN, eagain);
    return 0;
}

static const tr_behavior fd_writer_behavior = {
    .name = "fd-writer",
    .handle = fd_writer_handle,
    .state_size = sizeof(fd_writer),
};

static tr_ref spawn_reader(tu_env *e, int fd, bool stop_after_event) {
    fd_reader init = {.report_to = e->inbox_ref,
                      .fd = fd,
                      .stop_after_event = stop_after_event};
    tr_ref ref = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &fd_reader_behavior, &init, sizeof init, &ref));
    return ref;
}

static void write_all(int fd, const void *buf, size_t len) {
    ssize_t n = write(fd, buf, len);
    assert_true(n == (ssize_t)len);
}

/* One event: R_EVENTS, R_BYTES, R_EAGAIN from the reader. Returns bytes. */
static uint64_t expect_read_event(tu_env *e) {
    uint64_t ev = tu_recv_u64(e, R_EVENTS, TU_PROMPT_MS);
    assert_true((ev & TR_READABLE) != 0);
    uint64_t bytes = tu_recv_u64(e, R_BYTES, TU_PROMPT_MS);
    assert_int_equal(tu_recv_u64(e, R_EAGAIN, TU_PROMPT_MS), 1);
    return bytes;
}

/* ---- tests */

static void test_pipe_readable_edge(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    int p[2];
    make_pipe(p);
    tr_ref reader = spawn_reader(e, p[0], false);
    tu_env_start(e);

    tr_watch_id w = {0};
    TU_ASSERT_OK(tr_watch(e->rt, p[0], TR_READABLE, reader, T_READY, &w));
    assert_true(w.id != 0);
    /* Nothing to read yet: no message. */
    tu_expect_silence(e, 100);

    write_all(p[1], "hello", 5);
    assert_int_equal(expect_read_event(e), 5);
    /* Drained: edge-triggered, so no further message without new data. */
    tu_expect_silence(e, 200);

    /* A second write is a new edge and a new message. */
    write_all(p[1], "world!", 6);
    assert_int_equal(expect_read_event(e), 6);
    tu_expect_silence(e, 100);

    /* A large write may come as several edges; every byte is read. */
    static char big[60000];
    memset(big, 'b', sizeof big);
    write_all(p[1], big, sizeof big);
    uint64_t total = 0;
    while (total < sizeof big)
        total += expect_read_event(e);
    assert_int_equal(total, sizeof big);
    /* Edges raised while the reader was already draining may still come,
     * finding nothing to read. */
    tr_msg *extra = NULL;
    while (tr_inbox_recv(e->inbox, 100, &extra) == 0) {
        assert_int_equal(tr_msg_tag(extra), R_EVENTS);
        tr_msg_destroy(&extra);
        assert_int_equal(tu_recv_u64(e, R_BYTES, TU_PROMPT_MS), 0);
        assert_int_equal(tu_recv_u64(e, R_EAGAIN, TU_PROMPT_MS), 1);
    }

    TU_ASSERT_OK(tr_unwatch(e->rt, w));
    TU_ASSERT_RC(tr_unwatch(e->rt, w), TR_ENOTFOUND);
    /* After unwatch, data produces no message. */
    write_all(p[1], "zz", 2);
    tu_expect_silence(e, 200);
    tu_env_finish(e);
}

static void test_socketpair_writable_edge(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    int sv[2];
    assert_int_equal(
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv),
        0);
    fx_track(sv[0]);
    fx_track(sv[1]);
    fd_writer init = {.report_to = e->inbox_ref, .fd = sv[0]};
    tr_ref writer = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &fd_writer_behavior, &init,
                                  sizeof init, &writer));
    tu_env_start(e);

    tr_watch_id w = {0};
    TU_ASSERT_OK(tr_watch(e->rt, sv[0], TR_WRITABLE, writer, T_READY, &w));
    /* An empty socket is writable at once. */
    uint64_t ev = tu_recv_u64(e, R_EVENTS, TU_PROMPT_MS);
    assert_true((ev & TR_WRITABLE) != 0);
    uint64_t written = tu_recv_u64(e, R_WRITTEN, TU_PROMPT_MS);
    assert_true(written > 0);
    assert_int_equal(tu_recv_u64(e, R_EAGAIN, TU_PROMPT_MS), 1);
    /* Full: no new edge until the peer reads. */
    tu_expect_silence(e, 200);

    /* Drain the peer: the socket becomes writable again, a new message. */
    char buf[65536];
    uint64_t drained = 0;
    int64_t deadline = tu_now_ms() + TU_PROMPT_MS;
    while (drained < written && tu_now_ms() < deadline) {
        ssize_t n = read(sv[1], buf, sizeof buf);
        if (n > 0)
            drained += (uint64_t)n;
        else
            tu_sleep_ms(1);
    }
    assert_true(drained == written);
    ev = tu_recv_u64(e, R_EVENTS, TU_PROMPT_MS);
    assert_true((ev & TR_WRITABLE) != 0);
    assert_true(tu_recv_u64(e, R_WRITTEN, TU_PROMPT_MS) > 0);
    assert_int_equal(tu_recv_u64(e, R_EAGAIN, TU_PROMPT_MS), 1);

    TU_ASSERT_OK(tr_unwatch(e->rt, w));
    TU_ASSERT_RC(tr_unwatch(e->rt, w), TR_ENOTFOUND);
    tu_env_finish(e);
}

/* Readable and writable on one watch: both bits can be reported. */
static void test_socketpair_read_and_write_watch(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    int sv[2];
    assert_int_equal(
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv),
        0);
    fx_track(sv[0]);
    fx_track(sv[1]);
    tr_ref reader = spawn_reader(e, sv[0], false);
    tu_env_start(e);
    tr_watch_id w = {0};
    TU_ASSERT_OK(
        tr_watch(e->rt, sv[0], TR_READABLE | TR_WRITABLE, reader, T_READY, &w));
    /* First message: writable (nothing to read). */
    uint64_t ev = tu_recv_u64(e, R_EVENTS, TU_PROMPT_MS);
    assert_true((ev & TR_WRITABLE) != 0);
    (void)tu_recv_u64(e, R_BYTES, TU_PROMPT_MS);
    (void)tu_recv_u64(e, R_EAGAIN, TU_PROMPT_MS);
    /* Data from the peer: a readable edge. */
    write_all(sv[1], "ping", 4);
    uint64_t bytes = 0;
    bool readable_seen = false;
    int64_t deadline = tu_now_ms() + TU_PROMPT_MS;
    while (bytes < 4 && tu_now_ms() < deadline) {
        ev = tu_recv_u64(e, R_EVENTS, TU_PROMPT_MS);
        readable_seen |= (ev & TR_READABLE) != 0;
        bytes += tu_recv_u64(e, R_BYTES, TU_PROMPT_MS);
        (void)tu_recv_u64(e, R_EAGAIN, TU_PROMPT_MS);
    }
    assert_true(readable_seen);
    assert_int_equal(bytes, 4);
    TU_ASSERT_OK(tr_unwatch(e->rt, w));
    tu_env_finish(e);
}

static void test_watch_removed_when_actor_dead(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tu_spawn_keeper(e);
    int p[2];
    make_pipe(p);
    tr_ref reader = spawn_reader(e, p[0], true);
    tu_env_start(e);
    tr_watch_id w = {0};
    TU_ASSERT_OK(tr_watch(e->rt, p[0], TR_READABLE, reader, T_READY, &w));
    write_all(p[1], "a", 1);
    assert_int_equal(expect_read_event(e), 1);
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, reader), TU_PROMPT_MS);
    /* The next event finds the actor dead and removes the watch. */
    write_all(p[1], "b", 1);
    tu_sleep_ms(500);
    TU_ASSERT_RC(tr_unwatch(e->rt, w), TR_ENOTFOUND);
    tu_expect_silence(e, 50);
    tu_env_finish(e);
}

static void test_watch_misuse(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref keeper = tu_spawn_keeper(e);
    tu_env_start(e);
    int p[2];
    make_pipe(p);
    tr_watch_id w = {0};
    assert_true(tr_watch(e->rt, -1, TR_READABLE, keeper, T_READY, &w) < 0);
    TU_ASSERT_RC(tr_watch(e->rt, p[0], 0, keeper, T_READY, &w), TR_EINVAL);
    TU_ASSERT_RC(tr_watch(NULL, p[0], TR_READABLE, keeper, T_READY, &w),
                 TR_EINVAL);
    tr_watch_id bogus = {0x123456789ull};
    TU_ASSERT_RC(tr_unwatch(e->rt, bogus), TR_ENOTFOUND);
    tr_watch_id none = {0};
    int rc = tr_unwatch(e->rt, none);
    assert_true(rc == TR_ENOTFOUND || rc == TR_EINVAL);
    TU_ASSERT_RC(tr_unwatch(NULL, bogus), TR_EINVAL);
    tu_env_finish(e);
}

/* ---- ZeroMQ through ZMQ_FD */

#ifdef HAVE_ZMQ

static _Atomic uint64_t g_zmq_order_errors;

typedef struct zmq_reader {
    tr_ref report_to;
    void *sock;
    uint64_t next_seq;
    uint64_t received;
} zmq_reader;

/* The documented ZMQ_FD contract: on a signal, loop on ZMQ_EVENTS and
 * receive while it reports ZMQ_POLLIN; only then wait for the next edge. */
static int zmq_reader_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    zmq_reader *st = state;
    uint32_t tag = tr_msg_tag(msg);
    if (tag != T_READY && tag != T_KICK)
        return 0;
    for (;;) {
        int events = 0;
        size_t sz = sizeof events;
        if (zmq_getsockopt(st->sock, ZMQ_EVENTS, &events, &sz) != 0) {
            tu_report(ctx, st->report_to, R_ZMQ_ERR, (uint64_t)errno);
            return 0;
        }
        if ((events & ZMQ_POLLIN) == 0)
            break;
        for (;;) {
            uint64_t seq = 0;
            int n = zmq_recv(st->sock, &seq, sizeof seq, ZMQ_DONTWAIT);
            if (n < 0) {
                if (errno != EAGAIN && errno != EINTR)
                    tu_report(ctx, st->report_to, R_ZMQ_ERR, (uint64_t)errno);
                break;
            }
            if (n != (int)sizeof seq || seq != st->next_seq)
                atomic_fetch_add(&g_zmq_order_errors, 1);
            st->next_seq = seq + 1;
            st->received++;
        }
    }
    tu_report(ctx, st->report_to, R_ZMQ_TOTAL, st->received);
    return 0;
}

static const tr_behavior zmq_reader_behavior = {
    .name = "zmq-reader",
    .handle = zmq_reader_handle,
    .state_size = sizeof(zmq_reader),
};

static void run_zmq_pair(tu_env *e, const char *endpoint) {
    atomic_store(&g_zmq_order_errors, 0);
    tu_env_init(e, 2);
    g_fx.zctx = zmq_ctx_new();
    assert_non_null(g_fx.zctx);
    void *rx = g_fx.zsock[0] = zmq_socket(g_fx.zctx, ZMQ_PAIR);
    void *tx = g_fx.zsock[1] = zmq_socket(g_fx.zctx, ZMQ_PAIR);
    assert_non_null(rx);
    assert_non_null(tx);
    int zero = 0, five_s = 5000;
    assert_int_equal(zmq_setsockopt(rx, ZMQ_LINGER, &zero, sizeof zero), 0);
    assert_int_equal(zmq_setsockopt(tx, ZMQ_LINGER, &zero, sizeof zero), 0);
    assert_int_equal(zmq_setsockopt(tx, ZMQ_SNDTIMEO, &five_s, sizeof five_s),
                     0);
    if (zmq_bind(rx, endpoint) != 0)
        fail_msg("zmq_bind(%s): %s", endpoint, zmq_strerror(zmq_errno()));
    if (zmq_connect(tx, endpoint) != 0)
        fail_msg("zmq_connect(%s): %s", endpoint, zmq_strerror(zmq_errno()));

    int fd = -1;
    size_t sz = sizeof fd;
    assert_int_equal(zmq_getsockopt(rx, ZMQ_FD, &fd, &sz), 0);
    assert_true(fd >= 0);

    zmq_reader init = {.report_to = e->inbox_ref, .sock = rx};
    tr_ref reader = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &zmq_reader_behavior, &init,
                                  sizeof init, &reader));
    tu_env_start(e);
    tr_watch_id w = {0};
    TU_ASSERT_OK(tr_watch(e->rt, fd, TR_READABLE, reader, T_READY, &w));
    /* The usual first drain after registering, so no signal that came
     * before the watch is lost; everything after it relies on edges. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, reader, T_KICK, 0));
    uint64_t total = tu_recv_u64(e, R_ZMQ_TOTAL, TU_PROMPT_MS);
    assert_int_equal(total, 0);

    const uint64_t n = 2000;
    for (uint64_t i = 0; i < n; i++) {
        if (zmq_send(tx, &i, sizeof i, 0) != (int)sizeof i)
            fail_msg("zmq_send #%" PRIu64 ": %s", i, zmq_strerror(zmq_errno()));
        if (i % 97 == 0)
            tu_sleep_ms(1); /* let the reader go idle: more edges */
    }
    int64_t deadline = tu_now_ms() + 10000;
    while (total < n) {
        int64_t left = deadline - tu_now_ms();
        if (left <= 0)
            fail_msg("zmq reader got %" PRIu64 " of %" PRIu64
                     " messages: an edge was lost",
                     total, n);
        tr_msg *m = tu_recv(e, left);
        uint32_t tag = tr_msg_tag(m);
        uint64_t v = tr_msg_u64(m);
        tr_msg_destroy(&m);
        if (tag == R_ZMQ_ERR)
            fail_msg("zmq error in reader: %s", zmq_strerror((int)v));
        assert_int_equal(tag, R_ZMQ_TOTAL);
        assert_true(v >= total);
        total = v;
    }
    assert_true(total == n);
    assert_int_equal(atomic_load(&g_zmq_order_errors), 0);
    TU_ASSERT_OK(tr_unwatch(e->rt, w));
    TU_ASSERT_RC(tr_unwatch(e->rt, w), TR_ENOTFOUND);
    tu_env_finish(e); /* teardown closes the sockets and the context */
}

static void test_zmq_pair_inproc(void **state) {
    char ep[128];
    snprintf(ep, sizeof ep, "inproc://troupe-test-reactor-%ld-%lld",
             (long)getpid(), (long long)tu_now_ns());
    run_zmq_pair(*state, ep);
}

static void test_zmq_pair_ipc(void **state) {
    snprintf(g_fx.ipc_path, sizeof g_fx.ipc_path,
             "/tmp/troupe-test-reactor-%ld-%lld.ipc", (long)getpid(),
             (long long)tu_now_ns());
    char ep[160];
    snprintf(ep, sizeof ep, "ipc://%s", g_fx.ipc_path);
    run_zmq_pair(*state, ep);
}

#else

static void test_zmq_pair_inproc(void **state) {
    (void)state;
    print_message("zmq.h not found at build time: ZeroMQ test skipped\n");
    skip();
}

static void test_zmq_pair_ipc(void **state) {
    (void)state;
    skip();
}

#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        FX_TEST(test_pipe_readable_edge),
        FX_TEST(test_socketpair_writable_edge),
        FX_TEST(test_socketpair_read_and_write_watch),
        FX_TEST(test_watch_removed_when_actor_dead),
        FX_TEST(test_watch_misuse),
        FX_TEST(test_zmq_pair_inproc),
        FX_TEST(test_zmq_pair_ipc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
