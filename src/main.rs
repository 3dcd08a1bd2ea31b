//! Command line (the contract in docs/design.md). Everything here is argument handling and printing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};

use hubgate::buffer::{self, BufferError, SledStore, Store};
use hubgate::codec::Codec;
use hubgate::config::Config;
use hubgate::record;
use hubgate::uplink::{Radio, Uplink};

const DEFAULT_CONFIG: &str = "/etc/hubgate/hubgate.toml";

#[derive(Parser)]
#[command(
    name = "hubgate",
    version,
    about = "LoRaWAN gateway agent: uplinks -> Microshare recTypes -> Azure Event Hubs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file; exit non-zero naming the key on error.
    Check {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print the config as TOML, with the board's values and every default filled in
        /// (secrets from files and `${ENV}` shown as such, inline ones masked).
        #[arg(long)]
        print: bool,
    },
    /// Decode one payload and print the unpacked record, byte for byte as the sink sends it.
    Decode {
        /// A config whose device tags, usecase, global tags and source go into the record.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// A built-in codec (`hubgate codecs`).
        #[arg(long, required_unless_present_any = ["js", "uplink"], conflicts_with = "js")]
        codec: Option<String>,
        /// A JavaScript codec file (its `.toml` mapping table beside it, if any).
        #[arg(long, value_name = "FILE")]
        js: Option<PathBuf>,
        #[arg(long)]
        fport: Option<u8>,
        /// The device (default 00-00-00-00-00-00-00-00).
        #[arg(long, value_name = "EUI")]
        dev_eui: Option<String>,
        /// The session's device address (8 hex digits), which goes into the record id as
        /// when the network server gives it.
        #[arg(long, value_name = "HEX")]
        dev_addr: Option<String>,
        /// The uplink's frame counter.
        #[arg(long)]
        fcnt: Option<u32>,
        /// The uplink's receive time, RFC 3339 (default: now).
        #[arg(long, value_name = "RFC3339")]
        time: Option<String>,
        /// Payload in hex.
        #[arg(required_unless_present = "uplink")]
        hex: Option<String>,
        /// Instead of the above: one whole uplink as the network server sends it (`-`: stdin),
        /// in the format of the config's first MQTT or replay source (default ChirpStack v4),
        /// radio metadata included, decoded as the agent decodes it with the config's devices.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["codec", "js", "fport", "dev_eui", "dev_addr", "fcnt", "time", "hex"])]
        uplink: Option<PathBuf>,
    },
    /// Parse a LoRaWAN 1.0.x PHYPayload and print it as JSON; with keys, check the MIC and
    /// decrypt. Without the key for its FPort the payload is printed still encrypted; without
    /// --nwkskey-file "mic_valid" is null. "fcnt" is the 16-bit value on air; the MIC is checked
    /// with the 32-bit counters the agent tries for a session's first frame (upper halves
    /// 0-15) and "fcnt32" is the one it verified with.
    Lorawan {
        /// The 32-bit frame counter to check and decrypt with, for a device past the ones
        /// tried; its low 16 bits must be the counter on air.
        #[arg(long, value_name = "N")]
        fcnt32: Option<u32>,
        /// A file holding the NwkSKey (32 hex digits), which checks the MIC and decrypts
        /// FPort 0 (MAC commands); `-` reads it from standard input (its first line).
        #[arg(long, value_name = "FILE")]
        nwkskey_file: Option<PathBuf>,
        /// A file holding the AppSKey (32 hex digits), which decrypts FPort 1-255; `-` reads
        /// it from standard input (the line after the NwkSKey's when both are `-`).
        #[arg(long, value_name = "FILE")]
        appskey_file: Option<PathBuf>,
        /// Refused: a key given on the command line is visible to every user in `ps` and
        /// stays in the shell's history. Taken (hidden) so that the refusal is one line that
        /// says so and names --nwkskey-file, where clap's error for an unknown option is five
        /// lines of usage.
        #[arg(long, hide = true, value_name = "HEX")]
        nwkskey: Option<std::ffi::OsString>,
        /// Refused as --nwkskey is.
        #[arg(long, hide = true, value_name = "HEX")]
        appskey: Option<std::ffi::OsString>,
        /// The PHYPayload in hex (MHDR to MIC).
        #[arg(value_name = "PHYHEX")]
        phyhex: String,
    },
    /// List codec ids, the recType each produces and an example payload (fPort, hex); then
    /// the JavaScript codecs of the config's `[codecs] dir`: `js/<name>`, the recType of their
    /// mapping table (`-`: chosen from the fields) and whether they load.
    Codecs {
        /// List this directory's JavaScript codecs instead of the config's.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The config naming the directory (only its `[codecs]` is read) [default:
        /// /etc/hubgate/hubgate.toml; when it cannot be read, /etc/hubgate/codecs].
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Inspect or empty the spill buffer (stop the agent first).
    Buffer {
        #[command(subcommand)]
        action: BufferAction,
        #[arg(short, long, default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
    },
    /// Print a commented template config.
    Configfile,
    /// The JavaScript codecs' worker process, started by the agent itself.
    #[command(name = "js-worker", hide = true)]
    JsWorker,
    /// Preflight: DNS, TCP, TLS, login and hubs of the sink, the sources, the buffer; one
    /// line per step, exit 1 if any failed.
    Doctor {
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum BufferAction {
    /// Count and size of buffered records, and the oldest one's age as `max_age` counts it
    /// (forward steps of the clock after it was taken left out); then the databases kept
    /// aside in the buffer directory, whose records are not counted.
    Stats,
    /// Print every buffered record as a JSON line.
    Export {
        /// Print the dead letters instead: records the sink refused for good and messages
        /// hubgate gave up on (too large, or their parsing failed).
        #[arg(long)]
        dead_letters: bool,
    },
    /// Delete every buffered record (the dead letters stay).
    Purge {
        /// Delete the dead letters instead, once looked at (`export --dead-letters`): past
        /// 10,000 further ones are only counted. The records stay.
        #[arg(long)]
        dead_letters: bool,
    },
    /// Carry the records of a buffer database moved aside because it would not open
    /// (`<buffer path>/sled.broken-<time>`) back into the buffer, to be delivered at the next
    /// start. Records that had left it already come again (duplicates, same ids); run again,
    /// it goes on where it stopped.
    Recover {
        /// The directory moved aside.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Fix the gateway's zone for the agent's life, where `TZ` is unset: `TZ` then names the zone
/// file `/etc/localtime` points to now, for the agent and each JavaScript worker (its `TZ` is
/// the agent's, see `js::supervisor`). Unset, the agent's C library reads the zone at its
/// first local-time conversion and keeps it, while each worker reads it as it starts: a
/// worker started again after `timedatectl set-timezone` would write a text log's local times
/// in the new zone while the mapping reads them in the old one. So a change of zone takes a
/// restart (see docs/operations.md). First in `main`: setting the environment with another
/// thread running is undefined behaviour in the C library.
fn fix_local_zone() {
    if std::env::var_os("TZ").is_some() {
        return;
    }
    let file = std::fs::canonicalize("/etc/localtime").unwrap_or_else(|_| "/etc/localtime".into());
    let mut tz = std::ffi::OsString::from(":");
    tz.push(file);
    std::env::set_var("TZ", tz);
}

fn main() -> ExitCode {
    fix_local_zone();
    hubgate::malloc::tune();
    let cli = Cli::try_parse().unwrap_or_else(|e| key_file_suggested(e).exit());
    hubgate::logger::init(matches!(cli.command, Command::JsWorker));
    // Before any secret is read.
    if let Err(e) = hubgate::coredump::disable() {
        log::warn!("cannot turn core dumps off: {e}");
    }
    hubgate::contain::abort_outside_containment();
    if !matches!(cli.command, Command::Run { .. }) {
        end_quietly_on_closed_output();
    }
    match cli.command {
        Command::Run { config } => run(&config),
        Command::JsWorker => hubgate::js::worker::main(),
        Command::Check { config, print } => check(&config, print),
        Command::Decode {
            config,
            codec,
            js,
            fport,
            dev_eui,
            dev_addr,
            fcnt,
            time,
            hex,
            uplink,
        } => {
            if let Some(file) = uplink {
                return decode_uplink(config.as_deref(), &file);
            }
            let up = DecodeArgs {
                fport,
                dev_eui,
                dev_addr,
                fcnt,
                time,
            };
            let with = match (codec, js) {
                (Some(id), _) => With::Codec(id),
                (None, Some(file)) => With::Js(file),
                (None, None) => unreachable!("clap requires --codec or --js"),
            };
            decode(config.as_deref(), with, up, &hex.unwrap_or_default())
        }
        Command::Lorawan {
            fcnt32,
            nwkskey,
            appskey,
            nwkskey_file,
            appskey_file,
            phyhex,
        } => {
            if let Some(flag) = [(nwkskey, "nwkskey"), (appskey, "appskey")]
                .into_iter()
                .find_map(|(given, flag)| given.map(|_| flag))
            {
                return fail(
                    2,
                    format!(
                        "--{flag} is not accepted (a key on the command line is visible in ps and shell history): put the key in a file and give --{flag}-file FILE, or --{flag}-file - to read it from standard input"
                    ),
                );
            }
            match session_keys(nwkskey_file.as_deref(), appskey_file.as_deref()) {
                Ok((nwk, app)) => lorawan(nwk.as_deref(), app.as_deref(), fcnt32, &phyhex),
                Err(code) => code,
            }
        }
        Command::Codecs { dir, config } => codecs(dir, config),
        Command::Buffer { action, config } => buffer_cmd(&config, action),
        Command::Configfile => {
            print!("{}", hubgate::config::TEMPLATE);
            ExitCode::SUCCESS
        }
        Command::Doctor { config } => {
            if hubgate::doctor::run(&config, &mut std::io::stdout()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The directory `hubgate codecs` lists: `--dir`, else the config's `[codecs] dir` (read
/// alone: the secrets the rest of the config names are not read, so this works outside the
/// agent's service, where they often cannot be). `Err` when a config named with `-c` cannot
/// be read; the default config only earns a warning, and the default directory is listed.
fn codec_dir(dir: Option<PathBuf>, config: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    let default = || hubgate::config::CodecsConfig::default().dir;
    if let Some(dir) = dir {
        return Ok(dir);
    }
    let named = config.is_some();
    let path = config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    // Without a config (a machine that does not run the agent) the default directory.
    if !named && !path.exists() {
        return Ok(default());
    }
    match hubgate::config::CodecsConfig::load(&path) {
        Ok(codecs) => Ok(codecs.dir),
        Err(e) if named => Err(fail(2, e)),
        Err(e) => {
            let dir = default();
            eprintln!("hubgate: warning: {e}; listing {}", dir.display());
            Ok(dir)
        }
    }
}

/// `hubgate codecs`: the built-in codecs, then the JavaScript ones of the directory.
fn codecs(dir: Option<PathBuf>, config: Option<PathBuf>) -> ExitCode {
    // id, recType, then an example: `hubgate decode --codec ID --fport PORT HEX`.
    for &c in Codec::ALL {
        let e = c.example();
        println!(
            "{:<24} {:<38} {:<3} {}",
            c.id(),
            c.rec_type(),
            e.fport,
            e.hex
        );
    }
    let named = dir.is_some();
    let dir = match codec_dir(dir, config) {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    // A directory that cannot be listed: a mistyped --dir is an error, the config's (or the
    // default) one that is missing means no JavaScript codecs, said on standard error.
    let names = match hubgate::js::dir::names(&dir) {
        Ok(names) => names,
        Err(e) if named => return fail(2, format!("codec directory {e}")),
        Err(e) => {
            eprintln!("hubgate: no JavaScript codecs: codec directory {e}");
            return ExitCode::SUCCESS;
        }
    };
    let worker = hubgate::js::Worker::new(hubgate::js::Launcher::this_program());
    for name in names {
        let (rec_type, state) = match hubgate::js::dir::load(&dir, &name, &worker) {
            Ok(s) => (
                s.table
                    .and_then(|t| t.rec_type)
                    .unwrap_or_else(|| "-".into()),
                "ok".to_string(),
            ),
            Err(e) => ("-".into(), e),
        };
        println!("{:<24} {:<38} {state}", format!("js/{name}"), rec_type);
    }
    ExitCode::SUCCESS
}

/// The one-shot commands print and exit: when the reader of their output goes away
/// (`hubgate buffer export | head`) they end as other command-line tools do, by SIGPIPE,
/// instead of panicking in `println!`. `run` keeps Rust's default (a write error, not
/// death), so a closed stdout never kills the agent.
fn end_quietly_on_closed_output() {
    // SAFETY: restores a signal's default disposition; no handler code is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// clap's tip for a mistyped long option names the closest one, the hidden and refused
/// --nwkskey/--appskey too (`--nwk-skey`): the key's file option is named instead.
fn key_file_suggested(mut e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    if let Some(ContextValue::String(arg)) = e.get(ContextKind::SuggestedArg) {
        if arg == "--nwkskey" || arg == "--appskey" {
            let file = ContextValue::String(format!("{arg}-file"));
            e.insert(ContextKind::SuggestedArg, file);
        }
    }
    e
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("hubgate: {msg}");
    ExitCode::from(code)
}

fn load(path: &Path) -> Result<(Config, hubgate::pipeline::prepare::Prepared), ExitCode> {
    hubgate::pipeline::prepare::load(path).map_err(|e| fail(1, e))
}

fn run(path: &Path) -> ExitCode {
    // A stop signal during start-up must stop the agent in order (exit 0), not take the
    // default action (killed, 143): the signals wait, blocked, until their handlers are in
    // place. Every thread started from here on inherits the mask, so only this one takes
    // them once it unblocks.
    let held = StopSignals::hold();
    let (cfg, prepared) = match load(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, format!("cannot start the runtime: {e}")),
    };
    let result = rt.block_on(async {
        let handlers = StopSignals::install().map_err(|e| format!("signal handlers: {e}"))?;
        held.release();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(forward_sighup(handlers.hup, reload_tx));
        hubgate::pipeline::run(
            cfg,
            prepared,
            stop_signal(handlers.term, handlers.int),
            reload_rx,
        )
        .await
        .map_err(|e| e.to_string())
    });
    // The pipeline has ended and waited for its own work. What may still run on the blocking
    // pool is work nothing waits for any more: a broker's name lookup the MQTT source gave
    // up on (getaddrinfo has no timeout, and a DNS server that drops queries holds it for
    // the resolver's whole wait). Dropping the runtime would wait for it, past systemd's
    // stop timeout behind a few such nameservers.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// SIGTERM, SIGINT and SIGHUP: blocked from the start of `run`, then handled.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// The signals held back until [`StopSignals::install`] has run.
struct Held(libc::sigset_t);

impl StopSignals {
    fn hold() -> Held {
        // SAFETY: plain libc calls on a sigset_t owned here; pthread_sigmask only changes
        // this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Held(set)
        }
    }

    /// Needs the runtime: tokio's handlers report to its driver.
    fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

impl Held {
    /// Take the held signals on this thread (one that arrived meanwhile is handled now).
    fn release(self) {
        // SAFETY: unblocks the set blocked by `hold`, on this thread only.
        unsafe {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.0, std::ptr::null_mut());
        }
    }
}

/// SIGHUP (`systemctl reload`): load the codec directory again, and read the connection
/// string file again (a new key there rebuilds the sink).
async fn forward_sighup(
    mut hup: tokio::signal::unix::Signal,
    reload: tokio::sync::mpsc::Sender<()>,
) {
    while hup.recv().await.is_some() {
        let _ = reload.try_send(());
    }
}

/// SIGTERM (systemd) or SIGINT (Ctrl-C).
async fn stop_signal(mut term: tokio::signal::unix::Signal, mut int: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM"),
        _ = int.recv() => log::info!("SIGINT"),
    }
}

fn check(path: &Path, print: bool) -> ExitCode {
    let (cfg, prepared) = match load(path) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    // The same warnings `run` logs at every start.
    for w in prepared.warnings {
        eprintln!("hubgate: warning: {w}");
    }
    for n in prepared.notes {
        eprintln!("hubgate: note: {n}");
    }
    // A codec that does not load costs its devices' decoding, not the agent's start: warned.
    let launcher = hubgate::js::Launcher::this_program();
    for e in hubgate::js::dir::Named::of(&cfg).load(launcher).failures() {
        eprintln!("hubgate: warning: {e}");
    }
    let verdict = format!(
        "{}: OK ({} source(s), {} device(s))",
        path.display(),
        cfg.sources.len(),
        cfg.devices.len()
    );
    if !print {
        println!("{verdict}");
        return ExitCode::SUCCESS;
    }
    // Standard output is the config alone, for `check --print > file`.
    match cfg.to_toml() {
        Ok(text) => print!("{text}"),
        Err(e) => return fail(1, e),
    }
    eprintln!("{verdict}");
    ExitCode::SUCCESS
}

/// The uplink `hubgate decode` makes up around the payload.
struct DecodeArgs {
    fport: Option<u8>,
    dev_eui: Option<String>,
    dev_addr: Option<String>,
    fcnt: Option<u32>,
    time: Option<String>,
}

/// What `hubgate decode` decodes with.
enum With {
    Codec(String),
    Js(PathBuf),
}

fn decode(config: Option<&Path>, with: With, args: DecodeArgs, hex_payload: &str) -> ExitCode {
    enum Loaded {
        Codec(Codec),
        Js(Box<hubgate::js::dir::Script>),
    }
    let loaded = match with {
        With::Codec(id) => match Codec::from_id(&id) {
            Some(c) => Loaded::Codec(c),
            None => {
                return fail(
                    2,
                    format!("unknown codec {id:?} (run `hubgate codecs` for the list)"),
                )
            }
        },
        With::Js(file) => {
            let mut warnings = Vec::new();
            let loaded = hubgate::js::dir::load_file(
                &file,
                &hubgate::js::Worker::new(hubgate::js::Launcher::this_program()),
                hubgate::js::dir::Checks::Warn(&mut warnings),
            );
            for w in warnings {
                eprintln!("hubgate: warning: {w}");
            }
            match loaded {
                Ok(script) => Loaded::Js(Box::new(script)),
                Err(e) => return fail(2, format!("--js {e}")),
            }
        }
    };
    let clean: String = hex_payload.chars().filter(|c| !c.is_whitespace()).collect();
    let payload = match hex::decode(&clean) {
        Ok(p) => p,
        Err(e) => return fail(2, format!("bad hex payload: {e}")),
    };
    let dev_eui = match args.dev_eui.as_deref().map(hubgate::ids::DevEui::parse) {
        None => hubgate::ids::DevEui([0; 8]),
        Some(Ok(eui)) => eui,
        Some(Err(e)) => return fail(2, format!("--dev-eui: {e}")),
    };
    let dev_addr = match args
        .dev_addr
        .as_deref()
        .map(hubgate::lorawan::DevAddr::parse)
    {
        None => None,
        Some(Ok(addr)) => Some(addr),
        Some(Err(e)) => return fail(2, format!("--dev-addr: {e}")),
    };
    let time = match args.time.as_deref().map(parse_time) {
        None => SystemTime::now(),
        Some(Ok(t)) => t,
        Some(Err(e)) => return fail(2, format!("--time: {e}")),
    };
    let cfg = match decode_config(config) {
        Ok(cfg) => cfg,
        Err(e) => return fail(2, e),
    };
    let up = Uplink {
        dev_eui,
        dev_addr,
        device_name: None,
        fport: args.fport,
        fcnt: args.fcnt,
        payload,
        time,
        radio: Radio::default(),
        ns: hubgate::uplink::NsDecoded::default(),
        same_ms_index: 0,
        session: None,
    };
    let decoder = hubgate::decode::Decoder::new(&cfg, hubgate::metrics::Metrics::new());
    let records = match &loaded {
        Loaded::Codec(codec) => decoder.decode_with(&up, *codec).map_err(|e| e.to_string()),
        Loaded::Js(script) => decoder
            .decode_js_with(&up, script)
            .map_err(|e| format!("{}: {e}", script.class)),
    };
    match records {
        Ok(records) => print_objs(&records),
        Err(e) => fail(2, e),
    }
}

/// The config `decode` takes its devices and record settings from: `-c`'s, else none.
fn decode_config(config: Option<&Path>) -> Result<Config, String> {
    match config {
        Some(path) => Config::load(path).map_err(|e| e.to_string()),
        None => {
            Ok(Config::parse("[sink]\ntype = \"stdout\"\n").expect("the minimal config parses"))
        }
    }
}

/// Each record's `obj`, byte for byte as the sink sends it, one a line.
fn print_objs(records: &[record::Record]) -> ExitCode {
    for rec in records {
        match record::obj_of(&rec.body) {
            Some(obj) => println!("{obj}"),
            None => return fail(2, "the record has no obj"),
        }
    }
    ExitCode::SUCCESS
}

/// `decode --uplink`: one network-server message through the agent's own parser and decoder.
fn decode_uplink(config: Option<&Path>, file: &Path) -> ExitCode {
    use hubgate::config::{SourceConfig, UplinkFormat};
    let cfg = match decode_config(config) {
        Ok(cfg) => cfg,
        Err(e) => return fail(2, e),
    };
    let bytes = if file == Path::new("-") {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map(|_| b)
    } else {
        std::fs::read(file)
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => return fail(2, format!("--uplink {}: {e}", file.display())),
    };
    let format = cfg
        .sources
        .iter()
        .find_map(|s| match s {
            SourceConfig::Mqtt(m) => Some(m.format),
            SourceConfig::Replay(r) => Some(r.format),
            _ => None,
        })
        .unwrap_or(UplinkFormat::ChirpstackV4);
    let input = match hubgate::source::parse(format, &bytes, SystemTime::now()) {
        Ok(parsed) => {
            if let Some(e) = &parsed.bad_time {
                eprintln!(
                    "--uplink {}: {e}: decoded with the time now",
                    file.display()
                );
            }
            parsed.value
        }
        Err(e) => return fail(2, format!("--uplink {}: {e}", file.display())),
    };
    let mut decoder = hubgate::decode::Decoder::new(&cfg, hubgate::metrics::Metrics::new());
    let records = decoder.decode(&input);
    if records.is_empty() {
        return fail(2, "no record: the message is not an uplink hubgate decodes");
    }
    print_objs(&records)
}

/// An RFC 3339 time a record can carry (1970 to 9999).
fn parse_time(s: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("{s:?}: {e}"))
        .and_then(|t| {
            hubgate::uplink::valid_time(t)
                .then_some(t)
                .ok_or_else(|| format!("{s:?}: outside 1970..=9999"))
        })
}

/// `hubgate lorawan` output for a data frame, fields in contract order (docs/design.md).
#[derive(serde::Serialize)]
struct LorawanData {
    mtype: &'static str,
    devaddr: String,
    fcnt: u32,
    fport: Option<u8>,
    payload: String,
    mic_valid: Option<bool>,
    /// The 32-bit counter the MIC verified with (absent when it was not checked or failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    fcnt32: Option<u32>,
}

#[derive(serde::Serialize)]
struct LorawanJoinRequest {
    mtype: &'static str,
    app_eui: String,
    dev_eui: String,
    dev_nonce: u16,
    /// Needs the AppKey, which hubgate does not take.
    mic_valid: Option<bool>,
}

#[derive(serde::Serialize)]
struct LorawanOther {
    mtype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cflist: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    mic_valid: Option<bool>,
}

/// The session keys given as files (`-`: standard input, one key per line, the NwkSKey
/// first).
fn session_keys(
    nwk: Option<&Path>,
    app: Option<&Path>,
) -> Result<(Option<String>, Option<String>), ExitCode> {
    use std::io::Read;
    let stdin_wanted = [nwk, app]
        .iter()
        .any(|f| f.is_some_and(|f| f == Path::new("-")));
    let mut stdin = String::new();
    if stdin_wanted {
        std::io::stdin()
            .take(hubgate::files::SECRET_CAP)
            .read_to_string(&mut stdin)
            .map_err(|e| fail(2, format!("cannot read keys from standard input: {e}")))?;
    }
    let mut lines = stdin.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut key = |file: Option<&Path>, flag: &str| match file {
        None => Ok(None),
        Some(f) if f == Path::new("-") => lines
            .next()
            .map(|k| Some(k.to_string()))
            .ok_or_else(|| fail(2, format!("{flag}: no key on standard input"))),
        Some(f) => hubgate::files::read_capped(f, hubgate::files::SECRET_CAP)
            .map(|k| Some(k.trim().to_string()))
            .map_err(|e| fail(2, unreadable_key_file(flag, f, &e))),
    };
    Ok((key(nwk, "--nwkskey-file")?, key(app, "--appskey-file")?))
}

/// Why the key file `file` given with `flag` cannot be read. An argument is named only if it
/// looks like a path (it holds `/` or `.`, or names a directory entry): otherwise it may be a
/// key given where its file goes (the likely slip after `--nwkskey HEX` was refused), typos
/// and separators other than `/` and `.` included, and is not repeated.
fn unreadable_key_file(flag: &str, file: &Path, e: &str) -> String {
    let os = file.as_os_str().as_encoded_bytes();
    if os.contains(&b'/') || os.contains(&b'.') || file.symlink_metadata().is_ok() {
        return format!("{flag} {}: {e}", file.display());
    }
    format!(
        "{flag}: its argument is no file that can be read ({e}); if it is the key itself, put \
         the key in a file and give the file, or - to read the key from standard input"
    )
}

fn lorawan(
    nwkskey: Option<&str>,
    appskey: Option<&str>,
    fcnt32: Option<u32>,
    phyhex: &str,
) -> ExitCode {
    use hubgate::lorawan::{crypto, parse, FcntTracker, Frame, Key};
    let key = |flag: &str, hex: Option<&str>| -> Result<Option<Key>, ExitCode> {
        hex.map(|h| Key::from_hex(h).map_err(|e| fail(2, format!("{flag}: {e}"))))
            .transpose()
    };
    let (nwk, app) = match (
        key("--nwkskey-file", nwkskey),
        key("--appskey-file", appskey),
    ) {
        (Ok(n), Ok(a)) => (n, a),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let clean: String = phyhex.chars().filter(|c| !c.is_whitespace()).collect();
    let phy = match hex::decode(&clean) {
        Ok(p) => p,
        Err(e) => return fail(2, format!("bad hex PHYPayload: {e}")),
    };
    let frame = match parse(&phy) {
        Ok(f) => f,
        Err(e) => return fail(2, e),
    };
    let mtype = frame.mtype().as_str();
    let json = match frame {
        Frame::Data(d) => {
            let candidates = match fcnt32 {
                Some(n) if n & 0xFFFF != u32::from(d.fcnt16) => {
                    return fail(
                        2,
                        format!("--fcnt32 {n}: its low 16 bits are not FCnt {}", d.fcnt16),
                    )
                }
                Some(n) => vec![n],
                None => FcntTracker::new().candidates(d.fcnt16),
            };
            let verified = nwk.as_ref().and_then(|k| {
                candidates
                    .iter()
                    .copied()
                    .find(|&c| crypto::verify_mic(&d, k, c))
            });
            let fcnt = verified.unwrap_or(candidates[0]);
            let payload_key = if d.fport == Some(0) { &nwk } else { &app };
            let payload = match payload_key {
                Some(k) => crypto::decrypt_payload(&d, k, fcnt),
                None => d.frm_payload.to_vec(),
            };
            serde_json::to_string(&LorawanData {
                mtype,
                devaddr: d.dev_addr.to_string(),
                fcnt: u32::from(d.fcnt16),
                fport: d.fport,
                payload: hex::encode(payload),
                mic_valid: nwk.as_ref().map(|_| verified.is_some()),
                fcnt32: verified,
            })
        }
        Frame::JoinRequest(j) => serde_json::to_string(&LorawanJoinRequest {
            mtype,
            app_eui: hex::encode(j.app_eui),
            dev_eui: hex::encode(j.dev_eui),
            dev_nonce: j.dev_nonce,
            mic_valid: None,
        }),
        Frame::JoinAccept { has_cflist } => serde_json::to_string(&LorawanOther {
            mtype,
            cflist: Some(has_cflist),
            payload: None,
            mic_valid: None,
        }),
        Frame::Proprietary { payload } | Frame::Rfu { payload } => {
            serde_json::to_string(&LorawanOther {
                mtype,
                cflist: None,
                payload: Some(hex::encode(payload)),
                mic_valid: None,
            })
        }
    };
    match json {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(2, e),
    }
}

/// Run as root, go on as the owner of the buffer directory (or of its nearest existing
/// parent), once the config (secrets included) is read: what opening, rebuilding or purging
/// the buffer writes must stay the agent's (`User=hubgate`), which otherwise can no longer
/// open it and fails every start.
fn become_buffer_owner(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let Some(owner) = path.ancestors().find_map(|p| std::fs::metadata(p).ok()) else {
        return Ok(());
    };
    let (uid, gid) = (owner.uid(), owner.gid());
    if uid == 0 {
        return Ok(());
    }
    // SAFETY: setgroups reads no list when its length is 0; setgid and setuid take plain ids.
    let dropped = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(gid) == 0
            && libc::setuid(uid) == 0
    };
    if dropped {
        Ok(())
    } else {
        Err(format!(
            "cannot go on as the owner of {} (uid {uid}): {}",
            path.display(),
            std::io::Error::last_os_error()
        ))
    }
}

fn buffer_cmd(path: &Path, action: BufferAction) -> ExitCode {
    // Only `[buffer]`: the package's prerm counts the buffer with this, where the unit's
    // environment (a `${VAR}` secret) is not there.
    let cfg = match hubgate::config::BufferConfig::load(path) {
        Ok(c) => c,
        Err(e) => return fail(1, e),
    };
    let db = cfg.path.join("sled");
    if !db.is_dir() {
        // Opening would make an empty buffer, and a wrong path would read as an empty one:
        // a recovery into it would carry the records where the agent never reads them.
        return fail(
            1,
            format!(
                "no buffer at {} (no {}; buffer.path in {}): check buffer.path; the agent \
                 makes it at its first start",
                cfg.path.display(),
                db.display(),
                path.display()
            ),
        );
    }
    if let Err(e) = become_buffer_owner(&cfg.path) {
        return fail(1, e);
    }
    // A database that will not open stays where it is: only the agent's start moves it aside.
    let mut store = match SledStore::open_unmoved(&cfg.path) {
        Ok(s) => s,
        Err(e @ BufferError::Locked(_)) => {
            return fail(1, format!("{e} (is hubgate running? stop it first)"))
        }
        Err(e) => return fail(1, e),
    };
    let released = store.release_reserve_if_short();
    if released > 0 {
        eprintln!(
            "hubgate: the disk is full; the buffer's reserve of {released} bytes was deleted so \
             it could open (the agent makes it again once the disk has room)"
        );
    }
    match action {
        BufferAction::Stats => {
            let (n, bytes) = store.usage();
            println!("path: {}", cfg.path.display());
            println!("records: {n}");
            println!("bytes: {bytes}");
            if let Ok(n) = store.size_on_disk() {
                println!("on disk: {n}");
            }
            println!("dead letters: {}", store.dead_letters());
            match hubgate::pipeline::oldest_age(&store, SystemTime::now()) {
                // Made before the gateway's clock was set: its time is not known.
                Some(None) => println!("oldest: unknown (made before the clock was set)"),
                Some(Some(age)) => println!(
                    "oldest: {}",
                    humantime::format_duration(Duration::from_secs(age.as_secs()))
                ),
                None => {}
            }
            // Records the count leaves out: the package's downgrade guard refuses on this line.
            if let Some(kept) = buffer::kept_aside(&cfg.path, |bytes| format!("{bytes} bytes")) {
                println!("kept aside: {kept}");
            }
            ExitCode::SUCCESS
        }
        BufferAction::Export { dead_letters } => {
            let total = match dead_letters {
                true => store.dead_letters(),
                false => store.usage().0,
            };
            let (mut after, mut done, mut left_out) = (None, 0u64, 0u64);
            loop {
                let batch = match dead_letters {
                    true => store.scan_dead(after, 1000),
                    false => store.scan(after, 1000),
                };
                let batch = match batch {
                    Ok(b) => b,
                    // The records after one that cannot be read are still exported.
                    Err(BufferError::Unreadable { seq, why, .. }) => {
                        eprintln!("hubgate: record #{seq} cannot be read, left out: {why}");
                        left_out += 1;
                        done += 1;
                        after = Some(seq);
                        continue;
                    }
                    Err(e) => return fail(1, e),
                };
                let Some(last) = batch.last().map(|(s, _)| *s) else {
                    break;
                };
                done = (done + batch.len() as u64).min(total);
                for (seq, bytes) in batch {
                    match buffer::decode(&bytes) {
                        Ok(rec) => println!("{}", rec.body),
                        Err(e) => {
                            eprintln!("hubgate: record #{seq} is damaged, left out: {e}");
                            left_out += 1;
                        }
                    }
                }
                after = Some(last);
                // Progress on stderr, so stdout stays pure JSON lines.
                eprintln!("hubgate: exported {done} of {total} record(s)");
            }
            if left_out > 0 {
                return fail(1, format!("{left_out} record(s) left out of the export"));
            }
            ExitCode::SUCCESS
        }
        BufferAction::Purge { dead_letters } => {
            let (purged, what) = match dead_letters {
                false => (store.purge(), "record(s)"),
                true => (store.purge_dead_letters(), "dead letter(s)"),
            };
            match purged {
                Ok(n) => {
                    println!("purged {n} {what}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, e),
            }
        }
        BufferAction::Recover { dir } => recover(&mut store, &cfg, &dir),
    }
}

fn recover(store: &mut SledStore, cfg: &hubgate::config::BufferConfig, dir: &Path) -> ExitCode {
    let held = store.usage().0;
    let in_use = std::fs::canonicalize(cfg.path.join("sled")).ok();
    if in_use.is_some() && std::fs::canonicalize(dir).ok() == in_use {
        return fail(1, format!("{} is the buffer in use", dir.display()));
    }
    // Only a clock known to be synchronised: one trusted for want of an answer may be wrong
    // and stepped before hubgate next runs, with nothing to measure that step.
    let now = SystemTime::now();
    let trusted = hubgate::clock::synchronized() == Some(true);
    let done = buffer::recover(store, dir, trusted.then_some(now), |i, of, records| {
        eprintln!("hubgate: segment {i} of {of} read, {records} record(s) carried");
    });
    let done = match done {
        Ok(d) => d,
        Err(e) => return fail(1, e),
    };
    for (number, e) in &done.unreadable {
        eprintln!(
            "hubgate: segment {number} cannot be read whole, the records in what cannot be read \
             are not carried ({e}); run it again once it reads: that segment is read again"
        );
    }
    let todo = done.segments.saturating_sub(done.done_before);
    if todo == 0 {
        println!(
            "{} was recovered before: nothing more to carry",
            dir.display()
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "carried {} record(s) from {} of {todo} segment(s) ({} damaged byte(s) left out); the \
         buffer held {held}",
        done.records,
        todo.saturating_sub(done.unreadable.len()),
        done.damaged,
    );
    match (done.records, trusted) {
        (0, _) => {}
        (_, true) => println!(
            "the records carried age from now (their creation time set to it, or kept if \
             later): none is dropped as expired at once, one older than max_age is delivered \
             late"
        ),
        (_, false) => println!(
            "the records carried have no creation time (the clock is not known to be \
             synchronised now): each run of hubgate ages them from its first trusted reading \
             of the clock (a restart starts their age again), none is dropped as expired at once"
        ),
    }
    let (_, bytes) = store.usage();
    if bytes > cfg.max_bytes {
        eprintln!(
            "hubgate: the buffer now holds {bytes} bytes, more than [buffer] max_bytes = {}: \
             raise it before hubgate starts, or the buffer makes room by its when_full rule",
            cfg.max_bytes
        );
    }
    if done.unreadable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
