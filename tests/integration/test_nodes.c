/* Nodes for real: this program is also the peer node (run as
 * "<self> peer" with TEST_NODE_* in its environment), a separate process
 * listening on tcp://127.0.0.1 with CURVE. The test process is another
 * node that connects to it. Covers: spawn and lookup on a remote node,
 * request/reply and sends both ways, monitors and cancel across nodes; a
 * peer whose key is not on the allowlist gets nothing through (counted by
 * the ZAP handler, nothing reaches any actor); malformed, multi-part,
 * wrong-version and oversized frames over a real socket are rejected and
 * counted while the node keeps serving; a node that stops answering
 * (SIGSTOP) is declared lost by heartbeats (DOWN with TR_ELOST, requests
 * failed back, subscribers told) and reconnects when it resumes; a node
 * killed -9 and restarted on the same endpoint is found again. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <zmq.h>

#include "testutil.h"
#include "transport/codec.h"

enum {
    T_SQ = 1,
    T_ANS,
    T_COUNT,
    T_PING,
    T_PONG,
    T_DOWN,
    T_FAILED,
    T_TIMEOUT,
    T_NODE_UP,
    T_NODE_DOWN
};

/* ---- the peer node's actors ---- */

static int square_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    (void)st;
    uint64_t v = tr_msg_u64(m);
    if (tr_msg_tag(m) == T_PING) /* a send back to whoever sent */
        return tr_send_u64(ctx, tr_msg_sender(m), T_PONG, v + 1);
    tr_msg *r = tr_msg_new_u64(T_ANS, v * v);
    return tr_reply(ctx, m, &r);
}

static const tr_behavior square_beh = {.name = "square",
                                       .handle = square_handle};

static _Atomic uint64_t counter_hits;

static int counter_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    uint64_t *n = st;
    atomic_fetch_add(&counter_hits, 1);
    ++*n;
    if (tr_msg_is_request(m)) {
        tr_msg *r = tr_msg_new_u64(T_COUNT, *n);
        return tr_reply(ctx, m, &r);
    }
    return 0;
}

static const tr_behavior counter_beh = {.name = "counter",
                                        .handle = counter_handle,
                                        .state_size = sizeof(uint64_t)};

static int peer_main(void) {
    tr_runtime_config rcfg = {.workers = 2, .handle_signals = true};
    tr_runtime *rt = NULL;
    if (tr_runtime_create(&rt, &rcfg) != 0)
        return 10;
    const char *allow[8];
    size_t nallow = 0;
    char allowbuf[512] = "";
    if (getenv("TEST_NODE_ALLOW") != NULL)
        snprintf(allowbuf, sizeof allowbuf, "%s", getenv("TEST_NODE_ALLOW"));
    for (char *save = NULL, *k = strtok_r(allowbuf, ",", &save);
         k != NULL && nallow < 8; k = strtok_r(NULL, ",", &save))
        allow[nallow++] = k;
    const char *mf = getenv("TEST_NODE_MAX_FRAME");
    tr_node_config cfg = {
        .name = getenv("TEST_NODE_NAME"),
        .listen = getenv("TEST_NODE_LISTEN"),
        .public_key = getenv("TEST_NODE_PUB"),
        .secret_key = getenv("TEST_NODE_SEC"),
        .allow = allow,
        .nallow = nallow,
        .plaintext = getenv("TEST_NODE_PLAIN") != NULL,
        .max_frame = mf != NULL ? (size_t)strtoull(mf, NULL, 10) : 0};
    int rc = tr_node_start(rt, &cfg);
    if (rc != 0) {
        fprintf(stderr, "peer: tr_node_start: %s\n", tr_strerror(rc));
        return 11;
    }
    tr_ref counter;
    if (tr_runtime_spawn(rt, &counter_beh, NULL, 0, &counter) != 0 ||
        tr_name_register(rt, "counter", counter) != 0)
        return 12;
    char ep[160];
    if (tr_node_endpoint(rt, ep, sizeof ep) != 0)
        return 13;
    printf("endpoint=%s\n", ep);
    fflush(stdout);
    (void)tr_runtime_run(rt); /* until SIGTERM */
    tr_transport_stats s;
    (void)tr_transport_stats_get(rt, true, &s);
    printf("stats frames_in=%llu rejected=%llu unknown_peer=%llu "
           "zap_denied=%llu zap_allowed=%llu counter_hits=%llu\n",
           (unsigned long long)s.frames_in, (unsigned long long)s.rejected,
           (unsigned long long)s.unknown_peer,
           (unsigned long long)s.zap_denied,
           (unsigned long long)s.zap_allowed,
           (unsigned long long)atomic_load(&counter_hits));
    fflush(stdout);
    tr_runtime_destroy(&rt);
    return 0;
}

