#!/usr/bin/env bash
# The end-to-end HTTP benchmark: `wxgate serve` (safe mode, echo rule, SQLite inbox) under
# `wxgate sim load`, next to the floor — a bare axum handler answering `success` — measured
# in the same run on the same machine.
#
# Usage: bench/http.sh            (from anywhere; about a minute with the defaults)
# Environment knobs: DURATION (seconds measured per run, default 8), WARMUP (default 1),
# CONNECTIONS (default "16 64"), CARGO_TARGET_DIR (as cargo uses it), STORE (sqlite, the
# default; memory; or redis). STORE=redis measures the gateway on the memory store and on
# a Redis server of its own (started on a free port without persistence, pinned with the
# gateway, stopped by its PID) in the same run, against the target of at least half the
# memory store's requests/s.
#
# It talks only to 127.0.0.1, writes only to a temporary directory, and stops exactly the
# processes it started (by PID, on any exit). With two or more CPUs and `taskset`, the
# server runs on CPU 0 and the load generator on CPU 1, so each has one core.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-1}
CONNECTIONS=${CONNECTIONS:-"16 64"}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
APP_ID=wxbench0123456789
STORE=${STORE:-sqlite}
case "$STORE" in
  sqlite | memory) STORES=$STORE ;;
  redis) STORES="memory redis" ;;
  *) echo "STORE must be sqlite, memory or redis" >&2; exit 2 ;;
esac

echo "== building (release)"
cargo build --release --quiet -p wxgate --bin wxgate --example floor
WXGATE=$(realpath "$TARGET_DIR/release/wxgate")
FLOOR=$(realpath "$TARGET_DIR/release/examples/floor")

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

if [ "$STORE" = redis ]; then
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

# The [store] section of each backend.
store_section() {
  case "$1" in
    sqlite) printf '[store]\nbackend = "sqlite"\npath = "%s/bench.db"\n' "$WORK" ;;
    memory) printf '[store]\nbackend = "memory"\n' ;;
    redis) printf '[store]\nbackend = "redis"\nurl = "redis://127.0.0.1:%s/0"\n' "$REDIS_PORT" ;;
  esac
}

for store in $STORES; do
cat >"$WORK/wxgate-$store.toml" <<EOF
listen = "127.0.0.1:0"
log_format = "json"
$(store_section "$store")
[[accounts]]
name = "bench"
app_id = "$APP_ID"
token = "$token"
encoding_aes_key = "$encoding_aes_key"
mode = "safe"
[[accounts.rules]]
echo = true
EOF
done

# The server's CPU time so far (all threads), in clock ticks.
server_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }

# Runs the load generator; prints "requests_per_second p99_ms ok cpu_us_per_request".
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
  local rps p99 ok sent cpu
  rps=$(sed -n 's/^ *"requests_per_second": \([0-9.]*\).*/\1/p' "$out")
  p99=$(sed -n 's/^ *"p99_ms": \([0-9.]*\).*/\1/p' "$out")
  ok=$(sed -n 's/^ *"ok": \([a-z]*\).*/\1/p' "$out" | tail -1)
  sent=$(sed -n 's/^ *"sent": \([0-9]*\).*/\1/p' "$out")
  cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="${sent:-0}" \
    'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print 0 }')
  echo "${rps:-0} ${p99:-0} ${ok:-false} $cpu"
  if [ "$ok" != "true" ]; then
    echo "  (load run reported problems; see below)" >&2
    sed -n '/"errors"/,/}/p;/"unusable"/,/}/p' "$out" >&2
  fi
}

echo "== $PINNING; $DURATION s per run after $WARMUP s warm-up; connections: $CONNECTIONS"
echo "   load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other busy processes make the figures noisy)"
declare -A GATEWAY FLOOR_RESULT

for store in $STORES; do
  echo "== wxgate serve (safe mode, echo rule, $store store)"
  "${CLEAN_ENV[@]}" WXGATE_LOG=info "${SERVER_PIN[@]}" "$WXGATE" serve \
    --config "$WORK/wxgate-$store.toml" >"$WORK/serve-$store.log" 2>&1 &
  SERVER_PID=$!
  URL=$(wait_for "$WORK/serve-$store.log" 'http://127\.0\.0\.1:[0-9]*/wx/bench')
  echo "   $URL"
  for c in $CONNECTIONS; do
    GATEWAY[$store.$c]=$(load "$URL" "$c" "gateway-$store")
    echo "   $c connections: ${GATEWAY[$store.$c]}"
  done
  stop_server
done
# The table and the targets below are about the last backend measured.
for c in $CONNECTIONS; do
  GATEWAY[$c]=${GATEWAY[$store.$c]}
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
echo "== results (safe mode: every request verified, decrypted, recorded in the $store store, answered encrypted)"
printf '%-12s %14s %8s %12s %14s %8s %12s %9s\n' connections "gateway req/s" "p99 ms" "CPU us/req" \
  "floor req/s" "p99 ms" "CPU us/req" "of floor"
for c in $CONNECTIONS; do
  read -r g_rps g_p99 _ g_cpu <<<"${GATEWAY[$c]}"
  read -r f_rps f_p99 _ f_cpu <<<"${FLOOR_RESULT[$c]}"
  ratio=$(awk -v g="$g_rps" -v f="$f_rps" 'BEGIN { if (f > 0) printf "%.0f%%", 100 * g / f; else print "n/a" }')
  printf '%-12s %14.0f %8.3f %12s %14.0f %8.3f %12s %9s\n' "$c" "$g_rps" "$g_p99" "$g_cpu" \
    "$f_rps" "$f_p99" "$f_cpu" "$ratio"
done
echo "(CPU us/req: the server's CPU time per request; 1e6 / it is what one fully available core"
echo " could serve, whatever else the machine was running during the measurement)"
last=${CONNECTIONS##* }
read -r g_rps g_p99 g_ok _ <<<"${GATEWAY[$last]}"
read -r f_rps _ _ _ <<<"${FLOOR_RESULT[$last]}"
echo
echo "targets at $last connections (issue 5): >= 40000 req/s, >= 50% of the floor, p99 <= 5 ms"
awk -v g="$g_rps" -v f="$f_rps" -v p="$g_p99" -v ok="$g_ok" 'BEGIN {
  printf "  throughput %s · share of floor %s · p99 %s · errors %s\n",
    (g >= 40000 ? "met" : "MISSED"), (f > 0 && g / f >= 0.5 ? "met" : "MISSED"),
    (p <= 5 ? "met" : "MISSED"), (ok == "true" ? "none" : "SOME")
}'

if [ "$STORE" = redis ]; then
  echo
  echo "redis store against the memory store (target: >= 50% of its requests/s)"
  for c in $CONNECTIONS; do
    read -r m_rps m_p99 _ _ <<<"${GATEWAY[memory.$c]}"
    read -r r_rps r_p99 _ _ <<<"${GATEWAY[redis.$c]}"
    awk -v c="$c" -v m="$m_rps" -v r="$r_rps" -v mp="$m_p99" -v rp="$r_p99" 'BEGIN {
      printf "  %s connections: memory %.0f req/s (p99 %.3f ms), redis %.0f req/s (p99 %.3f ms): %.0f%% %s\n",
        c, m, mp, r, rp, (m > 0 ? 100 * r / m : 0), (m > 0 && r / m >= 0.5 ? "met" : "MISSED")
    }'
  done
fi
