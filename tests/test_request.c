/* test_request — request/reply, timeouts, late replies, misuse.
 *
 * A requester actor makes requests when told to by the main thread and
 * reports everything it receives to the inbox; responders echo (reply
 * 2 * value), stay silent, reply late (they block their worker for a while
 * first: a request can only be answered while it is being handled), or
 * call tr_reply on things that are not requests. */
#include "testutil.h"

enum {
    /* to the requester */
    T_REQUEST = 1, /* value = target index << 32 | payload */
    T_BURST,       /* value = number of concurrent requests to target 0 */
    T_MISUSE,
    /* requests and replies */
    T_REQ = 10,
    T_REP,
    T_PLAIN,
    /* reports */
    R_REQ_ID = 100,
    R_REQ_ERR,
    R_REPLY,
    R_REPLY_VAL,
    R_REPLY_FLAGS,
    R_TIMEOUT,
    R_TIMEOUT_CODE,
    R_OTHER,
    R_BURST_REPLIES,
    R_BURST_BAD,
    R_RC_DEAD,
    R_RC_NULL,
    R_RC_NULLPTR,
    R_KEPT,
    R_REPLIED_RC,
    R_NONREQ_RC,
    R_NONREQ_KEPT,
    R_REQ_FLAGS,
    R_FAILED,
    R_FAILED_CODE,
    R_LAST
};

static uint64_t rc64(int rc) { return (uint64_t)(int64_t)rc; }
static int rc_of(uint64_t v) { return (int)(int64_t)v; }

#define MAX_TARGETS 4
#define MAX_BURST 128

/* ---- requester */

typedef struct requester {
    tr_ref report_to;
    tr_ref targets[MAX_TARGETS];
    int64_t timeouts[MAX_TARGETS];
    /* burst state */
    uint32_t burst_n;
    uint32_t burst_replies;
    uint32_t burst_bad;
    uint64_t burst_ids[MAX_BURST];
} requester;

static int requester_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    requester *st = state;
    uint32_t tag = tr_msg_tag(msg);

    if (tag == T_REQUEST) {
        uint64_t v = tr_msg_u64(msg);
        uint32_t idx = (uint32_t)(v >> 32);
        tr_msg *req = tr_msg_new_u64(T_REQ, v & 0xFFFFFFFFu);
        uint64_t id = 0;
        int rc =
            tr_request(ctx, st->targets[idx], &req, st->timeouts[idx], &id);
        if (rc != 0) {
            tr_msg_destroy(&req);
            tu_report(ctx, st->report_to, R_REQ_ERR, rc64(rc));
        } else {
            tu_report(ctx, st->report_to, R_REQ_ID, id);
        }
        return 0;
    }

    if (tag == T_BURST) {
        st->burst_n = (uint32_t)tr_msg_u64(msg);
        st->burst_replies = 0;
        st->burst_bad = 0;
        for (uint32_t i = 0; i < st->burst_n; i++) {
            tr_msg *req = tr_msg_new_u64(T_REQ, 1000 + i);
            int rc = tr_request(ctx, st->targets[0], &req, st->timeouts[0],
                                &st->burst_ids[i]);
            if (rc != 0) {
                tr_msg_destroy(&req);
                st->burst_bad++;
            }
            for (uint32_t j = 0; j < i; j++) {
                if (st->burst_ids[j] == st->burst_ids[i])
                    st->burst_bad++; /* ids must be fresh */
            }
        }
        return 0;
    }

    if (tag == T_MISUSE) {
        /* to a dead/unknown actor: ENOACTOR, message kept */
        tr_msg *req = tr_msg_new_u64(T_REQ, 1);
        tr_ref ghost = {12345ull << 32};
        int rc = tr_request(ctx, ghost, &req, 100, NULL);
        tu_report(ctx, st->report_to, R_RC_DEAD, rc64(rc));
        tu_report(ctx, st->report_to, R_KEPT, req != NULL);
        tr_msg_destroy(&req);
        rc = tr_request(ctx, st->targets[0], NULL, 100, NULL);
        tu_report(ctx, st->report_to, R_RC_NULL, rc64(rc));
        tr_msg *none = NULL;
        rc = tr_request(ctx, st->targets[0], &none, 100, NULL);
        tu_report(ctx, st->report_to, R_RC_NULLPTR, rc64(rc));
        return 0;
    }

    if (tag == TR_TAG_REQUEST_FAILED) { /* delivered as the reply */
        tu_report(ctx, st->report_to, R_FAILED, tr_msg_request_id(msg));
        tu_report(ctx, st->report_to, R_FAILED_CODE, tr_msg_u64(msg));
        return 0;
    }

    if (tr_msg_is_reply(msg)) {
        uint64_t id = tr_msg_request_id(msg);
        uint64_t val = tr_msg_u64(msg);
        if (st->burst_n > 0) {
            bool ok = false;
            for (uint32_t i = 0; i < st->burst_n; i++) {
                if (st->burst_ids[i] == id) {
                    ok = val == 2u * (1000u + i);
                    st->burst_ids[i] = 0; /* a second reply would be bad */
                    break;
                }
            }
            if (!ok)
                st->burst_bad++;
            if (++st->burst_replies == st->burst_n) {
                tu_report(ctx, st->report_to, R_BURST_REPLIES,
                          st->burst_replies);
                tu_report(ctx, st->report_to, R_BURST_BAD, st->burst_bad);
                st->burst_n = 0;
            }
            return 0;
        }
        /* A reply is not a request: tr_reply on it is refused. */
        tr_msg *back = tr_msg_new(T_PLAIN);
        int rc = tr_reply(ctx, msg, &back);
        tr_msg_destroy(&back);
        tu_report(ctx, st->report_to, R_REPLY, id);
        tu_report(ctx, st->report_to, R_REPLY_VAL, val);
        tu_report(ctx, st->report_to, R_REPLY_FLAGS,
                  (uint64_t)tr_msg_is_request(msg) |
                      ((uint64_t)(rc == TR_ESTATE) << 1));
        return 0;
    }

    if (tag == TR_TAG_TIMEOUT) {
        tu_report(ctx, st->report_to, R_TIMEOUT, tr_msg_request_id(msg));
        tu_report(ctx, st->report_to, R_TIMEOUT_CODE, tr_msg_u64(msg));
        return 0;
    }

    tu_report(ctx, st->report_to, R_OTHER, tag);
    return 0;
}