/* ---- driving a peer process ---- */

typedef struct keypair {
    char pub[41], sec[41];
} keypair;

static void keys(keypair *k) {
    assert_int_equal(zmq_curve_keypair(k->pub, k->sec), 0);
}

typedef struct peer {
    pid_t pid;
    int out;
    char buf[8192];
    size_t len;
    char endpoint[160];
} peer;

static peer *live_peers[4];

/* Starts a peer node; returns when it printed its endpoint. */
static void peer_start(peer *p, const char *name, const char *listen,
                       const keypair *k, const char *allow, bool plain,
                       const char *max_frame) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    memset(p, 0, sizeof *p);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        setenv("TEST_NODE_NAME", name, 1);
        setenv("TEST_NODE_LISTEN", listen, 1);
        if (k != NULL) {
            setenv("TEST_NODE_PUB", k->pub, 1);
            setenv("TEST_NODE_SEC", k->sec, 1);
        }
        if (allow != NULL)
            setenv("TEST_NODE_ALLOW", allow, 1);
        if (plain)
            setenv("TEST_NODE_PLAIN", "1", 1);
        if (max_frame != NULL)
            setenv("TEST_NODE_MAX_FRAME", max_frame, 1);
        char *argv[] = {"/proc/self/exe", "peer", NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    p->out = fds[0];
    for (unsigned i = 0; i < 4; i++)
        if (live_peers[i] == NULL) {
            live_peers[i] = p;
            break;
        }
    /* Its first line: endpoint=... */
    int64_t end = tu_now_ms() + 10000;
    while (strchr(p->buf, '\n') == NULL && tu_now_ms() < end) {
        struct pollfd pf = {p->out, POLLIN, 0};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        ssize_t r = read(p->out, p->buf + p->len, sizeof p->buf - 1 - p->len);
        assert_true(r > 0);
        p->len += (size_t)r;
    }
    assert_true(strncmp(p->buf, "endpoint=", 9) == 0);
    size_t n = strcspn(p->buf + 9, "\n");
    assert_true(n < sizeof p->endpoint);
    memcpy(p->endpoint, p->buf + 9, n);
}

