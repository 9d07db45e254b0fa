#!/usr/bin/env bash
# Every SIMD intrinsic in the release binaries must be inlined into its kernel.
#
# An intrinsic (`_mm256_and_si256`, `vaddq_f32`, ...) is a function carrying its target
# feature; it inlines only into code compiled with that feature. A closure written inside a
# kernel's `#[inline(always)]` body is a function of its own without the wrapper's
# `#[target_feature]`: where LLVM leaves such a closure out of line, every intrinsic in it
# becomes a call and the kernel runs tens of times slower, with the right results (the Q5_0
# AVX2 row-major kernel ran at 0.4 GB/s in cache, 2026-11-23). No test of results can see
# that, so this looks at the symbols: an intrinsic present as a function of its own means one
# was not inlined somewhere, and the callers are listed.
#
# Usage: tools/check_inlined_intrinsics.sh [--target TRIPLE]   (after a release build; the
# host check covers the grok1-quant binary and every workspace test binary, the aarch64 one
# the quant crate's test binaries, which reach all its kernels).
set -euo pipefail
cd "$(dirname "$0")/.."
target_args=()
nm_tool=nm
objdump_tool=objdump
packages=(--workspace)
if [ "${1:-}" = "--target" ]; then
  target_args=(--target "$2")
  packages=(-p quant)
  case "$2" in
  aarch64-*) nm_tool=aarch64-linux-gnu-nm objdump_tool=aarch64-linux-gnu-objdump ;;
  esac
fi
mapfile -t bins < <(
  cargo test --release "${packages[@]}" "${target_args[@]}" --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])
'
)
if [ "${#target_args[@]}" -eq 0 ]; then
  bins+=(target/release/grok1-quant)
fi
if [ "${#bins[@]}" -eq 0 ]; then
  echo "error: no test binaries found to check" >&2
  exit 1
fi
# CPU feature detection calls these out of line by design (they are not kernels' work).
allowed='_xgetbv|__cpuid'
bad=0
for b in "${bins[@]}"; do
  if ! [ -f "$b" ]; then
    echo "error: $b is missing (build it first)" >&2
    exit 1
  fi
  syms=$("$nm_tool" -C "$b" | grep -E ' core::core_arch::' | grep -Ev "$allowed" || true)
  if [ -n "$syms" ]; then
    bad=1
    echo "error: $b has SIMD intrinsics compiled as functions of their own (not inlined):" >&2
    echo "$syms" | awk '{$1=""; $2=""; print "   " $0}' | sort -u >&2
    echo "  called from:" >&2
    "$objdump_tool" -d --no-show-raw-insn -C "$b" |
      grep -Ev "$allowed" |
      awk '/^[0-9a-f]+ <.*>:$/ { fn = $0 } /(call|bl) .*core::core_arch::/ { print "    " fn }' |
      sort -u | head -20 >&2
  fi
done
if [ "$bad" -ne 0 ]; then
  exit 1
fi
echo "all SIMD intrinsics inlined (${#bins[@]} binaries checked)"
