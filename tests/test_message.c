/* test_message — payload kinds, inline/heap bytes, PTR destructor exactly
 * once (destroyed, handled and not taken, taken, forwarded, left queued),
 * zero-copy moves, double destroy / destroy after send, size limits. */
#include "testutil.h"

enum {
    T_PLAIN = 7,
    T_PTR_KEEP = 100, /* observer: look at the PTR payload, do not take it */
    T_PTR_TAKE,       /* observer: take it and free it itself */
    T_FORWARD,        /* observer: tr_forward the message to the inbox */
    T_SENDER,         /* observer: send a message to the inbox */
    R_KIND = 200,     /* reports */
    R_PTR,
    R_LEN,
    R_RC,
    R_RC2,
    R_FWD_RC,
    R_DONE,
};

/* ---- PTR payload with a counting destructor */

#define PAYLOAD_MAGIC 0x7472707470617931ull

typedef struct payload {
    uint64_t magic;
    uint64_t seq;
} payload;

static _Atomic int g_dtor_calls;
static _Atomic int g_dtor_bad_magic;
static _Atomic int g_self_freed;

static void payload_free(void *p) {
    payload *pl = p;
    if (pl == NULL || pl->magic != PAYLOAD_MAGIC)
        atomic_fetch_add(&g_dtor_bad_magic, 1);
    else
        pl->magic = 0; /* a second call on the same block would be seen */
    atomic_fetch_add(&g_dtor_calls, 1);
    free(p);
}

static payload *payload_new(uint64_t seq) {
    payload *p = malloc(sizeof *p);
    assert_non_null(p);
    p->magic = PAYLOAD_MAGIC;
    p->seq = seq;
    return p;
}

static void reset_counters(void) {
    atomic_store(&g_dtor_calls, 0);
    atomic_store(&g_dtor_bad_magic, 0);
    atomic_store(&g_self_freed, 0);
}

static uint64_t rc_to_u64(int rc) { return (uint64_t)(int64_t)rc; }
static int u64_to_rc(uint64_t v) { return (int)(int64_t)v; }

/* ---- the observer actor */

typedef struct observer {
    tr_ref inbox;
} observer;

static int observer_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    observer *st = state;
    size_t len = 0;
    const void *data = tr_msg_data(msg, &len);
    switch (tr_msg_tag(msg)) {
    case T_PTR_KEEP:
        tu_report(ctx, st->inbox, R_KIND, (uint64_t)tr_msg_kind(msg));
        tu_report(ctx, st->inbox, R_PTR, (uint64_t)(uintptr_t)data);
        tu_report(ctx, st->inbox, R_LEN, (uint64_t)len);
        break;
    case T_PTR_TAKE: {
        void *p = NULL;
        int rc = tr_msg_take_ptr(msg, &p);
        void *q = NULL;
        int rc2 = tr_msg_take_ptr(msg, &q);
        tu_report(ctx, st->inbox, R_RC, rc_to_u64(rc));
        tu_report(ctx, st->inbox, R_RC2, rc_to_u64(rc2));
        tu_report(ctx, st->inbox, R_PTR, (uint64_t)(uintptr_t)p);
        if (rc == 0 && p != NULL) {
            ((payload *)p)->magic = 0;
            free(p);
            atomic_fetch_add(&g_self_freed, 1);
        }
        break;
    }
    case T_FORWARD: {
        int rc = tr_forward(ctx, st->inbox, msg);
        tu_report(ctx, st->inbox, R_FWD_RC, rc_to_u64(rc));
        break;
    }
    case T_SENDER:
        tu_report(ctx, st->inbox, R_DONE, tr_self(ctx).id);
        break;
    default:
        break;
    }
    return 0;
}

static const tr_behavior observer_behavior = {
    .name = "observer",
    .handle = observer_handle,
    .state_size = sizeof(observer),
};

static tr_ref spawn_observer(tu_env *e) {
    observer init = {.inbox = e->inbox_ref};
    tr_ref ref = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &observer_behavior, &init, sizeof init, &ref));
    return ref;
}

/* ---- payload kinds, no runtime needed */

