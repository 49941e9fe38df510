#!/bin/sh
# The rehearsal sandbox: local stand-ins for everything the shipped runbooks
# touch, on loopback ports, in one folder (default $RUNBOOK_SANDBOX or
# /tmp/runbook-sandbox).
#
#   scripts/sandbox.sh up [DIR]                      start what is not running; writes DIR/env,
#                                                    DIR/kubeconfig, DIR/values/<runbook>.yaml
#   scripts/sandbox.sh rehearse runbooks/NAME.lua [DIR]   run it start to finish, playing the people
#   scripts/sandbox.sh status [DIR]                  what runs
#   scripts/sandbox.sh down [DIR]                    stop exactly what up started (by pid)
#   scripts/sandbox.sh play runbooks/NAME.lua STEP [DIR]  play the person of one manual step
#   scripts/sandbox.sh fault migration|clear [DIR]   make Tezca's migration Jobs fail, or stop that
#
# The work is done by tests/harness/sandbox.lua (the module the runbooks'
# e2e specs use too), inside the runbook binary: $RUNBOOK_BIN, else
# build/runbook (built here when missing).
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
[ $# -ge 1 ] || usage
cmd=$1; shift

abs() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$(pwd)" "$1" ;; esac; }

args=$cmd
case $cmd in
  up|down|status) [ $# -le 1 ] || usage; dir=${1:-} ;;
  rehearse) [ $# -ge 1 ] && [ $# -le 2 ] || usage; args="$args
$(abs "$1")"; dir=${2:-} ;;
  play) [ $# -ge 2 ] && [ $# -le 3 ] || usage; args="$args
$(abs "$1")
$2"; dir=${3:-} ;;
  fault) [ $# -ge 1 ] && [ $# -le 2 ] || usage; args="$args
$1"; dir=${2:-} ;;
  -h|--help|help) usage ;;
  *) echo "sandbox: unknown command '$cmd'" >&2; usage ;;
esac
dir=$(abs "${dir:-${RUNBOOK_SANDBOX:-${TMPDIR:-/tmp}/runbook-sandbox}}")

bin=${RUNBOOK_BIN:-}
if [ -z "$bin" ]; then
  bin=$src/build/runbook
  if [ ! -x "$bin" ]; then
    echo "sandbox: building runbook into $src/build" >&2
    cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    ninja -C "$src/build" >/dev/null
  fi
fi
bin=$(abs "$bin")

cd "$src"
SANDBOX_ARGV=$args SANDBOX_DIR=$dir RUNBOOK_BIN=$bin RUNBOOK_SOURCE_DIR=$src \
  exec "$bin" test -o "$src/tests/harness/sandbox_output.lua" "$src/tests/harness/sandbox_main.lua"
