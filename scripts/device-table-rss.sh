#!/usr/bin/env bash
# device-table-rss.sh BIN [PORT] - what the status page's device table costs in memory: for 1,
# 1,000 and 10,000 devices, replays 10,000 ChirpStack uplinks (browan-tbhh100, a name and two
# tags a device, all in the config) into a stdout sink, reads VmRSS once all are delivered,
# then the size and time of /api/devices (default page, limit=500, the most), a devices page and the
# overview, and VmRSS after serving them. Needs python3 and curl.
set -euo pipefail
bin=$(realpath "${1:?usage: $0 path/to/hubgate [port]}")
port=${2:-39811}
dir=$(mktemp -d)
pid=
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
python3 - "$dir" <<'EOF'
import json, sys
d = sys.argv[1]
def up(i, dev, fcnt):
    return {"deduplicationId": f"d{i}", "time": "2026-11-26T10:00:00.000Z",
            "deviceInfo": {"tenantId": "t", "applicationId": "a", "applicationName": "b",
                           "deviceProfileName": "tabs", "deviceName": f"sensor-{dev:05d}",
                           "devEui": f"58a0cb00{dev:08x}"},
            "devAddr": "01260000", "adr": True, "dr": 5, "fCnt": fcnt, "fPort": 103,
            "confirmed": False, "data": "CIwuLf////8=",
            "rxInfo": [{"gatewayId": "b827ebfffe000001", "uplinkId": i, "rssi": -70,
                        "snr": 9.5, "channel": 0, "context": "AAAA"}],
            "txInfo": {"frequency": 868100000, "modulation": {"lora": {
                "bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}}}}
for n in (1, 1000, 10000):
    with open(f"{d}/uplinks-{n}.jsonl", "w") as f:
        for i in range(10000):
            f.write(json.dumps(up(i, i % n, 100 + i // n)) + "\n")
with open(f"{d}/devices.toml", "w") as f:
    for dev in range(10000):
        f.write(f'[[device]]\ndev_eui = "58a0cb00{dev:08x}"\ncodec = "browan-tbhh100"\n'
                f'tags = ["Building {dev % 7}", "Floor {dev % 13}"]\n\n')
EOF
get() { curl -s -o /dev/null -w '%{size_download} B %{time_total} s' "http://127.0.0.1:$port$1"; }
rss() { awk '/VmRSS/{print $2 " kB"}' "/proc/$1/status"; }
for n in 1 1000 10000; do
    run="$dir/run-$n"
    mkdir "$run"
    {
        printf 'gateway_id = "rss"\n[buffer]\npath = "%s/buffer"\n' "$run"
        printf '[[source]]\ntype = "replay"\npath = "%s/uplinks-%s.jsonl"\n' "$dir" "$n"
        # Keeps the agent running once the file is replayed.
        printf '[[source]]\ntype = "udp"\nlisten = "127.0.0.1:%s"\n' $((port + 1))
        printf '[metrics]\nlisten = "127.0.0.1:%s"\n[sink]\ntype = "stdout"\n' "$port"
        cat "$dir/devices.toml"
    } >"$run/hubgate.toml"
    "$bin" run -c "$run/hubgate.toml" >/dev/null 2>"$run/log" &
    pid=$!
    series='hubgate_delivered_total{rec_type="io.microshare.environment.unpacked"}'
    for _ in $(seq 600); do
        v=$(curl -s "http://127.0.0.1:$port/metrics" | awk -v s="$series" '$1==s{print $2}') || true
        [ "${v:-0}" = 10000 ] && break
        sleep 0.5
    done
    [ "${v:-0}" = 10000 ] || { kill "$pid"; cat "$run/log"; exit 1; }
    echo "$n device(s): VmRSS $(rss $pid) with all 10,000 delivered"
    echo "  /api/devices $(get /api/devices); ?limit=500&sort=name $(get '/api/devices?limit=500&sort=name')"
    echo "  /devices?sort=silent&page=3 $(get '/devices?sort=silent&page=3'); / $(get /)"
    echo "  VmRSS $(rss $pid) after serving them"
    kill "$pid"
    wait "$pid" || true
    pid=
done