static void test_none_payload(void **state) {
    (void)state;
    tr_msg *m = tr_msg_new(T_PLAIN);
    assert_non_null(m);
    assert_int_equal(tr_msg_tag(m), T_PLAIN);
    assert_int_equal(tr_msg_kind(m), TR_PAYLOAD_NONE);
    assert_int_equal(tr_msg_u64(m), 0);
    size_t len = 99;
    assert_null(tr_msg_data(m, &len));
    assert_int_equal(len, 0);
    void *p = (void *)&len;
    TU_ASSERT_RC(tr_msg_take_ptr(m, &p), TR_EPAYLOAD);
    assert_true(tr_ref_is_none(tr_msg_sender(m)));
    assert_false(tr_msg_is_request(m));
    assert_false(tr_msg_is_reply(m));
    TU_ASSERT_OK(tr_msg_destroy(&m));
    assert_null(m);
}

static void test_u64_payload(void **state) {
    (void)state;
    const uint64_t values[] = {0, 1, 42, 0x0123456789ABCDEFull, UINT64_MAX};
    const uint32_t tags[] = {0, 1, 0xABCD, TR_TAG_SYSTEM - 1};
    for (size_t t = 0; t < sizeof tags / sizeof tags[0]; t++) {
        for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
            tr_msg *m = tr_msg_new_u64(tags[t], values[i]);
            assert_non_null(m);
            assert_int_equal(tr_msg_tag(m), tags[t]);
            assert_int_equal(tr_msg_kind(m), TR_PAYLOAD_U64);
            assert_true(tr_msg_u64(m) == values[i]);
            size_t len = 99;
            assert_null(tr_msg_data(m, &len));
            assert_int_equal(len, 0);
            void *p = NULL;
            TU_ASSERT_RC(tr_msg_take_ptr(m, &p), TR_EPAYLOAD);
            TU_ASSERT_OK(tr_msg_destroy(&m));
            assert_null(m);
        }
    }
}

static const size_t k_sizes[] = {
    0, 1, 23, TR_MSG_INLINE, TR_MSG_INLINE + 1, 4096, 65536};
#define N_SIZES (sizeof k_sizes / sizeof k_sizes[0])

static void fill_pattern(uint8_t *buf, size_t len, uint8_t salt) {
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)((i * 31u + salt) & 0xFFu);
}

static void check_pattern(const void *data, size_t len, uint8_t salt) {
    const uint8_t *b = data;
    for (size_t i = 0; i < len; i++) {
        if (b[i] != (uint8_t)((i * 31u + salt) & 0xFFu))
            fail_msg("payload byte %zu of %zu differs", i, len);
    }
}

static void bytes_kind_round_trip(tr_payload_kind kind) {
    for (size_t s = 0; s < N_SIZES; s++) {
        size_t n = k_sizes[s];
        uint8_t *src = malloc(n + 1);
        assert_non_null(src);
        fill_pattern(src, n, (uint8_t)s);
        tr_msg *m = kind == TR_PAYLOAD_BYTES ? tr_msg_new_bytes(9, src, n)
                                             : tr_msg_new_msgpack(9, src, n);
        assert_non_null(m);
        /* The payload is a copy: scribbling on the source changes nothing. */
        memset(src, 0xEE, n + 1);
        assert_int_equal(tr_msg_kind(m), kind);
        assert_int_equal(tr_msg_tag(m), 9);
        assert_int_equal(tr_msg_u64(m), 0);
        size_t len = 12345;
        const void *data = tr_msg_data(m, &len);
        assert_int_equal(len, n);
        if (n > 0) {
            assert_non_null(data);
            assert_ptr_not_equal(data, src);
            check_pattern(data, n, (uint8_t)s);
        }
        void *p = NULL;
        TU_ASSERT_RC(tr_msg_take_ptr(m, &p), TR_EPAYLOAD);
        TU_ASSERT_OK(tr_msg_destroy(&m));
        assert_null(m);
        free(src);
    }
    /* NULL data is fine for an empty payload. */
    tr_msg *m = kind == TR_PAYLOAD_BYTES ? tr_msg_new_bytes(9, NULL, 0)
                                         : tr_msg_new_msgpack(9, NULL, 0);
    assert_non_null(m);
    assert_int_equal(tr_msg_kind(m), kind);
    size_t len = 5;
    (void)tr_msg_data(m, &len);
    assert_int_equal(len, 0);
    TU_ASSERT_OK(tr_msg_destroy(&m));
}

static void test_bytes_payload_sizes(void **state) {
    (void)state;
    bytes_kind_round_trip(TR_PAYLOAD_BYTES);
}

