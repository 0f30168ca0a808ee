/* Cancellation travels with a request: when the requester's timeout fires
 * first, a request still queued at the target is dropped (never handled);
 * one already being handled completes, and its late reply is discarded. */
#include "testutil.h"

enum { T_BLOCK = 1, T_ASK, T_HANDLED, T_TIMEOUT_SEEN, T_GO };

typedef struct server {
    tr_ref report;
} server;

static int server_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    server *s = st;
    if (tr_msg_tag(m) == T_BLOCK) {
        tu_sleep_ms((int64_t)tr_msg_u64(m)); /* busy: requests queue up */
        return 0;
    }
    tu_report(ctx, s->report, T_HANDLED, tr_msg_u64(m));
    if (tr_msg_is_request(m)) {
        tr_msg *r = tr_msg_new_u64(T_ASK, 1);
        return tr_reply(ctx, m, &r);
    }
    return 0;
}

static const tr_behavior server_beh = {.name = "server",
                                       .handle = server_handle,
                                       .state_size = sizeof(server)};

typedef struct asker {
    tr_ref server, report;
} asker;

static int asker_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    asker *a = st;
    if (tr_msg_tag(m) == T_GO) {
        tr_msg *q = tr_msg_new_u64(T_ASK, tr_msg_u64(m));
        return tr_request(ctx, a->server, &q, 100, NULL);
    }
    if (tr_msg_tag(m) == TR_TAG_TIMEOUT)
        tu_report(ctx, a->report, T_TIMEOUT_SEEN, tr_msg_request_id(m));
    return 0;
}

static const tr_behavior asker_beh = {.name = "asker",
                                      .handle = asker_handle,
                                      .state_size = sizeof(asker)};

static void test_queued_request_dropped_after_timeout(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    server si = {e->inbox_ref};
    tr_ref srv, ask;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &server_beh, &si, sizeof si, &srv));
    asker ai = {srv, e->inbox_ref};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &asker_beh, &ai, sizeof ai, &ask));
    tu_env_start(e);
    tr_runtime_stats before = tu_stats(e);
    /* The server is busy for 600 ms; the request (timeout 100 ms) waits
     * behind that and times out first. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, srv, T_BLOCK, 600));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, ask, T_GO, 42));
    assert_true(tu_recv_u64(e, T_TIMEOUT_SEEN, TU_PROMPT_MS) > 0);
    /* The server never handles it: no T_HANDLED, no late reply. */
    tu_expect_silence(e, 900);
    tr_runtime_stats after = tu_stats(e);
    assert_int_equal(after.late_replies - before.late_replies, 0);
    assert_true(after.dead_letters - before.dead_letters >= 1);
    /* A request that is in time is still served. */
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, ask, T_GO, 7));
    assert_int_equal(tu_recv_u64(e, T_HANDLED, TU_PROMPT_MS), 7);
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_queued_request_dropped_after_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
