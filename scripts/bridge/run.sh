#!/usr/bin/env bash
# Runs scripts/bridge/bridge.py in its own virtualenv (target/bridge-venv: paho-mqtt and
# confluent-kafka from PyPI, made on first use; needs python3 with venv, on Debian
# `apt-get install python3-venv`). scripts/bench.sh --bridge starts it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/../../target/bridge-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'paho-mqtt==2.*' 'confluent-kafka==2.*' >&2
fi
exec "$venv/bin/python" "$here/bridge.py"
