#!/usr/bin/env bash
# nginx with geo-agent's auth_request snippet against the same nginx without any auth,
# both proxying to an app that answers a plain 204, under wrk. Prints both latency summaries and their ratio.
#
# Needs: nginx and wrk (Debian packages), and a release build (cargo build --release).
# Usage: benches/gate-nginx.sh [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
bin=target/release/geo-agent
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
[ -x "$nginx" ] && command -v wrk >/dev/null || { echo "needs nginx and wrk: apt-get install nginx wrk" >&2; exit 2; }

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

gp=$(port); hp=$(port); plain=$(port); gated=$(port); app=$(port)
"$bin" run --data-dir "$dir/site" --listen 127.0.0.1:$gp --http-listen 127.0.0.1:$hp >"$dir/site.out" 2>"$dir/site.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "serving gRPC" "$dir/site.out" 2>/dev/null && break; read -rt 0.1 <> <(:) || true; done
mkdir -p "$dir/nginx/tmp"
cat >"$dir/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/nginx/tmp; proxy_temp_path $dir/nginx/tmp;
  fastcgi_temp_path $dir/nginx/tmp; uwsgi_temp_path $dir/nginx/tmp; scgi_temp_path $dir/nginx/tmp;
  upstream geo_agent_gate { server 127.0.0.1:$hp; keepalive 64; }
  upstream app { server 127.0.0.1:$app; keepalive 64; }
  server { listen 127.0.0.1:$app; location / { return 204; } }
  # return runs before the access phase, so both fronts proxy to the app instead.
  server { listen 127.0.0.1:$plain; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:$gated; include $PWD/contrib/nginx/geo-gate.conf;
           location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
"$nginx" -p "$dir/nginx" -c "$dir/nginx/nginx.conf" &
pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$gated/" && break; read -rt 0.1 <> <(:) || true; done

echo "== nginx return 204, no auth (GET /api/v4/projects, ${secs}s, 2 threads, 32 connections)"
wrk -t2 -c32 -d"${secs}s" --latency "http://127.0.0.1:$plain/api/v4/projects" | tee "$dir/plain.txt"
echo "== nginx return 204 behind geo-agent auth_request (same request)"
echo "gated answer: $(curl -s -o /dev/null -w "%{http_code} " "http://127.0.0.1:$gated/api/v4/projects")"
wrk -t2 -c32 -d"${secs}s" --latency "http://127.0.0.1:$gated/api/v4/projects" | tee "$dir/gated.txt"
avg() { awk '/^ +Latency +[0-9]/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$1"; }
printf 'mean latency: plain %s ms, gated %s ms, ratio %.2f\n' "$(avg "$dir/plain.txt")" "$(avg "$dir/gated.txt")" \
  "$(echo "$(avg "$dir/gated.txt") $(avg "$dir/plain.txt")" | awk '{print $1/$2}')"
