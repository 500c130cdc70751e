#!/usr/bin/env bash
# Cost of security plugins, measured in one run against the same origin:
#   plain   — a route with no plugins
#   four    — key-auth + rate-limiting (local) + ip-restriction + cors
#   waf     — the WAF (libmodsecurity + OWASP CRS, paranoia level 1), default settings: wrk
#             repeats one request, so after the first it is answered from the verdict cache
#   wafcold — the same WAF with verdict_cache_size 0: every request runs a full transaction,
#             the cost of a request never seen before
# and nginx as a reverse proxy for reference. Interleaved rounds, one worker each, the proxy
# pinned to CPU 0 and wrk + origin on CPU 1 (as bench/run.sh).
#
#   bench/plugins.sh [seconds-per-round] [rounds] [connections]
#
# Issue targets: four >= 90% of plain, waf >= 50% of plain.
#
# Measures the profile-guided release build (bench/pgo.sh, target/pgo/portcullis); PGO=0
# measures the binary `cargo build --release` makes instead, BIN a ready binary.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
ROUNDS=${2:-3}
CONNS=${3:-50}
. bench/lib.sh
require_tools nginx wrk taskset curl
if [ -z "${BIN:-}" ]; then
  if [ "${PGO:-1}" = 1 ]; then
    bench/pgo.sh
    BIN=./target/pgo/portcullis
  else
    cargo build --release -q -p portcullis
    BIN=./target/release/portcullis
  fi
fi
echo "measuring $BIN" >&2
OUT=bench/out-plugins
mkdir -p "$OUT"
rm -f "$OUT"/*.pid
ORIGIN_PORT=18180
NGINX_PORT=18181
PC_PORT=18182

write_configs "$OUT" "$ORIGIN_PORT" "$NGINX_PORT"
cat > "$OUT/kong.yml" <<CONF
_format_version: "3.0"
consumers:
  - username: bench
    keyauth_credentials:
      - key: bench-key
services:
  - name: origin
    url: http://127.0.0.1:$ORIGIN_PORT
    routes:
      - name: plain
        paths: ["/plain"]
        strip_path: false
      - name: four
        paths: ["/four"]
        strip_path: false
        plugins:
$(four_plugins)
      - name: waf
        paths: ["/waf"]
        strip_path: false
        plugins:
          - name: waf
            config: {paranoia_level: 1}
      - name: wafcold
        paths: ["/wafcold"]
        strip_path: false
        plugins:
          - name: waf
            config: {paranoia_level: 1, verdict_cache_size: 0}
CONF
trap cleanup EXIT
start_nginx
taskset -c "$PROXY_CPU" "$BIN" start --config "$OUT/kong.yml" --settings "$OUT/portcullis.toml" \
  --proxy-listen 127.0.0.1:$PC_PORT --proxy-tls-listen 127.0.0.1:18543 --admin-listen 127.0.0.1:18101 --workers 1 \
  2> "$OUT/portcullis.log" &
PC_PID=$!
for _ in $(seq 1 200); do curl -sf -o /dev/null http://127.0.0.1:18101/status && break; sleep 0.1; done
H=(-H "apikey: bench-key" -H "Origin: https://app.example.com" -H "User-Agent: Mozilla/5.0 bench" -H "Accept: */*")
for path in /plain /four /waf /wafcold; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "${H[@]}" "http://127.0.0.1:$PC_PORT$path")
  [ "$code" = 200 ] || { echo "FATAL: $path answered $code" >&2; cat "$OUT/portcullis.log" >&2; exit 1; }
done

NGINX_WORKER=$(pgrep -P "$(cat "$OUT/nginx-proxy.pid")" | head -1)
run() { # name url pid
  local out rps p99 errs c0 c1 reqs cpu_us
  c0=$(cpu_ticks "$3")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "${H[@]}" "$2" 2>&1)
  c1=$(cpu_ticks "$3")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  cpu_us=$(awk -v c="$((c1 - c0))" -v hz="$TICK_HZ" -v n="$reqs" 'BEGIN { printf "%.1f", c * 1e6 / hz / n }')
  printf "%-7s round %d  %10.0f req/s  p99 %7s ms  cpu %7s us/req  %s\n" "$1" "$ROUND" "$rps" "$p99" "$cpu_us" "$errs" >&2
  [ -z "$errs" ] || { echo "FATAL: errors during $1: $errs" >&2; exit 1; }
  echo "$1 $rps $p99 $cpu_us" >> "$OUT/results.txt"
}
: > "$OUT/results.txt"
echo "warm-up..." >&2
for p in /plain /four /waf /wafcold; do taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "${H[@]}" "http://127.0.0.1:$PC_PORT$p" >/dev/null; done
for ROUND in $(seq 1 "$ROUNDS"); do
  run nginx "http://127.0.0.1:$NGINX_PORT/plain" "$NGINX_WORKER"
  run plain "http://127.0.0.1:$PC_PORT/plain" "$PC_PID"
  run four "http://127.0.0.1:$PC_PORT/four" "$PC_PID"
  run waf "http://127.0.0.1:$PC_PORT/waf" "$PC_PID"
  run wafcold "http://127.0.0.1:$PC_PORT/wafcold" "$PC_PID"
done
awk '
  { rps[$1]+=$2; p99[$1]+=$3; cpu[$1]+=$4; n[$1]++ }
  END {
    printf "\n%-7s %12s %10s %12s\n", "route", "req/s(avg)", "p99 ms", "cpu us/req"
    split("nginx plain four waf wafcold", order, " ")
    for (i = 1; i <= 5; i++) { k = order[i]; printf "%-7s %12.0f %10.3f %12.1f\n", k, rps[k]/n[k], p99[k]/n[k], cpu[k]/n[k] }
    plain = rps["plain"]/n["plain"]
    printf "\nCPU per request relative to plain (throughput share when CPU-bound): four %.0f%%, waf %.0f%%, wafcold %.0f%%\n", 100 * cpu["plain"] / cpu["four"], 100 * cpu["plain"] / cpu["waf"], 100 * cpu["plain"] / cpu["wafcold"]
    printf "\nfour-plugin route: %.0f%% of plain (target >= 90%%)\n", 100 * (rps["four"]/n["four"]) / plain
    printf "waf route:         %.0f%% of plain (target >= 50%%; repeated request, verdict cached)\n", 100 * (rps["waf"]/n["waf"]) / plain
    printf "waf, no cache:     %.0f%% of plain (every request a full libmodsecurity transaction)\n", 100 * (rps["wafcold"]/n["wafcold"]) / plain
    printf "plain vs nginx:    %.2fx\n", plain / (rps["nginx"]/n["nginx"])
  }' "$OUT/results.txt"
