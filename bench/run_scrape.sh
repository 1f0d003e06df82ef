#!/usr/bin/env bash
# On the GPU machine: build joulecapd with libmicrohttpd (the system's, else the one carried in mhd/), then
# bench/exporter_scrape.py against the real GPU.
# Usage: bash bench/prepare_node.sh build/node   (here), then bash build/node/bench/run_scrape.sh build/node "$OUT"
set -uo pipefail
src=$(cd "${1:-build/node}" && pwd); out=${2:-$OUT}
if ! pkg-config --exists libmicrohttpd 2>/dev/null; then
  echo "libmicrohttpd: carried"; export PKG_CONFIG_PATH=$src/mhd/lib/pkgconfig LD_LIBRARY_PATH=$src/mhd/lib
  ldd $src/mhd/lib/libmicrohttpd.so.12 | grep "not found"
else echo "libmicrohttpd: system"; fi
cmake -S $src/src -B $src/build-mhd -DCMAKE_BUILD_TYPE=Release -DJC_MICROHTTPD=ON -DJC_BUILD_TESTS=OFF >$out/cmake.log 2>&1 &&
  cmake --build $src/build-mhd -j16 --target joulecapd >>$out/cmake.log 2>&1 || { tail -20 $out/cmake.log; exit 1; }
python3 $src/bench/exporter_scrape.py --daemon $src/build-mhd/joulecapd --seconds 15 --json $out/scrape.json 2>&1 | tail -25
