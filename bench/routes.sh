#!/usr/bin/env bash
# Config load time versus route count: generates kong.yml files with 1, 100 and 10,000 routes
# and times `portcullis config validate` (parse, validate, compile the router and plugins),
# then runs the router's own lookup benchmark (ns per match for 1, 100, 10,000 routes).
#
#   bench/routes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p portcullis
OUT=bench/out
mkdir -p "$OUT"
printf "%8s %12s\n" routes "validate ms"
for n in 1 100 10000; do
  f="$OUT/routes-$n.yml"
  {
    echo '_format_version: "3.0"'
    echo 'services:'
    echo '  - name: svc'
    echo '    url: http://127.0.0.1:9000'
    echo '    routes:'
    for i in $(seq 0 $((n - 1))); do
      echo "      - {name: r$i, paths: [\"/svc$i/items\"], hosts: [\"h$((i % 50)).example.com\"], methods: [GET]}"
    done
  } > "$f"
  start=$(date +%s%N)
  ./target/release/portcullis config validate "$f" > /dev/null
  end=$(date +%s%N)
  printf "%8d %12.1f\n" "$n" "$(echo "($end - $start) / 1000000" | bc -l)"
done
echo
cargo bench -q -p portcullis-router --bench route_count 2>/dev/null
