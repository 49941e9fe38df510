#!/bin/sh
# Installs what runbook needs to build and test on Debian 12 (and what
# scripts/sandbox.sh runs: PostgreSQL, Redis, moto, python3, openssl,
# unshare). Idempotent and quick when everything is present.
# Usage: scripts/deps.sh [build|fuzz|test]
# (fuzz: what scripts/fuzz.sh needs; test: everything, fuzzing included)
set -eu
what=${1:-test}

build_pkgs="build-essential cmake ninja-build pkg-config liblua5.4-dev lua5.4 lua-busted
  libcurl4-openssl-dev libjansson-dev libyaml-dev libpq-dev libhiredis-dev libssl-dev libmicrohttpd-dev"
# libFuzzer comes with clang's runtime libraries (libclang_rt.fuzzer)
fuzz_pkgs="clang libclang-rt-14-dev"
# dpkg-dev (dpkg-shlibdeps) builds the .deb (scripts/package.sh); zsh and
# groff-base check the completions and the man pages; chromium runs the
# browser tests of runbook serve (tests/web)
test_pkgs="postgresql postgresql-client redis-server redis-tools openssl python3 ca-certificates procps iproute2 util-linux
  dpkg-dev zsh groff-base gzip chromium"

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

# moto, the S3-compatible server of the S3 tests and the sandbox: not packaged
# in Debian. A moto_server on PATH (or pyenv's) is used as it is; otherwise
# moto[server] goes into its own virtualenv (Debian's pip refuses system-wide
# installs) and moto_server onto PATH. When pip cannot get it (no route to the
# Python package index), say what is missing and how to install it, and go
# on: the S3 tests then fail with the same words (tests/harness/s3server.lua).
have_moto() {
  command -v moto_server >/dev/null 2>&1 || [ -x "${HOME:-/root}/.pyenv/shims/moto_server" ]
}
if [ "$what" = test ] && ! have_moto; then
  venv=${RUNBOOK_MOTO_VENV:-/opt/runbook-moto}
  bindir=/usr/local/bin
  if [ "$(id -u)" -ne 0 ]; then venv=${RUNBOOK_MOTO_VENV:-$HOME/.local/share/runbook-moto}; bindir=$HOME/.local/bin; fi
  echo "deps: installing moto[server] (the S3 stand-in) with pip into $venv"
  for p in python3-venv python3-pip; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null || true
  done
  if python3 -m venv "$venv" >/dev/null 2>&1 &&
     "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]' >"${TMPDIR:-/tmp}/runbook-moto-pip.log" 2>&1; then
    mkdir -p "$bindir"
    ln -sf "$venv/bin/moto_server" "$bindir/moto_server"
    echo "deps: moto_server is $bindir/moto_server"
    case ":$PATH:" in *":$bindir:"*) ;; *) echo "deps: add $bindir to PATH for the S3 tests and the sandbox" ;; esac
  else
    cat >&2 <<MSG
deps: MISSING moto_server (Python package moto[server]): pip could not install it
      (see ${TMPDIR:-/tmp}/runbook-moto-pip.log; is the Python package index reachable?).
      The S3 tests and scripts/sandbox.sh need it; everything else works without it.
      Install it, then run this again:
        python3 -m venv $venv && $venv/bin/pip install 'moto[server]' &&
        ln -s $venv/bin/moto_server $bindir/moto_server
      (any moto_server on PATH will do, e.g. pip install --user 'moto[server]').
MSG
  fi
fi

# the event-stream and doc specs check their output with tools nobody here
# wrote: ajv (JSON Schema) and markdown-it (CommonMark), in a local
# node_modules shared by test runs (tests/harness/npmtool.lua has the same list)
if [ "$what" = test ]; then
  node_dir=${RUNBOOK_TEST_CACHE:-/tmp/runbook-test-cache}/node
  if [ ! -x "$node_dir/node_modules/.bin/ajv" ] || [ ! -x "$node_dir/node_modules/.bin/markdown-it" ] ||
     [ ! -f "$node_dir/node_modules/ajv-formats/package.json" ]; then
    echo "deps: installing ajv, ajv-cli, ajv-formats and markdown-it into $node_dir"
    mkdir -p "$node_dir"
    npm install --no-audit --no-fund --prefix "$node_dir" ajv@8 ajv-cli@5 ajv-formats@2 markdown-it@14 >/dev/null ||
      echo "deps: npm install failed: the events and doc specs will try again" >&2
  fi
fi

# the browser tests of runbook serve drive Debian's chromium with
# playwright-core from the npm registry, installed into tests/web/node_modules
# from its lock file (no browser is downloaded: they use /usr/bin/chromium)
if [ "$what" = test ]; then
  here=$(cd "$(dirname "$0")/.." && pwd)
  if [ ! -d "$here/tests/web/node_modules/playwright-core" ]; then
    echo "deps: installing playwright-core into tests/web/node_modules"
    (cd "$here/tests/web" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >/dev/null) ||
      echo "deps: could not install playwright-core (npm ci in tests/web failed); the web tests will be skipped" >&2
  fi
fi
