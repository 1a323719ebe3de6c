#!/usr/bin/env bash
# Fuzzes the layout/index parser, the reference and platform parsers and the docker config
# parser for a bounded time each (FUZZ_SECONDS, default 20). cargo-fuzz comes from crates.io;
# RUSTC_BOOTSTRAP lets the stable toolchain accept the flags it passes (no sanitizer).
# A crash leaves its input in fuzz/artifacts/<target>/: turn it into a regression test.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
for target in layout_index reference docker_config; do
    echo "fuzzing $target for ${FUZZ_SECONDS:-20}s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$target" -- -max_total_time="${FUZZ_SECONDS:-20}" 2>&1 | grep -E "^Done|SUMMARY|panicked|ERROR" || true
    if [[ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]]; then
        echo "fuzz target $target found a crash: $(ls "artifacts/$target")" >&2
        exit 1
    fi
done
