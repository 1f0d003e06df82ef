#!/usr/bin/env bash
# Makes the folder that bench/run_node.sh takes to the GPU machine: the code under test (HEAD, source only:
# library, CLI, daemon, fake NVML), bench_node.c, the runs' scripts and this machine's libmicrohttpd.  Small
# (~2 MB): carry it (`build/` is ignored).
# Usage: bash bench/prepare_node.sh [DEST [REV]]   (defaults build/node HEAD)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-build/node}
rev=${2:-HEAD}
rm -rf "$dest"
mkdir -p "$dest/src/bench" "$dest/bench"
git archive "$rev" CMakeLists.txt include src cli fake daemon | tar -x -C "$dest/src"
cp bench/bench_node.c "$dest/src/bench/"
cp bench/run_node.sh bench/run_scrape.sh bench/exporter_scrape.py tests/scenarios/h100-constant-300w.scn "$dest/bench/"
# libmicrohttpd for run_scrape.sh's joulecapd --metrics, where the GPU machine has no libmicrohttpd-dev: this
# machine's header, library and a .pc file pointing at them.
if pc=$(pkg-config --variable=pcfiledir libmicrohttpd 2>/dev/null) && [ -n "$pc" ]; then
  inc=$(pkg-config --variable=includedir libmicrohttpd) lib=$(pkg-config --variable=libdir libmicrohttpd)
  mkdir -p "$dest/mhd/include" "$dest/mhd/lib/pkgconfig"
  cp "$inc/microhttpd.h" "$dest/mhd/include/"
  cp -L "$lib"/libmicrohttpd.so.[0-9]* "$dest/mhd/lib/" 2>/dev/null
  so=$(cd "$dest/mhd/lib" && ls libmicrohttpd.so.* | head -1)
  ln -sf "$so" "$dest/mhd/lib/libmicrohttpd.so"
  printf '%s\n' 'prefix=${pcfiledir}/../..' 'libdir=${prefix}/lib' 'includedir=${prefix}/include' \
    'Name: libmicrohttpd' 'Description: carried for bench/run_scrape.sh' "Version: $(pkg-config --modversion libmicrohttpd)" \
    'Libs: -L${libdir} -lmicrohttpd' 'Cflags: -I${includedir}' >"$dest/mhd/lib/pkgconfig/libmicrohttpd.pc"
fi
dirty=$(git status --porcelain -- bench/bench_node.c bench/run_node.sh | head -c1)
echo "code $(git rev-parse "$rev") bench $(git rev-parse --short HEAD)${dirty:+ +uncommitted}" >"$dest/VERSIONS"
cat "$dest/VERSIONS"
du -sh "$dest"
