# ctest helper: runs `BENCH WORKLOAD N` and fails unless it exits 0 and its
# last line starts with "check=N work_s=" and carries the pipeline's
# fields. With -DFAULT=<k> -DEXPECT=<regex>: runs it with
# TROUPE_PIPE_FAULT=k (a worker corrupts its output) and fails unless it
# exits 1 with EXPECT on stderr. Used by the bench_pipeline* tests
# (bench/CMakeLists.txt).
foreach(var BENCH WORKLOAD N)
    if(NOT DEFINED ${var})
        message(FATAL_ERROR "run_check.cmake: -D${var}=... is required")
    endif()
endforeach()
if(DEFINED FAULT)
    set(ENV{TROUPE_PIPE_FAULT} ${FAULT})
endif()
execute_process(COMMAND ${BENCH} ${WORKLOAD} ${N}
                RESULT_VARIABLE rc
                OUTPUT_VARIABLE out
                ERROR_VARIABLE err
                TIMEOUT 50)
message(STATUS "${WORKLOAD} ${N}: ${out}")
if(DEFINED FAULT)
    if(NOT rc STREQUAL "1" OR NOT err MATCHES "${EXPECT}")
        message(FATAL_ERROR "${WORKLOAD} ${N} with fault ${FAULT}: exit "
                            "'${rc}', expected 1 and '${EXPECT}'\n${err}")
    endif()
    return()
endif()
if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "${WORKLOAD} ${N} exited with '${rc}'\n${err}")
endif()
string(STRIP "${out}" out)
string(REGEX REPLACE ".*\n" "" last "${out}")
if(NOT last MATCHES "^check=${N} work_s=[0-9.]+ items_per_s=[0-9]+ rss_peak_kib=[0-9]+ ")
    message(FATAL_ERROR "${WORKLOAD} ${N}: unexpected last line '${last}'\n${err}")
endif()
