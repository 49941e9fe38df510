#!/bin/sh
# Builds the libFuzzer targets of tests/fuzz (clang, ASan + UBSan) in
# build-fuzz and runs each for SECONDS (default 5) from its seed corpus in
# tests/fuzz/corpus/<target>. New inputs go to build-fuzz/corpus/<target>;
# a crash, a sanitizer report, a leak or a timeout fails the script, with
# the input saved under build-fuzz/artifacts/<target>/ and the log printed.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (targets: journal json ...)
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh fuzz
secs=${1:-5}
[ $# -gt 0 ] && shift
dir=build-fuzz
cmake -S . -B "$dir" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRUNBOOK_FUZZ=ON >/dev/null
ninja -C "$dir" >/dev/null
if [ $# -gt 0 ]; then
  targets=$*
else
  targets=$(ls tests/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||' | grep -vx lua)
fi
status=0
for t in $targets; do
  work=$dir/corpus/$t
  art=$dir/artifacts/$t
  log=$dir/fuzz-$t.log
  mkdir -p "$work" "$art"
  # The targets keep one Lua state across inputs, whose growth libFuzzer's
  # per-input leak check would report; leaks still fail the run at exit.
  leaks=0
  [ "$t" = redact ] && leaks=1
  if UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     "$dir/tests/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=10 -max_len=8192 \
       -detect_leaks=$leaks -print_final_stats=1 -artifact_prefix="$art/" \
       "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz $t: ${runs:-?} inputs in ${secs}s, no crash"
  else
    echo "fuzz $t: FAILED (log: $log)"
    grep -v -E '^#[0-9]+ +(NEW|REDUCE|pulse)' "$log" | tail -60
    status=1
  fi
done
exit $status