static void test_msgpack_payload_sizes(void **state) {
    (void)state;
    bytes_kind_round_trip(TR_PAYLOAD_MSGPACK);
    /* A real msgpack document: [1, "ab", nil]. */
    const uint8_t doc[] = {0x93, 0x01, 0xA2, 'a', 'b', 0xC0};
    tr_msg *m = tr_msg_new_msgpack(3, doc, sizeof doc);
    assert_non_null(m);
    size_t len = 0;
    const void *data = tr_msg_data(m, &len);
    assert_int_equal(len, sizeof doc);
    assert_memory_equal(data, doc, sizeof doc);
    TU_ASSERT_OK(tr_msg_destroy(&m));
}

static void test_bytes_size_limits(void **state) {
    (void)state;
    /* A real buffer of MAX+1 bytes (calloc: pages stay untouched until read)
     * so the call is well-formed and only the size is wrong. */
    size_t big = (size_t)TR_MSG_MAX_BYTES + 1;
    uint8_t *buf = calloc(1, big);
    assert_non_null(buf);
    assert_null(tr_msg_new_bytes(1, buf, big));
    assert_null(tr_msg_new_msgpack(1, buf, big));
    assert_null(tr_msg_new_bytes(1, buf, SIZE_MAX));
    assert_null(tr_msg_new_msgpack(1, buf, SIZE_MAX));
    /* NULL data with a length. */
    assert_null(tr_msg_new_bytes(1, NULL, 1));
    assert_null(tr_msg_new_msgpack(1, NULL, 16));
    /* Exactly the maximum is accepted. */
    buf[0] = 0x5A;
    buf[TR_MSG_MAX_BYTES - 1] = 0xA5;
    tr_msg *m = tr_msg_new_bytes(1, buf, TR_MSG_MAX_BYTES);
    assert_non_null(m);
    size_t len = 0;
    const uint8_t *data = tr_msg_data(m, &len);
    assert_int_equal(len, TR_MSG_MAX_BYTES);
    assert_int_equal(data[0], 0x5A);
    assert_int_equal(data[TR_MSG_MAX_BYTES - 1], 0xA5);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    free(buf);
}

static void test_ptr_destroy_runs_destructor_once(void **state) {
    (void)state;
    reset_counters();
    payload *p = payload_new(1);
    tr_msg *m = tr_msg_new_ptr(5, p, sizeof *p, payload_free);
    assert_non_null(m);
    assert_int_equal(tr_msg_kind(m), TR_PAYLOAD_PTR);
    assert_int_equal(tr_msg_tag(m), 5);
    assert_int_equal(tr_msg_u64(m), 0);
    size_t len = 0;
    assert_ptr_equal(tr_msg_data(m, &len), p);
    assert_int_equal(len, sizeof *p);
    assert_int_equal(atomic_load(&g_dtor_calls), 0);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    assert_null(m);
    assert_int_equal(atomic_load(&g_dtor_calls), 1);
    assert_int_equal(atomic_load(&g_dtor_bad_magic), 0);
}

static void test_ptr_take(void **state) {
    (void)state;
    reset_counters();
    payload *p = payload_new(2);
    tr_msg *m = tr_msg_new_ptr(5, p, sizeof *p, payload_free);
    assert_non_null(m);
    void *got = NULL;
    TU_ASSERT_OK(tr_msg_take_ptr(m, &got));
    assert_ptr_equal(got, p);
    void *again = NULL;
    TU_ASSERT_RC(tr_msg_take_ptr(m, &again), TR_EFREED);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    assert_int_equal(atomic_load(&g_dtor_calls), 0);
    assert_true(((payload *)got)->magic == PAYLOAD_MAGIC);
    free(got);

    /* No destructor at all: nothing to run, the pointer still moves. */
    static int stack_like;
    m = tr_msg_new_ptr(6, &stack_like, sizeof stack_like, NULL);
    assert_non_null(m);
    size_t len = 0;
    assert_ptr_equal(tr_msg_data(m, &len), &stack_like);
    got = NULL;
    TU_ASSERT_OK(tr_msg_take_ptr(m, &got));
    assert_ptr_equal(got, &stack_like);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    m = tr_msg_new_ptr(6, &stack_like, sizeof stack_like, NULL);
    assert_non_null(m);
    TU_ASSERT_OK(tr_msg_destroy(&m));

    /* Taking from a bytes message is a kind mismatch. */
    m = tr_msg_new_bytes(1, "abc", 3);
    assert_non_null(m);
    TU_ASSERT_RC(tr_msg_take_ptr(m, &got), TR_EPAYLOAD);
    TU_ASSERT_OK(tr_msg_destroy(&m));
}

