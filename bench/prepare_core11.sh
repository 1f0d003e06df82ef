#!/usr/bin/env bash
# Makes the folder that bench/run_core11.sh takes to the GPU machine: the code before issue 11 (8b83272) and the
# code under test (HEAD), source only, each with this working tree's bench_core.c, and the run's scripts.  Small
# (~2 MB): carry it (`build/` is ignored).
# Usage: bash bench/prepare_core11.sh [DEST [OLD [NEW]]]   (defaults build/core11 8b83272 HEAD)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-build/core11}
old=${2:-8b83272}
new=${3:-HEAD}
rm -rf "$dest"
mkdir -p "$dest/old" "$dest/new" "$dest/bench"
git archive "$old" CMakeLists.txt include src cli fake | tar -x -C "$dest/old"
git archive "$new" CMakeLists.txt include src cli fake | tar -x -C "$dest/new"
for t in old new; do
  mkdir -p "$dest/$t/bench"
  cp bench/bench_core.c "$dest/$t/bench/"
done
cp bench/run_core11.sh bench/analyze_core11.py bench/square_wave_load.py bench/fake_square_schedule.py "$dest/bench/"
cp tests/scenarios/h100-square-wave.scn "$dest/bench/"
dirty=$(git status --porcelain -- bench | head -c1)
echo "old $(git rev-parse "$old") new $(git rev-parse "$new") bench $(git rev-parse --short HEAD)${dirty:+ +uncommitted}" \
  >"$dest/VERSIONS"
cat "$dest/VERSIONS"
du -sh "$dest"
