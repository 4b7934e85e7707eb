#!/usr/bin/env bash
# Builds and runs one fuzz target with libFuzzer, on the stable toolchain.
#
#   fuzz/run.sh TARGET [SECONDS | -runs=N] [LIBFUZZER_FLAG...]   run (default: 60 seconds)
#   fuzz/run.sh --build [TARGET...]                              build only (default: all)
#   fuzz/run.sh --list                                           the target names
#
# The corpus grows in fuzz/corpus/TARGET (not committed); the committed seeds in
# fuzz/seeds/TARGET are read too. A crash is written to fuzz/artifacts/TARGET/ and makes this
# script exit non-zero; reproduce it with `fuzz/run.sh TARGET fuzz/artifacts/TARGET/crash-…`.
#
# Why RUSTC_BOOTSTRAP=1: the coverage flags below are stable rustc flags, but cargo-fuzz and
# the sanitizers pass `-Z` options (`cargo fuzz` defaults to `-Zsanitizer=address`), which stable
# rustc refuses without it. Setting it here keeps one build for both ways and lets
# `VIPD_FUZZ_RUSTFLAGS=-Zsanitizer=address fuzz/run.sh …` add AddressSanitizer on the one stable
# toolchain. It enables nothing in vipd itself (vipd uses no unstable feature).
set -euo pipefail
cd "$(dirname "$0")"

targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^vipd-fuzz$')

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  echo "targets: $(echo $targets)" >&2
  exit 2
}

[ $# -ge 1 ] || usage
host=$(rustc -vV | sed -n 's/^host: //p')
# The flags cargo-fuzz sets (without a sanitizer: the code under test is safe Rust).
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks \
${VIPD_FUZZ_RUSTFLAGS:-}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_FUZZ:-$PWD/target}"

build() {
  local args=()
  for t in "$@"; do args+=(--bin "$t"); done
  # `--target` keeps RUSTFLAGS away from build scripts and proc macros (they must not be
  # instrumented: nothing links libFuzzer into them).
  cargo build --locked --release --target "$host" "${args[@]}"
}

case "$1" in
  --list) echo "$targets"; exit 0 ;;
  --build) shift; if [ $# -eq 0 ]; then set -- $targets; fi; build "$@"; exit 0 ;;
  -*) usage ;;
esac

target=$1; shift
grep -qx "$target" <<<"$targets" || { echo "unknown target $target" >&2; usage; }
limit=(-max_total_time=60)
if [ $# -ge 1 ]; then
  case "$1" in
    -runs=*) limit=("$1"); shift ;;
    ''|*[!0-9]*) ;;
    *) limit=(-max_total_time="$1"); shift ;;
  esac
fi
build "$target"
bin="$CARGO_TARGET_DIR/$host/release/$target"
mkdir -p "corpus/$target" "artifacts/$target"
# A file argument reproduces one input instead of fuzzing.
for a in "$@"; do
  if [ -f "$a" ]; then exec "$bin" "$@"; fi
done
exec "$bin" -artifact_prefix="artifacts/$target/" -print_final_stats=1 "${limit[@]}" "$@" \
  "corpus/$target" "seeds/$target"