static void test_ptr_handled_not_taken(void **state) {
    tu_env *e = *state;
    reset_counters();
    tu_env_init(e, 2);
    tr_ref obs = spawn_observer(e);
    tu_env_start(e);

    payload *p = payload_new(3);
    tr_msg *m = tr_msg_new_ptr(T_PTR_KEEP, p, sizeof *p, payload_free);
    assert_non_null(m);
    TU_ASSERT_OK(tr_runtime_send(e->rt, obs, &m));
    assert_null(m);
    assert_int_equal(tu_recv_u64(e, R_KIND, TU_PROMPT_MS), TR_PAYLOAD_PTR);
    assert_true(tu_recv_u64(e, R_PTR, TU_PROMPT_MS) == (uint64_t)(uintptr_t)p);
    assert_int_equal(tu_recv_u64(e, R_LEN, TU_PROMPT_MS), sizeof(payload));
    /* Freed by the runtime after the handler returned: exactly once. */
    TU_ASSERT_EVENTUALLY(atomic_load(&g_dtor_calls) >= 1, TU_PROMPT_MS);
    tu_env_finish(e);
    assert_int_equal(atomic_load(&g_dtor_calls), 1);
    assert_int_equal(atomic_load(&g_dtor_bad_magic), 0);
}

static void test_ptr_handled_and_taken(void **state) {
    tu_env *e = *state;
    reset_counters();
    tu_env_init(e, 2);
    tr_ref obs = spawn_observer(e);
    tu_env_start(e);

    payload *p = payload_new(4);
    tr_msg *m = tr_msg_new_ptr(T_PTR_TAKE, p, sizeof *p, payload_free);
    assert_non_null(m);
    TU_ASSERT_OK(tr_runtime_send(e->rt, obs, &m));
    TU_ASSERT_OK(u64_to_rc(tu_recv_u64(e, R_RC, TU_PROMPT_MS)));
    TU_ASSERT_RC(u64_to_rc(tu_recv_u64(e, R_RC2, TU_PROMPT_MS)), TR_EFREED);
    assert_true(tu_recv_u64(e, R_PTR, TU_PROMPT_MS) == (uint64_t)(uintptr_t)p);
    /* A later message proves the taken one was fully handled and freed. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, obs, T_SENDER, 0));
    (void)tu_recv_u64(e, R_DONE, TU_PROMPT_MS);
    tu_env_finish(e);
    assert_int_equal(atomic_load(&g_self_freed), 1);
    assert_int_equal(atomic_load(&g_dtor_calls), 0);
}

static void test_ptr_forwarded_moves_ownership(void **state) {
    tu_env *e = *state;
    reset_counters();
    tu_env_init(e, 2);
    tr_ref obs = spawn_observer(e);
    tu_env_start(e);

    payload *p = payload_new(5);
    tr_msg *m = tr_msg_new_ptr(T_FORWARD, p, sizeof *p, payload_free);
    assert_non_null(m);
    TU_ASSERT_OK(tr_runtime_send(e->rt, obs, &m));
    tr_msg *fwd = tu_recv(e, TU_PROMPT_MS);
    assert_int_equal(tr_msg_tag(fwd), T_FORWARD); /* the tag is kept */
    assert_int_equal(tr_msg_kind(fwd), TR_PAYLOAD_PTR);
    size_t len = 0;
    assert_ptr_equal(tr_msg_data(fwd, &len), p);
    assert_int_equal(len, sizeof *p);
    /* Forwarding keeps the original sender (here: none, sent from
     * outside), so a reply goes to whoever asked, not to the forwarder. */
    assert_true(tr_ref_is_none(tr_msg_sender(fwd)));
    TU_ASSERT_OK(u64_to_rc(tu_recv_u64(e, R_FWD_RC, TU_PROMPT_MS)));
    /* The emptied original is freed by the runtime without the destructor;
     * the forwarded copy still owns the pointer. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, obs, T_SENDER, 0));
    (void)tu_recv_u64(e, R_DONE, TU_PROMPT_MS);
    assert_int_equal(atomic_load(&g_dtor_calls), 0);
    TU_ASSERT_OK(tr_msg_destroy(&fwd));
    assert_int_equal(atomic_load(&g_dtor_calls), 1);
    tu_env_finish(e);
    assert_int_equal(atomic_load(&g_dtor_calls), 1);
    assert_int_equal(atomic_load(&g_dtor_bad_magic), 0);
}

static void test_ptr_left_in_inbox_is_freed_once(void **state) {
    tu_env *e = *state;
    reset_counters();
    tu_env_init(e, 2);
    tu_spawn_keeper(e);
    tu_env_start(e);
    for (uint64_t i = 0; i < 3; i++) {
        payload *p = payload_new(i);
        tr_msg *m = tr_msg_new_ptr(T_PLAIN, p, sizeof *p, payload_free);
        assert_non_null(m);
        TU_ASSERT_OK(tr_runtime_send(e->rt, e->inbox_ref, &m));
    }
    assert_int_equal(atomic_load(&g_dtor_calls), 0);
    tu_env_finish(e); /* tr_inbox_destroy frees the three queued messages */
    assert_int_equal(atomic_load(&g_dtor_calls), 3);
    assert_int_equal(atomic_load(&g_dtor_bad_magic), 0);
}

