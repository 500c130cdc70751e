#!/usr/bin/env bash
# Throughput and latency of a plain proxied GET: Portcullis vs nginx as a reverse proxy, in
# interleaved rounds, against the same origin (nginx returning a small static body). Two nginx
# columns: "nginx", a plain reverse proxy (Host, X-Real-IP, X-Forwarded-For), and "nginx-kong",
# the same nginx made to send the headers Kong's contract makes Portcullis send (see lib.sh).
#
#   bench/run.sh [seconds-per-round] [rounds] [connections]
#
# Up to four Portcullis columns: "portcullis", the binary `cargo build --release` makes,
# "portcullis-pgo", the same source built profile-guided by bench/pgo.sh (the release build;
# ~10 more minutes the first time), and "pgo-hdrs-off", the profile-guided build with Kong's
# `headers = off` and `headers_upstream = off` (no latency or request-id headers on responses,
# no request id upstream: the closest Kong lets a node come to what plain nginx sends; the
# X-Forwarded-* headers stay; OFF=1 adds this column). A last column, "pgo-busy" (or "busy"
# with PGO=0), runs the same binary with `busy_polling = true` (the worker polls instead of
# sleeping while traffic flows; BUSY=0 leaves it out). PGO=0 leaves the profile-guided columns
# out; BIN and PGO_BIN name ready binaries instead of building them. NOBATCH=1 adds a column
# with `batch_writes = false` ("pgo-nobatch", or "nobatch" with PGO=0), to measure write
# batching in the same rounds.
#
# One worker each. On a 2-core machine the proxy under test is pinned to CPU 0, and the load
# generator (wrk) and the origin share CPU 1. Needs: nginx, wrk, taskset (apt install
# nginx-light wrk util-linux). Prints requests/s, p50, p99, the proxy's and the origin's CPU per
# request for each round, and the ratios against each nginx column.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}
ROUNDS=${2:-3}
CONNS=${3:-50}
. bench/lib.sh
require_tools nginx wrk taskset curl

[ -n "${BIN:-}" ] || cargo build --release -q -p portcullis
BIN=${BIN:-./target/release/portcullis}
PGO=${PGO:-1}
OFF=${OFF:-0}
BUSY=${BUSY:-1}
NOBATCH=${NOBATCH:-0}
[ "$PGO" = 1 ] || OFF=0
if [ "$PGO" = 1 ] && [ -z "${PGO_BIN:-}" ]; then
  bench/pgo.sh
  PGO_BIN=./target/pgo/portcullis
