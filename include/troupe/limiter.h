/* troupe — capacity limiters (semaphores) and token-bucket rate limiters,
 * as actors.
 *
 * A limiter is an actor that many actors share. tr_limiter_acquire asks it
 * for one permit; the permit arrives as a message, TR_TAG_LIMIT_GRANT,
 * whose u64 is the cookie given to acquire (nothing blocks a scheduler
 * thread: the asking actor handles other messages meanwhile). Waiters are
 * served first come, first served.
 *
 *   capacity limiter  at most `capacity` permits out at once; a holder
 *                     gives one back with tr_limiter_release. The limiter
 *                     monitors holders and waiters: a holder that ends
 *                     without releasing gives its permits back, a waiter
 *                     that ends leaves the line (nothing leaks).
 *   rate limiter      `per_second` permits per second, up to `burst` at
 *                     once (a token bucket); permits are not given back
 *                     (tr_limiter_release is a no-op).
 *
 * Across processes: actors of worker processes use a limiter of the main
 * process through a proxy (tr_main_lookup) as local ones do; one whose
 * process dies gives its permits back (its proxy ends). */
#ifndef TROUPE_LIMITER_H
#define TROUPE_LIMITER_H

#include <stdint.h>

#include "actor.h"
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tags 0xFFFF0700..0xFFFF07FF belong to limiters. */
#define TR_TAG_LIMIT_GRANT 0xFFFF0700u

/* A capacity limiter (capacity >= 1): a child of the caller's actor
 * (tr_limiter_spawn) or top-level (tr_runtime_limiter_spawn). */
TR_API int tr_limiter_spawn(tr_ctx *ctx, uint32_t capacity, tr_ref *out);
TR_API int tr_runtime_limiter_spawn(tr_runtime *rt, uint32_t capacity,
                                    tr_ref *out);
/* A token-bucket rate limiter (per_second > 0, burst >= 1). */
TR_API int tr_rate_limiter_spawn(tr_ctx *ctx, double per_second,
                                 uint32_t burst, tr_ref *out);
TR_API int tr_runtime_rate_limiter_spawn(tr_runtime *rt, double per_second,
                                         uint32_t burst, tr_ref *out);

/* Asks for one permit; it arrives as TR_TAG_LIMIT_GRANT (u64 = cookie).
 * Handler only (TR_ENOCTX otherwise). */
TR_API int tr_limiter_acquire(tr_ctx *ctx, tr_ref limiter, uint64_t cookie);
/* Gives one permit back (capacity limiters). */
TR_API int tr_limiter_release(tr_ctx *ctx, tr_ref limiter);

#ifdef __cplusplus
}
#endif
#endif
