#!/usr/bin/env bash
# Profile-guided release build: target/pgo/portcullis.
#
#   bench/pgo.sh
#
# 1. Builds an instrumented release binary (RUSTFLAGS=-Cprofile-generate) in target/pgo-gen.
# 2. Trains it for ~35 s on a mix of gateway traffic (below) against an nginx origin: plain
#    proxied GETs with and without browser-like headers, path stripping, a route with
#    key-auth + rate-limiting + ip-restriction + cors, one with correlation-id and the
#    request/response transformers, the WAF, POST bodies, 404s, HTTPS over HTTP/1.1 and
#    HTTP/2, and the Admin API; then stops it with SIGTERM so it writes its profile.
# 3. Merges the profile (llvm-profdata from rustup's llvm-tools, installed if missing) and
#    rebuilds with RUSTFLAGS=-Cprofile-use in target/pgo-use.
#
# Same source, same features and the same [profile.release] as `cargo build --release`; only
# the optimiser's knowledge of which branches and functions are hot differs. Code the mix does
# not reach is compiled as cold (still correct, optimised for size). docs/performance.md says
# what it buys. Needs what the benchmarks need (nginx, wrk, curl) and ~10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
require_tools nginx wrk curl

HOST=$(rustc -vV | awk '/^host:/ {print $2}')
PROFDATA="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
if [ ! -x "$PROFDATA" ]; then
  rustup component add llvm-tools >&2 || { echo "FATAL: llvm-profdata missing (rustup component add llvm-tools)" >&2; exit 1; }
fi
[ -x "$PROFDATA" ] || { echo "FATAL: $PROFDATA not found after installing llvm-tools" >&2; exit 1; }

ROOT=$PWD
OUT=target/pgo
mkdir -p "$OUT"
RAW="$ROOT/$OUT/raw"
rm -rf "$RAW"
mkdir -p "$RAW"

echo "== instrumented build (target/pgo-gen)" >&2
RUSTFLAGS="-Cprofile-generate=$ROOT/$OUT/build-scripts" \
  cargo build --release -q -p portcullis --target-dir target/pgo-gen
GEN=target/pgo-gen/release/portcullis

echo "== training" >&2
ORIGIN_PORT=18380
PORT=18382
TLS_PORT=18383
ADMIN_PORT=18384
rm -f "$OUT"/*.pid
write_configs "$OUT" "$ORIGIN_PORT" 18381
cat > "$OUT/kong.yml" <<CONF
_format_version: "3.0"
consumers:
  - username: trainer
    keyauth_credentials:
      - key: train-key
services:
  - name: origin
    url: http://127.0.0.1:$ORIGIN_PORT
    # Every route names the host, so a request for another host gets a 404.
    routes:
      - name: root
        hosts: ["127.0.0.1"]
        paths: ["/"]
      - name: api
        hosts: ["127.0.0.1"]
        paths: ["/api/v1"]
        methods: [GET, POST]
      - name: secured
        hosts: ["127.0.0.1"]
        paths: ["/secured"]
        strip_path: false
        plugins:
$(four_plugins)
      - name: transformed
        hosts: ["127.0.0.1"]
        paths: ["/transformed"]
        plugins:
          - name: correlation-id
          - name: request-transformer
            config: {add: {headers: ["x-gateway:portcullis"]}}
          - name: response-transformer
            config: {remove: {headers: [server]}}
      - name: waf
        hosts: ["127.0.0.1"]
        paths: ["/waf"]
        plugins:
          - name: waf
            config: {paranoia_level: 1}
CONF
cat > "$OUT/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"name":"trainer","items":[1,2,3],"note":"profile-guided build"}'
wrk.headers["Content-Type"] = "application/json"
LUA
PC_PID=""
trap cleanup EXIT
taskset -c "$LOAD_CPU" nginx -c "$ROOT/$OUT/origin.conf" -p "$ROOT/$OUT"
# train SETTINGS-FILE LOG: starts the instrumented build and waits until it proxies.
train() {
  LLVM_PROFILE_FILE="$RAW/portcullis-%p-%m.profraw" "$GEN" start --config "$OUT/kong.yml" \
    --settings "$1" --workers 1 --proxy-listen 127.0.0.1:$PORT \
    --proxy-tls-listen 127.0.0.1:$TLS_PORT --admin-listen 127.0.0.1:$ADMIN_PORT 2> "$2" &
  PC_PID=$!
  for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/status" && break; sleep 0.1; done
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/" || { echo "FATAL: instrumented build not answering" >&2; cat "$2" >&2; exit 1; }
}
# Stops it with SIGTERM, so that it writes its profile.
stop_training() {
  kill -TERM "$PC_PID"
  wait "$PC_PID" || true
  PC_PID=""
}
train "$OUT/portcullis.toml" "$OUT/train.log"

B=(-H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) trainer" -H "Accept: application/json, */*"
   -H "Accept-Encoding: gzip, br" -H "Accept-Language: en-GB,en;q=0.9" -H "Cookie: session=abc123")
