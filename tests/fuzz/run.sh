#!/usr/bin/env bash
# tests/fuzz/run.sh [seconds] — build the wire-codec fuzzer with libFuzzer,
# ASan and UBSan, and run it for N seconds (default 60) on a copy of
# tests/fuzz/corpus in a temporary directory. Exit status: 0 when no crash
# was found, non-zero otherwise (the crashing input is kept and its path
# and hex are printed).
#
# Needs clang and libFuzzer (Debian: apt-get install clang
# libclang-rt-14-dev). Environment: CC (default clang), FUZZ_JOBS (default
# 1; parallel libFuzzer workers), FUZZ_KEEP=1 keeps the work directory.
set -euo pipefail

secs=${1:-60}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [seconds]" >&2
    exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cc=${CC:-clang}
jobs=${FUZZ_JOBS:-1}

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fuzz: $cc not found (apt-get install clang libclang-rt-14-dev)" >&2
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/troupe-fuzz.XXXXXX")
cleanup() {
    if [ "${FUZZ_KEEP:-0}" = 1 ]; then
        echo "fuzz: work directory kept: $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# The codec and the msgpack layer, plus what mpack.c's tr_msg calls need
# (message blocks: pool and log); no runtime, no threads started.
srcs=(tests/fuzz/fuzz_codec.c transport/codec.c transport/mpack.c
      actors/message.c runtime/pool.c runtime/log.c)
"$cc" -std=c17 -D_GNU_SOURCE= -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Wpedantic -Werror \
    -I"$root/include" -I"$root" \
    "${srcs[@]/#/$root/}" -pthread \
    -o "$work/fuzz_codec" || {
    echo "fuzz: build failed (libFuzzer missing? apt-get install" \
         "libclang-rt-14-dev)" >&2
    exit 2
}

mkdir "$work/corpus" "$work/artifacts"
cp "$root"/tests/fuzz/corpus/* "$work/corpus/"
nseeds=$(ls "$work/corpus" | wc -l)

echo "fuzz: fuzz_codec for ${secs}s, $nseeds seeds, $jobs job(s)"
par=()
if [ "$jobs" -gt 1 ]; then
    par=(-jobs="$jobs" -workers="$jobs")
fi
status=0
(
    cd "$work"
    # -max_len: room for batches well past the seeds; -timeout: a single
    # input taking 10 s is a hang; -rss_limit_mb: the decoder allocates
    # nothing per input, so growth means a leak.
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ./fuzz_codec -max_total_time="$secs" -timeout=10 -max_len=65536 \
        -rss_limit_mb=2048 -print_final_stats=1 "${par[@]}" \
        -artifact_prefix="$work/artifacts/" \
        "$work/corpus" >"$work/fuzz.log" 2>&1
) || status=$?

grep -E '^(#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::peak_rss_mb|INFO: seed|Done [0-9]+ runs)' \
    "$work/fuzz.log" | tail -n 6 || true
if [ "$jobs" -gt 1 ]; then
    cat "$work"/fuzz-*.log >>"$work/fuzz.log" 2>/dev/null || true
fi

crashes=$(ls "$work/artifacts" 2>/dev/null | wc -l)
if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    keep=$(mktemp -d "${TMPDIR:-/tmp}/troupe-fuzz-crash.XXXXXX")
    cp "$work/fuzz.log" "$keep/" 2>/dev/null || true
    cp "$work"/artifacts/* "$keep/" 2>/dev/null || true
    echo "fuzz: FAILED (exit $status, $crashes artifact(s)); kept in $keep" >&2
    grep -E 'ERROR|runtime error|invariant broken|SUMMARY' "$work/fuzz.log" |
        head -n 20 >&2 || true
    for f in "$keep"/crash-* "$keep"/leak-* "$keep"/timeout-* "$keep"/oom-*; do
        [ -f "$f" ] || continue
        echo "--- $f" >&2
        od -An -tx1 -v "$f" | head -n 16 >&2
    done
    exit 1
fi
echo "fuzz: OK, no crash in ${secs}s"
