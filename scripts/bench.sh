#!/usr/bin/env bash
# The pipeline benchmark, one command: builds hubgate in release and runs benches/pipeline.rs
# (mosquitto + tansu on free loopback ports, hubgate as a process, a Rust load generator).
# Needs what the tests need (see .ci/run): mosquitto, tansu with SASL PLAIN ($HUBGATE_TANSU or
# /opt/tansu-plain/bin/tansu), stunnel4 and openssl for --tls.
#   scripts/bench.sh                          full run (a few minutes)
#   scripts/bench.sh --smoke                  a few seconds
#   scripts/bench.sh --drain-records 1000000 --buffer 'max_bytes="2GiB"'
#                                             the 1,000,000-record outage (docs/performance.md)
#   scripts/bench.sh --help                   every option
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo bench --bench pipeline -- "$@"
