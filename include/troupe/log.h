/* troupe — logging. The runtime logs errors it handles (bad input, dead
 * letters in debug, failed syscalls) through one sink. Default: stderr,
 * level from the TROUPE_LOG environment variable (error|warn|info|debug),
 * default warn. */
#ifndef TROUPE_LOG_H
#define TROUPE_LOG_H

#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tr_log_level {
    TR_LOG_ERROR = 0,
    TR_LOG_WARN = 1,
    TR_LOG_INFO = 2,
    TR_LOG_DEBUG = 3
} tr_log_level;

typedef void (*tr_log_fn)(tr_log_level level, const char *line, void *arg);

/* Replaces the sink (NULL restores stderr). Any thread; takes effect for
 * lines logged after it returns. */
TR_API void tr_log_set_sink(tr_log_fn fn, void *arg);
TR_API void tr_log_set_level(tr_log_level level);

#ifdef __cplusplus
}
#endif
#endif