static const tr_behavior requester_behavior = {
    .name = "requester",
    .handle = requester_handle,
    .state_size = sizeof(requester),
};

/* ---- responders */

typedef enum responder_mode {
    RESP_ECHO,   /* reply 2 * value at once */
    RESP_SILENT, /* never reply */
    RESP_SLOW,   /* block delay_ms, then reply */
    RESP_NONREQ, /* tr_reply on a plain message: ESTATE expected */
} responder_mode;

typedef struct responder {
    tr_ref report_to;
    responder_mode mode;
    int64_t delay_ms;
} responder;

static int responder_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    responder *st = state;
    bool is_req = tr_msg_is_request(msg);
    if (st->mode == RESP_NONREQ) {
        tr_msg *reply = tr_msg_new_u64(T_REP, 1);
        int rc = tr_reply(ctx, msg, &reply);
        tu_report(ctx, st->report_to, R_NONREQ_RC, rc64(rc));
        tu_report(ctx, st->report_to, R_NONREQ_KEPT, reply != NULL);
        if (reply != NULL)
            tr_msg_destroy(&reply);
        return 0;
    }
    if (!is_req || st->mode == RESP_SILENT)
        return 0;
    if (st->mode == RESP_SLOW) {
        /* report what a request looks like from the responder's side */
        tu_report(ctx, st->report_to, R_REQ_FLAGS,
                  (uint64_t)tr_msg_is_request(msg) |
                      ((uint64_t)tr_msg_is_reply(msg) << 1));
        tu_sleep_ms(st->delay_ms);
    }
    tr_msg *reply = tr_msg_new_u64(T_REP, 2 * tr_msg_u64(msg));
    int rc = tr_reply(ctx, msg, &reply);
    if (rc != 0)
        tr_msg_destroy(&reply);
    if (st->mode == RESP_SLOW)
        tu_report(ctx, st->report_to, R_REPLIED_RC, rc64(rc));
    return 0;
}

static const tr_behavior responder_behavior = {
    .name = "responder",
    .handle = responder_handle,
    .state_size = sizeof(responder),
};

/* ---- report collection: reports from several actors interleave */

typedef struct reports {
    uint32_t count[R_LAST];
    uint64_t value[R_LAST]; /* the last value seen per tag */
} reports;

