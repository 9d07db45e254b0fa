#!/usr/bin/env bash
# The project's test command (README): Rust tests of the whole workspace, then the Python
# cross-checks against the format references (gguf-py, numpy pickle). Golden comparisons with
# ../shared/fixtures are mandatory when CI is set.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
echo "== cargo build (release)"
cargo build --release --workspace --all-targets
echo "== cargo test (release)"
cargo test --release --workspace 2>&1 | tee /tmp/grok1-quant-cargo-test.log
echo "== python: quant formats vs gguf-py"
python3 tools/check_quant_gguf_py.py
echo "== python: synthetic checkpoint loads with pickle + numpy + ml_dtypes"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
target/release/grok1-quant synth -o "$tmp/synth" --preset tiny --seed 3
python3 tools/check_synth_pickle.py "$tmp/synth"
passed=$(grep -Eo '[0-9]+ passed' /tmp/grok1-quant-cargo-test.log | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' /tmp/grok1-quant-cargo-test.log | awk '{s+=$1} END {print s+0}')
echo "summary: $passed passed, $failed failed"
