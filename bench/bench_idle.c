/* bench_idle.c — workload 8 of the peers' README: N idle actors, their
 * memory as the kernel sees it (peak RSS growth / N), then one stop each. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* ---- 8. idle ----------------------------------------------------------------
 */

/* What every idle actor shares, instead of a copy in each one's state: the
 * actors have no state at all, which is the point of the workload. */
static struct {
    tr_ref main;
    uint64_t n;
    atomic_uint_fast64_t started;
} g_idle;

static int idle_on_start(tr_ctx *ctx, void *state) {
    (void)state;
    /* relaxed: only the count matters; the ready message that follows is
     * what main synchronizes with. */
    uint64_t started =
        atomic_fetch_add_explicit(&g_idle.started, 1, memory_order_relaxed) + 1;
    if (started != g_idle.n)
        return 0;
    int rc = tr_send_tag(ctx, g_idle.main, TAG_READY);
    return rc < 0 ? bench_actor_fail(rc, "idle: send ready") : 0;
}

static int idle_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)state;
    if (tr_msg_tag(msg) != TAG_STOP)
        return bench_unexpected("idle", msg);
    int rc = tr_send_u64(ctx, g_idle.main, TAG_ACK, 1);
    return rc < 0 ? bench_actor_fail(rc, "idle: send ack") : TR_STOP;
}

static const tr_behavior idle_behavior = {
    .name = "bench.idle",
    .handle = idle_handle,
    .on_start = idle_on_start,
};

/* A field of /proc/self/status in KiB ("VmRSS", "VmHWM"); -1 if unreadable. */
static long long status_kib(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    char line[256];
    long long kib = -1;
    size_t len = strlen(field);
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, len) == 0 && line[len] == ':')
            kib = atoll(line + len + 1);
    fclose(f);
    return kib;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0). */
static void reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f != NULL) {
        fputs("5", f);
        fclose(f);
    }
}

void bench_idle(bench_env *env, uint64_t n) {
    g_idle.main = env->main;
    g_idle.n = n;
    atomic_init(&g_idle.started, 0);

    reset_peak_rss();
    long long before = status_kib("VmRSS");
    double t0 = bench_now();
    /* main's handle to each actor: counted in the memory, as the peers'
     * vectors/lists of actors are. */
    tr_ref *actors = malloc(n * sizeof *actors);
    if (actors == NULL) {
        fprintf(stderr, "troupe_bench: out of memory\n");
        exit(1);
    }
    for (uint64_t i = 0; i < n; i++)
        bench_must(
            tr_runtime_spawn(env->rt, &idle_behavior, NULL, 0, &actors[i]),
            "spawn idle actor");
    (void)bench_recv_u64(env, TAG_READY);
    double t1 = bench_now();
    long long after = status_kib("VmRSS");
    long long peak = status_kib("VmHWM");

    for (uint64_t i = 0; i < n; i++)
        bench_must(tr_runtime_send_u64(env->rt, actors[i], TAG_STOP, 0),
                   "send stop to idle actor");
    free(actors);
    uint64_t acks = 0;
    for (uint64_t i = 0; i < n; i++)
        acks += bench_recv_u64(env, TAG_ACK);

    long long bytes =
        before < 0 || peak < 0 ? -1 : (peak - before) * 1024 / (long long)n;
    printf("check=%" PRIu64 " work_s=%.6f bytes_per_actor=%lld "
           "rss_before_kib=%lld rss_after_kib=%lld rss_peak_kib=%lld\n",
           acks, t1 - t0, bytes, before, after, peak);
    fflush(stdout);
}
