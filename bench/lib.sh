# Shared by bench/run.sh and bench/plugins.sh (sourced, not run): tool checks, CPU placement,
# the nginx origin and reverse-proxy configs, the Portcullis node settings, cleanup, and the
# measurement helpers.

# Fails loudly when a tool is missing.
require_tools() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "FATAL: $tool not installed (apt install nginx-light wrk util-linux curl)" >&2; exit 1; }
  done
}

# The proxy under test on CPU 0; wrk and the origin share CPU 1 (or 0 on one core).
NCPU=$(nproc)
PROXY_CPU=0
LOAD_CPU=$(( NCPU > 1 ? 1 : 0 ))

# write_configs OUT ORIGIN_PORT NGINX_PORT [NGINX_KONG_PORT]: the origin (a small static
# body), nginx as a keep-alive reverse proxy in front of it, and Portcullis' node settings
# (access logs off on both sides, so the comparison is the proxy path).
#
# NGINX_KONG_PORT, when given, is a second server in the same nginx worker that does the work
# Kong's contract asks of Portcullis on every request: the upstream gets the same headers
# (Host as host:port, X-Forwarded-Proto/-Host/-Port/-Path, X-Real-IP, X-Forwarded-For and a
# 32-hex request id) and the client the same extra response headers (request id and two
# latency headers). Those ~200 request bytes cost the origin ~2,500 instructions of header
# parsing per request, on the CPU it shares with wrk (docs/performance.md, session 8).
write_configs() {
  local out=$1 origin_port=$2 nginx_port=$3 nginx_kong_port=${4:-}
  local kong_server=""
  if [ -n "$nginx_kong_port" ]; then
    kong_server="
  server {
    listen 127.0.0.1:$nginx_kong_port backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$proxy_host;
      proxy_set_header X-Request-Id \$request_id;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Forwarded-Port \$server_port;
      proxy_set_header X-Forwarded-Path \$uri;
      add_header X-Kong-Upstream-Latency \$upstream_response_time;
      add_header X-Kong-Proxy-Latency 0;
      add_header X-Request-Id \$request_id;
    }
  }"
  fi
  cat > "$out/origin.conf" <<CONF
worker_processes 1;
pid $PWD/$out/origin.pid;
error_log $PWD/$out/origin.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$origin_port reuseport backlog=4096;
    location / { return 200 "hello from origin\n"; }
  }
}
CONF
  cat > "$out/nginx-proxy.conf" <<CONF
worker_processes 1;
pid $PWD/$out/nginx-proxy.pid;
error_log $PWD/$out/nginx-proxy.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream origin { server 127.0.0.1:$origin_port; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_port backlog=4096;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }$kong_server
}
CONF
  cat > "$out/portcullis.toml" <<CONF
log_format = "json"
log_level = "warn"
access_log = "off"
CONF
}

# The four-plugin chain measured by bench/plugins.sh (key-auth, rate-limiting, ip-restriction,
# cors) as a route's `plugins:` list items, indented for a route nested in a service; the
# profile-guided build trains on the same chain (bench/pgo.sh).
four_plugins() {
  cat <<'YAML'
          - name: key-auth
          - name: rate-limiting
            config: {second: 100000000, policy: local, limit_by: consumer}
          - name: ip-restriction
            config: {allow: [127.0.0.1/32, "::1"]}
          - name: cors
            config: {origins: ["https://app.example.com"], credentials: true}
YAML
}

# Stops everything started from OUT (nginx pid files) and Portcullis (PIDS, or PC_PID in the other scripts).
cleanup() {
  for p in "$OUT"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  for p in ${PIDS:-} ${PC_PID:-}; do kill "$p" 2>/dev/null || true; done
}

# Starts the origin (load CPU) and the nginx proxy (proxy CPU) from OUT's configs.
start_nginx() {
  taskset -c "$LOAD_CPU" nginx -c "$PWD/$OUT/origin.conf" -p "$PWD/$OUT"
  taskset -c "$PROXY_CPU" nginx -c "$PWD/$OUT/nginx-proxy.conf" -p "$PWD/$OUT"
}

# CPU time (user+system, in clock ticks) used so far by a process and all its threads: the
# steadiest measure on a shared VM, where wrk and the origin compete for the load CPU.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_HZ=$(getconf CLK_TCK)

# wrk prints latency percentiles with units; normalise to milliseconds.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; printf "%.3f", v}'; }
