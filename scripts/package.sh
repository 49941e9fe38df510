#!/bin/sh
# Builds the Debian package of runbook from this tree: a release build
# (build-pkg/ unless -B names one), then CPack's DEB generator. Depends
# come from the libraries the binary links (dpkg-shlibdeps); the dlopen'ed
# libcurl, libpq and hiredis are Recommends. Prints the .deb's path.
#   scripts/package.sh [-B BUILD_DIR] [-o OUT_DIR]
set -eu
cd "$(dirname "$0")/.."
src=$(pwd)
build=build-pkg
out=
while [ $# -gt 0 ]; do
  case $1 in
    -B) build=$2; shift 2 ;;
    -o) out=$2; shift 2 ;;
    *) echo "usage: scripts/package.sh [-B BUILD_DIR] [-o OUT_DIR]" >&2; exit 2 ;;
  esac
done
for tool in cmake ninja dpkg-deb dpkg-shlibdeps; do
  command -v $tool >/dev/null || { echo "package: $tool is missing (scripts/deps.sh build)" >&2; exit 2; }
done
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
ninja -C "$build" >/dev/null
out=${out:-$build}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# a directory of its own for CPack's staging, so a package built while
# another is (or tests run) never shares a tree
cpack --config "$build/CPackConfig.cmake" -B "$out" >"$out/cpack.log" 2>&1 ||
  { cat "$out/cpack.log" >&2; exit 1; }
deb=$(ls -t "$out"/runbook_*.deb | head -n 1)
echo "$deb"
