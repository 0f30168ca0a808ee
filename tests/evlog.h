/* tests/evlog.h: an inbox event log shared by the task-group and scope
 * tests. Include after testutil.h. */
#ifndef TROUPE_TEST_EVLOG_H
#define TROUPE_TEST_EVLOG_H

/* ---- inbox bookkeeping
 *
 * Reports from different actors may reach the inbox in any order unless
 * one causes the other, so tests do not read the inbox in a fixed order:
 * every message goes into an event log, in arrival order, and a test takes
 * the events it expects (waiting, bounded, for those not there yet) and
 * compares their positions where the order is guaranteed. */

#define EV_MAX 128

typedef struct ev {
    uint32_t tag;
    uint64_t value;
    tr_msg *msg; /* kept when not a U64/NONE message, until taken */
    bool used;
} ev;

typedef struct ev_log {
    tu_env *e;
    ev ev[EV_MAX];
    size_t n;
} ev_log;

static void ev_pull(ev_log *l, uint32_t want, int64_t deadline) {
    int64_t left = deadline - tu_now_ms();
    tr_msg *m = NULL;
    int rc = tr_inbox_recv(l->e->inbox, left > 0 ? left : 0, &m);
    if (rc == TR_ETIMEDOUT)
        fail_msg("no message with tag 0x%x within %d ms (%zu logged)", want,
                 TU_PROMPT_MS, l->n);
    TU_ASSERT_OK(rc);
    if (l->n == EV_MAX)
        fail_msg("event log full");
    ev *v = &l->ev[l->n++];
    v->tag = tr_msg_tag(m);
    v->value = tr_msg_u64(m);
    v->used = false;
    v->msg = NULL;
    if (tr_msg_kind(m) == TR_PAYLOAD_U64 || tr_msg_kind(m) == TR_PAYLOAD_NONE)
        TU_ASSERT_OK(tr_msg_destroy(&m));
    else
        v->msg = m;
}

/* Position of the first unused event with this tag and (value & mask),
 * waiting for it if needed; marks it used. */
static size_t ev_find(ev_log *l, uint32_t tag, uint64_t value, uint64_t mask) {
    int64_t deadline = tu_now_ms() + TU_PROMPT_MS;
    for (size_t i = 0;; i++) {
        if (i == l->n)
            ev_pull(l, tag, deadline);
        ev *v = &l->ev[i];
        if (!v->used && v->tag == tag && (v->value & mask) == (value & mask)) {
            v->used = true;
            return i;
        }
    }
}

static uint64_t ev_u64(ev_log *l, uint32_t tag) {
    return l->ev[ev_find(l, tag, 0, 0)].value;
}

/* The next message with this tag; the caller owns it. *pos (may be NULL)
 * is its position. */
static tr_msg *ev_msg(ev_log *l, uint32_t tag, size_t *pos) {
    size_t i = ev_find(l, tag, 0, 0);
    tr_msg *m = l->ev[i].msg;
    l->ev[i].msg = NULL;
    if (m == NULL)
        fail_msg("message with tag 0x%x has no payload", tag);
    if (pos != NULL)
        *pos = i;
    return m;
}

/* Events with this tag logged so far (taken or not). */
static size_t ev_count(const ev_log *l, uint32_t tag) {
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        n += l->ev[i].tag == tag;
    return n;
}

static void ev_free(ev_log *l) {
    for (size_t i = 0; i < l->n; i++)
        if (l->ev[i].msg != NULL)
            TU_ASSERT_OK(tr_msg_destroy(&l->ev[i].msg));
    l->n = 0;
}

#endif
