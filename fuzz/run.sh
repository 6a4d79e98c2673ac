#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS seconds each, default 30:
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Each target starts from its committed seeds (seeds/TARGET, made from the known-answer
# vectors) plus whatever corpus/TARGET has collected; new inputs go to corpus/TARGET and
# crashes to artifacts/TARGET (all ignored by git). Exits non-zero if any target crashed.
#
# libFuzzer's sanitizer flags need a nightly compiler. Without a nightly toolchain the
# stable one is used with RUSTC_BOOTSTRAP=1, which unlocks the same flags.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-30}"
shift || true
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=(inbound envelope decrypt reply auth)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  echo "run.sh: no nightly toolchain, using stable with RUSTC_BOOTSTRAP=1" >&2
  fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
fi

failed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "=== $target: ${seconds}s" >&2
  if ! "${fuzz[@]}" run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1; then
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "run.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "run.sh: no crash in ${targets[*]} (${seconds}s each)" >&2
