#!/usr/bin/env bash
# The end-to-end HTTP benchmark: `wxgate serve` (safe mode, echo rule, SQLite inbox) under
# `wxgate sim load`, next to the floor — a bare axum handler answering `success` — measured
# in the same run on the same machine.
#
# Usage: bench/http.sh            (from anywhere; about two minutes with the defaults)
# Environment knobs: DURATION (seconds measured per run, default 8), WARMUP (default 1),
# CONNECTIONS (default "16 64"), STORE (the backends to run, default "sqlite memory"),
# ACCESS_LOG=off (writes `[log] access = false`: no per-message log line; binaries from
# before that setting refuse it),
# WXGATE and FLOOR (binaries to measure instead of building this checkout's, e.g. an older
# build for a before/after in one run; nothing is built when both are given),
# CARGO_TARGET_DIR (as cargo uses it). STORE="memory redis" measures the Redis store (on a
# redis-server of its own: a free port, no persistence, pinned with the gateway, stopped by
# its PID) beside the memory store, against the target of at least half its requests/s.
#
# It talks only to 127.0.0.1, writes only to a temporary directory, and stops exactly the
# processes it started (by PID, on any exit). With two or more CPUs and `taskset`, the
# server runs on CPU 0 and the load generator on CPU 1, so each has one core.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-1}
CONNECTIONS=${CONNECTIONS:-"16 64"}
STORE=${STORE:-"sqlite memory"}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
APP_ID=wxbench0123456789

if [ -z "${WXGATE:-}" ] || [ -z "${FLOOR:-}" ]; then
  echo "== building (release)"
  cargo build --release --quiet -p wxgate --bin wxgate --example floor
fi
WXGATE=$(realpath "${WXGATE:-$TARGET_DIR/release/wxgate}")
FLOOR=$(realpath "${FLOOR:-$TARGET_DIR/release/examples/floor}")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wxgate-bench.XXXXXX")
SERVER_PID=""
REDIS_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
cleanup() {
  stop_server
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  SERVER_PIN=(taskset -c 0)
  LOAD_PIN=(taskset -c 1)
  PINNING="server on CPU 0, load generator on CPU 1"
else
  SERVER_PIN=()
  LOAD_PIN=()
  PINNING="not pinned (needs taskset and 2 CPUs)"
fi

# The server runs in a clean environment (`env -i`), so that no WXGATE_* variable of the
# caller's shell changes the benchmark's config. env and taskset exec the server, so $! is
# the server's own PID.
CLEAN_ENV=(env -i PATH="$PATH" HOME="${HOME:-/tmp}")

# Waits (at most 10 s) until `pattern` appears in `file`; prints the match.
wait_for() {
  local file=$1 pattern=$2 found
  for _ in $(seq 100); do
    found=$(grep -o -m1 "$pattern" "$file" 2>/dev/null || true)
    if [ -n "$found" ]; then
      echo "$found"
      return 0
    fi
    if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "server exited early:" >&2
      cat "$file" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "timed out waiting for the server:" >&2
  cat "$file" >&2
  return 1
}

eval "$("$WXGATE" keygen | sed 's/ = /=/')"   # sets token and encoding_aes_key

# The Redis store gets a server of its own, on a port nothing accepts connections on.
if [[ " $STORE " == *" redis "* ]]; then
  while :; do
    REDIS_PORT=$(shuf -i 20000-60000 -n 1)
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then
      break
    fi
  done
  "${SERVER_PIN[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
    --appendonly no >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_for "$WORK/redis.log" 'Ready to accept connections' >/dev/null
fi
# The config of one backend: its [store] table, then the account.
write_config() {
  local store=$1
  {
    echo 'listen = "127.0.0.1:0"'
    echo 'log_format = "json"'
    echo '[store]'
    echo "backend = \"$store\""
    if [ "$store" = sqlite ]; then echo "path = \"$WORK/bench.db\""; fi
    if [ "$store" = redis ]; then echo "url = \"redis://127.0.0.1:$REDIS_PORT/0\""; fi
    if [ "${ACCESS_LOG:-on}" = off ]; then printf '[log]\naccess = false\n'; fi
    cat <<EOF
[[accounts]]
name = "bench"
app_id = "$APP_ID"
token = "$token"
encoding_aes_key = "$encoding_aes_key"
mode = "safe"
[[accounts.rules]]
echo = true
EOF
  } >"$WORK/wxgate.toml"
}

# The server's CPU time so far (all threads), in clock ticks.
server_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }

