#!/usr/bin/env bash
# troupe's one entry point: installs missing Debian packages, configures,
# builds, runs the demo, the tests and the benchmarks.
#
#   ./troupe.sh deps            install missing build dependencies (apt-get)
#   ./troupe.sh build [preset]  configure + build a preset (default: release)
#   ./troupe.sh demo [args]     build release, run build/examples/pipeline
#                               (default args: --items 200000)
#   ./troupe.sh test            the CI suite: release tests, clang build,
#                               ASan+UBSan tests, TSan concurrency tests
#   ./troupe.sh bench           build release, run ../shared/peers/run.sh
#                               with build/bench/troupe_bench beside the peers
#
# Presets (build dirs) are defined in CMakePresets.json: release (build/),
# asan (build-asan/), tsan (build-tsan/), clang (build-clang/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$ROOT"

# Debian packages the build needs. make and libc6-dev are normally pulled in
# as Recommends of cmake/gcc; name them for machines that skip Recommends.
DEPS=(cmake make pkg-config gcc libc6-dev libzmq3-dev libmsgpack-dev
    libcmocka-dev)
# `test` also proves the build -Werror-clean with clang, and fuzzes the
# wire codec with libFuzzer (clang's runtime).
TEST_DEPS=(clang libclang-rt-14-dev)

JOBS=$(nproc 2>/dev/null || echo 2)

banner() {
    printf '\n==== %s ====\n' "$*"
}

die() {
    printf 'troupe.sh: %s\n' "$*" >&2
    exit 1
}

# install_missing PKG...: apt-get install whichever of PKG are not installed.
install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null |
            grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    command -v apt-get >/dev/null ||
        die "missing packages (${missing[*]}) and no apt-get: install them by hand"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null ||
            die "missing packages (${missing[*]}): run as root or install sudo"
        sudo=(sudo)
    fi
    banner "installing: ${missing[*]}"
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q "${missing[@]}"
}

cmd_deps() {
    install_missing "${DEPS[@]}" "$@"
}

# build PRESET: configure and build one preset of CMakePresets.json.
build() {
    local preset=$1
    cmake --preset "$preset"
    cmake --build --preset "$preset" -j"$JOBS"
}

cmd_build() {
    cmd_deps
    build "${1:-release}"
}

cmd_demo() {
    cmd_deps
    build release
    [ $# -gt 0 ] || set -- --items 200000
    banner "demo: build/examples/pipeline $*"
    exec "$ROOT/build/examples/pipeline" "$@"
}

# TSan's runtime needs the address-space layout it was built for; a kernel
# with more mmap randomisation than that (vm.mmap_rnd_bits > 28, e.g. recent
# Ubuntu kernels) makes every TSan program die with "unexpected memory
# mapping". Run it without ASLR there, when the sandbox allows it.
tsan_launcher() {
    local bits
    bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)
    if [ "$bits" -gt 28 ] && setarch "$(uname -m)" -R true 2>/dev/null; then
        echo setarch "$(uname -m)" -R
    fi
}

report_failure() {
    local rc=$?
    [ "$rc" -eq 0 ] ||
        printf '\n**** FAILED (exit %s) in %s ****\n' "$rc" "$current" >&2
}

cmd_test() {
    local stage=0 stages=6 started=$SECONDS
    current="(start)"
    # set -e ends the script at the first failing command, wherever it is;
    # the EXIT trap names the stage it ended in.
    trap report_failure EXIT
    next() {
        stage=$((stage + 1))
        current="[$stage/$stages] $*"
        banner "$current  (t=$((SECONDS - started))s)"
    }

    next "dependencies"
    cmd_deps "${TEST_DEPS[@]}"

    next "release: build + all tests"
    build release
    ctest --test-dir build --output-on-failure --no-tests=error -j2

    # Build-only: -Werror clean with the second compiler.
    next "clang: build (-Werror)"
    build clang

    next "asan+ubsan: build + all tests"
    build asan
    ASAN_OPTIONS=detect_leaks=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --test-dir build-asan --output-on-failure --no-tests=error -j2

    next "tsan: build + concurrency tests + example topologies"
    build tsan
    local launcher
    launcher=$(tsan_launcher)
    # One test at a time: TSan multiplies each test's cost, and a concurrency
    # test needs both cores to itself to create the interleavings it is for.
    # libzmq is not instrumented: tools/tsan.supp says why its hand-offs
    # are suppressed.
    # shellcheck disable=SC2086 # launcher is a word list or empty
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/tools/tsan.supp \
        $launcher ctest --test-dir build-tsan --output-on-failure \
        --no-tests=error -j1 -L 'concurrency|tsan' 

    next "fuzz: wire codec, 60 s of libFuzzer under ASan+UBSan"
    bash tests/fuzz/run.sh 60

    banner "all $stages stages passed in $((SECONDS - started))s"
}

cmd_bench() {
    cmd_deps
    build release
    local peers="$ROOT/../shared/peers"
    if [ -d "$peers" ]; then
        banner "bench: troupe beside the peers ($peers/run.sh)"
        TROUPE_BENCH="$ROOT/build/bench/troupe_bench" bash "$peers/run.sh"
    else
        banner "bench: $peers not found, skipping the peer comparison"
        echo "run workloads by hand, e.g. build/bench/troupe_bench ring 1000000 503"
    fi
}

usage() {
    sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case "$cmd" in
    deps) cmd_deps ;;
    build) cmd_build "$@" ;;
    demo) cmd_demo "$@" ;;
    test) cmd_test ;;
    bench) cmd_bench ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
