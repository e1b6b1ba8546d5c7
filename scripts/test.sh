#!/usr/bin/env bash
# Builds weft and runs the whole test suite: a normal build, then the same
# tests under AddressSanitizer + UndefinedBehaviorSanitizer, then the fuzz
# targets for a short run each. Installs missing Debian packages first.
#   scripts/test.sh            everything (what CI runs)
#   WEFT_FUZZ_SECONDS=0 scripts/test.sh   skip the timed fuzzing
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
[ "$jobs" -gt 2 ] && jobs=2

step() { printf '\n== %s ==\n' "$*"; }

step "build (RelWithDebInfo)"
cmake -S . -B build/test -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEFT_BUILD_TESTS=ON >/dev/null
cmake --build build/test -j"$jobs"
step "tests"
(cd build/test && ctest -j"$jobs" --output-on-failure --timeout 900)

step "build (Release, -O3: what the demo and benchmarks use)"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF -DWEFT_BUILD_BENCH=OFF >/dev/null
cmake --build build/release -j"$jobs"

step "build with AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DWEFT_BUILD_TESTS=ON \
  -DWEFT_SANITIZE="address;undefined" -DWEFT_BUILD_BENCH=OFF >/dev/null
cmake --build build/asan -j"$jobs"
step "tests under ASan + UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build/asan && WEFT_TEST_SCALE=asan ctest -j"$jobs" --output-on-failure --timeout 1800 -LE no_asan)

if [ -x scripts/fuzz.sh ] && [ "${WEFT_FUZZ_SECONDS:-60}" != 0 ]; then
  step "fuzzing (${WEFT_FUZZ_SECONDS:-60} s per target)"
  scripts/fuzz.sh "${WEFT_FUZZ_SECONDS:-60}"
fi
echo
echo "weft: all tests passed"