fi
OUT=bench/out
mkdir -p "$OUT"
rm -f "$OUT"/*.pid

ORIGIN_PORT=18080
NGINX_PORT=18081
PC_PORT=18082
NGINX_KONG_PORT=18083
PGO_PORT=18084
OFF_PORT=18085
BUSY_PORT=18086
NOBATCH_PORT=18087

write_configs "$OUT" "$ORIGIN_PORT" "$NGINX_PORT" "$NGINX_KONG_PORT"

cat > "$OUT/kong.yml" <<CONF
_format_version: "3.0"
services:
  - name: origin
    url: http://127.0.0.1:$ORIGIN_PORT
    routes:
      - name: all
        paths: ["/"]
CONF
trap cleanup EXIT

start_nginx
# start_pc column binary settings-file proxy-port admin-port: starts one Portcullis column on
# the proxies' CPU and waits until it proxies.
start_pc() {
  taskset -c "$PROXY_CPU" "$2" start --config "$OUT/kong.yml" --settings "$3" \
    --proxy-listen "127.0.0.1:$4" --proxy-tls-listen "127.0.0.1:$(($4 + 400))" --admin-listen "127.0.0.1:$5" --workers 1 \
    2> "$OUT/$1.log" &
  PIDS="$PIDS $!"
  PID[$1]=$!
  PORT[$1]=$4
  COLUMNS_PC="$COLUMNS_PC $1"
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$5/status" && break; sleep 0.1; done
  curl -sf -o /dev/null "http://127.0.0.1:$4/" || { echo "$1 not answering" >&2; cat "$OUT/$1.log"; exit 1; }
}
PIDS=""
COLUMNS_PC=""
declare -A PID PORT # by column
start_pc portcullis "$BIN" "$OUT/portcullis.toml" $PC_PORT 18001
if [ "$PGO" = 1 ]; then start_pc portcullis-pgo "$PGO_BIN" "$OUT/portcullis.toml" $PGO_PORT 18002; fi
if [ "$OFF" = 1 ]; then
  { cat "$OUT/portcullis.toml"; printf 'headers = "off"\nheaders_upstream = "off"\n'; } > "$OUT/portcullis-off.toml"
  start_pc pgo-hdrs-off "$PGO_BIN" "$OUT/portcullis-off.toml" $OFF_PORT 18003
fi
if [ "$BUSY" = 1 ]; then
  { cat "$OUT/portcullis.toml"; printf 'busy_polling = true\n'; } > "$OUT/portcullis-busy.toml"
  if [ "$PGO" = 1 ]; then start_pc pgo-busy "$PGO_BIN" "$OUT/portcullis-busy.toml" $BUSY_PORT 18004
  else start_pc busy "$BIN" "$OUT/portcullis-busy.toml" $BUSY_PORT 18004; fi
fi
if [ "$NOBATCH" = 1 ]; then
  { cat "$OUT/portcullis.toml"; printf 'batch_writes = false\n'; } > "$OUT/portcullis-nobatch.toml"
  if [ "$PGO" = 1 ]; then start_pc pgo-nobatch "$PGO_BIN" "$OUT/portcullis-nobatch.toml" $NOBATCH_PORT 18005
  else start_pc nobatch "$BIN" "$OUT/portcullis-nobatch.toml" $NOBATCH_PORT 18005; fi
fi
curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/" || { echo "nginx proxy not answering" >&2; exit 1; }
curl -sf -o /dev/null "http://127.0.0.1:$NGINX_KONG_PORT/" || { echo "nginx (Kong headers) not answering" >&2; exit 1; }

NGINX_WORKER=$(pgrep -P "$(cat "$OUT/nginx-proxy.pid")" | head -1)
ORIGIN_WORKER=$(pgrep -P "$(cat "$OUT/origin.pid")" | head -1)

run() { # name port pid
  local out c0 c1 o0 o1
  c0=$(cpu_ticks "$3")
  o0=$(cpu_ticks "$ORIGIN_WORKER")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$2/" 2>&1)
  c1=$(cpu_ticks "$3")
  o1=$(cpu_ticks "$ORIGIN_WORKER")
  local rps p50 p99 errs
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}' | to_ms)
  p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  local reqs cpu_us origin_us
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  cpu_us=$(awk -v c="$((c1 - c0))" -v hz="$TICK_HZ" -v n="$reqs" 'BEGIN { printf "%.1f", c * 1e6 / hz / n }')
  origin_us=$(awk -v c="$((o1 - o0))" -v hz="$TICK_HZ" -v n="$reqs" 'BEGIN { printf "%.1f", c * 1e6 / hz / n }')
  printf "%-14s round %d  %10.0f req/s  p50 %7s ms  p99 %7s ms  cpu %6s us/req  origin %5s us/req  %s\n" "$1" "$ROUND" "$rps" "$p50" "$p99" "$cpu_us" "$origin_us" "$errs" >&2
  echo "$1 $rps $p50 $p99 $cpu_us $origin_us" >> "$OUT/results.txt"
}

: > "$OUT/results.txt"
echo "warm-up..." >&2
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$NGINX_PORT/" >/dev/null
taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$NGINX_KONG_PORT/" >/dev/null
for pc in $COLUMNS_PC; do taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:${PORT[$pc]}/" >/dev/null; done
for ROUND in $(seq 1 "$ROUNDS"); do
  run nginx $NGINX_PORT "$NGINX_WORKER"
  run nginx-kong $NGINX_KONG_PORT "$NGINX_WORKER"
  for pc in $COLUMNS_PC; do run "$pc" "${PORT[$pc]}" "${PID[$pc]}"; done
done

awk -v pcs="$COLUMNS_PC" '
  { rps[$1]+=$2; p50[$1]+=$3; p99[$1]+=$4; cpu[$1]+=$5; org[$1]+=$6; n[$1]++ }
  END {
    printf "\n%-14s %12s %10s %10s %12s %14s\n", "proxy", "req/s(avg)", "p50 ms", "p99 ms", "cpu us/req", "origin us/req"
    for (k in n) printf "%-14s %12.0f %10.3f %10.3f %12.1f %14.1f\n", k, rps[k]/n[k], p50[k]/n[k], p99[k]/n[k], cpu[k]/n[k], org[k]/n[k]
    split("nginx nginx-kong", refs, " ")
    np = split(pcs, ps, " ")
    printf "\n"
    for (j = 1; j <= np; j++) for (i = 1; i <= 2; i++) {
      r = refs[i]; p = ps[j]
      printf "ratio %s/%-10s throughput %.2fx, p99 difference %+.3f ms, CPU per request %.2fx\n",
        p, r ":", (rps[p]/n[p])/(rps[r]/n[r]), p99[p]/n[p] - p99[r]/n[r], (cpu[p]/n[p])/(cpu[r]/n[r])
    }
  }' "$OUT/results.txt"

# The same ratios from each column's median round: one VM stall (a descheduled vCPU shows up
# as a p99 of several ms in one round, for either proxy) moves a mean far more than a median.
median() { # proxy column
  awk -v k="$1" -v c="$2" '$1==k {print $c}' "$OUT/results.txt" | sort -g |
    awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}
# Each round's throughput ratio against the reference run just before it (adjacent in time,
# so a slow spell of the VM hits both), and the median of those ratios.
paired() { # reference column
  awk -v r="$1" -v p="$2" '$1==r {ref=$2} $1==p && ref {print $2/ref}' "$OUT/results.txt" | sort -g |
    awk -v p="$2" '{v[NR]=$1; if ($1 >= 1) w++} END {printf "%.2fx (%s ahead in %d of %d rounds)", (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2, p, w, NR}'
}
for pc in $COLUMNS_PC; do
  for ref in nginx nginx-kong; do
    awk -v ref="$ref" -v pcn="$pc" -v nr="$(median "$ref" 2)" -v pr="$(median "$pc" 2)" \
        -v n99="$(median "$ref" 4)" -v p99="$(median "$pc" 4)" \
        -v nc="$(median "$ref" 5)" -v pcc="$(median "$pc" 5)" -v paired="$(paired "$ref" "$pc")" 'BEGIN {
      printf "medians %s vs %-11s throughput %.2fx, p99 difference %+.3f ms, CPU per request %.2fx (%s %.0f req/s, p99 %.3f ms; %s %.0f req/s, p99 %.3f ms); round by round: %s\n",
        pcn, ref ":", pr/nr, p99-n99, pcc/nc, ref, nr, n99, pcn, pr, p99, paired
    }'
  done
done
