# ctest helper: runs `BENCH WORKLOAD N` and fails unless it exits 0 and its
# last line starts with "check=N work_s=" and carries the pipeline's
# fields. Used by the bench_pipeline* tests (bench/CMakeLists.txt).
foreach(var BENCH WORKLOAD N)
    if(NOT DEFINED ${var})
        message(FATAL_ERROR "run_check.cmake: -D${var}=... is required")
    endif()
endforeach()
execute_process(COMMAND ${BENCH} ${WORKLOAD} ${N}
                RESULT_VARIABLE rc
                OUTPUT_VARIABLE out
                ERROR_VARIABLE err
                TIMEOUT 50)
message(STATUS "${WORKLOAD} ${N}: ${out}")
if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "${WORKLOAD} ${N} exited with '${rc}'\n${err}")
endif()
string(STRIP "${out}" out)
string(REGEX REPLACE ".*\n" "" last "${out}")
if(NOT last MATCHES "^check=${N} work_s=[0-9.]+ items_per_s=[0-9]+ rss_peak_kib=[0-9]+ ")
    message(FATAL_ERROR "${WORKLOAD} ${N}: unexpected last line '${last}'\n${err}")
endif()
