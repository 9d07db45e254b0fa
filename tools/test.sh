#!/usr/bin/env bash
# The project's test command (README): Rust tests of the whole workspace, then the Python
# cross-checks against the format references (gguf-py, numpy pickle), then the quant crate's
# tests on aarch64 under qemu-user. Golden comparisons with ../shared/fixtures are mandatory
# when CI is set.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
echo "== cargo build (release)"
cargo build --release --workspace --all-targets
echo "== cargo test (release)"
cargo test --release --workspace 2>&1 | tee /tmp/grok1-quant-cargo-test.log
# On a CPU with AVX-512 the quant kernels that have an AVX-512 version ran it above; run the
# quant crate's tests again on the AVX2 versions, which other x86-64 machines run.
avx2_log=/tmp/grok1-quant-avx2-test.log
: >"$avx2_log"
if grep -qw avx512_vnni /proc/cpuinfo 2>/dev/null; then
  echo "== cargo test -p quant with QUANT_NO_AVX512 (the AVX2 kernels)"
  QUANT_NO_AVX512=1 cargo test --release -p quant 2>&1 | tee "$avx2_log"
fi
echo "== every SIMD intrinsic inlined into its kernel (release binaries' symbols)"
tools/check_inlined_intrinsics.sh
echo "== python: quant formats vs gguf-py"
python3 tools/check_quant_gguf_py.py
echo "== python: synthetic checkpoint loads with pickle + numpy + ml_dtypes"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
target/release/grok1-quant synth -o "$tmp/synth" --preset tiny --seed 3
python3 tools/check_synth_pickle.py "$tmp/synth"

# The quant crate cross-compiled for aarch64 and run under qemu-user: its tests compare the
# NEON kernels with the scalar references (no speed is measured under emulation). Needs the
# Rust target, the cross linker and C runtime, and qemu-user (.ci/run installs them). With CI
# set a missing piece fails the run; without, the step is skipped and says why.
aarch64_log=/tmp/grok1-quant-aarch64-test.log
: >"$aarch64_log"
aarch64_missing() {
  local t=aarch64-unknown-linux-gnu
  if ! [ -d "$(rustc --print sysroot)/lib/rustlib/$t/lib" ]; then
    echo "Rust target $t not installed (rustup target add $t)"
  elif ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    echo "no aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu)"
  elif ! [ -e /usr/aarch64-linux-gnu/lib/crt1.o ]; then
    echo "no aarch64 C runtime (apt-get install libc6-dev-arm64-cross)"
  elif ! command -v qemu-aarch64 >/dev/null; then
    echo "no qemu-aarch64 (apt-get install qemu-user)"
  fi
}
echo "== cargo test -p quant, aarch64 (NEON kernels) under qemu-user"
missing=$(aarch64_missing)
if [ -n "$missing" ]; then
  if [ -n "${CI:-}" ]; then
    echo "error: aarch64 NEON tests cannot run: $missing" >&2
    exit 1
  fi
  echo "skipping aarch64 NEON tests: $missing"
  aarch64_note="aarch64 under qemu: skipped ($missing)"
else
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}"
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER:-qemu-aarch64 -L /usr/aarch64-linux-gnu}"
  cargo test --release -p quant --target aarch64-unknown-linux-gnu 2>&1 | tee "$aarch64_log"
  tools/check_inlined_intrinsics.sh --target aarch64-unknown-linux-gnu
  aarch64_note="aarch64 under qemu: $(grep -Eo '[0-9]+ passed' "$aarch64_log" | awk '{s+=$1} END {print s+0}') passed (counted below)"
fi

# Every test this script ran: the workspace's, and the quant crate's again on AVX2 and on aarch64.
count() { cat /tmp/grok1-quant-cargo-test.log "$avx2_log" "$aarch64_log" | grep -Eo "[0-9]+ $1" | awk '{s+=$1} END {print s+0}'; }
passed=$(count passed)
failed=$(count failed)
echo "$aarch64_note"
echo "summary: $passed passed, $failed failed"
