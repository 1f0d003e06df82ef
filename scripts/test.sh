#!/usr/bin/env bash
# Runs every test: the C tests (warnings as errors), the same C tests under ASan + UBSan and under TSan, and the
# Python tests
# against the installed package.  Uses the fake NVML and fake sysfs trees; needs no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

echo "== C tests"
cmake -S . -B build/test -DJC_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/test -j"$jobs"
ctest --test-dir build/test --output-on-failure -j"$jobs"

echo "== C tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build/asan -DJC_WERROR=ON -DJC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build/asan --output-on-failure -j"$jobs"

echo "== C tests under ThreadSanitizer"
cmake -S . -B build/tsan -DJC_WERROR=ON -DJC_TSAN=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/tsan -j"$jobs"
TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build/tsan --output-on-failure -j"$jobs"

fuzz_s=${JC_FUZZ_SECONDS:-30}
echo "== fuzzing (libFuzzer, ${fuzz_s} s each, side by side): joulecapd protocol, library parsers"
if command -v clang >/dev/null; then
    CC=clang cmake -S . -B build/fuzz -DJC_FUZZ=ON -DJC_BUILD_TESTS=OFF -DJC_BUILD_CLI=OFF -DJC_WERROR=ON \
        -DCMAKE_BUILD_TYPE=Debug >/dev/null
    cmake --build build/fuzz -j"$jobs" --target fuzz_protocol fuzz_parsers
    # One harness: its seed corpus copied to scratch (new inputs stay out of the source tree), a bounded run.
    fuzz() {
        local name=$1 seeds=$2 corpus rc=0
        corpus=$(mktemp -d)
        cp "$seeds"/* "$corpus"/
        build/fuzz/"$name" -max_total_time="$fuzz_s" -timeout=10 -print_final_stats=1 \
            -artifact_prefix=build/fuzz/"$name"- "$corpus" >build/fuzz/"$name".log 2>&1 || rc=$?
        rm -rf "$corpus"
        return "$rc"
    }
    fuzz fuzz_protocol tests/fuzz/corpus &
    protocol=$!
    fuzz fuzz_parsers tests/fuzz/corpus-parsers &
    parsers=$!
    failed=""
    wait "$protocol" || failed="fuzz_protocol"
    wait "$parsers" || failed="$failed fuzz_parsers"
    for name in fuzz_protocol fuzz_parsers; do
        echo "$name: $(grep -E "^Done|number_of_executed_units|new_units_added" build/fuzz/$name.log | tr -s ' ' | tr '\n' ' ')"
    done
    for name in $failed; do
        tail -60 build/fuzz/"$name".log
        echo "$name failed: the input is build/fuzz/$name-crash-* (or -timeout-*; replay: build/fuzz/$name FILE)"
    done
    [ -z "$failed" ] || exit 1
else
    echo "skipped: clang not found (.ci/run installs it); fuzz_protocol_smoke and fuzz_parsers_smoke above ran the"
    echo "harnesses without libFuzzer"
fi

if [ -f pyproject.toml ]; then
    echo "== Python tests"
    venv=${JOULECAP_VENV:-.venv}
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    # matplotlib (joulecap.plot), lightning, transformers and accelerate (the trainer callbacks; transformers'
    # Trainer needs accelerate), tensorboard (a transformers report_to in the tests), tqdm (progress): CPU
    # builds, in one command with torch pinned so that no dependency swaps it for a CUDA build.
    "$venv/bin/python" -m pip install -q torch==2.13.0 pandas pytest matplotlib lightning transformers accelerate \
        tensorboard tqdm
    "$venv/bin/python" -m pip install -q .
    # Run from the tests folder so that the installed package, not the source tree, is imported.
    py="$(cd "$venv" && pwd)/bin/python" # JOULECAP_VENV may be absolute or relative
    (cd tests/python && "$py" -m pytest -q)
fi
