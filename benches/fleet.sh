#!/usr/bin/env bash
# End-to-end fleet benchmark: a release `citadel serve` on this machine, driven by
# `citadel simulate` over HTTPS, every figure beside a ceiling taken in the same run.
#
#   benches/fleet.sh                      # all scenarios at full size
#   SCENARIOS="enrol roundtrip" benches/fleet.sh
#   ENROL_DEVICES=2000 FANOUT_DEVICES=2000 benches/fleet.sh   # smaller, quicker
#
# Scenarios: enrol (SCEP enrolments), roundtrip (signed Idle round trips, replayed, with the
# ceiling), fanout (one DeviceInformation to every device: enqueue, push, deliver, ack), rss
# (appliance memory idle and after the enrolments). Needs openssl, jq and curl. Prints a summary and leaves
# the JSON reports in $OUT (default target/fleet-bench). PERF=1 also records `perf` profiles of
# the appliance and the simulator for each scenario there; PERF_STAT=6 counts the appliance's
# synchronous log writes and context switches over the fan-out's first 6 s.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIOS=${SCENARIOS:-"enrol roundtrip fanout rss"}
ENROL_DEVICES=${ENROL_DEVICES:-10000}
ROUNDTRIP_DEVICES=${ROUNDTRIP_DEVICES:-1000}
FANOUT_DEVICES=${FANOUT_DEVICES:-10000}
DURATION=${DURATION:-20s}
CONCURRENCY=${CONCURRENCY:-64}
KEY_POOL=${KEY_POOL:-64}
# How the devices prove who they are: signature (Mdm-Signature on every request) or mtls (the
# identity as TLS client certificate, sessions resumed by ticket as real devices do).
AUTH=${AUTH:-signature}
OUT=${OUT:-target/fleet-bench}
PORT=${PORT:-19443}
CEILING_PORT=$((PORT + 1))
PUSH_PORT=$((PORT + 2))

# FLEET_BIN=path uses an existing binary (e.g. one built with debug info for profiling).
if [ -z "${FLEET_BIN:-}" ]; then cargo build --release --bin citadel >&2; fi
BIN=${FLEET_BIN:-$PWD/target/release/citadel}
rm -rf "$OUT" && mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DATA=$OUT/data
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# A throwaway "Apple": the CA that signs the push certificate, and the TLS certificate of the
# simulator's APNs endpoint.
( cd "$OUT"
  openssl req -x509 -newkey rsa:2048 -nodes -subj "/CN=Bench Apple" -days 2 -keyout apple.key -out apple.pem 2>/dev/null
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=Bench APNs CA" \
    -days 2 -keyout apns-ca.key -out apns-ca.pem 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout apns.key -out apns.csr 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >apns.ext
  openssl x509 -req -in apns.csr -CA apns-ca.pem -CAkey apns-ca.key -CAcreateserial -days 2 \
    -extfile apns.ext -out apns.pem 2>/dev/null )

