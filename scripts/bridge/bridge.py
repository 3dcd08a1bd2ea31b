"""The hand-written bridge hubgate is compared with (scripts/bench.sh --bridge).

What operators write today: paho-mqtt subscribes to ChirpStack v4 uplinks, a function decodes
the Browan TBHH100/TBMS100 and Cayenne LPP payloads into a Microshare-style envelope, and
confluent-kafka produces it to the recType's topic, keyed by the device. Given the same producer
settings as hubgate (acks=all, linger.ms 5) to be fair; paho acknowledges each message when
on_message returns, before Kafka has it (no buffer, no durability: that is the usual bridge).

Environment: BRIDGE_MQTT_PORT, BRIDGE_KAFKA (bootstrap servers), BRIDGE_CLIENT_ID.
Prints "subscribed" once the subscription is granted.
"""

import base64
import json
import os
import signal
import sys

import paho.mqtt.client as mqtt
from confluent_kafka import Producer

ENV = "io.microshare.environment.unpacked"
MOTION = "io.microshare.motion.unpacked"


def browan_battery(b):
    return round((25 + (b & 0x0F)) / 10, 1)


def tbhh100(p):
    return ENV, {
        "temperature": [{"value": (p[2] & 0x7F) - 32, "unit": "°C"}],
        "humidity": [{"value": p[3] & 0x7F, "unit": "%RH"}],
        "device_health": {"voltage": [{"value": browan_battery(p[1]), "unit": "V"}]},
    }


def tbms100(p):
    return MOTION, {
        "presence": [{"value": bool(p[0] & 1)}],
        "motions_since_reset": [{"value": int.from_bytes(p[5:8], "little")}],
        "device_health": {"voltage": [{"value": browan_battery(p[1]), "unit": "V"}]},
    }


def cayenne(p):
    data, i = {"temperature": [], "humidity": [], "pressure": []}, 0
    while i + 2 <= len(p):
        channel, kind = p[i], p[i + 1]
        if kind == 0x67:
            data["temperature"].append(
                {"value": int.from_bytes(p[i + 2 : i + 4], "big", signed=True) / 10,
                 "unit": "°C", "context_id": str(channel)})
            i += 4
        elif kind == 0x68:
            data["humidity"].append(
                {"value": p[i + 2] / 2, "unit": "%RH", "context_id": str(channel)})
            i += 3
        elif kind == 0x73:
            data["pressure"].append(
                {"value": int.from_bytes(p[i + 2 : i + 4], "big") / 10,
                 "unit": "hPa", "context_id": str(channel)})
            i += 4
        else:
            break
    return ENV, data


CODECS = {103: tbhh100, 102: tbms100, 2: cayenne}


def envelope(uplink):
    dev = uplink["deviceInfo"]["devEui"]
    payload = base64.b64decode(uplink["data"])
    rec_type, data = CODECS[uplink["fPort"]](payload)
    device_id = "-".join(dev[i : i + 2] for i in range(0, 16, 2)).upper()
    rx = uplink["rxInfo"][0]
    record_id = f"{dev}-{uplink['fCnt']}"
    data["meta"] = {"iot": {"device_id": device_id, "fport": uplink["fPort"],
                            "fcnt_up": uplink["fCnt"], "payload": payload.hex(),
                            "time": uplink["time"], "rssi": rx["rssi"], "snr": rx["snr"]}}
    body = {"event_type": "create", "id": record_id, "recType": rec_type, "source": "bridge",
            "obj": {"id": record_id, "recType": rec_type, "data": data}}
    return rec_type, device_id, json.dumps(body, separators=(",", ":"))


def main():
    producer = Producer({"bootstrap.servers": os.environ["BRIDGE_KAFKA"], "acks": "all",
                         "linger.ms": 5})

    def on_connect(client, _userdata, _flags, _reason, _props):
        client.subscribe("application/+/device/+/event/up", qos=1)

    def on_subscribe(_client, _userdata, _mid, _reasons, _props):
        print("subscribed", flush=True)

    def on_message(_client, _userdata, msg):
        try:
            topic, key, value = envelope(json.loads(msg.payload))
        except (ValueError, KeyError, IndexError) as e:
            print(f"bad uplink: {e}", file=sys.stderr)
            return
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=os.environ["BRIDGE_CLIENT_ID"], clean_session=False)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", int(os.environ["BRIDGE_MQTT_PORT"]))
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.loop_forever()
    producer.flush(10)


if __name__ == "__main__":
    main()