static void collect_until(tu_env *e, reports *r, uint32_t tag, uint32_t n,
                          int64_t timeout_ms) {
    int64_t deadline = tu_now_ms() + timeout_ms;
    while (r->count[tag] < n) {
        int64_t left = deadline - tu_now_ms();
        tr_msg *m = tu_recv(e, left > 0 ? left : 0);
        uint32_t t = tr_msg_tag(m);
        uint64_t v = tr_msg_u64(m);
        tr_msg_destroy(&m);
        if (t < R_REQ_ID || t >= R_LAST)
            fail_msg("unexpected message tag 0x%" PRIx32 " at the inbox", t);
        r->count[t]++;
        r->value[t] = v;
        if (t == R_OTHER)
            fail_msg("requester got an unexpected message, tag 0x%" PRIx64, v);
        if (t == R_REQ_ERR)
            fail_msg("tr_request failed: %d (%s)", rc_of(v),
                     tu_err_text(rc_of(v)));
    }
}

static void drain_silence(tu_env *e, reports *r, int64_t ms) {
    tr_msg *m = NULL;
    while (tr_inbox_recv(e->inbox, ms, &m) == 0) {
        uint32_t t = tr_msg_tag(m);
        uint64_t v = tr_msg_u64(m);
        tr_msg_destroy(&m);
        if (t >= R_REQ_ID && t < R_LAST) {
            r->count[t]++;
            r->value[t] = v;
        }
        fail_msg("unexpected late message at the inbox: tag %" PRIu32
                 " value %" PRIu64,
                 t, v);
    }
}

static tr_ref spawn_responder(tu_env *e, responder_mode mode, int64_t delay) {
    responder init = {
        .report_to = e->inbox_ref, .mode = mode, .delay_ms = delay};
    tr_ref ref = TR_REF_NONE;
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &responder_behavior, &init, sizeof init, &ref));
    return ref;
}

static tr_ref spawn_requester(tu_env *e, const tr_ref *targets,
                              const int64_t *timeouts, uint32_t n) {
    requester init;
    memset(&init, 0, sizeof init);
    init.report_to = e->inbox_ref;
    for (uint32_t i = 0; i < n; i++) {
        init.targets[i] = targets[i];
        init.timeouts[i] = timeouts[i];
    }
    tr_ref ref = TR_REF_NONE;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &requester_behavior, &init,
                                  offsetof(requester, burst_n), &ref));
    return ref;
}

static void ask(tu_env *e, tr_ref requester_ref, uint32_t target,
                uint32_t payload) {
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, requester_ref, T_REQUEST,
                                     ((uint64_t)target << 32) | payload));
}

/* ---- tests */

static void test_request_reply_round_trip(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref echo = spawn_responder(e, RESP_ECHO, 0);
    const int64_t timeout = 300;
    tr_ref req = spawn_requester(e, &echo, &timeout, 1);
    tu_env_start(e);

    reports r = {0};
    ask(e, req, 0, 21);
    collect_until(e, &r, R_REPLY_FLAGS, 1, TU_PROMPT_MS);
    assert_int_equal(r.count[R_REQ_ID], 1);
    assert_true(r.value[R_REQ_ID] != 0);
    assert_int_equal(r.count[R_REPLY], 1);
    assert_true(r.value[R_REPLY] == r.value[R_REQ_ID]); /* matching id */
    assert_int_equal(r.value[R_REPLY_VAL], 42);
    /* is_request false on the reply; tr_reply on a reply is ESTATE */
    assert_int_equal(r.value[R_REPLY_FLAGS], 2);
    /* Exactly one outcome: no timeout after the reply (2x the timeout). */
    drain_silence(e, &r, 2 * timeout);
    assert_int_equal(r.count[R_TIMEOUT], 0);

    /* A second request gets a fresh id. */
    uint64_t first = r.value[R_REQ_ID];
    ask(e, req, 0, 50);
    collect_until(e, &r, R_REPLY_FLAGS, 2, TU_PROMPT_MS);
    assert_true(r.value[R_REQ_ID] != first);
    assert_true(r.value[R_REPLY] == r.value[R_REQ_ID]);
    assert_int_equal(r.value[R_REPLY_VAL], 100);
    tu_env_finish(e);
}

static void test_many_outstanding_requests_match(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref echo = spawn_responder(e, RESP_ECHO, 0);
    const int64_t no_timeout = -1;
    tr_ref req = spawn_requester(e, &echo, &no_timeout, 1);
    tu_env_start(e);
    for (int round = 0; round < 5; round++) {
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, req, T_BURST, MAX_BURST));
        assert_int_equal(tu_recv_u64(e, R_BURST_REPLIES, TU_PROMPT_MS),
                         MAX_BURST);
        assert_int_equal(tu_recv_u64(e, R_BURST_BAD, TU_PROMPT_MS), 0);
    }
    tu_env_finish(e);
}