A=(-H "apikey: train-key" -H "Origin: https://app.example.com")
load() { # seconds connections wrk-args...
  local d=$1 c=$2
  shift 2
  wrk -t1 -c"$c" -d"${d}s" "$@" | awk -v u="${*: -1}" '/requests in/ {printf "  %-45s %s requests\n", u, $1}' >&2
}
load 8 50 "http://127.0.0.1:$PORT/"
load 4 50 "${B[@]}" "http://127.0.0.1:$PORT/api/v1/users/42?fields=name,email"
load 4 50 "${B[@]}" -s "$OUT/post.lua" "http://127.0.0.1:$PORT/api/v1/orders"
load 5 50 "${B[@]}" "${A[@]}" "http://127.0.0.1:$PORT/secured/resource"
load 2 20 "${B[@]}" "http://127.0.0.1:$PORT/secured/resource" # 401s
load 3 50 "${B[@]}" "http://127.0.0.1:$PORT/transformed/x"
load 3 50 "${B[@]}" "http://127.0.0.1:$PORT/waf/page?q=hello"
load 2 20 "http://127.0.0.1:$PORT/waf/page?q=%27%20OR%201=1--" # blocked
load 2 20 -H "Host: nowhere.example" "http://127.0.0.1:$PORT/" # 404s
load 3 20 "${B[@]}" "https://127.0.0.1:$TLS_PORT/api/v1/users"
for _ in $(seq 1 200); do
  curl -sk --http2 -o /dev/null "https://127.0.0.1:$TLS_PORT/api/v1/users"
  curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/status"
done
curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/services"
stop_training
# A second, shorter run with `busy_polling = true`, so that the spinner and the scheduler's
# zero-timeout polls are profiled too (the profiles of both runs are merged).
{ cat "$OUT/portcullis.toml"; echo 'busy_polling = true'; } > "$OUT/portcullis-busy.toml"
train "$OUT/portcullis-busy.toml" "$OUT/train-busy.log"
load 5 50 "http://127.0.0.1:$PORT/"
load 3 50 "${B[@]}" "http://127.0.0.1:$PORT/api/v1/users/42?fields=name,email"
stop_training
ls "$RAW"/*.profraw >/dev/null 2>&1 || { echo "FATAL: the instrumented build wrote no profile" >&2; exit 1; }

# The profile's content in its path: cargo tracks RUSTFLAGS, not the file it names.
"$PROFDATA" merge -o "$OUT/merged.profdata" "$RAW"/*.profraw
SUM=$(sha256sum "$OUT/merged.profdata" | cut -c1-16)
rm -f "$OUT"/portcullis-*.profdata
PROFILE="$ROOT/$OUT/portcullis-$SUM.profdata"
mv "$OUT/merged.profdata" "$PROFILE"

echo "== optimised build (target/pgo-use)" >&2
RUSTFLAGS="-Cprofile-use=$PROFILE" cargo build --release -q -p portcullis --target-dir target/pgo-use
cp target/pgo-use/release/portcullis "$OUT/portcullis"
echo "$OUT/portcullis" >&2
