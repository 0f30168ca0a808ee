/* Debug mode: each report asyncio's debug=True would give, for actors.
 * The log sink captures the lines; the tests assert on what was reported
 * and that nothing is reported when debug mode is off. */
#include "testutil.h"

enum { T_WORK = 1, T_BLOCK, T_ODD, T_DONE };

static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_log[16384];
static size_t g_log_len;

static void sink(tr_log_level level, const char *line, void *arg) {
    (void)level;
    (void)arg;
    pthread_mutex_lock(&g_log_lock);
    size_t n = strlen(line);
    if (g_log_len + n + 2 < sizeof g_log) {
        memcpy(g_log + g_log_len, line, n);
        g_log_len += n;
        g_log[g_log_len++] = '\n';
        g_log[g_log_len] = 0;
    }
    pthread_mutex_unlock(&g_log_lock);
}

static bool log_has(const char *needle) {
    pthread_mutex_lock(&g_log_lock);
    bool found = strstr(g_log, needle) != NULL;
    pthread_mutex_unlock(&g_log_lock);
    return found;
}

static void log_reset(void) {
    pthread_mutex_lock(&g_log_lock);
    g_log_len = 0;
    g_log[0] = 0;
    pthread_mutex_unlock(&g_log_lock);
    tr_log_set_sink(sink, NULL);
}

typedef struct worker {
    tr_ref report;
} worker;

static int worker_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    worker *w = state;
    switch (tr_msg_tag(msg)) {
    case T_WORK:
        return 0;
    case T_BLOCK:
        tu_sleep_ms((int64_t)tr_msg_u64(msg)); /* blocks its worker */
        tu_report(ctx, w->report, T_DONE, 1);
        return 0;
    default:
        return TR_UNHANDLED;
    }
}

static const tr_behavior worker_beh = {.name = "dbg.worker",
                                       .handle = worker_handle,
                                       .state_size = sizeof(worker)};

static void start_debug_env(tu_env *e, bool debug) {
    log_reset();
    tr_runtime_config cfg = {.workers = 2,
                             .debug = debug,
                             .debug_block_ms = 50,
                             .debug_mailbox_warn = 100};
    tu_env_init_cfg(e, &cfg);
}

static void test_blocking_handler_is_named(void **state) {
    tu_env *e = *state;
    start_debug_env(e, true);
    worker init = {e->inbox_ref};
    tr_ref w;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &worker_beh, &init, sizeof init, &w));
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, w, T_BLOCK, 300));
    assert_int_equal(tu_recv_u64(e, T_DONE, TU_PROMPT_MS), 1);
    /* Reported while it blocked (monitor) and when it returned. */
    assert_true(log_has("is blocked in a handler of actor dbg.worker"));
    assert_true(log_has("actor dbg.worker"));
    assert_true(log_has("blocked worker"));
    tu_env_finish(e);
}

static void test_unhandled_dead_sends_and_deep_mailbox(void **state) {
    tu_env *e = *state;
    start_debug_env(e, true);
    worker init = {e->inbox_ref};
    tr_ref w, gone;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &worker_beh, &init, sizeof init, &w));
    TU_ASSERT_OK(
        tr_runtime_spawn(e->rt, &worker_beh, &init, sizeof init, &gone));
    /* A deep mailbox: queued before the workers start. */
    for (int i = 0; i < 500; i++)
        TU_ASSERT_OK(tr_runtime_send_u64(e->rt, w, T_WORK, 0));
    assert_true(tr_actor_mailbox_depth(e->rt, w) >= 500);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, w, T_ODD, 0));
    tu_env_start(e);
    TU_ASSERT_EVENTUALLY(tu_stats(e).unhandled == 1, TU_PROMPT_MS);
    TU_ASSERT_EVENTUALLY(tr_actor_mailbox_depth(e->rt, w) == 0, TU_PROMPT_MS);
    assert_true(log_has("did not handle a message with tag 0x3"));
    assert_true(log_has("mailbox of actor dbg.worker"));
    TU_ASSERT_OK(tr_kill(e->rt, gone));
    TU_ASSERT_EVENTUALLY(!tr_actor_alive(e->rt, gone), TU_PROMPT_MS);
    TU_ASSERT_RC(tr_runtime_send_u64(e->rt, gone, T_WORK, 0), TR_ENOACTOR);
    assert_true(log_has("to dead actor"));
    /* Still alive at shutdown: named. */
    TU_ASSERT_OK(tr_runtime_stop(e->rt));
    tu_env_finish(e);
    assert_true(log_has("dbg.worker (slot"));
    assert_true(log_has("still alive at shutdown"));
}

static void test_quiet_without_debug(void **state) {
    tu_env *e = *state;
    start_debug_env(e, false);
    worker init = {e->inbox_ref};
    tr_ref w;
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &worker_beh, &init, sizeof init, &w));
    assert_int_equal(tr_actor_mailbox_depth(e->rt, w), -1); /* not tracked */
    tu_env_start(e);
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, w, T_ODD, 0));
    TU_ASSERT_OK(tr_runtime_send_u64(e->rt, w, T_BLOCK, 120));
    assert_int_equal(tu_recv_u64(e, T_DONE, TU_PROMPT_MS), 1);
    /* Counted, not logged. */
    assert_int_equal(tu_stats(e).unhandled, 1);
    assert_false(log_has("debug:"));
    tu_env_finish(e);
    tr_log_set_sink(NULL, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_blocking_handler_is_named),
        TU_TEST(test_unhandled_dead_sends_and_deep_mailbox),
        TU_TEST(test_quiet_without_debug),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
