#!/bin/sh
# The whole test suite: installs dependencies, builds runbook twice (a
# normal build and one with AddressSanitizer + UndefinedBehaviorSanitizer)
# and runs every test (C unit tests, busted specs, end-to-end crash tests,
# integration specs against real PostgreSQL, Redis, S3 and the fake
# Kubernetes API server) under ctest in both, then runs each fuzz target
# for a few seconds. Exits non-zero if any fails.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh test

jobs=$(nproc 2>/dev/null || echo 2)
status=0
for variant in release asan; do
  dir=build-test-$variant
  flags="-DCMAKE_BUILD_TYPE=RelWithDebInfo"
  [ $variant = asan ] && flags="-DCMAKE_BUILD_TYPE=Debug -DRUNBOOK_SANITIZE=ON"
  echo "== $variant build"
  cmake -S . -B "$dir" -G Ninja $flags >/dev/null
  ninja -C "$dir"
  echo "== $variant tests"
  if ! (cd "$dir" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ctest --output-on-failure -j "$jobs" --timeout 900); then
    status=1
  fi
done
# a short run of every libFuzzer target from its seeds: a crash, a
# sanitizer report or a leak fails the suite (scripts/fuzz.sh SECONDS for more)
echo "== fuzz smoke"
scripts/fuzz.sh 3 || status=1
if [ $status -eq 0 ]; then echo "== all tests passed (release, asan and fuzz smoke)"; else echo "== TESTS FAILED"; fi
exit $status