/* The state letter of a process (/proc/<pid>/stat), or 0. */
static char proc_state(pid_t pid) {
    char path[64], st[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(st, 1, sizeof st - 1, f);
    fclose(f);
    st[n] = 0;
    const char *p = strrchr(st, ')'); /* "pid (comm) S ..." */
    return p != NULL && p[1] == ' ' ? p[2] : 0;
}

static void peer_forget(peer *p) {
    for (unsigned i = 0; i < 4; i++)
        if (live_peers[i] == p)
            live_peers[i] = NULL;
    close(p->out);
    p->pid = 0;
}

/* SIGTERM, then its last line (the stats) and its exit, bounded. */
static void peer_stop(peer *p, char *stats, size_t cap) {
    assert_int_equal(kill(p->pid, SIGTERM), 0);
    int64_t end = tu_now_ms() + 10000;
    for (;;) {
        struct pollfd pf = {p->out, POLLIN, 0};
        if (tu_now_ms() > end)
            fail_msg("peer did not exit after SIGTERM");
        if (poll(&pf, 1, 100) <= 0)
            continue;
        ssize_t r = read(p->out, p->buf + p->len, sizeof p->buf - 1 - p->len);
        if (r <= 0)
            break;
        p->len += (size_t)r;
        p->buf[p->len] = 0;
    }
    int status = 0;
    assert_int_equal(waitpid(p->pid, &status, 0), p->pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    const char *s = strstr(p->buf, "stats ");
    assert_non_null(s);
    snprintf(stats, cap, "%s", s);
    peer_forget(p);
}

static void peer_kill(peer *p) {
    kill(p->pid, SIGCONT);
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    peer_forget(p);
}

static uint64_t stat_field(const char *stats, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "%s=", key);
    const char *f = strstr(stats, k);
    if (f == NULL)
        fail_msg("no %s in '%s'", key, stats);
    return strtoull(f + strlen(k), NULL, 10);
}

static int kill_leftovers(void **state) {
    for (unsigned i = 0; i < 4; i++)
        if (live_peers[i] != NULL)
            peer_kill(live_peers[i]);
    return tu_teardown(state);
}

#define NODE_TEST(fn) cmocka_unit_test_setup_teardown(fn, tu_setup, kill_leftovers)

/* ---- an actor of this node that talks to remote ones ---- */

typedef struct asker {
    tr_ref target, report;
    uint32_t tag;
    uint64_t value;
    int64_t timeout_ms;
} asker;

static int asker_start(tr_ctx *ctx, void *st) {
    asker *a = st;
    uint64_t mon;
    int rc = tr_monitor(ctx, a->target, &mon);
    if (rc != 0)
        return rc;
    tr_msg *q = tr_msg_new_u64(a->tag, a->value);
    if (a->tag == T_PING)
        return tr_send(ctx, a->target, &q);
    return tr_request(ctx, a->target, &q, a->timeout_ms, NULL);
}

static int asker_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    asker *a = st;
    switch (tr_msg_tag(m)) {
    case T_ANS: /* answered: done */
    case T_COUNT:
    case T_PONG:
        tu_report(ctx, a->report, tr_msg_tag(m), tr_msg_u64(m));
        return TR_STOP;
    case TR_TAG_REMOTE_FAILED: /* then the DOWN comes */
        tu_report(ctx, a->report, T_FAILED, tr_msg_u64(m));
        return 0;
    case TR_TAG_TIMEOUT:
        tu_report(ctx, a->report, T_TIMEOUT, 0);
        return TR_STOP;
    case TR_TAG_DOWN: {
        tr_exit x;
        if (tr_msg_exit(m, &x) != 0)
            return TR_EPROTO;
        tu_report(ctx, a->report, T_DOWN, (uint64_t)(int64_t)x.reason);
        return TR_STOP;
    }
    default:
        return TR_UNHANDLED;
    }
}

static const tr_behavior asker_beh = {.name = "asker",
                                      .handle = asker_handle,
                                      .on_start = asker_start,
                                      .state_size = sizeof(asker)};

static void ask(tu_env *e, tr_ref target, uint32_t tag, uint64_t v) {
    asker a = {.target = target,
               .report = e->inbox_ref,
               .tag = tag,
               .value = v,
               .timeout_ms = 10000};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &a, sizeof a, NULL));
}

/* This process as node "a" (connects only). */
static void node_env(tu_env *e, const keypair *k, bool plain) {
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e);
    tr_node_config cfg = {.name = "a",
                          .public_key = k ? k->pub : NULL,
                          .secret_key = k ? k->sec : NULL,
                          .plaintext = plain};
    TU_ASSERT_OK(tr_node_start(e->rt, &cfg));
    tu_env_start(e);
}

/* ---- tests ---- */