/* "never copy the payload again after creation": a heap payload (more
 * than TR_MSG_INLINE bytes) keeps its address through a send and through
 * tr_forward; an inline payload lives in the message node, which the
 * runtime may re-home (the inbox does), so only its bytes are checked. */
static void test_sends_do_not_copy_payload(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref obs = spawn_observer(e);
    tu_env_start(e);

    for (size_t s = 0; s < N_SIZES; s++) {
        size_t n = k_sizes[s];
        uint8_t *src = malloc(n + 1);
        assert_non_null(src);
        fill_pattern(src, n, (uint8_t)(s + 100));

        /* Direct send to the inbox. */
        tr_msg *m = tr_msg_new_bytes(T_PLAIN, src, n);
        assert_non_null(m);
        size_t len = 0;
        const void *before = tr_msg_data(m, &len);
        TU_ASSERT_OK(tr_runtime_send(e->rt, e->inbox_ref, &m));
        assert_null(m);
        m = tu_recv(e, TU_PROMPT_MS);
        const void *after = tr_msg_data(m, &len);
        assert_int_equal(len, n);
        if (n > 0)
            check_pattern(after, n, (uint8_t)(s + 100));
        if (n > TR_MSG_INLINE)
            assert_ptr_equal(after, before); /* heap block moved, not copied */
        TU_ASSERT_OK(tr_msg_destroy(&m));

        /* Through an actor with tr_forward. */
        m = tr_msg_new_bytes(T_FORWARD, src, n);
        assert_non_null(m);
        before = tr_msg_data(m, &len);
        TU_ASSERT_OK(tr_runtime_send(e->rt, obs, &m));
        m = tu_recv(e, TU_PROMPT_MS);
        assert_int_equal(tr_msg_tag(m), T_FORWARD);
        assert_int_equal(tr_msg_kind(m), TR_PAYLOAD_BYTES);
        after = tr_msg_data(m, &len);
        assert_int_equal(len, n);
        if (n > 0)
            check_pattern(after, n, (uint8_t)(s + 100));
        if (n > TR_MSG_INLINE)
            assert_ptr_equal(after, before); /* heap block moved, not copied */
        TU_ASSERT_OK(tr_msg_destroy(&m));
        TU_ASSERT_OK(u64_to_rc(tu_recv_u64(e, R_FWD_RC, TU_PROMPT_MS)));
        free(src);
    }
    tu_env_finish(e);
}

static void test_sender_is_recorded(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref obs = spawn_observer(e);
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, obs, T_SENDER, 0));
    tr_msg *m = tu_recv(e, TU_PROMPT_MS);
    assert_int_equal(tr_msg_tag(m), R_DONE);
    assert_true(tr_msg_u64(m) == obs.id);
    assert_true(tr_ref_eq(tr_msg_sender(m), obs));
    TU_ASSERT_OK(tr_msg_destroy(&m));
    /* From outside an actor: no sender. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, e->inbox_ref, T_PLAIN, 1));
    m = tu_recv(e, TU_PROMPT_MS);
    assert_true(tr_ref_is_none(tr_msg_sender(m)));
    TU_ASSERT_OK(tr_msg_destroy(&m));
    tu_env_finish(e);
}

/* ---- misuse */

