#!/usr/bin/env bash
# Builds weft's libFuzzer targets with clang-14 under AddressSanitizer +
# UndefinedBehaviorSanitizer (build/fuzz), replays each target's seed corpus
# (fuzz/corpora/<target>/), then fuzzes each target for SECONDS.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: 60 s, every target
# New inputs that found coverage go to build/fuzz/corpus/<target>/ (not into
# the repository); a crash fails the run and names the reproducer, which
# replays with: build/fuzz/fuzz/<target>_fuzzer <file>
# To keep a reproducer as a regression test, copy it into
# fuzz/corpora/<target>/ (every corpus file is replayed by ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-60}
shift || true
all=(event frame negentropy session schema rows)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

if ! command -v clang-14 >/dev/null; then
  echo "fuzz.sh: clang-14 is missing (Debian: apt-get install clang-14 libclang-rt-14-dev)" >&2
  exit 1
fi

declare -A max_len=([event]=8192 [frame]=16384 [negentropy]=16384 [session]=32768 [schema]=8192 [rows]=8192)

# Extra compile flags for the library (e.g. -fno-sanitize=CHECK to turn off
# a sanitizer check while a reported bug is open; say why beside it).
lib_flags=${WEFT_FUZZ_LIB_FLAGS:-}

build=build/fuzz
echo "== building fuzz targets (clang-14, ASan + UBSan) in $build =="
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEFT_BUILD_FUZZERS=ON -DWEFT_BUILD_TESTS=OFF \
  -DWEFT_BUILD_BENCH=OFF -DWEFT_SANITIZE="address;undefined" -DWEFT_FUZZ_LIB_FLAGS="$lib_flags" >/dev/null
jobs=$(nproc 2>/dev/null || echo 2)
[ "$jobs" -gt 2 ] && jobs=2
cmake --build "$build" -j"$jobs" --target $(printf '%s_fuzzer ' "${targets[@]}")

# The session target rewrites a small store often: keep it in memory.
scratch=$(mktemp -d "$( [ -w /dev/shm ] && echo /dev/shm || echo /tmp )/weft-fuzz-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

failed=()
for t in "${targets[@]}"; do
  bin=$root/$build/fuzz/${t}_fuzzer
  seeds=$root/fuzz/corpora/$t
  work=$root/$build/corpus/$t
  artifacts=$root/$build/artifacts/$t
  mkdir -p "$work" "$artifacts"
  opts=(-rss_limit_mb=2048 -max_len="${max_len[$t]}" -timeout=20 -print_final_stats=1
        -artifact_prefix="$artifacts/")
  [ -f "$root/fuzz/$t.dict" ] && opts+=(-dict="$root/fuzz/$t.dict")
  log=$root/$build/$t.log
  echo "== $t: replaying $(ls "$seeds" | wc -l) seed inputs =="
  before=$(ls "$artifacts" | wc -l)
  if ! "$bin" "${opts[@]}" -runs=0 "$seeds" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz.sh: $t: a seed input fails (log: $log)" >&2
    failed+=("$t")
    continue
  fi
  echo "== $t: fuzzing for $secs s =="
  # One process on one core (the same as -jobs=1 -workers=1, without the
  # fork): the targets run one after the other.
  if ! "$bin" "${opts[@]}" -max_total_time="$secs" "$work" "$seeds" >>"$log" 2>&1; then
    tail -60 "$log"
    echo "fuzz.sh: $t: CRASH or property violation; reproducer(s):" >&2
    ls -t "$artifacts" | head -n $(( $(ls "$artifacts" | wc -l) - before )) | sed "s|^|  $artifacts/|" >&2
    echo "  replay: $bin <file>; keep it as a regression test in fuzz/corpora/$t/" >&2
    failed+=("$t")
    continue
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$log" | tail -2 | tr "\n" " "
  echo "corpus: $(ls "$work" | wc -l) inputs"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failed targets: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, no crash in $secs s each"