static void test_spawn_lookup_request_over_curve(void **state) {
    tu_env *e = *state;
    keypair ka, kb;
    keys(&ka);
    keys(&kb);
    peer b;
    peer_start(&b, "b", "tcp://127.0.0.1:*", &kb, ka.pub, false, NULL);
    node_env(e, &ka, false);
    /* Argument checks first. */
    TU_ASSERT_RC(tr_node_connect(e->rt, "b", b.endpoint, "short"), TR_EINVAL);
    TU_ASSERT_RC(tr_node_connect(e->rt, "a", b.endpoint, kb.pub), TR_EINVAL);
    tr_ref r;
    TU_ASSERT_RC(tr_runtime_node_spawn(e->rt, "b", "square", NULL, 0, &r),
                 TR_ENOTFOUND);
    TU_ASSERT_OK(tr_node_connect(e->rt, "b", b.endpoint, kb.pub));
    TU_ASSERT_RC(tr_node_connect(e->rt, "b", b.endpoint, kb.pub), TR_EEXIST);
    /* Usable at once: the spawn waits for the handshake. */
    TU_ASSERT_OK(tr_runtime_node_spawn(e->rt, "b", "square", NULL, 0, &r));
    ask(e, r, T_SQ, 12);
    assert_int_equal(tu_recv_u64(e, T_ANS, 10000), 144);
    assert_true(tr_node_is_up(e->rt, "b"));
    /* A send from the remote actor back to ours (through its stand-in). */
    ask(e, r, T_PING, 41);
    assert_int_equal(tu_recv_u64(e, T_PONG, 10000), 42);
    /* Named actor over there. */
    tr_ref c;
    TU_ASSERT_OK(tr_runtime_node_lookup(e->rt, "b", "counter", &c));
    ask(e, c, T_COUNT, 0);
    assert_int_equal(tu_recv_u64(e, T_COUNT, 10000), 1);
    ask(e, c, T_COUNT, 0);
    assert_int_equal(tu_recv_u64(e, T_COUNT, 10000), 2);
    /* An unknown name, an unknown behaviour: the proxies end with
     * TR_ENOTFOUND. */
    tr_ref nn;
    TU_ASSERT_OK(tr_runtime_node_lookup(e->rt, "b", "nobody", &nn));
    ask(e, nn, T_COUNT, 0);
    /* the request is failed back first, then the DOWN */
    assert_int_equal((int64_t)tu_recv_u64(e, T_FAILED, 10000), TR_ENOTFOUND);
    assert_int_equal((int64_t)tu_recv_u64(e, T_DOWN, 10000), TR_ENOTFOUND);
    TU_ASSERT_OK(tr_runtime_node_spawn(e->rt, "b", "no-such", NULL, 0, &nn));
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, nn), 10000);
    /* Cancelling the spawned actor's proxy ends the actor over there;
     * the looked-up actor (not owned) is left alone when its proxy ends. */
    TU_ASSERT_OK(tr_cancel(e->rt, r, TR_EXIT_CANCELLED, -1));
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, r), 10000);
    TU_ASSERT_OK(tr_cancel(e->rt, c, TR_EXIT_CANCELLED, -1));
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, c), 10000);
    TU_ASSERT_OK(tr_runtime_node_lookup(e->rt, "b", "counter", &c));
    ask(e, c, T_COUNT, 0);
    assert_int_equal(tu_recv_u64(e, T_COUNT, 10000), 3);
    char stats[512];
    peer_stop(&b, stats, sizeof stats);
    assert_int_equal(stat_field(stats, "counter_hits"), 3);
    assert_int_equal(stat_field(stats, "rejected"), 0);
    assert_true(stat_field(stats, "zap_allowed") >= 1);
    assert_int_equal(stat_field(stats, "zap_denied"), 0);
    tu_env_finish(e);
}

/* Three nodes: this one connects to two others (each its own process,
 * its own key, each allowing only ours) and uses both at once. */
static void test_three_nodes(void **state) {
    tu_env *e = *state;
    keypair ka, kb, kc;
    keys(&ka);
    keys(&kb);
    keys(&kc);
    peer b, c;
    peer_start(&b, "b", "tcp://127.0.0.1:*", &kb, ka.pub, false, NULL);
    peer_start(&c, "c", "tcp://127.0.0.1:*", &kc, ka.pub, false, NULL);
    node_env(e, &ka, false);
    TU_ASSERT_OK(tr_node_connect(e->rt, "b", b.endpoint, kb.pub));
    TU_ASSERT_OK(tr_node_connect(e->rt, "c", c.endpoint, kc.pub));
    tr_ref rb, rc2, cb, cc;
    TU_ASSERT_OK(tr_runtime_node_spawn(e->rt, "b", "square", NULL, 0, &rb));
    TU_ASSERT_OK(tr_runtime_node_spawn(e->rt, "c", "square", NULL, 0, &rc2));
    ask(e, rb, T_SQ, 3);
    ask(e, rc2, T_SQ, 4);
    uint64_t x = tu_recv_u64(e, T_ANS, 10000);
    uint64_t y = tu_recv_u64(e, T_ANS, 10000);
    assert_true((x == 9 && y == 16) || (x == 16 && y == 9));
    TU_ASSERT_OK(tr_runtime_node_lookup(e->rt, "b", "counter", &cb));
    TU_ASSERT_OK(tr_runtime_node_lookup(e->rt, "c", "counter", &cc));
    ask(e, cb, T_COUNT, 0);
    assert_int_equal(tu_recv_u64(e, T_COUNT, 10000), 1);
    ask(e, cc, T_COUNT, 0);
    assert_int_equal(tu_recv_u64(e, T_COUNT, 10000), 1);
    assert_true(tr_node_is_up(e->rt, "b") && tr_node_is_up(e->rt, "c"));
    char stats[512];
    peer_stop(&c, stats, sizeof stats);
    assert_int_equal(stat_field(stats, "counter_hits"), 1);
    peer_stop(&b, stats, sizeof stats);
    assert_int_equal(stat_field(stats, "counter_hits"), 1);
    tu_env_finish(e);
}

