/* test_limiter — capacity limiter (never more than capacity permits out,
 * first come first served, a holder that ends gives its permit back) and
 * token-bucket rate limiter (burst at once, then the rate). */
#include "testutil.h"

#include "troupe/limiter.h"

enum { T_GO = 1, T_GOT, T_DONE, T_HOLD_END };

static _Atomic int in_use, max_in_use;

/* Asks for `n` permits (cookies 0..n-1) at once; on each grant reports
 * T_GOT cookie, holds it `hold_ms`, gives it back (unless `keep`). */
typedef struct user {
    tr_ref lim, report;
    uint32_t n, hold_ms;
    bool keep;
    uint32_t got;
} user;

static int user_start(tr_ctx *ctx, void *st) {
    user *u = st;
    for (uint32_t i = 0; i < u->n; i++) {
        int rc = tr_limiter_acquire(ctx, u->lim, i);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int user_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    user *u = st;
    switch (tr_msg_tag(m)) {
    case TR_TAG_LIMIT_GRANT: {
        int now = atomic_fetch_add(&in_use, 1) + 1;
        int prev = atomic_load(&max_in_use);
        while (now > prev && !atomic_compare_exchange_weak(&max_in_use, &prev,
                                                           now))
            ;
        tu_report(ctx, u->report, T_GOT, tr_msg_u64(m));
        if (u->keep)
            return 0;
        tr_msg *t = tr_msg_new(T_HOLD_END);
        return tr_send_after(tr_ctx_runtime(ctx), tr_self(ctx), u->hold_ms,
                             &t, NULL);
    }
    case T_HOLD_END:
        atomic_fetch_sub(&in_use, 1);
        if (++u->got == u->n) {
            tu_report(ctx, u->report, T_DONE, u->got);
            int rc = tr_limiter_release(ctx, u->lim);
            return rc != 0 ? rc : TR_STOP;
        }
        return tr_limiter_release(ctx, u->lim);
    default:
        return TR_UNHANDLED;
    }
}

static const tr_behavior user_beh = {.name = "user",
                                     .handle = user_handle,
                                     .on_start = user_start,
                                     .state_size = sizeof(user)};

static void test_capacity_bound_and_fifo(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    atomic_store(&in_use, 0);
    atomic_store(&max_in_use, 0);
    tr_ref lim;
    TU_ASSERT_RC(tr_runtime_limiter_spawn(e->rt, 0, &lim), TR_EINVAL);
    TU_ASSERT_OK(tr_runtime_limiter_spawn(e->rt, 2, &lim));
    /* One user asking 6 times: the grants come in request order. */
    user u = {.lim = lim, .report = e->inbox_ref, .n = 6, .hold_ms = 20};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &user_beh, &u, sizeof u, NULL));
    /* Three more users competing. */
    for (int i = 0; i < 3; i++)
        TU_ASSERT_OK(tr_runtime_spawn(e->rt, &user_beh,
                                      &(user){.lim = lim,
                                              .report = e->inbox_ref,
                                              .n = 3,
                                              .hold_ms = 5},
                                      sizeof(user), NULL));
    tu_env_start(e);
    uint32_t done = 0, got = 0;
    while (done < 4) {
        tr_msg *m = tu_recv(e, TU_PROMPT_MS);
        if (tr_msg_tag(m) == T_DONE)
            done++;
        else if (tr_msg_tag(m) == T_GOT)
            got++;
        tr_msg_destroy(&m);
    }
    assert_int_equal(got, 6 + 9);
    assert_int_equal(atomic_load(&max_in_use), 2); /* never more */
    TU_ASSERT_OK(tr_cancel(e->rt, lim, TR_EXIT_CANCELLED, -1));
    tu_env_finish(e);
}

static void test_grants_in_request_order(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref lim;
    TU_ASSERT_OK(tr_runtime_limiter_spawn(e->rt, 1, &lim));
    user u = {.lim = lim, .report = e->inbox_ref, .n = 8, .hold_ms = 1};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &user_beh, &u, sizeof u, NULL));
    tu_env_start(e);
    for (uint64_t i = 0; i < 8; i++)
        assert_int_equal(tu_recv_u64(e, T_GOT, TU_PROMPT_MS), i);
    assert_int_equal(tu_recv_u64(e, T_DONE, TU_PROMPT_MS), 8);
    TU_ASSERT_OK(tr_cancel(e->rt, lim, TR_EXIT_CANCELLED, -1));
    tu_env_finish(e);
}

/* A holder that ends without releasing gives its permit back. */
static void test_holder_end_returns_permit(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref lim, a;
    TU_ASSERT_OK(tr_runtime_limiter_spawn(e->rt, 1, &lim));
    user ua = {.lim = lim, .report = e->inbox_ref, .n = 1, .keep = true};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &user_beh, &ua, sizeof ua, &a));
    tu_env_start(e);
    assert_int_equal(tu_recv_u64(e, T_GOT, TU_PROMPT_MS), 0);
    user ub = {.lim = lim, .report = e->inbox_ref, .n = 1, .hold_ms = 1};
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &user_beh, &ub, sizeof ub, NULL));
    tu_expect_silence(e, 100); /* a holds the only permit */
    TU_ASSERT_OK(tr_cancel(e->rt, a, TR_EXIT_CANCELLED, -1));
    assert_int_equal(tu_recv_u64(e, T_GOT, TU_PROMPT_MS), 0); /* b's turn */
    assert_int_equal(tu_recv_u64(e, T_DONE, TU_PROMPT_MS), 1);
    TU_ASSERT_OK(tr_cancel(e->rt, lim, TR_EXIT_CANCELLED, -1));
    tu_env_finish(e);
}

/* 100 per second, burst 5: 20 permits take at least (20 - 5) / 100 s. */
static void test_rate_limiter(void **state) {
    tu_env *e = *state;
    tu_env_init(e, 2);
    tr_ref lim;
    TU_ASSERT_RC(tr_runtime_rate_limiter_spawn(e->rt, 0.0, 5, &lim),
                 TR_EINVAL);
    TU_ASSERT_OK(tr_runtime_rate_limiter_spawn(e->rt, 100.0, 5, &lim));
    user u = {.lim = lim, .report = e->inbox_ref, .n = 20, .keep = true};
    int64_t t0 = tu_now_ms();
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &user_beh, &u, sizeof u, NULL));
    tu_env_start(e);
    for (uint64_t i = 0; i < 20; i++)
        assert_int_equal(tu_recv_u64(e, T_GOT, TU_PROMPT_MS), i);
    int64_t took = tu_now_ms() - t0;
    assert_true(took >= 140); /* a lower bound only: the rate held */
    TU_ASSERT_OK(tr_cancel(e->rt, lim, TR_EXIT_CANCELLED, -1));
    tu_env_finish(e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_capacity_bound_and_fifo),
        TU_TEST(test_grants_in_request_order),
        TU_TEST(test_holder_end_returns_permit),
        TU_TEST(test_rate_limiter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
