/* troupe — timers.
 *
 * A timer delivers a message to an actor at a time on the monotonic clock
 * (tr_now_ms). Timers are owned by the runtime's reactor thread; adding and
 * cancelling are O(log n) in a 4-ary heap and take a short lock. */
#ifndef TROUPE_TIMER_H
#define TROUPE_TIMER_H

#include <stdint.h>

#include "actor.h"
#include "export.h"
#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tr_timer_id {
    uint64_t id; /* 0 = none */
} tr_timer_id;

/* Delivers *msg to `to` after delay_ms (send_after) or at deadline_ms on
 * tr_now_ms's clock (send_at). Takes *msg on success. out may be NULL.
 * Any thread. Errors: TR_EINVAL, TR_ENOMEM, TR_ESTOPPED. */
TR_API int tr_send_after(tr_runtime *rt, tr_ref to, int64_t delay_ms,
                         tr_msg **msg, tr_timer_id *out);
TR_API int tr_send_at(tr_runtime *rt, tr_ref to, int64_t deadline_ms,
                      tr_msg **msg, tr_timer_id *out);

/* Delivers a fresh U64 message (tag, value = tick number from 1) every
 * period_ms until cancelled or until `to` is dead. period_ms >= 1. */
TR_API int tr_send_every(tr_runtime *rt, tr_ref to, int64_t period_ms,
                         uint32_t tag, tr_timer_id *out);

/* Cancels a pending timer: 0 if it was cancelled before firing (its message
 * is freed), TR_ENOTFOUND if it already fired or was cancelled. A periodic
 * timer is stopped; no tick is delivered after 0 is returned. */
TR_API int tr_timer_cancel(tr_runtime *rt, tr_timer_id id);

#ifdef __cplusplus
}
#endif
#endif