static void test_peer_not_on_allowlist_gets_nothing_through(void **state) {
    tu_env *e = *state;
    keypair ka, kb, kother;
    keys(&ka);
    keys(&kb);
    keys(&kother);
    peer b;
    /* b allows only kother; we are ka. */
    peer_start(&b, "b", "tcp://127.0.0.1:*", &kb, kother.pub, false, NULL);
    node_env(e, &ka, false);
    TU_ASSERT_OK(tr_node_connect(e->rt, "b", b.endpoint, kb.pub));
    tr_ref c;
    TU_ASSERT_OK(tr_runtime_node_lookup(e->rt, "b", "counter", &c));
    asker a = {.target = c,
               .report = e->inbox_ref,
               .tag = T_COUNT,
               .timeout_ms = 1500};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &a, sizeof a, NULL));
    /* No answer: the request times out; b never came up. */
    assert_int_equal(tu_recv_u64(e, T_TIMEOUT, 10000), 0);
    assert_false(tr_node_is_up(e->rt, "b"));
    /* Positive control: a raw CURVE client with the key b allows gets
     * through the handshake (zap_allowed below) while ka stays out. */
    void *zc = zmq_ctx_new();
    void *d = zmq_socket(zc, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(d, ZMQ_ROUTING_ID, "raw", 3);
    zmq_setsockopt(d, ZMQ_CURVE_SERVERKEY, kb.pub, 40);
    zmq_setsockopt(d, ZMQ_CURVE_PUBLICKEY, kother.pub, 40);
    zmq_setsockopt(d, ZMQ_CURVE_SECRETKEY, kother.sec, 40);
    assert_int_equal(zmq_connect(d, b.endpoint), 0);
    tu_sleep_ms(500);
    zmq_close(d);
    zmq_ctx_term(zc);
    char stats[512];
    peer_stop(&b, stats, sizeof stats);
    assert_true(stat_field(stats, "zap_denied") >= 1);
    assert_true(stat_field(stats, "zap_allowed") >= 1);
    assert_int_equal(stat_field(stats, "counter_hits"), 0);
    assert_int_equal(stat_field(stats, "frames_in"), 0);
    tu_env_finish(e);
}

/* A raw DEALER speaking the wire format (docs/protocol.md) by hand. */
static size_t one_env_frame(const tr__env *env, unsigned char *out,
                            size_t cap) {
    tr__encoder enc;
    const unsigned char *fr;
    size_t len = 0;
    assert_int_equal(tr__encoder_init(&enc, NULL), 0);
    assert_int_equal(tr__encoder_add(&enc, env), 0);
    assert_int_equal(tr__encoder_finish(&enc, &fr, &len), 0);
    assert_true(len <= cap);
    memcpy(out, fr, len);
    tr__encoder_free(&enc);
    return len;
}

