#!/usr/bin/env bash
# Fetch llama.cpp through PyPI (the llama-cpp-python sdist vendors it) and build
# the few CPU tools the side-by-side scripts need, OUTSIDE this repository.
#
#   tools/llamacpp/build.sh            # idempotent; prints paths + version
#   LLAMACPP_CACHE=/some/dir tools/llamacpp/build.sh
#   LLAMACPP_PY_VERSION=0.3.36 tools/llamacpp/build.sh   # pin the sdist
#   JOBS=2 (default)
#
# Nothing from llama.cpp is copied into the repo; the cache dir holds the sdist,
# the unpacked source and the build tree. The last lines printed are
# shell-sourceable KEY=VALUE pairs (also written to $CACHE/env.sh).
set -euo pipefail

CACHE="${LLAMACPP_CACHE:-$HOME/.cache/grok1-llamacpp}"
JOBS="${JOBS:-2}"
PIN="${LLAMACPP_PY_VERSION:-}"
mkdir -p "$CACHE/sdist" "$CACHE/src"

command -v cmake >/dev/null || { echo "build.sh: cmake not found (apt-get install -y cmake)" >&2; exit 2; }

# 1. sdist via pip (only llama-cpp-python itself from source; its build
#    backend may come as wheels, otherwise pip compiles cmake from source).
SDIST="$(ls -1 "$CACHE"/sdist/llama_cpp_python-${PIN:-*}.tar.gz 2>/dev/null | sort -V | tail -1 || true)"
if [[ -z "$SDIST" ]]; then
  spec="llama-cpp-python${PIN:+==$PIN}"
  echo "build.sh: pip download --no-deps --no-binary llama-cpp-python $spec" >&2
  pip download --no-deps --no-binary llama-cpp-python "$spec" -d "$CACHE/sdist" >&2
  SDIST="$(ls -1 "$CACHE"/sdist/llama_cpp_python-*.tar.gz | sort -V | tail -1)"
fi
PYVER="$(basename "$SDIST" .tar.gz | sed 's/^llama_cpp_python-//')"
SRC="$CACHE/src/llama_cpp_python-$PYVER"
[[ -d "$SRC" ]] || tar xzf "$SDIST" -C "$CACHE/src"
LC="$SRC/vendor/llama.cpp"
[[ -f "$LC/CMakeLists.txt" ]] || { echo "build.sh: no vendor/llama.cpp in $SDIST" >&2; exit 2; }

# 2. configure (CPU only, shared libllama so the python ctypes binding from the
#    same sdist can be used without a second build)
BUILD="$CACHE/build-$PYVER"
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  cmake -S "$LC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF \
    -DGGML_VULKAN=OFF -DGGML_OPENMP=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_UI=OFF >&2
fi

# 3. only the targets we use
TARGETS=(llama llama-quantize llama-perplexity llama-bench llama-simple llama-tokenize llama-imatrix)
cmake --build "$BUILD" -j"$JOBS" --target "${TARGETS[@]}" >&2

# 4. report
BIN="$BUILD/bin"
LIB="$(dirname "$(find "$BUILD" -name 'libllama.so' | head -1)")"
{
  echo "LLAMACPP_PY_VERSION=$PYVER"
  echo "LLAMACPP_SRC=$LC"
  echo "LLAMACPP_BIN=$BIN"
  echo "LLAMACPP_LIB=$LIB"
  echo "LLAMACPP_PYBIND=$SRC"
  # the sdist's CHANGELOG names the llama.cpp commit it vendors (first "update llama.cpp" line)
  echo "LLAMACPP_COMMIT=$(grep -m1 -o 'llama.cpp@[0-9a-f]*' "$SRC/CHANGELOG.md" | sed 's/.*@//')"
} > "$CACHE/env.sh"
echo "build.sh: llama-cpp-python $PYVER; llama.cpp version:" >&2
"$BIN/llama-bench" --version 2>&1 | sed 's/^/  /' >&2 || true
cat "$CACHE/env.sh"
