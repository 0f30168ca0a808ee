/* test_error — tr_strerror / tr_err_name agree with TR_ERRNO_MAP for every
 * code, 0 is "success", and values outside the table are handled. */
#include "testutil.h"

#include <limits.h>

typedef struct err_row {
    int code;
    const char *name;
    const char *text;
} err_row;

/* Built from the same X-macro as the library: if the table changes, this
 * test follows it. */
#define ERR_ROW(name, val, text) {TR_##name, "TR_" #name, text},
static const err_row k_rows[] = {TR_ERRNO_MAP(ERR_ROW)};
#undef ERR_ROW
#define N_ROWS (sizeof k_rows / sizeof k_rows[0])

static const int k_unknown[] = {1,       2,       TR_STOP,    TR_ERRNO_MIN,
                                -18,     -100,    -999,       12345,
                                INT_MIN, INT_MAX, INT_MIN + 1};

static void test_every_code_has_its_text_and_name(void **state) {
    (void)state;
    assert_true(N_ROWS >= 15);
    for (size_t i = 0; i < N_ROWS; i++) {
        const char *text = tr_strerror(k_rows[i].code);
        const char *name = tr_err_name(k_rows[i].code);
        assert_non_null(text);
        assert_non_null(name);
        assert_string_equal(text, k_rows[i].text);
        assert_string_equal(name, k_rows[i].name);
    }
}

static void test_codes_are_negative_and_contiguous(void **state) {
    (void)state;
    for (size_t i = 0; i < N_ROWS; i++) {
        assert_int_equal(k_rows[i].code, -(int)(i + 1));
        assert_true(k_rows[i].code > TR_ERRNO_MIN);
    }
    /* Spot checks of the values other modules' tests rely on. */
    assert_int_equal(TR_EINVAL, -1);
    assert_int_equal(TR_ENOACTOR, -3);
    assert_int_equal(TR_ETIMEDOUT, -5);
    assert_int_equal(TR_EFREED, -13);
}

static void test_texts_and_names_are_distinct(void **state) {
    (void)state;
    for (size_t i = 0; i < N_ROWS; i++) {
        for (size_t j = i + 1; j < N_ROWS; j++) {
            assert_string_not_equal(tr_strerror(k_rows[i].code),
                                    tr_strerror(k_rows[j].code));
            assert_string_not_equal(tr_err_name(k_rows[i].code),
                                    tr_err_name(k_rows[j].code));
        }
    }
}

static void assert_not_a_known_name(const char *name) {
    assert_non_null(name);
    assert_true(name[0] != '\0');
    for (size_t i = 0; i < N_ROWS; i++)
        assert_string_not_equal(name, k_rows[i].name);
}

static void test_zero_is_success(void **state) {
    (void)state;
    assert_string_equal(tr_strerror(0), "success");
    assert_not_a_known_name(tr_err_name(0));
}

static void test_unknown_values(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof k_unknown / sizeof k_unknown[0]; i++) {
        const char *text = tr_strerror(k_unknown[i]);
        assert_non_null(text);
        assert_string_equal(text, "unknown error");
        assert_not_a_known_name(tr_err_name(k_unknown[i]));
    }
}

/* "Any thread": concurrent callers get the same answers. */
static _Atomic int g_mismatches;

static void *hammer_thread(void *arg) {
    (void)arg;
    for (int round = 0; round < 2000; round++) {
        for (size_t i = 0; i < N_ROWS; i++) {
            if (strcmp(tr_strerror(k_rows[i].code), k_rows[i].text) != 0 ||
                strcmp(tr_err_name(k_rows[i].code), k_rows[i].name) != 0)
                atomic_fetch_add_explicit(&g_mismatches, 1,
                                          memory_order_relaxed);
        }
        if (strcmp(tr_strerror(-1000 - round), "unknown error") != 0)
            atomic_fetch_add_explicit(&g_mismatches, 1, memory_order_relaxed);
    }
    return NULL;
}

static void test_any_thread(void **state) {
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer_thread, NULL), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(atomic_load(&g_mismatches), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_has_its_text_and_name),
        cmocka_unit_test(test_codes_are_negative_and_contiguous),
        cmocka_unit_test(test_texts_and_names_are_distinct),
        cmocka_unit_test(test_zero_is_success),
        cmocka_unit_test(test_unknown_values),
        cmocka_unit_test(test_any_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