static void test_request_timeout(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref silent = spawn_responder(e, RESP_SILENT, 0);
    const int64_t timeout = 100;
    tr_ref req = spawn_requester(e, &silent, &timeout, 1);
    tu_env_start(e);

    reports r = {0};
    int64_t t0 = tu_now_ms();
    ask(e, req, 0, 1);
    collect_until(e, &r, R_TIMEOUT_CODE, 1, TU_PROMPT_MS);
    int64_t elapsed = tu_now_ms() - t0;
    assert_int_equal(r.count[R_TIMEOUT], 1);
    assert_true(r.value[R_TIMEOUT] == r.value[R_REQ_ID]);
    TU_ASSERT_RC(rc_of(r.value[R_TIMEOUT_CODE]), TR_ETIMEDOUT);
    if (elapsed < timeout)
        fail_msg("timeout delivered after %lld ms, before %lld ms",
                 (long long)elapsed, (long long)timeout);
    drain_silence(e, &r, 300);
    assert_int_equal(r.count[R_REPLY], 0);
    tu_env_finish(e);
}

static void test_late_reply_is_discarded_and_counted(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref slow = spawn_responder(e, RESP_SLOW, 300);
    tr_ref echo = spawn_responder(e, RESP_ECHO, 0);
    tr_ref targets[2] = {slow, echo};
    const int64_t timeouts[2] = {50, 2000};
    tr_ref req = spawn_requester(e, targets, timeouts, 2);
    tu_env_start(e);
    tr_runtime_stats before = tu_stats(e);

    reports r = {0};
    ask(e, req, 0, 5);
    collect_until(e, &r, R_TIMEOUT_CODE, 1, TU_PROMPT_MS);
    uint64_t id = r.value[R_REQ_ID];
    assert_true(r.value[R_TIMEOUT] == id);
    TU_ASSERT_RC(rc_of(r.value[R_TIMEOUT_CODE]), TR_ETIMEDOUT);
    /* what the responder saw: a request, not a reply */
    assert_int_equal(r.count[R_REQ_FLAGS], 1);
    assert_int_equal(r.value[R_REQ_FLAGS], 1);

    /* The responder replies late; its tr_reply succeeds, the runtime drops
     * the reply at the requester and counts it. */
    collect_until(e, &r, R_REPLIED_RC, 1, TU_PROMPT_MS);
    TU_ASSERT_OK(rc_of(r.value[R_REPLIED_RC]));
    TU_ASSERT_EVENTUALLY(tu_stats(e).late_replies > before.late_replies,
                         TU_PROMPT_MS);
    drain_silence(e, &r, 300);
    assert_int_equal(r.count[R_REPLY], 0); /* the requester never saw it */
    assert_true(tu_stats(e).late_replies - before.late_replies == 1);

    /* The requester still works normally afterwards. */
    ask(e, req, 1, 8);
    collect_until(e, &r, R_REPLY_FLAGS, 1, TU_PROMPT_MS);
    assert_true(r.value[R_REPLY] == r.value[R_REQ_ID]);
    assert_true(r.value[R_REPLY] != id);
    assert_int_equal(r.value[R_REPLY_VAL], 16);
    tu_env_finish(e);
}

/* A late reply to request A arrives while request B (same requester) is
 * outstanding: it must not be taken for B's reply. */
static void test_late_reply_not_mistaken_for_next(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref slow_a = spawn_responder(e, RESP_SLOW, 300);
    tr_ref slow_b = spawn_responder(e, RESP_SLOW, 800);
    tr_ref targets[2] = {slow_a, slow_b};
    const int64_t timeouts[2] = {50, 3000};
    tr_ref req = spawn_requester(e, targets, timeouts, 2);
    tu_env_start(e);
    tr_runtime_stats before = tu_stats(e);

    reports r = {0};
    ask(e, req, 0, 3); /* A: times out at 50 ms, answered at ~300 ms */
    collect_until(e, &r, R_TIMEOUT_CODE, 1, TU_PROMPT_MS);
    uint64_t id_a = r.value[R_REQ_ID];
    assert_true(r.value[R_TIMEOUT] == id_a);
    ask(e, req, 1, 4); /* B: outstanding when A's reply lands */
    collect_until(e, &r, R_REQ_ID, 2, TU_PROMPT_MS);
    uint64_t id_b = r.value[R_REQ_ID];
    assert_true(id_b != id_a);
    collect_until(e, &r, R_REPLY_FLAGS, 1, TU_PROMPT_MS);
    assert_int_equal(r.count[R_REPLY], 1);
    assert_true(r.value[R_REPLY] == id_b);
    assert_int_equal(r.value[R_REPLY_VAL], 8); /* B's payload, not A's 6 */
    collect_until(e, &r, R_REPLIED_RC, 2, TU_PROMPT_MS);
    TU_ASSERT_OK(rc_of(r.value[R_REPLIED_RC]));
    TU_ASSERT_EVENTUALLY(tu_stats(e).late_replies > before.late_replies,
                         TU_PROMPT_MS);
    drain_silence(e, &r, 200);
    assert_true(tu_stats(e).late_replies - before.late_replies == 1);
    tu_env_finish(e);
}

