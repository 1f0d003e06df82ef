#!/usr/bin/env bash
# Makes the folder that bench/run_node.sh takes to the GPU machine: the code under test (HEAD, source only:
# library, CLI, daemon, fake NVML), bench_node.c and the run's script.  Small (<1 MB): carry it (`build/` is
# ignored).
# Usage: bash bench/prepare_node.sh [DEST [REV]]   (defaults build/node HEAD)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-build/node}
rev=${2:-HEAD}
rm -rf "$dest"
mkdir -p "$dest/src/bench" "$dest/bench"
git archive "$rev" CMakeLists.txt include src cli fake daemon | tar -x -C "$dest/src"
cp bench/bench_node.c "$dest/src/bench/"
cp bench/run_node.sh tests/scenarios/h100-constant-300w.scn "$dest/bench/"
dirty=$(git status --porcelain -- bench/bench_node.c bench/run_node.sh | head -c1)
echo "code $(git rev-parse "$rev") bench $(git rev-parse --short HEAD)${dirty:+ +uncommitted}" >"$dest/VERSIONS"
cat "$dest/VERSIONS"
du -sh "$dest"
