#!/usr/bin/env bash
# The retention soak: `wxgate serve` under a steady `wxgate sim load` for several minutes
# with both retentions at 60 s, sampling the server's RSS, the store's files and its
# counters every INTERVAL seconds. Once the first minute has passed, RSS and file size
# must stay flat: pruning keeps up and nothing else grows.
#
# Usage: bench/soak.sh            (about DURATION + 10 seconds)
# Environment knobs: STORE (sqlite | memory, default sqlite), DURATION (seconds of load,
# default 200), INTERVAL (seconds between samples, default 10), CONNECTIONS (default 2),
# WXGATE (a wxgate binary; default: this checkout's release build).
#
# It talks only to 127.0.0.1, writes only to a temporary directory, and stops exactly the
# processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."

STORE=${STORE:-sqlite}
DURATION=${DURATION:-200}
INTERVAL=${INTERVAL:-10}
CONNECTIONS=${CONNECTIONS:-2}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
APP_ID=wxsoak0123456789a

if [ -z "${WXGATE:-}" ]; then
  cargo build --release --quiet -p wxgate --bin wxgate
fi
WXGATE=$(realpath "${WXGATE:-$TARGET_DIR/release/wxgate}")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wxgate-soak.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

eval "$("$WXGATE" keygen | sed 's/ = /=/')"
{
  echo 'listen = "127.0.0.1:0"'
  echo 'log_format = "json"'
  echo '[store]'
  echo "backend = \"$STORE\""
  if [ "$STORE" = sqlite ]; then echo "path = \"$WORK/soak.db\""; fi
  echo 'retention_secs = 60'
  echo 'inbox_retention_secs = 60'
  # One log line per message would fill the log; the URL line at start is what is needed.
  echo '[log]'
  echo 'access = false'
  cat <<EOF
[[accounts]]
name = "soak"
app_id = "$APP_ID"
token = "$token"
encoding_aes_key = "$encoding_aes_key"
mode = "safe"
[[accounts.rules]]
echo = true
EOF
} >"$WORK/wxgate.toml"

env -i PATH="$PATH" HOME="${HOME:-/tmp}" WXGATE_LOG=info "$WXGATE" serve --config "$WORK/wxgate.toml" \
  >"$WORK/serve.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
URL=""
for _ in $(seq 100); do
  URL=$(grep -o -m1 'http://127\.0\.0\.1:[0-9]*/wx/soak' "$WORK/serve.log" || true)
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "$URL" ] || { cat "$WORK/serve.log"; exit 1; }
BASE=${URL%/wx/soak}

"$WXGATE" sim load --url "$URL" --token "$token" --app-id "$APP_ID" --aes-key "$encoding_aes_key" \
  --connections "$CONNECTIONS" --duration "$DURATION" --warmup 0 --messages 1500000 --json \
  >"$WORK/load.json" 2>"$WORK/load.err" &
LOAD=$!
PIDS+=("$LOAD")

metric() { curl -s "$BASE/metrics" | sed -n "s/^$1 \([0-9]*\).*/\1/p" | head -1; }
printf '%6s %10s %12s %12s %12s %10s\n' seconds "rss MiB" "files MiB" "inbox" "live claims" "pruned"
start=$(date +%s)
while kill -0 "$LOAD" 2>/dev/null; do
  sleep "$INTERVAL"
  rss=$(awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$SERVER/status")
  files=$(du -cm "$WORK"/soak.db* 2>/dev/null | tail -1 | cut -f1)
  printf '%6s %10s %12s %12s %12s %10s\n' "$(( $(date +%s) - start ))" "$rss" "${files:-0}" \
    "$(metric wxgate_inbox_messages)" "$(metric wxgate_live_claims)" "$(metric wxgate_inbox_pruned)"
done
wait "$LOAD" || true
echo "load: $(sed -n 's/^ *"requests_per_second": \([0-9.]*\).*/\1/p' "$WORK/load.json") req/s over ${DURATION} s"
