/* troupe — error codes.
 *
 * Every function that can fail returns int: 0 on success or a negative
 * TR_E* code. The table below generates the enum, tr_strerror() and
 * tr_err_name(), so the three can never disagree. */
#ifndef TROUPE_ERROR_H
#define TROUPE_ERROR_H

#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, message) */
#define TR_ERRNO_MAP(X)                                                        \
    X(EINVAL, -1, "invalid argument")                                          \
    X(ENOMEM, -2, "out of memory")                                             \
    X(ENOACTOR, -3, "no such actor (never existed or already dead)")           \
    X(ESTOPPED, -4, "runtime is stopping or stopped")                          \
    X(ETIMEDOUT, -5, "timed out")                                              \
    X(EAGAIN, -6, "resource temporarily unavailable (queue full)")             \
    X(ENOTFOUND, -7, "not found (already fired, cancelled or removed)")        \
    X(ESTATE, -8, "operation not valid in the current state")                  \
    X(ETOOBIG, -9, "message or payload too large")                             \
    X(EPROTO, -10, "malformed or unsupported data")                            \
    X(ESYS, -11, "system call failed (see log)")                               \
    X(ECANCELLED, -12, "cancelled")                                            \
    X(EFREED, -13, "message already freed or sent (double free/use)")          \
    X(ENOCTX, -14, "call needs an actor context (a handler)")                  \
    X(EPAYLOAD, -15, "payload kind does not match the accessor")               \
    X(ELOST, -16, "remote process or node lost")                               \
    X(EEXIST, -17, "already exists (name taken, already connected)")

typedef enum tr_errno {
#define TR__ERR_ENUM(name, val, msg) TR_##name = (val),
    TR_ERRNO_MAP(TR__ERR_ENUM)
#undef TR__ERR_ENUM
        TR_ERRNO_MIN = -18
} tr_errno;

/* Human-readable text for an error code (never NULL; "unknown error" for
 * values outside the table, "success" for 0). Any thread. */
TR_API const char *tr_strerror(int err);

/* Symbolic name ("TR_ENOACTOR") for an error code. Any thread. */
TR_API const char *tr_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif
