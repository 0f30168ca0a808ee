/* Internal logging: one sink, level filter, rate limit per call site is the
 * caller's business (see tr__log_sampled). */
#ifndef TR_RUNTIME_LOG_H
#define TR_RUNTIME_LOG_H

#include <stdatomic.h>
#include <stdint.h>

#include "troupe/log.h"

void tr__log(tr_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int tr__log_enabled(tr_log_level level);

/* Logs the 1st, 2nd, 4th, 8th... occurrence counted in *counter, so a flood
 * of the same event (dead letters) cannot flood the log. */
#define tr__log_sampled(counter, level, ...)                                   \
    do {                                                                       \
        uint64_t tr__n_ =                                                      \
            atomic_fetch_add_explicit((counter), 1, memory_order_relaxed) + 1; \
        if ((tr__n_ & (tr__n_ - 1)) == 0)                                      \
            tr__log((level), __VA_ARGS__);                                     \
    } while (0)

#endif
