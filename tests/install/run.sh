#!/usr/bin/env bash
# Install test (ctest install_find_package): installs an already-built troupe
# tree into a temporary prefix, then builds and runs a consumer of it twice:
#   1. CMake: find_package(troupe) with troupe::troupe and troupe::troupe_static
#   2. pkg-config: cc main.c $(pkg-config --cflags --libs troupe)
#
#   run.sh <build-dir> [cmake] [cc] [extra C/link flags, one word list]
# The extra flags are the sanitizer flags of a sanitizer build, whose
# installed libraries need the sanitizer runtime in the consumer too.
set -euo pipefail

build_dir=$(realpath "${1:?usage: run.sh <build-dir> [cmake] [cc] [flags]}")
cmake_cmd=${2:-cmake}
cc=${3:-${CC:-cc}}
extra_flags=${4:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/troupe-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

step() { printf '\n--- install test: %s\n' "$*"; }

step "cmake --install into $tmp/prefix"
"$cmake_cmd" --install "$build_dir" --prefix "$tmp/prefix"

step "find_package(troupe) consumer"
"$cmake_cmd" -S "$here" -B "$tmp/consumer" \
    -DCMAKE_PREFIX_PATH="$tmp/prefix" \
    -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_C_FLAGS="$extra_flags" \
    -DCMAKE_EXE_LINKER_FLAGS="$extra_flags" \
    -DCMAKE_BUILD_TYPE=Release
"$cmake_cmd" --build "$tmp/consumer"
# The shared consumer must find libtroupe.so through its build RPATH alone.
"$tmp/consumer/consumer_shared"
"$tmp/consumer/consumer_static"

step "pkg-config consumer"
pc=$(find "$tmp/prefix" -name troupe.pc -print -quit)
[ -n "$pc" ] || { echo "troupe.pc was not installed" >&2; exit 1; }
pcdir=$(dirname "$pc")
pkg_flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs troupe)
echo "pkg-config --cflags --libs troupe: $pkg_flags"
# shellcheck disable=SC2086 # flags are word lists
"$cc" -std=c17 $extra_flags "$here/main.c" -o "$tmp/consumer_pc" $pkg_flags
LD_LIBRARY_PATH="$(dirname "$(find "$tmp/prefix" -name 'libtroupe.so' -print -quit)")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$tmp/consumer_pc"

step "ok"