# Runs the load generator; prints "requests_per_second p99_ms ok cpu_us_per_request max_ms".
# CPU per request (the server's user + system time over every request sent, warm-up
# included) does not depend on what else the machine runs, unlike requests/s.
load() {
  local url=$1 connections=$2 out="$WORK/load-$3-$2.json"
  local before after
  before=$(server_ticks)
  timeout 300 "${LOAD_PIN[@]}" "$WXGATE" sim load --url "$url" --token "$token" \
    --app-id "$APP_ID" --aes-key "$encoding_aes_key" --connections "$connections" \
    --duration "$DURATION" --warmup "$WARMUP" --json >"$out" 2>"$WORK/load.err" || true
  after=$(server_ticks)
  local rps p99 max ok sent cpu
  rps=$(sed -n 's/^ *"requests_per_second": \([0-9.]*\).*/\1/p' "$out")
  p99=$(sed -n 's/^ *"p99_ms": \([0-9.]*\).*/\1/p' "$out" | head -1)
  max=$(sed -n 's/^ *"max_ms": \([0-9.]*\).*/\1/p' "$out" | head -1)
  ok=$(sed -n 's/^ *"ok": \([a-z]*\).*/\1/p' "$out" | tail -1)
  sent=$(sed -n 's/^ *"sent": \([0-9]*\).*/\1/p' "$out")
  cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="${sent:-0}" \
    'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print 0 }')
  echo "${rps:-0} ${p99:-0} ${ok:-false} $cpu ${max:-0}"
  if [ "$ok" != "true" ]; then
    echo "  (load run reported problems; see below)" >&2
    sed -n '/"errors"/,/}/p;/"unusable"/,/}/p' "$out" >&2
  fi
}

echo "== $PINNING; $DURATION s per run after $WARMUP s warm-up; connections: $CONNECTIONS"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other busy processes make the figures noisy)"
declare -A GATEWAY FLOOR_RESULT

for store in $STORE; do
  write_config "$store"
  rm -f "$WORK"/bench.db*
  echo "== wxgate serve (safe mode, echo rule, $store store)"
  "${CLEAN_ENV[@]}" WXGATE_LOG=info "${SERVER_PIN[@]}" "$WXGATE" serve --config "$WORK/wxgate.toml" \
    >"$WORK/serve.log" 2>&1 &
  SERVER_PID=$!
  URL=$(wait_for "$WORK/serve.log" 'http://127\.0\.0\.1:[0-9]*/wx/bench')
  echo "   $URL"
  for c in $CONNECTIONS; do
    GATEWAY[$store,$c]=$(load "$URL" "$c" "gateway-$store")
    echo "   $c connections: ${GATEWAY[$store,$c]}"
  done
  if [ "$store" = sqlite ]; then
    echo "   file: $(du -ch "$WORK"/bench.db* | tail -1 | cut -f1) in all (db, WAL, lock)"
  fi
  stop_server
done

echo "== floor: bare axum answering success"
"${CLEAN_ENV[@]}" "${SERVER_PIN[@]}" "$FLOOR" 127.0.0.1:0 >"$WORK/floor.log" 2>&1 &
SERVER_PID=$!
FLOOR_URL="$(wait_for "$WORK/floor.log" 'http://127\.0\.0\.1:[0-9]*')/wx/bench"
echo "   $FLOOR_URL"
for c in $CONNECTIONS; do
  FLOOR_RESULT[$c]=$(load "$FLOOR_URL" "$c" floor)
  echo "   $c connections: ${FLOOR_RESULT[$c]}"
done
stop_server

echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "== results (safe mode: every request verified, decrypted, recorded, answered encrypted)"
printf '%-8s %-6s %12s %8s %8s %11s %9s %10s\n' store conns "req/s" "p99 ms" "max ms" "CPU us/req" "of floor" "CPU x floor"
for c in $CONNECTIONS; do
  read -r f_rps f_p99 _ f_cpu f_max <<<"${FLOOR_RESULT[$c]}"
  printf '%-8s %-6s %12.0f %8.3f %8.3f %11s %9s %10s\n' floor "$c" "$f_rps" "$f_p99" "$f_max" "$f_cpu" "100%" "1.00"
  for store in $STORE; do
    read -r g_rps g_p99 _ g_cpu g_max <<<"${GATEWAY[$store,$c]}"
    ratio=$(awk -v g="$g_rps" -v f="$f_rps" 'BEGIN { if (f > 0) printf "%.0f%%", 100 * g / f; else print "n/a" }')
    cpu_ratio=$(awk -v g="$g_cpu" -v f="$f_cpu" 'BEGIN { if (f > 0) printf "%.2f", g / f; else print "n/a" }')
    printf '%-8s %-6s %12.0f %8.3f %8.3f %11s %9s %10s\n' "$store" "$c" "$g_rps" "$g_p99" "$g_max" "$g_cpu" "$ratio" "$cpu_ratio"
  done
done
echo "(CPU us/req: the server's CPU time per request; 1e6 / it is what one fully available core"
echo " could serve, whatever else the machine was running during the measurement)"
echo
echo "targets (issue 8): sqlite CPU <= 2.5x the floor's and p99 <= 5 ms at 64 connections;"
echo "memory CPU <= 1.8x the floor's; no request held over 10 ms by store housekeeping (max ms)"

if [[ " $STORE " == *" redis "* && " $STORE " == *" memory "* ]]; then
  echo "redis store against the memory store in this run (issue 10: >= 50% of its req/s)"
  for c in $CONNECTIONS; do
    read -r m_rps _ _ _ _ <<<"${GATEWAY[memory,$c]}"
    read -r r_rps _ _ _ _ <<<"${GATEWAY[redis,$c]}"
    awk -v c="$c" -v m="$m_rps" -v r="$r_rps" 'BEGIN {
      printf "  %s connections: %.0f%% of the memory store'"'"'s req/s: %s\n", c,
        (m > 0 ? 100 * r / m : 0), (m > 0 && r / m >= 0.5 ? "met" : "MISSED")
    }'
  done
fi
