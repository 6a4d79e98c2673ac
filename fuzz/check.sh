#!/usr/bin/env bash
# Type-checks the fuzz targets on the stable compiler, for CI: no sanitizer, no libFuzzer
# run and no libFuzzer C++ build (`--no-default-features`), just proof that the targets
# still build against the current wechat-proto API.
# Running them is fuzz/run.sh's job.
set -euo pipefail
cd "$(dirname "$0")"
# Not --locked: a new dependency of wechat-proto must not break CI until this lock file
# is refreshed; cargo updates it in place.
cargo check --bins --no-default-features