static void test_malformed_and_oversized_frames(void **state) {
    tu_env *e = *state;
    peer b;
    peer_start(&b, "b", "tcp://127.0.0.1:*", NULL, NULL, true, "65536");
    node_env(e, NULL, true);
    void *zc = zmq_ctx_new();
    void *d = zmq_socket(zc, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(d, ZMQ_ROUTING_ID, "raw", 3);
    assert_int_equal(zmq_connect(d, b.endpoint), 0);
    /* 1. garbage before any HELLO: not a peer */
    assert_true(zmq_send(d, "\xc1\xc1garbage", 9, 0) == 9);
    /* 2. a valid node HELLO makes "raw" a peer; then: */
    unsigned char hb[TR__HELLO_MAX], fr[1024];
    size_t hl;
    tr__hello h = {.proto_min = 1,
                   .proto_max = 1,
                   .role = "node",
                   .role_len = 4,
                   .node = "raw",
                   .node_len = 3,
                   .pid = 1,
                   .epoch = 1};
    assert_int_equal(tr__hello_encode(&h, hb, sizeof hb, &hl), 0);
    tr__env he = {.kind = TR__K_HELLO,
                  .pkind = TR_PAYLOAD_MSGPACK,
                  .data = hb,
                  .len = hl};
    size_t fl = one_env_frame(&he, fr, sizeof fr);
    assert_true(zmq_send(d, fr, fl, 0) == (int)fl);
    /* b answers with its HELLO */
    zmq_pollitem_t pi = {d, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&pi, 1, 10000), 1);
    char got[1024];
    assert_true(zmq_recv(d, got, sizeof got, 0) > 0);
    /*    truncated: the HELLO frame cut short */
    assert_true(zmq_send(d, fr, fl - 3, 0) == (int)fl - 3);
    /*    wrong version: byte after the array headers is the version 1 */
    unsigned char bad[1024];
    memcpy(bad, fr, fl);
    assert_int_equal(bad[2], 1); /* [[1, ...]] = 0x91 0x9a 0x01 */
    bad[2] = 9;
    assert_true(zmq_send(d, bad, fl, 0) == (int)fl);
    /*    a multi-part message */
    assert_true(zmq_send(d, fr, fl, ZMQ_SNDMORE) == (int)fl);
    assert_true(zmq_send(d, fr, fl, 0) == (int)fl);
    /*    a frame over b's max_frame (64 KiB): libzmq drops the
     *    connection; the raw socket reconnects by itself. */
    size_t big = 200 * 1024;
    char *huge = calloc(1, big);
    assert_non_null(huge);
    assert_true(zmq_send(d, huge, big, 0) == (int)big);
    free(huge);
    tu_sleep_ms(300);
    zmq_close(d);
    zmq_ctx_term(zc);
    /* b keeps serving a well-behaved node. */
    TU_ASSERT_OK(tr_node_connect(e->rt, "b", b.endpoint, NULL));
    tr_ref r;
    TU_ASSERT_OK(tr_runtime_node_spawn(e->rt, "b", "square", NULL, 0, &r));
    ask(e, r, T_SQ, 9);
    assert_int_equal(tu_recv_u64(e, T_ANS, 10000), 81);
    char stats[512];
    peer_stop(&b, stats, sizeof stats);
    /* truncated + wrong version + multi-part */
    assert_true(stat_field(stats, "rejected") >= 3);
    assert_true(stat_field(stats, "unknown_peer") >= 1); /* the garbage */
    tu_env_finish(e);
}

static int watcher_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    tr_ref *report = st;
    uint32_t tag = tr_msg_tag(m);
    if (tag == TR_TAG_NODE_UP || tag == TR_TAG_NODE_DOWN) {
        size_t len = 0;
        const char *name = tr_msg_data(m, &len);
        if (len == 1 && name[0] == 'b')
            tu_report(ctx, *report,
                      tag == TR_TAG_NODE_UP ? T_NODE_UP : T_NODE_DOWN, 0);
        return 0;
    }
    return TR_UNHANDLED;
}

static const tr_behavior watcher_beh = {.name = "watcher",
                                        .handle = watcher_handle,
                                        .state_size = sizeof(tr_ref)};

/* Next message of one of the tags (others of `skip` are dropped). */
static uint64_t recv_skipping(tu_env *e, uint32_t want, uint32_t skip) {
    for (;;) {
        tr_msg *m = tu_recv(e, 10000);
        uint32_t tag = tr_msg_tag(m);
        uint64_t v = tr_msg_u64(m);
        tr_msg_destroy(&m);
        if (tag == want)
            return v;
        if (tag != skip)
            fail_msg("unexpected tag %u (value %llu)", tag,
                     (unsigned long long)v);
    }
}

