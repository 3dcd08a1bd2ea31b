//! End-to-end pipeline benchmark: `scripts/bench.sh [--smoke] [options]` (see `usage`).
//! Starts mosquitto and tansu on free loopback ports, drives the release hubgate binary with
//! ChirpStack v4 uplinks and prints a table of the measured numbers beside the targets.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "pipeline/harness.rs"]
mod harness;

#[path = "pipeline/floor_child.rs"]
mod floor_child;

use std::time::Duration;

use harness::Options;

fn usage() -> &'static str {
    "usage: bench.sh [--smoke] [--tls] [--bridge] [--floor] [--records N] [--drain-records N]\n\
     \x20               [--devices N]\n\
     \x20               [--idle SECS]\n\
     \x20               [--rates RATE:SECS,...] [--mqtt-inflight N] [--mqtt-nodelay]\n\
     \x20               [--set KEY=VALUE]... [--buffer KEY=VALUE]... [--load N] [--rtt MS]\n\
     \x20               [--dir DIR [--sched]]\n\
     --smoke          a few seconds, small counts (what `cargo test` runs)\n\
     --tls            broker behind stunnel with SASL_SSL PLAIN, as Event Hubs (default plain TCP)\n\
     --bridge         also measure the hand-written Python bridge (scripts/bridge; needs\n\
     \x20                python3 with venv, installs paho-mqtt and confluent-kafka from PyPI)\n\
     --floor          also measure a bare rumqttc subscriber and a bare rdkafka producer (hubgate's\n\
     \x20                settings) alone at the fixed rates: the libraries' floor under hubgate\n\
     --records        backlog of the throughput run and of the broker-alone ceiling (200000)\n\
     --drain-records  records spilled during the outage, then drained (200000; keep it well\n\
     \x20                above max_in_flight, 500, or librdkafka holds them all; past about\n\
     \x20                200000 add --buffer 'max_bytes=\"2GiB\"': at 256 MiB, the default, the\n\
     \x20                buffer drops the oldest and the run stops saying so)\n\
     --rates          fixed-rate latency runs (200:10,1000:10,10000:5); each also gives CPU\n\
     \x20                and context switches per record, less what idling costs meanwhile\n\
     --idle           seconds the idle agent is watched for CPU and wake-ups per thread (10)\n\
     --mqtt-inflight  mosquitto max_inflight_messages towards hubgate (1000)\n\
     --mqtt-nodelay   mosquitto set_tcp_nodelay true (its default is Nagle's algorithm)\n\
     --set            librdkafka property for hubgate's producer, e.g. --set linger.ms=0\n\
     --buffer         hubgate [buffer] setting (a TOML value), e.g. --buffer max_in_flight=2000\n\
     --load           N busy loops beside the whole run, a loaded machine (--load 2 on 2 cores)\n\
     --rtt            a round trip of MS milliseconds between every Kafka client and the broker\n\
     \x20                (a delaying proxy in front of tansu; --rtt 0: the proxy alone; not with --tls)\n\
     --dir            keep the services' and hubgate's files and logs there, and each fixed-rate\n\
     \x20                record's times in latency.csv (broker-latency.csv, bridge-latency.csv)\n\
     --sched          with --dir: every 10 ms through the fixed-rate runs, each thread's CPU time,\n\
     \x20                wait for a CPU, state and kernel wait channel (hubgate, tansu, mosquitto,\n\
     \x20                the benchmark) in sched.csv; scripts/stalls.py DIR reads it\n\
     environment: HUBGATE_AGENT_BIN runs that hubgate binary instead of this build's;\n\
     \x20                HUBGATE_AGENT_WRAP runs it and the --floor processes under a command, e.g.\n\
     \x20                'valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p': then\n\
     \x20                instructions per record are counted (CPU and switches mean nothing there)"
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = if args.iter().any(|a| a == "--smoke") {
        Options::smoke()
    } else {
        Options::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        let number = |v: String| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("{a}: not a number: {v:?}"))
        };
        match a.as_str() {
            // `cargo bench` passes `--bench` to every harness = false target.
            "--smoke" | "--bench" => {}
            "--tls" => o.tls = true,
            "--bridge" => o.bridge = true,
            "--floor" => o.floor = true,
            "--mqtt-nodelay" => o.mqtt_nodelay = true,
            "--sched" => o.sched = true,
            "--records" => o.records = number(value()?)?,
            "--drain-records" => o.drain_records = number(value()?)?,
            "--devices" => o.devices = number(value()?)?.max(1),
            "--idle" => o.idle = Duration::from_secs(number(value()?)?),
            "--mqtt-inflight" => o.mqtt_inflight = number(value()?)? as u32,
            "--load" => o.load = number(value()?)?,
            "--rtt" => o.rtt = Some(Duration::from_millis(number(value()?)?)),
            "--dir" => o.dir = Some(value()?.into()),
            "--set" | "--buffer" => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("{a} {v:?}: expected KEY=VALUE"))?;
                let to = if a == "--set" {
                    &mut o.properties
                } else {
                    &mut o.buffer
                };
                to.push((k.into(), val.into()));
            }
            "--rates" => {
                o.rates = value()?
                    .split(',')
                    .map(|r| {
                        let (rate, secs) = r
                            .split_once(':')
                            .ok_or_else(|| format!("--rates {r:?}: expected RATE:SECS"))?;
                        let secs: f64 = secs
                            .parse()
                            .map_err(|_| format!("--rates {r:?}: bad seconds"))?;
                        Ok((number(rate.into())?, Duration::from_secs_f64(secs)))
                    })
                    .collect::<Result<_, String>>()?
            }
            "-h" | "--help" => return Err(usage().into()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(o)
}

fn main() {
    // Read here, not by the tests that share the harness: which hubgate runs, and under what.
    support::agent::run_as(support::agent::Launch {
        binary: std::env::var_os("HUBGATE_AGENT_BIN").map(Into::into),
        wrap: std::env::var("HUBGATE_AGENT_WRAP")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    });
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(("--floor-child", child)) = args.split_first().map(|(a, r)| (a.as_str(), r)) {
        floor_child::run(child);
        return;
    }
    let opts = parse(&args).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    eprintln!("{opts:?}");
    print!("{}", harness::run(&opts).table());
}