cat > "$OUT/citadel.toml" <<TOML
data_dir = "$DATA"
[server]
listen = "127.0.0.1:$PORT"
hostnames = ["localhost"]
public_url = "https://localhost:$PORT"
[log]
level = "warn"
[mdm]
# The scenarios measure the protocol path; inventory at enrolment would add six commands (and
# six signed answers) per device to every enrolment and fan-out figure. INVENTORY=1 keeps it.
inventory_on_enrollment = $([ -n "${INVENTORY:-}" ] && echo true || echo false)
[apns]
base_url = "https://localhost:$PUSH_PORT"
ca_file = "$OUT/apns-ca.pem"
TOML
export CITADEL_CONFIG=$OUT/citadel.toml

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_healthy() { for _ in $(seq 100); do "$BIN" healthcheck --url "$1" --ca "$DATA/pki/ca.crt" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not healthy: $1" >&2; return 1; }

"$BIN" serve >"$OUT/serve.log" 2>&1 & SERVER=$!; PIDS+=("$SERVER")
wait_healthy "https://127.0.0.1:$PORT/healthz"
"$BIN" simulate-ceiling --listen "127.0.0.1:$CEILING_PORT" >"$OUT/ceiling.log" 2>&1 & CEILING=$!; PIDS+=("$CEILING")
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$CEILING_PORT") 2>/dev/null && break; sleep 0.1; done
"$BIN" ca export >"$OUT/ca.pem"
TOKEN=$("$BIN" api-token create --name fleet-bench --role administrator 2>/dev/null)
"$BIN" push-cert csr --out "$OUT/push.csr" 2>/dev/null
( cd "$OUT"
  printf '[e]\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n' >ext.cnf
  openssl x509 -req -in push.csr -CA apple.pem -CAkey apple.key -CAcreateserial -days 2 \
    -subj "/UID=com.apple.mgmt.External.fleet-bench/CN=APSP:com.apple.mgmt.External.fleet-bench/C=US" \
    -extfile ext.cnf -extensions e -out push.pem 2>/dev/null )
"$BIN" push-cert import --cert "$OUT/push.pem" >/dev/null 2>&1
IDLE_RSS=$(rss_kb "$SERVER")
echo "appliance RSS idle: $((IDLE_RSS / 1024)) MB"

sim() { ${PERF:+perf record -F 499 -g -o "$OUT/perf-sim-$s.data"} "$BIN" simulate --server "https://localhost:$PORT" --ca "$OUT/ca.pem" --api-token "$TOKEN" \
  --key-pool "$KEY_POOL" --auth "$AUTH" --json "$@"; }
SEED=1
for s in $SCENARIOS; do
  SEED=$((SEED + 1))
  CPU0=$(cpu_ticks "$SERVER")
  # Profiles of the round-trip and fan-out scenarios start once their devices are enrolled.
  if [ -n "${PERF:-}" ]; then
    ( if [ "$s" != enrol ]; then while ! grep -q "devices enrolled" "$OUT/$s.err" 2>/dev/null; do sleep 0.2; done; fi
      exec perf record -F 499 ${PERF_CALLGRAPH:--g} -p "$SERVER" -o "$OUT/perf-server-$s.data" 2>"$OUT/perf-server-$s.log" ) & PERF_PID=$!
  fi
  case $s in
    enrol)
      sim --devices "$ENROL_DEVICES" --concurrency "$CONCURRENCY" --duration 0s --seed $SEED >"$OUT/enrol.json"
      jq -r '"enrol: \(.enrolled)/\(.devices) in \(.enrolment.seconds|.*10|round/10) s = \(.enrolment.per_second|round)/s, errors \(.error_count)"' "$OUT/enrol.json" ;;
    roundtrip)
      # CPU per round trip, from the simulator's "enrolled" marker on: the appliance and the
      # ceiling each work only in their own slices of the run; the simulator in both.
      ( while ! grep -q "devices enrolled" "$OUT/roundtrip.err" 2>/dev/null; do sleep 0.05; done
        SIM_PID=$(pgrep -n -f "$BIN simulate --server")
        echo "$(cpu_ticks "$SERVER") $(cpu_ticks "$CEILING") $(cpu_ticks "$SIM_PID")" >"$OUT/roundtrip.cpu-enrolled"
        while ticks=$(cpu_ticks "$SIM_PID" 2>/dev/null); do echo "$ticks" >"$OUT/roundtrip.sim-cpu-last"; sleep 0.1; done ) &
      WATCH=$!
      sim --devices "$ROUNDTRIP_DEVICES" --concurrency "${ROUNDTRIP_CONCURRENCY:-1000}" --replay --duration "$DURATION" --seed $SEED \
        --ceiling-url "https://localhost:$CEILING_PORT" >"$OUT/roundtrip.json" 2>"$OUT/roundtrip.err"
      jq -r '"roundtrip: \(.roundtrips_per_sec|round)/s p50 \(.latency.p50_ms) ms p99 \(.latency.p99_ms) ms; ceiling \(.ceiling.roundtrips_per_sec|round)/s p99 \(.ceiling.latency.p99_ms) ms; ratio \(.ceiling.ratio*100|round) %; errors \(.error_count)"' "$OUT/roundtrip.json"
      wait "$WATCH" || true
      read -r A0 C0 S0 <"$OUT/roundtrip.cpu-enrolled"; S1=$(cat "$OUT/roundtrip.sim-cpu-last")
      RT=$(jq .roundtrips "$OUT/roundtrip.json"); CRT=$(jq .ceiling.latency.count "$OUT/roundtrip.json")
      echo "  CPU per round trip: appliance $(( ($(cpu_ticks "$SERVER") - A0) * 1000000 / TICK / RT )) µs," \
        "ceiling $(( ($(cpu_ticks "$CEILING") - C0) * 1000000 / TICK / CRT )) µs," \
        "simulator $(( (S1 - S0) * 1000000 / TICK / (RT + CRT) )) µs (both sides)" ;;
    fanout)
      # The appliance's CPU is split at the simulator's "enrolled" marker on stderr.
      # So is the simulator's (polled until it exits), and PERF_STAT=S counts the appliance's
      # synchronous log writes and context switches over the fan-out's first S seconds.
      ( while ! grep -q "devices enrolled" "$OUT/fanout.err" 2>/dev/null; do sleep 0.2; done
        cpu_ticks "$SERVER" >"$OUT/fanout.cpu-at-enrolled"
        SIM_PID=$(pgrep -n -f "$BIN simulate --server") && cpu_ticks "$SIM_PID" >"$OUT/fanout.sim-cpu-at-enrolled" &&
          while ticks=$(cpu_ticks "$SIM_PID" 2>/dev/null); do echo "$ticks" >"$OUT/fanout.sim-cpu-last"; sleep 0.2; done &
        if [ -n "${PERF_STAT:-}" ]; then
          perf stat -e 'syscalls:sys_enter_sync_file_range,context-switches' -p "$SERVER" \
            -o "$OUT/fanout.perf-stat" -- sleep "$PERF_STAT"
        fi
        wait ) &
      WATCH=$!
      sim --devices "$FANOUT_DEVICES" --concurrency "$CONCURRENCY" --replay --duration 120s --seed $SEED --push-listen "127.0.0.1:$PUSH_PORT" \
        --push-cert "$OUT/apns.pem" --push-key "$OUT/apns.key" --command DeviceInformation >"$OUT/fanout.json" 2>"$OUT/fanout.err"
      jq -r '"fanout: \(.command.answered)/\(.command.targets) answered in \(.command.seconds|.*100|round/100) s (API queued it in \(.command.enqueue_seconds|.*100|round/100) s); enqueue→ack p50 \(.command_latency.p50_ms) ms p99 \(.command_latency.p99_ms) ms; pushes \(.pushes_received); errors \(.error_count)"' "$OUT/fanout.json"
      grep -q "devices enrolled" "$OUT/fanout.err" || kill "$WATCH" 2>/dev/null || true
      wait "$WATCH" || true
      CPU_MID=$(cat "$OUT/fanout.cpu-at-enrolled")
      echo "  simulator CPU during the fan-out: $(( ($(cat "$OUT/fanout.sim-cpu-last") - $(cat "$OUT/fanout.sim-cpu-at-enrolled")) * 1000 / TICK )) ms"
      if [ -n "${PERF_STAT:-}" ]; then
        awk '/sync_file_range|context-switches/ {printf "  %s %s in %s s\n", $2, $1, '"$PERF_STAT"'}' "$OUT/fanout.perf-stat"
      fi
      curl -s --cacert "$OUT/ca.pem" "https://localhost:$PORT/metrics" | awk '/^citadel_tls_handshakes_total/ {printf "  %s %s", $1, $2} END {print ""}'
      echo "  appliance CPU: enrolment $(( (CPU_MID - CPU0) * 1000 / TICK )) ms, fan-out $(( ($(cpu_ticks "$SERVER") - CPU_MID) * 1000 / TICK )) ms" ;;
    rss)
      # Right after the previous scenario, and again once the appliance has been at rest a while
      # (freed memory goes back to the system in the background).
      echo "appliance RSS now: $(( $(rss_kb "$SERVER") / 1024 )) MB (idle at start: $((IDLE_RSS / 1024)) MB, peak $(( $(awk '/^VmHWM/ {print $2}' "/proc/$SERVER/status") / 1024 )) MB)"
      sleep "${RSS_REST:-30}"
      echo "appliance RSS after ${RSS_REST:-30} s at rest: $(( $(rss_kb "$SERVER") / 1024 )) MB" ;;
  esac
  if [ -n "${PERF:-}" ]; then kill -TERM "$PERF_PID"; wait "$PERF_PID" || true; fi
  echo "  appliance CPU during $s: $(( ($(cpu_ticks "$SERVER") - CPU0) * 1000 / TICK )) ms"
done
