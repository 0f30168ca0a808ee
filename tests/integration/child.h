/* tests/integration/child.h: run an example program as a real child
 * process, read its stdout, wait for its exit with a bound (it is killed
 * and the test fails past the bound), and read `key=value` fields from its
 * last line. Include after cmocka. */
#ifndef TROUPE_TEST_CHILD_H
#define TROUPE_TEST_CHILD_H

/* Built with ThreadSanitizer (the examples it runs are too): tests
 * shrink their sizes, TSan runs code 5-15x slower. */
#if defined(__SANITIZE_THREAD__)
#define CHILD_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CHILD_TSAN 1
#endif
#endif

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct child {
    pid_t pid;
    int out; /* read end of its stdout */
    char buf[65536];
    size_t len;
} child;

static inline int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Starts argv[0] (a path) with its stdout on a pipe. */
static inline void child_start(child *c, char *const argv[]) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    c->len = 0;
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    c->out = fds[0];
}

/* Reads the child's stdout until it has n lines or ms pass. */
static inline void read_until_lines(child *c, int n, int ms) {
    int64_t end = now_ms() + ms;
    for (;;) {
        int lines = 0;
        for (size_t i = 0; i < c->len; i++)
            lines += c->buf[i] == '\n';
        if (lines >= n)
            return;
        int left = (int)(end - now_ms());
        if (left <= 0)
            return;
        struct pollfd p = {c->out, POLLIN, 0};
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t r = read(c->out, c->buf + c->len, sizeof c->buf - 1 - c->len);
        if (r <= 0)
            return;
        c->len += (size_t)r;
        c->buf[c->len] = 0;
    }
}

/* Waits for the child's exit at most ms; kills it (and fails) past that.
 * Returns the exit status. */
static inline int wait_exit(child *c, int ms) {
    int64_t end = now_ms() + ms;
    int status = 0;
    while (waitpid(c->pid, &status, WNOHANG) == 0) {
        if (now_ms() > end) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &status, 0);
            close(c->out);
            fail_msg("child did not exit within %d ms", ms);
        }
        read_until_lines(c, 1 << 30, 10);
    }
    read_until_lines(c, 1 << 30, 200); /* the rest of its output */
    close(c->out);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static inline const char *last_line(child *c) {
    while (c->len > 0 && c->buf[c->len - 1] == '\n')
        c->buf[--c->len] = 0;
    char *nl = strrchr(c->buf, '\n');
    return nl != NULL ? nl + 1 : c->buf;
}

static inline uint64_t field(const char *line, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "%s=", key);
    const char *p = strstr(line, pat);
    if (p == NULL)
        fail_msg("no %s in: %s", key, line);
    return strtoull(p + strlen(pat), NULL, 10);
}


/* ---- worker processes of a child ---- */

/* True if /proc/<pid> is a troupe worker process (TROUPE_WORKER in its
 * environment: not, say, LeakSanitizer's tracer) whose parent is
 * `parent`. */
static inline bool child_is_worker_of(const char *pid, pid_t parent) {
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false; /* gone meanwhile */
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* pid (comm) state ppid ...; comm may hold spaces: after ')' */
    const char *rp = strrchr(buf, ')');
    int ppid = 0;
    char st = 0;
    if (rp == NULL || sscanf(rp + 1, " %c %d", &st, &ppid) != 2 ||
        ppid != parent)
        return false;
    static char env[16384];
    snprintf(path, sizeof path, "/proc/%s/environ", pid);
    if ((f = fopen(path, "r")) == NULL)
        return false;
    n = fread(env, 1, sizeof env, f);
    fclose(f);
    static const char key[] = "TROUPE_WORKER=";
    for (size_t i = 0; i + sizeof key - 1 <= n; i++)
        if ((i == 0 || env[i - 1] == 0) &&
            memcmp(env + i, key, sizeof key - 1) == 0)
            return true;
    return false;
}

/* Adds the worker processes `parent` runs now to seen[0..*n) (each
 * once, at most max). */
static inline void child_collect_workers(pid_t parent, pid_t *seen,
                                         unsigned *n, unsigned max) {
    DIR *d = opendir("/proc");
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] < '1' || de->d_name[0] > '9' ||
            !child_is_worker_of(de->d_name, parent))
            continue;
        pid_t pid = (pid_t)atoi(de->d_name);
        bool known = false;
        for (unsigned i = 0; i < *n && !known; i++)
            known = seen[i] == pid;
        if (!known && *n < max)
            seen[(*n)++] = pid;
    }
    closedir(d);
}

#endif