static void test_destroy_null(void **state) {
    (void)state;
    TU_ASSERT_RC(tr_msg_destroy(NULL), TR_EINVAL);
    tr_msg *none = NULL;
    TU_ASSERT_RC(tr_msg_destroy(&none), TR_EINVAL);
    assert_null(none);
}

static void test_double_destroy_via_alias(void **state) {
    (void)state;
    reset_counters();

    tr_msg *m = tr_msg_new_u64(1, 77);
    assert_non_null(m);
    tr_msg *alias = m;
    TU_ASSERT_OK(tr_msg_destroy(&m));
    assert_null(m);
    TU_ASSERT_RC(tr_msg_destroy(&alias), TR_EFREED);

    uint8_t big[4096];
    memset(big, 1, sizeof big);
    m = tr_msg_new_bytes(1, big, sizeof big);
    assert_non_null(m);
    alias = m;
    TU_ASSERT_OK(tr_msg_destroy(&m));
    TU_ASSERT_RC(tr_msg_destroy(&alias), TR_EFREED);

    payload *p = payload_new(9);
    m = tr_msg_new_ptr(1, p, sizeof *p, payload_free);
    assert_non_null(m);
    alias = m;
    TU_ASSERT_OK(tr_msg_destroy(&m));
    assert_int_equal(atomic_load(&g_dtor_calls), 1);
    TU_ASSERT_RC(tr_msg_destroy(&alias), TR_EFREED);
    /* The destructor must not run a second time. */
    assert_int_equal(atomic_load(&g_dtor_calls), 1);
    assert_int_equal(atomic_load(&g_dtor_bad_magic), 0);
}

static void test_destroy_or_resend_after_send(void **state) {
    tu_env *e = *state;
    reset_counters();
    tu_env_init(e, 2);
    tu_spawn_keeper(e);
    tu_env_start(e);

    /* The message sits in the inbox's queue (no one receives yet), so the
     * alias points at a live, sent message: neither destroy nor a second
     * send may touch it. */
    payload *p = payload_new(10);
    tr_msg *m = tr_msg_new_ptr(T_PLAIN, p, sizeof *p, payload_free);
    assert_non_null(m);
    tr_msg *alias = m;
    TU_ASSERT_OK(tr_runtime_send(e->rt, e->inbox_ref, &m));
    assert_null(m);
    TU_ASSERT_RC(tr_msg_destroy(&alias), TR_EFREED);
    tr_msg *got = tu_recv(e, TU_PROMPT_MS);
    assert_int_equal(tr_msg_kind(got), TR_PAYLOAD_PTR);
    size_t len = 0;
    assert_ptr_equal(tr_msg_data(got, &len), p);
    assert_int_equal(atomic_load(&g_dtor_calls), 0);
    TU_ASSERT_OK(tr_msg_destroy(&got));
    assert_int_equal(atomic_load(&g_dtor_calls), 1);

    /* A second send of an already sent message. */
    m = tr_msg_new_u64(T_PLAIN, 5);
    assert_non_null(m);
    alias = m;
    TU_ASSERT_OK(tr_runtime_send(e->rt, e->inbox_ref, &m));
    TU_ASSERT_RC(tr_runtime_send(e->rt, e->inbox_ref, &alias), TR_EFREED);
    assert_non_null(alias); /* failure: the caller's pointer is left alone */
    assert_int_equal(tu_recv_u64(e, T_PLAIN, TU_PROMPT_MS), 5);
    tu_expect_silence(e, 100); /* and it was delivered once */
    tu_env_finish(e);
    assert_int_equal(atomic_load(&g_dtor_calls), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_none_payload),
        cmocka_unit_test(test_u64_payload),
        cmocka_unit_test(test_bytes_payload_sizes),
        cmocka_unit_test(test_msgpack_payload_sizes),
        cmocka_unit_test(test_bytes_size_limits),
        cmocka_unit_test(test_ptr_destroy_runs_destructor_once),
        cmocka_unit_test(test_ptr_take),
        TU_TEST(test_ptr_handled_not_taken),
        TU_TEST(test_ptr_handled_and_taken),
        TU_TEST(test_ptr_forwarded_moves_ownership),
        TU_TEST(test_ptr_left_in_inbox_is_freed_once),
        TU_TEST(test_sends_do_not_copy_payload),
        TU_TEST(test_sender_is_recorded),
        cmocka_unit_test(test_destroy_null),
        cmocka_unit_test(test_double_destroy_via_alias),
        TU_TEST(test_destroy_or_resend_after_send),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