static void test_node_loss_detected_and_recovered(void **state) {
    tu_env *e = *state;
    keypair ka, kb;
    keys(&ka);
    keys(&kb);
    peer b;
    peer_start(&b, "b", "tcp://127.0.0.1:*", &kb, ka.pub, false, NULL);
    node_env(e, &ka, false); /* default loss timeout: 1 s */
    tr_ref w;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &watcher_beh, &e->inbox_ref,
                                  sizeof e->inbox_ref, &w));
    TU_ASSERT_OK(tr_node_subscribe(e->rt, w));
    TU_ASSERT_OK(tr_node_connect(e->rt, "b", b.endpoint, kb.pub));
    assert_int_equal(tu_recv_u64(e, T_NODE_UP, 10000), 0);
    tr_ref r;
    TU_ASSERT_OK(tr_runtime_node_spawn(e->rt, "b", "square", NULL, 0, &r));
    ask(e, r, T_SQ, 3);
    assert_int_equal(tu_recv_u64(e, T_ANS, 10000), 9);
    /* b stops answering (its process is stopped, its socket stays open):
     * only heartbeats can tell. A request in flight is failed back, the
     * proxy ends with TR_ELOST, the subscriber hears NODE_DOWN. */
    asker a = {.target = r,
               .report = e->inbox_ref,
               .tag = T_SQ,
               .value = 5,
               .timeout_ms = 30000};
    assert_int_equal(kill(b.pid, SIGSTOP), 0);
    /* Stopped for sure (the signal is asynchronous) before asking. */
    TU_ASSERT_EVENTUALLY(proc_state(b.pid) == 'T', 5000);
    int64_t t0 = tu_now_ms();
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &a, sizeof a, NULL));
    uint64_t got[3];
    for (int i = 0; i < 3; i++) {
        tr_msg *m = tu_recv(e, 10000);
        uint32_t tag = tr_msg_tag(m);
        got[i] = tr_msg_u64(m);
        tr_msg_destroy(&m);
        if (tag == T_FAILED)
            assert_int_equal((int64_t)got[i], TR_ELOST);
        else if (tag == T_DOWN)
            assert_int_equal((int64_t)got[i], TR_ELOST);
        else
            assert_int_equal(tag, T_NODE_DOWN);
    }
    /* Declared lost between 0.8 and 1 s after b's last frame (heartbeats
     * every 200 ms), with generous room for a loaded machine on the upper
     * side (not a performance check). */
    int64_t took = tu_now_ms() - t0;
    assert_true(took >= 500);
    assert_true(took < 4000);
    assert_false(tr_node_is_up(e->rt, "b"));
    /* b resumes: a new session starts by itself (it was lost for b too,
     * or is told so); the old proxy stays ended, a new spawn works. */
    assert_int_equal(kill(b.pid, SIGCONT), 0);
    recv_skipping(e, T_NODE_UP, T_NODE_DOWN);
    TU_ASSERT_OK(tr_runtime_node_spawn(e->rt, "b", "square", NULL, 0, &r));
    ask(e, r, T_SQ, 4);
    assert_int_equal(recv_skipping(e, T_ANS, T_NODE_DOWN), 16);
    /* Killed -9 and started again on the same endpoint: found again. */
    char ep[160];
    memcpy(ep, b.endpoint, sizeof ep);
    peer_kill(&b);
    recv_skipping(e, T_NODE_DOWN, T_DOWN);
    peer_start(&b, "b", ep, &kb, ka.pub, false, NULL);
    recv_skipping(e, T_NODE_UP, T_DOWN);
    TU_ASSERT_OK(tr_runtime_node_spawn(e->rt, "b", "square", NULL, 0, &r));
    ask(e, r, T_SQ, 6);
    assert_int_equal(tu_recv_u64(e, T_ANS, 10000), 36);
    char stats[512];
    peer_stop(&b, stats, sizeof stats);
    tu_env_finish(e);
}

int main(int argc, char **argv) {
    tr_register("square", &square_beh);
    if (argc == 2 && strcmp(argv[1], "peer") == 0)
        return peer_main();
    const struct CMUnitTest tests[] = {
        NODE_TEST(test_spawn_lookup_request_over_curve),
        NODE_TEST(test_three_nodes),
        NODE_TEST(test_peer_not_on_allowlist_gets_nothing_through),
        NODE_TEST(test_malformed_and_oversized_frames),
        NODE_TEST(test_node_loss_detected_and_recovered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
