#!/bin/sh
# Installs what runbook needs to build and test on Debian 12. Idempotent and
# quick when everything is present. Usage: scripts/deps.sh [build|fuzz|test]
# (fuzz: what scripts/fuzz.sh needs; test: everything, fuzzing included)
set -eu
what=${1:-test}

build_pkgs="build-essential cmake ninja-build pkg-config liblua5.4-dev lua5.4 lua-busted
  libcurl4-openssl-dev libjansson-dev libyaml-dev libpq-dev libhiredis-dev libssl-dev"
# libFuzzer comes with clang's runtime libraries (libclang_rt.fuzzer)
fuzz_pkgs="clang libclang-rt-14-dev"
# dpkg-dev (dpkg-shlibdeps) builds the .deb (scripts/package.sh); zsh and
# groff-base check the completions and the man pages
test_pkgs="postgresql postgresql-client redis-server redis-tools openssl python3 ca-certificates procps iproute2 util-linux
  dpkg-dev zsh groff-base gzip"

pkgs=$build_pkgs
[ "$what" = fuzz ] && pkgs="$pkgs $fuzz_pkgs"
[ "$what" = test ] && pkgs="$pkgs $fuzz_pkgs $test_pkgs"

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || true
  # lua5.4 goes in the same transaction as lua-busted, or busted pulls in Lua 5.2
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# the dbmate compatibility tests install the real dbmate from the npm registry
if [ "$what" = test ] && ! command -v npm >/dev/null; then
  echo "deps: installing npm"
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
