#!/usr/bin/env bash
# Measures what BENCHMARKS.md reports for the appliance foundation:
#   release binary size, start to healthy (first start with CA generation, and a restart),
#   idle RSS. Run after `installer/build-ui.sh && cargo build --release`.
#   installer/bench-startup.sh [RUNS]     (default 5 runs; medians are reported)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/citadel
runs="${1:-5}"
[ -x "$bin" ] || { echo "build first: installer/build-ui.sh && cargo build --release" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
listen="127.0.0.1:$port"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Time from exec to the first passing `citadel healthcheck`; sets $t (ms) and $pid.
start_to_healthy() {
  local data=$1 t0
  t0=$(ms)
  "$bin" serve --data-dir "$data" --listen "$listen" >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  until "$bin" healthcheck --data-dir "$data" --listen "$listen" --timeout 1 >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/err" >&2; exit 1; }
    sleep 0.005
  done
  t=$(( $(ms) - t0 ))
}

floor=()
for _ in $(seq "$runs"); do t0=$(ms); "$bin" --version >/dev/null; floor+=($(( $(ms) - t0 ))); done
hc=()
first=(); again=()
for i in $(seq "$runs"); do
  data="$tmp/data$i"
  start_to_healthy "$data"; first+=("$t")
  kill -TERM "$pid"; wait "$pid" || true
  start_to_healthy "$data"; again+=("$t")
  t0=$(ms); "$bin" healthcheck --data-dir "$data" --listen "$listen" >/dev/null; hc+=($(( $(ms) - t0 )))
  if [ "$i" -eq "$runs" ]; then
    for _ in $(seq 100); do
      curl -s --cacert "$data/pki/ca.crt" "https://localhost:$port/healthz" >/dev/null
    done
    sleep 2
    rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    threads=$(awk '/Threads/ {print $2}' "/proc/$pid/status")
  fi
  kill -TERM "$pid"; wait "$pid" || true
done

size=$(stat -c %s "$bin")
echo "binary size:                 $(( size / 1024 / 1024 )) MiB ($size bytes)"
echo "process floor (--version):   $(printf '%s\n' "${floor[@]}" | median) ms"
echo "one healthcheck round trip:  $(printf '%s\n' "${hc[@]}" | median) ms"
echo "first start to healthy:      $(printf '%s\n' "${first[@]}" | median) ms  (creates CA, TLS cert, store; runs: ${first[*]})"
echo "restart to healthy:          $(printf '%s\n' "${again[@]}" | median) ms  (runs: ${again[*]})"
echo "idle RSS after 100 requests: $(( rss_kb / 1024 )) MiB ($rss_kb kB, $threads threads)"
