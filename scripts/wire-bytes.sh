#!/usr/bin/env bash
# Bytes on the wire per record: replays config/demo-uplinks.jsonl over MQTT into hubgate, one
# uplink every GAP seconds (each record its own produce request, as at a quiet site), into a
# tansu Kafka broker with Event Hubs' metadata and idle settings, then stays idle for IDLE
# seconds. Prints what hubgate_bytes_sent_total counted and the TCP payload bytes of hubgate's
# broker connections in each direction (ss: bytes_acked, bytes_received). Plain TCP: TLS
# records and IP/TCP headers come on top. Needs mosquitto, mosquitto_pub, curl, ss and tansu
# ($HUBGATE_TANSU or /opt/tansu-plain/bin/tansu); builds hubgate (dev profile).
#   scripts/wire-bytes.sh [none|gzip] [GAP] [IDLE]      defaults: none 0.5 0
set -euo pipefail
compression=${1:-none}; gap=${2:-0.5}; idle=${3:-0}
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tansu_bin=${HUBGATE_TANSU:-/opt/tansu-plain/bin/tansu}
cargo build --quiet --manifest-path "$repo/Cargo.toml"
hubgate="$repo/target/debug/hubgate"
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kafka=$(free_port); mqtt=$(free_port); http=$(free_port)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"' EXIT
wait_for() { for _ in $(seq 300); do if eval "$1"; then return 0; fi; sleep 0.2; done; echo "timed out: $1" >&2; exit 1; }

"$tansu_bin" broker --listener-url "tcp://127.0.0.1:$kafka" --advertised-listener-url "tcp://localhost:$kafka" \
    --storage-engine memory://tansu/ --silent >"$dir/tansu.log" 2>&1 &
pids+=($!)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mqtt" >"$dir/mosquitto.conf"
mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
pids+=($!)
for t in environment.unpacked motion.unpacked openclose.unpacked leak.unpacked lorawan.packed; do
    wait_for "'$tansu_bin' topic create --broker tcp://localhost:$kafka --partitions 1 io.microshare.$t >/dev/null 2>&1"
done

# The demo's devices, an MQTT source, a Kafka sink with Event Hubs' metadata and idle settings.
{
    printf 'gateway_id = "wire"\n[buffer]\npath = "%s/buffer"\n' "$dir"
    printf '[metrics]\nlisten = "127.0.0.1:%s"\nstatus_interval = "0s"\n' "$http"
    printf '[[source]]\ntype = "mqtt"\nurl = "mqtt://127.0.0.1:%s"\n' "$mqtt"
    sed -n '/^\[\[device\]\]/,/^\[sink\]/p' "$repo/config/demo.toml" | sed '$d'
    printf '[sink]\ntype = "kafka"\nbrokers = "localhost:%s"\nsecurity_protocol = "plaintext"\ninsecure = true\ncompression = "%s"\n' "$kafka" "$compression"
    printf '[sink.properties]\n"topic.metadata.refresh.interval.ms" = "60000"\n"metadata.max.age.ms" = "180000"\n"connections.max.idle.ms" = "180000"\n'
} >"$dir/hubgate.toml"
RUST_LOG=warn "$hubgate" run -c "$dir/hubgate.toml" >"$dir/hubgate.log" 2>&1 &
pids+=($!)

sum() { curl -s "http://127.0.0.1:$http/metrics" | awk -v m="$1" 'index($1, m) == 1 {s += $2} END {print s + 0}'; }
wait_for '[ "$(sum hubgate_mqtt_subscribed)" = 1 ] && [ "$(sum hubgate_kafka_connected)" = 1 ]'
tcp() { ss -tinH "( dport = :$kafka )" | grep -o "$1:[0-9]*" | cut -d: -f2 | awk '{s += $1} END {print s + 0}'; }

up0=$(tcp bytes_acked); down0=$(tcp bytes_received); n=0
while IFS= read -r line; do
    printf '%s\n' "$line" | mosquitto_pub -p "$mqtt" -q 1 -t application/1/device/demo/event/up -l
    n=$((n + 1)); sleep "$gap"
done <"$repo/config/demo-uplinks.jsonl"
wait_for '[ "$(sum hubgate_delivered_total)" = "$n" ]'
up1=$(tcp bytes_acked); down1=$(tcp bytes_received)
sent=$(sum hubgate_bytes_sent_total)
echo "compression $compression: $n records, hubgate_bytes_sent_total $sent ($((sent / n)) B/record)," \
     "TCP up $((up1 - up0)) B ($(((up1 - up0) / n)) B/record), down $((down1 - down0)) B ($(((down1 - down0) / n)) B/record)"
if [ "$idle" != 0 ]; then
    sleep "$idle"
    echo "idle ${idle}s: TCP up $(($(tcp bytes_acked) - up1)) B, down $(($(tcp bytes_received) - down1)) B"
fi
