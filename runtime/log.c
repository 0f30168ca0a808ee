/* Logging sink. The level is read once from TROUPE_LOG, lazily. */
#include "runtime/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "troupe/export.h"

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* -1 = not read yet. Relaxed: a racing first read computes the same value. */
static _Atomic int log_level = -1;
static _Atomic(tr_log_fn) log_sink;
static void *_Atomic log_sink_arg;

static int level_from_env(void) {
    const char *s = getenv("TROUPE_LOG");
    if (s == NULL)
        return TR_LOG_WARN;
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return TR_LOG_WARN;
}

int tr__log_enabled(tr_log_level level) {
    int l = atomic_load_explicit(&log_level, memory_order_relaxed);
    if (l < 0) {
        l = level_from_env();
        atomic_store_explicit(&log_level, l, memory_order_relaxed);
    }
    return (int)level <= l;
}

TR_API void tr_log_set_level(tr_log_level level) {
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

TR_API void tr_log_set_sink(tr_log_fn fn, void *arg) {
    /* Release pairs with the acquire in tr__log: a sink sees its arg. */
    atomic_store_explicit(&log_sink_arg, arg, memory_order_relaxed);
    atomic_store_explicit(&log_sink, fn, memory_order_release);
}

void tr__log(tr_log_level level, const char *fmt, ...) {
    if (!tr__log_enabled(level))
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    tr_log_fn fn = atomic_load_explicit(&log_sink, memory_order_acquire);
    if (fn != NULL) {
        fn(level, line,
           atomic_load_explicit(&log_sink_arg, memory_order_relaxed));
        return;
    }
    fprintf(stderr, "troupe %s: %s\n", level_names[level], line);
}
