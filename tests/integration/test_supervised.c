/* The supervised-service example as a real child process: the failing
 * worker is restarted by its supervisor, the batch scope's deadline
 * cancels its subtree (every cruncher runs its cleanup), and the run ends
 * in order, by --duration or by SIGTERM (exit 143). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include "child.h"

#define SUPERVISED TROUPE_EXAMPLES_DIR "/supervised"

static const char *field_str(const char *line, const char *key, char *buf,
                             size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s=", key);
    const char *p = strstr(line, pat);
    if (p == NULL)
        fail_msg("no %s in: %s", key, line);
    p += strlen(pat);
    size_t n = strcspn(p, " \n");
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, p, n);
    buf[n] = 0;
    return buf;
}

static void test_restarts_and_deadline(void **state) {
    (void)state;
    child c;
    char *const argv[] = {SUPERVISED, "--fail-every", "5", "--crunchers",
                          "6", "--deadline", "200", "--duration", "900",
                          NULL};
    child_start(&c, argv);
    assert_int_equal(wait_exit(&c, 20000), 0);
    const char *line = last_line(&c);
    char buf[64];
    assert_true(field(line, "restarts") >= 1);
    /* supervisor_restarts is the supervisor's count when main asked for
     * it; one more restart may come before the shutdown reaches it. */
    uint64_t sup = field(line, "supervisor_restarts");
    assert_true(field(line, "restarts") >= sup);
    assert_true(field(line, "restarts") <= sup + 1);
    assert_true(field(line, "handled") > 0);
    assert_string_equal(field_str(line, "scope", buf, sizeof buf),
                        "cancelled_caught");
    assert_string_equal(field_str(line, "cleaned", buf, sizeof buf), "6/6");
    assert_int_equal(field(line, "run_rc"), 0);
}

static void test_sigterm_stops_the_tree(void **state) {
    (void)state;
    child c;
    char *const argv[] = {SUPERVISED, "--duration", "60000", NULL};
    child_start(&c, argv);
    read_until_lines(&c, 1, 5000);
    usleep(400 * 1000);
    assert_int_equal(kill(c.pid, SIGTERM), 0);
    assert_int_equal(wait_exit(&c, 20000), 128 + SIGTERM);
    const char *line = last_line(&c);
    assert_non_null(strstr(line, "restarts="));
    assert_int_equal(field(line, "run_rc"), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restarts_and_deadline),
        cmocka_unit_test(test_sigterm_stops_the_tree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
