/* test_channel — channels (troupe/channel.h): several producers and
 * consumers, every item delivered once, per-producer order kept, every
 * consumer sees the end of the stream once all producers closed (or
 * ended); a full channel mutes its producers, not its consumers. */
#include "testutil.h"

#include "troupe/channel.h"

enum { T_ITEM = 1, T_NEXT, T_DONE, T_GOT };

#define NPROD 3
#define PER 200
#define PER_MAX 2000

typedef struct prod {
    tr_ref ch;
    uint32_t id, sent, n;
    bool no_close; /* end without closing */
} prod;

static int prod_start(tr_ctx *ctx, void *st) {
    prod *p = st;
    int rc = tr_channel_open(ctx, p->ch);
    return rc != 0 ? rc : tr_send_tag(ctx, tr_self(ctx), T_NEXT);
}

static int prod_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    prod *p = st;
    (void)m;
    for (int i = 0; i < 10 && p->sent < p->n; i++) {
        tr_msg *it = tr_msg_new_u64(T_ITEM, p->id * 100000u + p->sent++);
        int rc = tr_channel_put(ctx, p->ch, &it);
        if (rc != 0)
            return rc;
    }
    if (p->sent < p->n)
        return tr_send_tag(ctx, tr_self(ctx), T_NEXT);
    if (!p->no_close) {
        int rc = tr_channel_close(ctx, p->ch);
        if (rc != 0)
            return rc;
    }
    return TR_STOP;
}

static const tr_behavior prod_beh = {.name = "prod",
                                     .handle = prod_handle,
                                     .on_start = prod_start,
                                     .state_size = sizeof(prod)};

/* Takes until CLOSED; checks per-producer order; reports each item
 * (T_GOT) and its count at the end (T_DONE). */
typedef struct cons {
    tr_ref ch, report;
    uint32_t work_us, got;
    uint64_t last[NPROD];
} cons;

static int cons_start(tr_ctx *ctx, void *st) {
    cons *c = st;
    for (int i = 0; i < NPROD; i++)
        c->last[i] = UINT64_MAX;
    return tr_channel_take(ctx, c->ch);
}

static int cons_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    cons *c = st;
    if (tr_msg_tag(m) == TR_TAG_CHANNEL_CLOSED) {
        tu_report(ctx, c->report, T_DONE, c->got);
        return TR_STOP;
    }
    if (tr_msg_tag(m) != T_ITEM)
        return TR_UNHANDLED;
    uint64_t v = tr_msg_u64(m);
    uint32_t pid = (uint32_t)(v / 100000u);
    if (pid >= NPROD ||
        (c->last[pid] != UINT64_MAX && v <= c->last[pid]))
        return TR_EPROTO; /* out of order for its producer */
    c->last[pid] = v;
    c->got++;
    tu_report(ctx, c->report, T_GOT, v);
    if (c->work_us > 0)
        usleep(c->work_us);
    return tr_channel_take(ctx, c->ch);
}

static const tr_behavior cons_beh = {.name = "cons",
                                     .handle = cons_handle,
                                     .on_start = cons_start,
                                     .state_size = sizeof(cons)};

static void run(tu_env *e, uint32_t capacity, uint32_t work_us,
                bool one_dies, uint32_t per) {
    tu_env_init(e, 2);
    tr_ref ch;
    TU_ASSERT_RC(tr_runtime_channel_spawn(e->rt, 0, &ch), TR_EINVAL);
    TU_ASSERT_OK(tr_runtime_channel_spawn(e->rt, capacity, &ch));
    for (uint32_t i = 0; i < 2; i++)
        TU_ASSERT_OK(tr_runtime_spawn(
            e->rt, &cons_beh,
            &(cons){.ch = ch, .report = e->inbox_ref, .work_us = work_us},
            sizeof(cons), NULL));
    for (uint32_t i = 0; i < NPROD; i++)
        TU_ASSERT_OK(tr_runtime_spawn(
            e->rt, &prod_beh,
            &(prod){.ch = ch,
                    .id = i,
                    .n = per,
                    .no_close = one_dies && i == 0},
            sizeof(prod), NULL));
    tu_env_start(e);
    static uint8_t seen[NPROD][PER_MAX];
    memset(seen, 0, sizeof seen);
    uint32_t done = 0, total = 0, got = 0;
    while (done < 2) {
        tr_msg *m = tu_recv(e, 20000);
        uint64_t v = tr_msg_u64(m);
        if (tr_msg_tag(m) == T_GOT) {
            uint32_t pid = (uint32_t)(v / 100000u), k = (uint32_t)(v % 100000u);
            assert_true(pid < NPROD && k < per);
            assert_int_equal(seen[pid][k], 0); /* once */
            seen[pid][k] = 1;
            got++;
        } else {
            assert_int_equal(tr_msg_tag(m), T_DONE);
            total += (uint32_t)v;
            done++;
        }
        tr_msg_destroy(&m);
    }
    assert_int_equal(total, NPROD * per); /* both saw the end, nothing lost */
    assert_int_equal(got, NPROD * per);
    /* A small buffer and many items: a producer's turn (up to a batch of
     * its own messages, 10 puts each) cannot put them all before the
     * channel, full, mutes it. */
    if (capacity < 100)
        assert_true(tu_stats(e).muted > 0);
    TU_ASSERT_OK(tr_cancel(e->rt, ch, TR_EXIT_CANCELLED, -1));
    tu_env_finish(e);
}

static void test_mpmc_end_of_stream(void **state) {
    run(*state, 1000, 0, false, PER);
}

static void test_producer_ending_counts_as_closed(void **state) {
    run(*state, 1000, 0, true, PER);
}

static void test_full_channel_mutes_producers_not_consumers(void **state) {
    tu_env *e = *state;
    run(e, 8, 20, false, PER_MAX);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        TU_TEST(test_mpmc_end_of_stream),
        TU_TEST(test_producer_ending_counts_as_closed),
        TU_TEST(test_full_channel_mutes_producers_not_consumers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
