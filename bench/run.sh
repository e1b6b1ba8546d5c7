#!/usr/bin/env bash
# Builds weft and weft-bench in Release mode in their own directory
# (build-bench, or $WEFT_BENCH_BUILD) and runs the benchmark suite; prints
# the machine, library versions, date and the table of targets.
#
#   bench/run.sh            full run: 10k/100k/1M sizes (~10 min on 2 cores;
#                           built stores are cached in build-bench/bench-work/cache)
#   bench/run.sh --quick    small sizes, under a minute (what CI runs)
#   bench/run.sh --no-big   full run without the 1M sizes
#   other options go to weft-bench: --runs N, --only 1,3,5 (see bench/weft_bench.c)
#   WEFT_BENCH_CMAKE_ARGS="..." adds arguments to the cmake configure step.
#
# Do not run two benchmarks at once, or anything heavy beside one: every
# figure is a ratio against a baseline measured in the same run, but two
# cores shared with another job still skew both sides differently.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${WEFT_BENCH_BUILD:-$root/build-bench}

args=()
big=1
for a in "$@"; do
  case "$a" in
    --quick) big=0; args+=("$a") ;;
    --no-big) big=0 ;;
    *) args+=("$a") ;;
  esac
done
[ "$big" = 1 ] && args+=(--big)

echo "== building weft-bench (Release) in $build" >&2
# shellcheck disable=SC2086 # word splitting of the extra arguments is wanted
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DWEFT_BUILD_TESTS=OFF \
  -DWEFT_BUILD_BENCH=ON ${WEFT_BENCH_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j2 --target weft-bench weft_cli >/dev/null
echo "== running: weft-bench ${args[*]}" >&2
exec "$build/bench/weft-bench" --dir "$build/bench-work" --weft "$build/weft" "${args[@]}"
