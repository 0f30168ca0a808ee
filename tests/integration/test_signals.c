/* Signals on a real child process: the pipeline example under load gets
 * SIGTERM (orderly shutdown: it drains, loses nothing, exits 143) or two
 * SIGINTs in a row (the second stops at once: exits 130 promptly). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>

#include <cmocka.h>

#include "child.h"

#define PIPELINE TROUPE_EXAMPLES_DIR "/pipeline"

static void start(child *c) {
    char *const argv[] = {PIPELINE, "--items", "1000000000", "--quiet",
                          "--threads", "2", NULL};
    child_start(c, argv);
}

static void test_sigterm_drains_and_exits_143(void **state) {
    (void)state;
    child c;
    start(&c);
    read_until_lines(&c, 1, 5000); /* it has started */
#ifdef CHILD_TSAN
    usleep(1500 * 1000); /* under load (TSan: the stages start slowly) */
#else
    usleep(300 * 1000); /* under load */
#endif
    assert_int_equal(kill(c.pid, SIGTERM), 0);
    int code = wait_exit(&c, 20000);
    const char *line = last_line(&c);
    assert_int_equal(code, 128 + SIGTERM);
    uint64_t produced = field(line, "produced");
    assert_true(produced > 0);
    assert_true(produced < 1000000000ull);
    assert_int_equal(field(line, "consumed"), produced);
    assert_int_equal(field(line, "lost"), 0);
    assert_int_equal(field(line, "interrupted"), 1);
    assert_int_equal(field(line, "checksum_ok"), 1);
}

/* A signal before the stages are all up (or before a record is made):
 * still an orderly end, no stage waits for an end of stream that is not
 * coming. */
static void test_sigterm_at_start(void **state) {
    (void)state;
    child c;
    start(&c);
    read_until_lines(&c, 1, 5000);
    assert_int_equal(kill(c.pid, SIGTERM), 0);
    int code = wait_exit(&c, 20000);
    assert_int_equal(code, 128 + SIGTERM);
    const char *line = last_line(&c);
    assert_int_equal(field(line, "lost"), 0);
    assert_int_equal(field(line, "consumed"), field(line, "produced"));
}

static void test_double_sigint_stops_at_once(void **state) {
    (void)state;
    child c;
    start(&c);
    read_until_lines(&c, 1, 5000);
    usleep(200 * 1000);
    assert_int_equal(kill(c.pid, SIGINT), 0);
    assert_int_equal(kill(c.pid, SIGINT), 0);
    int code = wait_exit(&c, 10000);
    assert_int_equal(code, 128 + SIGINT);
    const char *line = last_line(&c);
    assert_non_null(strstr(line, "produced="));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigterm_drains_and_exits_143),
        cmocka_unit_test(test_sigterm_at_start),
        cmocka_unit_test(test_double_sigint_stops_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