static void test_reply_to_non_request(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref nonreq = spawn_responder(e, RESP_NONREQ, 0);
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, nonreq, T_PLAIN, 1));
    TU_ASSERT_RC(rc_of(tu_recv_u64(e, R_NONREQ_RC, TU_PROMPT_MS)), TR_ESTATE);
    /* failure: the caller keeps its reply message */
    assert_int_equal(tu_recv_u64(e, R_NONREQ_KEPT, TU_PROMPT_MS), 1);
    tu_env_finish(e);
}

static void test_request_misuse(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref echo = spawn_responder(e, RESP_ECHO, 0);
    const int64_t timeout = 100;
    tr_ref req = spawn_requester(e, &echo, &timeout, 1);
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, req, T_MISUSE, 0));
    TU_ASSERT_RC(rc_of(tu_recv_u64(e, R_RC_DEAD, TU_PROMPT_MS)), TR_ENOACTOR);
    assert_int_equal(tu_recv_u64(e, R_KEPT, TU_PROMPT_MS), 1);
    TU_ASSERT_RC(rc_of(tu_recv_u64(e, R_RC_NULL, TU_PROMPT_MS)), TR_EINVAL);
    TU_ASSERT_RC(rc_of(tu_recv_u64(e, R_RC_NULLPTR, TU_PROMPT_MS)), TR_EINVAL);
    /* A failed request sets up no timeout either. */
    tu_expect_silence(e, 300);
    /* Outside a handler there is no context. */
    tr_msg *m = tr_msg_new(T_REQ);
    int rc = tr_request(NULL, echo, &m, 100, NULL);
    assert_true(rc == TR_EINVAL || rc == TR_ENOCTX);
    assert_non_null(m);
    tr_msg_destroy(&m);
    tu_env_finish(e);
}

/* A request still queued when its target ends is failed back at once
 * (TR_TAG_REQUEST_FAILED), not left to its timeout. */
static void test_request_failed_when_target_ends(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref slow = spawn_responder(e, RESP_SLOW, 500);
    const int64_t timeout = 10000;
    tr_ref req = spawn_requester(e, &slow, &timeout, 1);
    tu_env_start(e);
    reports r = {0};
    ask(e, req, 0, 1);
    collect_until(e, &r, R_REQ_ID, 1, TU_PROMPT_MS);
    uint64_t first = r.value[R_REQ_ID];
    collect_until(e, &r, R_REQ_FLAGS, 1, TU_PROMPT_MS); /* it is busy */
    /* Cancelled while busy with the first; the second arrives after the
     * cancel, so it is never handled. */
    TU_ASSERT_OK(tr_cancel(e->rt, slow, TR_EXIT_CANCELLED, -1));
    ask(e, req, 0, 2);
    collect_until(e, &r, R_REQ_ID, 2, TU_PROMPT_MS);
    uint64_t second = r.value[R_REQ_ID];
    int64_t t0 = tu_now_ms();
    collect_until(e, &r, R_FAILED_CODE, 1, 3000);
    assert_true(tu_now_ms() - t0 < 3000); /* long before the 10 s timeout */
    assert_int_equal(r.value[R_FAILED], second);
    assert_int_equal(rc_of(r.value[R_FAILED_CODE]), TR_ENOACTOR);
    collect_until(e, &r, R_REPLY, 1, TU_PROMPT_MS); /* the first: answered */
    assert_int_equal(r.value[R_REPLY], first);
    assert_int_equal(r.count[R_TIMEOUT], 0);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_request_reply_round_trip),
        TU_TEST(test_many_outstanding_requests_match),
        TU_TEST(test_request_timeout),
        TU_TEST(test_late_reply_is_discarded_and_counted),
        TU_TEST(test_late_reply_not_mistaken_for_next),
        TU_TEST(test_reply_to_non_request),
        TU_TEST(test_request_misuse),
        TU_TEST(test_request_failed_when_target_ends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
