//! Decode stage: an input becomes its [`Record`]s. An uplink of ours always becomes at least
//! one record, decoded or packed, never dropped: one, or with a built-in codec's readings of
//! earlier times one per time ([`record::build`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::codec::{rec_type, Codec, CodecError};
use crate::config::{CodecsConfig, Config, DecodeStep};
use crate::format::DeadLetter;
use crate::ids::DevEui;
use crate::js::dir::{Named, Script, Set};
use crate::js::guard::{self, Guard};
use crate::js::{JsError, Launcher};
use crate::lorawan::{self, LorawanError};
use crate::mapping;
use crate::metrics::devices::Outcome;
use crate::metrics::Metrics;
use crate::record::{self, DeviceInfo, Payload, Record};
use crate::source::Input;
use crate::uplink::{RadioFrame, Uplink};

struct Device {
    codec: Option<Codec>,
    order: Vec<DecodeStep>,
    /// Its JavaScript codec's name (`js_codec`); else the device profile's, if any.
    js: Option<String>,
    /// Name of the mapping table of the network server's object (and of a JavaScript codec
    /// without a table of its own).
    mapping: Option<String>,
    tags: Vec<String>,
    /// Its own `usecase`.
    usecase: Option<String>,
    packed_rec_type: Option<String>,
}

pub struct Decoder {
    /// Session keys and frame counters of devices whose radio frames hubgate decrypts.
    lorawan: lorawan::Decoder,
    devices: HashMap<DevEui, Device>,
    /// The JavaScript codecs and mapping tables the config names.
    files: Set,
    codecs: CodecsConfig,
    /// What the reloads (SIGHUP) since the last input loaded, taken before the next input.
    reloads: Pending,
    /// Which JavaScript calls are made (quarantines, the round's budget); its own cell because
    /// decoding an uplink only reads the rest.
    guard: RefCell<Guard>,
    reloader: Reloader,
    packed_rec_type: String,
    global_tags: Vec<String>,
    /// `[record] usecases`: by the codec that made the record.
    usecases: std::collections::BTreeMap<String, String>,
    /// The envelope's `source`.
    source: String,
    metrics: Arc<Metrics>,
}

/// The codecs reloaded and not yet taken: one set, whatever the number of reloads, so reloads
/// without an input between them keep one worker of theirs alive, not one each.
type Pending = Arc<std::sync::Mutex<Option<Set>>>;

/// Loads the codec directory again (SIGHUP) away from the forwarder's thread and hands the
/// new set to the decoder, which takes it before its next input: a codec file that now fails
/// to load leaves the version in use in place (see [`Set::update`]).
#[derive(Clone)]
pub struct Reloader {
    files: Named,
    /// The files ([`Set::outcomes`]) a loaded version of which is in use: one that fails on a
    /// reload keeps it, as [`Set::update`] decides.
    in_use: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Where the decoder takes the reloaded set from.
    to_decoder: Pending,
    /// How the codecs' worker process is started.
    launcher: Launcher,
    metrics: Arc<Metrics>,
    /// Set when the agent stops ([`Reloader::stop`]).
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Reloader {
    /// Load the directory again and hand it to the decoder; each file that fails is logged
    /// with its reason here, then one line sums the reload up. Blocks (engines are built): run
    /// it on the blocking pool. A panic while loading leaves the codecs in use in place.
    pub fn reload(&self) {
        use std::sync::atomic::Ordering;
        let load = || {
            let launcher = self.launcher.clone();
            self.files.load_with(launcher, |next| {
                if self.stopping.load(Ordering::Relaxed) {
                    return Err(crate::js::dir::Stopped::at(next));
                }
                Ok(())
            })
        };
        match crate::contain::contain(load) {
            // Nobody takes the set any more; its worker ends with it.
            Ok(Err(stopped)) => log::info!(
                "codec directory {} reload: {stopped}, as the agent stops",
                self.files.dir.display()
            ),
            Ok(Ok(set)) => {
                let (mut loaded, mut kept, mut failed) = (0, 0, 0);
                {
                    let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
                    for (file, error) in set.outcomes() {
                        match error {
                            None => {
                                loaded += 1;
                                in_use.insert(file);
                            }
                            Some(e) if in_use.contains(&file) => {
                                kept += 1;
                                self.metrics.problem_now(
                                    "codec_file",
                                    format!("{e}; the version loaded before stays in use"),
                                );
                            }
                            Some(e) => {
                                failed += 1;
                                self.metrics.problem_now("codec_file", e);
                            }
                        }
                    }
                }
                // A set not yet taken takes this one as the decoder would: each file's new
                // version where it loaded. What it replaced (with its worker) ends here.
                let replaced = {
                    let mut pending = self.to_decoder.lock().unwrap_or_else(|p| p.into_inner());
                    match pending.as_mut() {
                        Some(earlier) => Some(earlier.update(set)),
                        None => {
                            *pending = Some(set);
                            None
                        }
                    }
                };
                drop(replaced);
                log::info!(
                    "codec directory {} reloaded: {loaded} file(s) loaded, {kept} kept at their \
                     previous version, {failed} failed with none to keep (which device uses \
                     which codec is read from the config at start only)",
                    self.files.dir.display(),
                );
            }
            Err(panic) => self.metrics.problem_now(
                "codec_file",
                format!("loading the codec directory again {panic}: the codecs in use stay"),
            ),
        }
    }

    /// The agent stops: a reload going on ends before its next codec file, as would any later
    /// one, spending no more time on files nobody will use. The runtime's end waits at most
    /// 1 s for the blocking pool, so it does not hold the exit up.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How far each codec file loaded before `READY=1` pushes systemd's start timeout, as the
/// buffer's upgrade does for each batch: a file takes at most its load limit of CPU, plus the
/// worker's patience on a busy gateway ([`crate::js`]).
const START_ALLOWANCE_PER_CODEC: std::time::Duration = std::time::Duration::from_secs(90);

impl Decoder {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Self {
        Decoder::with_launcher(cfg, metrics, Launcher::default())
    }

    /// The agent's, before `READY=1`: ahead of each codec file, which may take seconds,
    /// systemd hears that the start goes on (nothing is sent outside systemd).
    pub fn starting(cfg: &Config, metrics: Arc<Metrics>) -> Self {
        Decoder::build(cfg, metrics, Launcher::default(), |next| {
            crate::notify::extend_start(
                START_ALLOWANCE_PER_CODEC,
                &format!(
                    "loading the JavaScript codecs: {}.js ({} of {})",
                    next.name,
                    next.done + 1,
                    next.of
                ),
            );
        })
    }

    /// The same, with the JavaScript codecs' worker started by `launcher` (tests and
    /// benchmarks, whose own binary is not hubgate).
    pub fn with_launcher(cfg: &Config, metrics: Arc<Metrics>, launcher: Launcher) -> Self {
        Decoder::build(cfg, metrics, launcher, |_| {})
    }

    fn build(
        cfg: &Config,
        metrics: Arc<Metrics>,
        launcher: Launcher,
        mut before: impl FnMut(crate::js::dir::Next),
    ) -> Self {
        let launcher = launcher.reporting_to(metrics.clone());
        let devices = cfg
            .devices
            .iter()
            .map(|d| {
                (
                    d.dev_eui,
                    Device {
                        codec: d.codec,
                        order: d.decode_order.clone(),
                        js: d.js_codec.clone(),
                        mapping: d.mapping.clone(),
                        tags: d.tags.clone(),
                        usecase: d.usecase.clone(),
                        packed_rec_type: d.own_packed_rec_type(),
                    },
                )
            })
            .collect();
        let mut sessions = lorawan::Decoder::new();
        for d in &cfg.devices {
            if let Some((dev_addr, keys)) = d.session() {
                let mut session = lorawan::Session::new(dev_addr, d.dev_eui, keys);
                if d.resets_fcnt {
                    session = session.resetting_fcnt();
                }
                if let Some(fcnt) = d.fcnt_from {
                    session = session.fcnt_from(fcnt);
                }
                sessions.add(session);
            }
        }
        let reloads = Pending::default();
        let files = Named::of(cfg);
        let Ok(files_in_use) = files.load_with(launcher.clone(), |next| {
            before(next);
            Ok::<(), std::convert::Infallible>(())
        });
        let mut in_use = std::collections::HashSet::new();
        for (file, error) in files_in_use.outcomes() {
            match error {
                None => {
                    in_use.insert(file);
                }
                Some(e) => metrics.problem_now("codec_file", e),
            }
        }
        let reloader = Reloader {
            files,
            in_use: Arc::new(std::sync::Mutex::new(in_use)),
            to_decoder: reloads.clone(),
            launcher,
            metrics: metrics.clone(),
            stopping: Default::default(),
        };
        let files = files_in_use;
        Decoder {
            devices,
            files,
            codecs: cfg.codecs.clone(),
            reloads,
            guard: RefCell::new(Guard::new(cfg.codecs.quarantine, cfg.codecs.round_budget)),
            reloader,
            lorawan: sessions,
            packed_rec_type: cfg.record.packed_rec_type.clone(),
            global_tags: cfg.record.global_tags.clone(),
            usecases: cfg.record.usecases.clone(),
            source: cfg.record.source.clone(),
            metrics,
        }
    }

    /// What loads the codec directory again for this decoder (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Take the set loaded again since the last input (the reloads logged their failures):
    /// where a file now fails and a version of it was in use, that one stays. A codec whose
    /// file changed starts without strikes or quarantines; one whose file is the same keeps
    /// them, or a reload would give a poison device a fresh start.
    fn take_reloads(&mut self) {
        #[cfg(test)]
        crate::contain::test_point::reach("take_reloads");
        let taken = self
            .reloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(set) = taken {
            let guard = self.guard.get_mut();
            for (name, new) in set.scripts() {
                let same =
                    matches!(self.files.codec(name), Some(Ok(old)) if old.version == new.version);
                if !same {
                    guard.forget(name);
                }
            }
            let replaced = self.files.update(set);
            // Freeing engines is work the forwarder need not wait for.
            let dropped = std::thread::Builder::new()
                .name("codec-drop".into())
                .spawn(move || drop(replaced));
            if let Err(e) = dropped {
                log::debug!("codecs replaced on reload freed in place: {e}");
            }
        }
    }

    /// A new round of the forwarder: its JavaScript calls may take `[codecs] round_budget` of
    /// wall time together. Before the first round there is no budget (`hubgate decode`).
    pub fn start_round(&mut self) {
        self.guard.get_mut().start_round();
    }

    /// Whether this round's JavaScript calls took `[codecs] round_budget`: the forwarder then
    /// ends the round, and the frames it has not taken wait for the next one.
    pub fn budget_spent(&self) -> bool {
        self.guard.borrow().budget_spent()
    }

    /// What the inputs decoded since the last call did to LoRaWAN frame counters.
    pub fn take_counters(&mut self) -> lorawan::Counters {
        self.lorawan.take_counters()
    }

    /// Continue a LoRaWAN session from a counter kept before a restart, with its frame's MIC,
    /// which counters below it were taken and its keys' print if those were kept (false: no
    /// such session configured, or not with these keys).
    pub fn resume_fcnt(
        &mut self,
        dev_addr: lorawan::DevAddr,
        dev_eui: DevEui,
        last: u32,
        mic: Option<[u8; 4]>,
        behind: Option<u64>,
        keys: Option<[u8; 4]>,
    ) -> bool {
        self.lorawan
            .resume(dev_addr, dev_eui, last, mic, behind, keys)
    }

    /// Tell a copy of frames a LoRaWAN session accepted before a restart
    /// ([`lorawan::Decoder::resume_copies`]).
    pub fn resume_copies(
        &mut self,
        dev_addr: lorawan::DevAddr,
        dev_eui: DevEui,
        keys: [u8; 4],
        frames: &[(u32, [u8; 4], Duration)],
    ) {
        self.lorawan.resume_copies(dev_addr, dev_eui, keys, frames)
    }

    /// Let `time` pass on the LoRaWAN sessions' clock ([`lorawan::Decoder::pass`]).
    #[cfg(test)]
    pub fn pass(&mut self, time: Duration) {
        self.lorawan.pass(time);
    }

    /// The LoRaWAN sessions' key prints ([`lorawan::Decoder::key_prints`]).
    pub fn key_prints(&self) -> HashMap<(lorawan::DevAddr, DevEui), [u8; 4]> {
        self.lorawan.key_prints()
    }

    /// The records of `input`: none when it holds nothing to send (see [`Input`]). A panic
    /// while decoding (a bug) is contained: counted as `decode_panic`, and the input still
    /// becomes a record.
    pub fn decode(&mut self, input: &Input) -> Vec<Record> {
        // Not the input's work: a panic here is not contained with it (the codecs could be
        // left half-taken), it ends the agent as any other panic outside containment does.
        self.take_reloads();
        crate::contain::contain(|| self.decode_inner(input))
            .unwrap_or_else(|panic| self.after_panic(input, &panic))
    }

    /// An uplink goes out packed with the reason (its payload is not lost); anything else, or
    /// an uplink whose packed record panics too, becomes a dead letter.
    fn after_panic(&self, input: &Input, panic: &str) -> Vec<Record> {
        self.metrics.problem("decode_panic", || {
            format!("decoding a message {panic}: sent packed or kept as a dead letter")
        });
        let reason = format!("decoding {panic}");
        let now = SystemTime::now();
        if let Input::Uplink(up) = input {
            let info = DeviceInfo {
                global_tags: &self.global_tags,
                source: &self.source,
                ..DeviceInfo::UNKNOWN
            };
            let packed = Payload::Packed {
                rec_type: &self.packed_rec_type,
                error: Some(reason.clone()),
            };
            if let Ok(records) = crate::contain::contain(|| record::build(up, &info, packed, now)) {
                return records;
            }
        }
        let bytes = match input {
            Input::Uplink(up) => up.payload.clone(),
            Input::Radio(f) => f.phy.clone(),
            Input::GatewayStatus { stat, .. } => serde_json::to_vec(stat).unwrap_or_default(),
            Input::DeadLetter(d) => d.head.clone(),
        };
        let letter = DeadLetter::new("decode", reason, None, &bytes, now);
        vec![record::dead_letter(&letter, now)]
    }

    fn decode_inner(&mut self, input: &Input) -> Vec<Record> {
        #[cfg(test)]
        crate::contain::test_point::reach("decode");
        match input {
            Input::Uplink(up) => self.uplink(up),
            Input::Radio(f) => self.radio(f),
            Input::GatewayStatus {
                gateway_id,
                stat,
                time,
                same_ms_index,
            } => vec![record::gateway_status(
                &self.source,
                &self.global_tags,
                gateway_id,
                stat,
                (*time, *same_ms_index),
                SystemTime::now(),
            )],
            Input::DeadLetter(d) => vec![record::dead_letter(d, SystemTime::now())],
        }
    }

    /// A join request: from a device with a session in the config, that session is over
    /// (hubgate cannot follow a join), which is told, naming the device; any other is
    /// another device's or network's join traffic.
    fn join_request(&self, phy: &[u8]) {
        let ours = match lorawan::parse(phy) {
            Ok(lorawan::Frame::JoinRequest(j)) => {
                let dev_eui = DevEui(j.dev_eui);
                self.lorawan.dev_addr_of(dev_eui).map(|a| (dev_eui, a))
            }
            _ => None,
        };
        match ours {
            Some((dev_eui, dev_addr)) => self.metrics.problem("rejoined", || {
                format!(
                    "join request from {dev_eui}, whose session (DevAddr {dev_addr}) is in \
                     the config: the device joined again, and its frames now come from a \
                     DevAddr with keys hubgate does not have; copy its new session (dev_addr, \
                     nwk_s_key, app_s_key) from the network server into its [[device]]"
                )
            }),
            None => self.metrics.problem("not_ours", || {
                "radio frame skipped: a join request of a device without a session here".into()
            }),
        }
    }

    /// A PHYPayload heard by a radio: verified and decrypted with the device's session keys.
    /// Frames of other networks, join traffic and copies heard again (another gateway, a
    /// second source) are counted and dropped; only authenticated uplinks become records. The
    /// first copy's radio metadata stands (a source merged copies it got together into the
    /// best one), not a stronger copy arriving later. The copies a source merged into the
    /// frame count as copies decoded after it would: an uplink's (its counter then taken) as
    /// duplicates, a refused frame's as the same refusal again.
    fn radio(&mut self, f: &RadioFrame) -> Vec<Record> {
        match self.lorawan.decode_uplink(&f.phy, f.time, f.radio.clone()) {
            // MAC commands are the network server's business, not readings (a codec that
            // ignores the port would read them as some), and a frame without FPort carries
            // no payload at all (MAC commands in FOpts, an acknowledgement); its counter is
            // kept all the same.
            Ok(up) if up.fport.is_none_or(|p| p == 0) => {
                self.metrics.mac_frames.inc();
                self.metrics.duplicates.add(u64::from(f.copies));
                Vec::new()
            }
            // A panic past this point leaves the frame decrypted and its counter taken: it
            // goes out packed with the reason, as an uplink's would, not as a dead letter of
            // the encrypted frame that a redelivery could not make a record of again.
            Ok(up) => {
                self.metrics.duplicates.add(u64::from(f.copies));
                crate::contain::contain(|| self.uplink(&up))
                    .unwrap_or_else(|panic| self.after_panic(&Input::Uplink(up), &panic))
            }
            // A refusal changes no session: each copy would be refused for the same reason.
            Err(e) => {
                for _ in 0..=f.copies {
                    self.refused(&e, &f.phy);
                }
                Vec::new()
            }
        }
    }

    /// Count a radio frame the LoRaWAN decoder refused, by why.
    fn refused(&self, e: &LorawanError, phy: &[u8]) {
        match e {
            LorawanError::Replay { .. } => self.metrics.duplicates.inc(),
            // Not a copy: the device looks dead until told apart from one.
            LorawanError::FcntReset { last, .. } => self.metrics.problem("fcnt_reset", || {
                format!(
                    "radio frame refused: {e}; its frames are refused until its counter \
                     passes {last}, unless its [[device]] has `resets_fcnt = true` (for a \
                     device known to restart its counter: weakens its replay protection)"
                )
            }),
            LorawanError::NotUplink(lorawan::MType::JoinRequest) => self.join_request(phy),
            LorawanError::UnknownDevAddr(_) | LorawanError::NotUplink(_) => self
                .metrics
                .problem("not_ours", || format!("radio frame skipped: {e}")),
            _ => self
                .metrics
                .problem("lorawan_error", || format!("radio frame dropped: {e}")),
        }
    }

    /// The records of `up` decoded with `codec`, whatever the device's own, with the device's
    /// tags and the site's settings: what `hubgate decode` prints, built as the sink's are.
    pub fn decode_with(&self, up: &Uplink, codec: Codec) -> Result<Vec<Record>, CodecError> {
        let decoded = codec.decode(up.fport, &up.payload)?;
        let payload = Payload::Decoded {
            codec: codec.id(),
            decoded,
        };
        Ok(record::build(
            up,
            &self.info(up, Some(codec.id())),
            payload,
            SystemTime::now(),
        ))
    }

    /// The records of `up` decoded with the JavaScript codec `script`, as
    /// [`decode_with`](Decoder::decode_with) does for the built-in ones.
    pub fn decode_js_with(&self, up: &Uplink, script: &Script) -> Result<Vec<Record>, JsError> {
        // One call, from the command line: a worker that ended after it costs nothing here.
        let (mapped, _) = self.run_js(up, script)?;
        let payload = Payload::Object {
            class: &script.class,
            mapped,
        };
        Ok(record::build(
            up,
            &self.info(up, Some(script.name())),
            payload,
            SystemTime::now(),
        ))
    }

    /// `up` decoded by `script` and mapped by the codec's own table, or else by the device's
    /// `mapping` table: the pipeline and `hubgate decode --js` map alike. The codec's
    /// warnings are the problem `js_warning`; the mapping's (normalized values out of bounds,
    /// `[history]` entries unread or past the cap, `[]` arrays past theirs) are
    /// `js_value_refused`, rate-limited apart, so that a fleet of one vendor's normalizers
    /// cannot hide another codec's own warnings.
    fn run_js(&self, up: &Uplink, script: &Script) -> Result<(mapping::Mapped, bool), JsError> {
        let out = script.codec.decode(up.fport, &up.payload, up.time)?;
        let device = self.devices.get(&up.dev_eui);
        let table = script.table.as_ref().or_else(|| self.mapping(device));
        let brand = self.brand(up);
        let mapped = mapping::map(Some(&out.data), table, brand, &out.normalized, up.time);
        for (kind, warnings) in [
            ("js_warning", &out.warnings),
            ("js_value_refused", &mapped.warnings),
        ] {
            if !warnings.is_empty() {
                self.metrics.problem(kind, || {
                    format!(
                        "device {} ({}): {}",
                        up.device_id(),
                        script.class,
                        warnings.join("; ")
                    )
                });
            }
        }
        Ok((mapped, out.retired))
    }

    /// [`run_js`](Decoder::run_js), unless the guard says the codec is not to be called for
    /// this device now; its outcome goes to the guard.
    fn guarded_js(
        &self,
        up: &Uplink,
        name: &str,
        script: &Script,
    ) -> Result<mapping::Mapped, JsError> {
        let mut guard = self.guard.borrow_mut();
        guard.admit(name, up.dev_eui, Instant::now())?;
        let start = Instant::now();
        let result = self.run_js(up, script);
        let now = Instant::now();
        let started = match &result {
            // Its result stands, but its worker ended: a strike, as running out of memory is.
            Ok((_, true)) => {
                self.metrics.problem("js_oom", || {
                    format!(
                        "device {} (JavaScript {name}): ran out of memory and caught it: its \
                         result is sent, its worker is started again",
                        up.device_id()
                    )
                });
                let oom = Err::<(), _>(JsError::OutOfMemory);
                guard.settle(name, up.dev_eui, &oom, now - start, now)
            }
            other => guard.settle(name, up.dev_eui, other, now - start, now),
        };
        let result = result.map(|(mapped, _)| mapped);
        let secs = guard.quarantine().as_secs();
        let line = match started {
            None => return result,
            Some(guard::Started::Device) => format!(
                "device {}: JavaScript {name} is not called for it for {secs} s: {} of its \
                 calls timed out, ran out of memory, failed in the engine or took the worker \
                 down, and no success {} s or more after the last of them forgot them; its \
                 uplinks go out packed meanwhile",
                up.device_id(),
                guard::STRIKES,
                guard::WINDOW.as_secs(),
            ),
            Some(guard::Started::Codec) => format!(
                "JavaScript {name} is not called for any device for {secs} s: {} of its calls \
                 within {} s timed out, ran out of memory, failed in the engine or took the \
                 worker down; its uplinks go out packed meanwhile",
                guard::CODEC_STRIKES,
                guard::WINDOW.as_secs(),
            ),
        };
        self.metrics.problem("js_quarantine_started", || line);
        result
    }

    /// What the config says about the device of `up` and the site, for a record made by
    /// `codec` ([`Decoder::usecase`]).
    fn info(&self, up: &Uplink, codec: Option<&str>) -> DeviceInfo<'_> {
        let device = self.devices.get(&up.dev_eui);
        DeviceInfo {
            tags: device.map(|d| d.tags.as_slice()).unwrap_or_default(),
            global_tags: &self.global_tags,
            usecase: self.usecase(device, codec),
            source: &self.source,
        }
    }

    /// The usecase of `device`'s record made by `codec` (a built-in codec's id or a
    /// JavaScript codec's name; none for a packed record or the network server's object): the
    /// device's own, else, in `[record] usecases`, that codec's, else the device's configured
    /// codec's (the built-in one first: a site that lists only that one keeps it on records
    /// another codec made).
    fn usecase<'a>(&'a self, device: Option<&'a Device>, codec: Option<&str>) -> Option<&'a str> {
        if let Some(own) = device.and_then(|d| d.usecase.as_deref()) {
            return Some(own);
        }
        let configured = device.and_then(|d| d.codec.map(Codec::id).or(d.js.as_deref()));
        [codec, configured]
            .into_iter()
            .flatten()
            .find_map(|c| self.usecases.get(c))
            .map(String::as_str)
    }

    /// The device's mapping table, when it names one that loaded.
    fn mapping(&self, device: Option<&Device>) -> Option<&mapping::Table> {
        self.files.table(device?.mapping.as_deref()?)
    }

    /// The brand of `up`'s device, if it has one, and what its normalized `battery` is by it
    /// where its mapping table does not say.
    fn brand<'a>(&self, up: &'a Uplink) -> Option<mapping::Brand<'a>> {
        mapping::brand(up.ns.brand.as_deref(), &self.codecs.normalized_battery)
    }

    fn uplink(&self, up: &Uplink) -> Vec<Record> {
        #[cfg(test)]
        crate::contain::test_point::reach("uplink");
        let at = crate::metrics::Moment::now();
        let now = at.wall;
        let device = self.devices.get(&up.dev_eui);
        let info = self.info(up, None);
        let heard = |outcome| self.metrics.devices.heard(up, info.tags, outcome, at);
        if device.is_none() {
            self.metrics.problem("unknown_device", || {
                format!(
                    "device {} is not in the config: sent as packed records unless its device \
                     profile has a JavaScript codec or the network server decoded them",
                    up.device_id()
                )
            });
        }
        // A device not listed has no codec of its own: its profile's JavaScript codec, else
        // what the network server decoded (the default order without the built-in codec).
        let order: &[DecodeStep] =
            device.map_or(&[DecodeStep::Js, DecodeStep::Network], |d| &d.order);
        // Why the decoders that were tried failed, for the packed record.
        let mut failed: Option<String> = None;
        for step in order {
            match step {
                DecodeStep::Codec => {
                    let Some(codec) = device.and_then(|d| d.codec) else {
                        continue;
                    };
                    match codec.decode(up.fport, &up.payload) {
                        Ok(decoded) => {
                            if let Some(e) = &decoded.stopped {
                                self.metrics.problem("codec_partial", || {
                                    format!(
                                        "device {} ({codec}): {e}: the readings before it \
                                         were sent",
                                        up.device_id()
                                    )
                                });
                            }
                            heard(Outcome::Decoded {
                                codec: codec.id(),
                                rec_type: decoded.rec_type,
                                readings: &decoded.readings,
                                health: &decoded.health,
                            });
                            let payload = Payload::Decoded {
                                codec: codec.id(),
                                decoded,
                            };
                            self.metrics.decoded.inc();
                            let usecase = self.usecase(device, Some(codec.id()));
                            let info = DeviceInfo { usecase, ..info };
                            return record::build(up, &info, payload, now);
                        }
                        Err(e) => {
                            self.metrics.decode_errors.inc(codec.id());
                            self.metrics.problem("codec_error", || {
                                format!("device {} ({codec}): {e}", up.device_id())
                            });
                            failed.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                DecodeStep::Js => {
                    let profile = up.ns.profile.as_ref();
                    let Some(name) = device
                        .and_then(|d| d.js.as_ref())
                        .or_else(|| profile.and_then(|p| self.codecs.profiles.get(p)))
                    else {
                        continue;
                    };
                    let script = match self.files.codec(name) {
                        Some(Ok(script)) => script,
                        Some(Err(e)) => {
                            failed.get_or_insert_with(|| format!("JavaScript codec {e}"));
                            continue;
                        }
                        None => continue,
                    };
                    match self.guarded_js(up, name, script) {
                        Ok(mapped) => {
                            heard(Outcome::Mapped {
                                codec: "javascript",
                                rec_type: rec_type::known(&mapped.rec_type),
                                mapped: &mapped,
                            });
                            let payload = Payload::Object {
                                class: &script.class,
                                mapped,
                            };
                            self.metrics.decoded.inc();
                            let usecase = self.usecase(device, Some(name));
                            let info = DeviceInfo { usecase, ..info };
                            return record::build(up, &info, payload, now);
                        }
                        Err(e) => {
                            self.metrics.decode_errors.inc(JS_ERRORS);
                            self.metrics.problem(e.kind(), || {
                                format!("device {} (JavaScript {name}): {e}", up.device_id())
                            });
                            failed.get_or_insert_with(|| format!("JavaScript {name}: {e}"));
                        }
                    }
                }
                DecodeStep::Network => {
                    if let Some(n) = up.ns.oversized {
                        let e = format!(
                            "the network server's decoded payload has {n} JSON values, more \
                             than the {} carried",
                            crate::format::MAX_NS_VALUES
                        );
                        self.metrics.problem("ns_object_too_large", || {
                            format!("device {}: {e}", up.device_id())
                        });
                        failed.get_or_insert(e);
                    }
                    if let Some(why) = &up.ns.unreadable {
                        let e =
                            format!("the network server's decoded payload is unreadable: {why}");
                        self.metrics.problem("ns_object_unreadable", || {
                            format!("device {}: {e}", up.device_id())
                        });
                        failed.get_or_insert(e);
                    }
                    if up.ns.is_empty() {
                        continue;
                    }
                    let mapped = mapping::map(
                        up.ns.object.as_ref(),
                        self.mapping(device),
                        self.brand(up),
                        &up.ns.normalized,
                        up.time,
                    );
                    if !mapped.warnings.is_empty() {
                        self.metrics.problem("ns_value_refused", || {
                            format!("device {}: {}", up.device_id(), mapped.warnings.join("; "))
                        });
                    }
                    heard(Outcome::Mapped {
                        codec: NETWORK,
                        rec_type: rec_type::known(&mapped.rec_type),
                        mapped: &mapped,
                    });
                    let payload = Payload::Object {
                        class: NETWORK,
                        mapped,
                    };
                    self.metrics.decoded.inc();
                    return record::build(up, &info, payload, now);
                }
            }
        }
        let reason = match (device, &failed) {
            (_, Some(e)) => e.as_str(),
            (None, None) => "not in the config",
            (Some(_), None) => "no codec configured",
        };
        heard(Outcome::Packed { reason });
        let payload = Payload::Packed {
            rec_type: device
                .and_then(|d| d.packed_rec_type.as_deref())
                .unwrap_or(&self.packed_rec_type),
            error: failed,
        };
        self.metrics.decoded.inc();
        record::build(up, &info, payload, now)
    }
}

/// `unpacker.class` and `meta.dc.device_type` of records made from what the network server
/// decoded.
pub const NETWORK: &str = "network-server";

/// The `decode_errors` label of JavaScript codec failures (their names are the operator's).
const JS_ERRORS: &str = "javascript";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contain::test_point;
    use crate::uplink::Radio;
    #[cfg(feature = "js")]
    use std::path::Path;
    use std::time::{Duration, UNIX_EPOCH};

    /// The one record an input made.
    trait One {
        fn one(self) -> Record;
    }

    impl One for Vec<Record> {
        fn one(self) -> Record {
            let [rec] = <[Record; 1]>::try_from(self).expect("one record");
            rec
        }
    }

    fn decoder() -> (Decoder, Arc<Metrics>) {
        codec_decoder("browan-tbhh100")
    }

    /// A decoder whose device (`uplink()`'s) has the built-in codec `codec`.
    fn codec_decoder(codec: &str) -> (Decoder, Arc<Metrics>) {
        let cfg = Config::parse(&format!(
            "[sink]\ntype = \"stdout\"\n\
             [[device]]\ndev_eui = \"58a0cb0000101234\"\ncodec = \"{codec}\"\n"
        ))
        .unwrap();
        let m = Metrics::new();
        (Decoder::new(&cfg, m.clone()), m)
    }

    fn uplink() -> Input {
        Input::Uplink(Uplink {
            dev_eui: crate::ids::DevEui([0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34]),
            dev_addr: None,
            device_name: None,
            fport: Some(103),
            fcnt: Some(1),
            payload: vec![0x08, 0x8c, 0x2e, 0x2d, 0xff, 0xff, 0xff, 0xff],
            time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            radio: Radio::default(),
            ns: crate::uplink::NsDecoded::default(),
            same_ms_index: 0,
            session: None,
        })
    }

    /// Devices with `dev_addr` and both keys get a LoRaWAN session; the frames of its
    /// DevAddr decode as that device's uplinks.
    #[test]
    fn sessions_come_from_the_devices() {
        let text = "[sink]\ntype = \"stdout\"\n\
            [[device]]\ndev_eui = \"58a0cb0000101234\"\ndev_addr = \"26011BDA\"\n\
            nwk_s_key = \"2B7E151628AED2A6ABF7158809CF4F3C\"\n\
            app_s_key = \"000102030405060708090A0B0C0D0E0F\"\n\
            [[device]]\ndev_eui = \"0000000000000001\"\n";
        let d = Decoder::new(&Config::parse(text).unwrap(), Metrics::new());
        assert_eq!(d.lorawan.len(), 1);
        let s = &d.lorawan.sessions(lorawan::DevAddr(0x2601_1bda))[0];
        assert_eq!(s.dev_eui.to_string(), "58a0cb0000101234");
    }

    /// A decoder with the session of `crate::lorawan::tests::up`'s frames (`device`: more
    /// keys for its `[[device]]`).
    fn radio_decoder(device: &str) -> (Decoder, Arc<Metrics>) {
        let text = format!(
            "[sink]\ntype = \"stdout\"\n\
             [[device]]\ndev_eui = \"58a0cb0000101234\"\ndev_addr = \"26011BDA\"\n\
             nwk_s_key = \"2B7E151628AED2A6ABF7158809CF4F3C\"\n\
             app_s_key = \"000102030405060708090A0B0C0D0E0F\"\n{device}"
        );
        let m = Metrics::new();
        (Decoder::new(&Config::parse(&text).unwrap(), m.clone()), m)
    }

    /// A radio frame of that session at `fcnt`.
    fn radio_frame(fcnt: u32) -> Input {
        Input::Radio(RadioFrame {
            phy: lorawan::tests::up(fcnt, Some(2), &[0x03, 0x67, 0x01, 0x10]),
            time: UNIX_EPOCH.into(),
            radio: Radio::default(),
            copies: 0,
        })
    }

    /// A device that restarted its counter is told (each refused frame counted, the line
    /// naming the device and the counters); a copy stays a silent duplicate.
    #[test]
    fn a_counter_restart_is_a_problem_and_a_copy_a_duplicate() {
        let (mut d, m) = radio_decoder("");
        assert!(d.decode(&radio_frame(5000)).len() == 1);
        assert!(d.decode(&radio_frame(5000)).is_empty());
        assert_eq!((m.duplicates.get(), m.problems("fcnt_reset")), (1, 0));
        assert!(d.decode(&radio_frame(0)).is_empty());
        assert!(d.decode(&radio_frame(1)).is_empty());
        assert_eq!((m.duplicates.get(), m.problems("fcnt_reset")), (1, 2));
        let lines: Vec<String> = m.recent_problems().into_iter().map(|w| w.line).collect();
        assert_eq!(
            lines,
            [
                "radio frame refused: FCnt 0 from DevAddr 26011bda (DevEUI 58a0cb0000101234) \
              after 5000: the device very likely restarted its frame counter; its frames are \
              refused until its counter passes 5000, unless its [[device]] has \
              `resets_fcnt = true` (for a device known to restart its counter: weakens its \
              replay protection)"
            ]
        );
    }

    /// A join request from a device whose session is in the config is told as `rejoined`,
    /// naming the device (its session is over); one from another device is `not_ours`.
    #[test]
    fn a_configured_device_joining_again_is_told_by_its_dev_eui() {
        let (mut d, m) = radio_decoder("");
        let join = |dev_eui: [u8; 8]| {
            let mut phy = vec![0x00];
            phy.extend([0x01, 0, 0, 0, 0, 0, 0, 0x70]); // AppEUI, little-endian
            phy.extend(dev_eui.iter().rev());
            phy.extend([0x2a, 0x00, 1, 2, 3, 4]); // DevNonce, MIC
            Input::Radio(RadioFrame {
                phy,
                time: UNIX_EPOCH.into(),
                radio: Radio::default(),
                copies: 0,
            })
        };
        let ours = [0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34];
        assert!(d.decode(&join(ours)).is_empty());
        assert_eq!((m.problems("rejoined"), m.problems("not_ours")), (1, 0));
        let lines: Vec<String> = m.recent_problems().into_iter().map(|w| w.line).collect();
        assert!(
            lines[0].starts_with(
                "join request from 58a0cb0000101234, whose session (DevAddr 26011bda) is in \
                 the config: the device joined again"
            ),
            "{lines:?}"
        );
        assert!(d.decode(&join([7; 8])).is_empty());
        assert_eq!((m.problems("rejoined"), m.problems("not_ours")), (1, 1));
    }

    /// A frame on FPort 0 carries MAC commands only, one without FPort no payload at all:
    /// counted, no record, and its counter is taken (a copy of it is a duplicate).
    #[test]
    fn a_mac_command_frame_is_no_record() {
        let (mut d, m) = radio_decoder("");
        let frame = |fcnt, fport, payload: &[u8]| {
            Input::Radio(RadioFrame {
                phy: lorawan::tests::up(fcnt, fport, payload),
                time: UNIX_EPOCH.into(),
                radio: Radio::default(),
                copies: 0,
            })
        };
        let mac = frame(7, Some(0), &[0x02]);
        assert!(d.decode(&mac).is_empty());
        assert_eq!((m.mac_frames.get(), m.duplicates.get()), (1, 0));
        assert!(d.decode(&mac).is_empty());
        assert_eq!((m.mac_frames.get(), m.duplicates.get()), (1, 1));
        let empty = frame(8, None, &[]);
        assert!(d.decode(&empty).is_empty());
        assert!(d.decode(&empty).is_empty());
        assert_eq!((m.mac_frames.get(), m.duplicates.get()), (2, 2));
        assert!(d.decode(&radio_frame(9)).len() == 1);
        let port_1 = frame(10, Some(1), &[0x03, 0x67, 0x01, 0x10]);
        assert_eq!(d.decode(&port_1).len(), 1, "FPort 1 is an application's");
        assert_eq!((m.mac_frames.get(), m.duplicates.get()), (2, 2));
    }

    /// Copies of a frame a source merged into it (two RF chains in one datagram) count as
    /// the same copies decoded after it: duplicates of an uplink of ours, the same refusal
    /// for any other frame (join traffic, another network's, a bad MIC, a counter restart).
    /// They used to count as duplicates whatever the frame, in the source.
    #[test]
    fn copies_merged_by_a_source_count_as_copies_decoded_later() {
        let with = |phy: Vec<u8>, copies| {
            Input::Radio(RadioFrame {
                phy,
                time: UNIX_EPOCH.into(),
                radio: Radio::default(),
                copies,
            })
        };
        let up = |fcnt, fport| lorawan::tests::up(fcnt, fport, &[0x03, 0x67, 0x01, 0x10]);
        let join = |dev_eui: [u8; 8]| {
            let mut phy = vec![0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x70];
            phy.extend(dev_eui.iter().rev());
            phy.extend([0x2a, 0x00, 1, 2, 3, 4]);
            phy
        };
        let mut foreign = up(20, Some(2));
        foreign[1] ^= 0xff;
        let mut bad_mic = up(21, Some(2));
        *bad_mic.last_mut().unwrap() ^= 1;
        let frames = [
            up(5000, Some(2)),
            up(5000, Some(2)),
            up(5001, Some(0)),
            up(0, Some(2)),
            join([0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34]),
            join([7; 8]),
            foreign,
            bad_mic,
        ];
        let counts = |m: &Metrics| (m.duplicates.get(), m.mac_frames.get(), m.problem_counts());
        let (mut merged, m) = radio_decoder("");
        let (mut apart, a) = radio_decoder("");
        for phy in frames {
            let records = merged.decode(&with(phy.clone(), 2)).len();
            let first = apart.decode(&with(phy.clone(), 0)).len();
            let copies: usize = (0..2)
                .map(|_| apart.decode(&with(phy.clone(), 0)).len())
                .sum();
            assert_eq!((records, copies), (first, 0), "{phy:02x?}");
            assert_eq!(counts(&m), counts(&a), "{phy:02x?}");
        }
        assert_eq!(m.duplicates.get(), 2 + 3 + 2);
    }

    /// With `resets_fcnt`, the restarted device's frame is a record, not a problem.
    #[test]
    fn a_device_that_resets_its_counter_makes_records_after_a_restart() {
        let (mut d, m) = radio_decoder("resets_fcnt = true\n");
        assert!(d.decode(&radio_frame(5000)).len() == 1);
        let rec = d.decode(&radio_frame(0)).one();
        assert!(rec.body.contains("\"fcnt_up\":0"), "{}", rec.body);
        assert!(d.decode(&radio_frame(0)).is_empty());
        assert_eq!((m.duplicates.get(), m.problems("fcnt_reset")), (1, 0));
    }

    /// Taking reloaded codecs is not one input's work: a panic there is not contained as the
    /// input's (no packed record blaming it), it goes on as a panic.
    #[test]
    fn a_panic_taking_reloads_is_not_the_inputs() {
        let (mut d, m) = decoder();
        test_point::arm("take_reloads");
        let decoded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.decode(&uplink())));
        assert!(decoded.is_err());
        assert_eq!(m.problems("decode_panic"), 0);
        let rec = d.decode(&uplink()).one();
        assert_eq!(rec.rec_type, "io.microshare.environment.unpacked");
    }

    /// A panic while decoding is counted, the uplink still goes out (packed, with the
    /// reason), a radio frame becomes a dead letter, and the next input decodes normally.
    #[test]
    fn a_panic_in_decoding_is_contained() {
        let (mut d, m) = decoder();
        test_point::arm("decode");
        let rec = d.decode(&uplink()).one();
        assert_eq!(rec.rec_type, "io.microshare.lorawan.packed");
        assert!(rec.body.contains("test panic at decode"), "{}", rec.body);
        assert!(rec.body.contains("088c2e2dffffffff"), "{}", rec.body);
        test_point::arm("decode");
        let radio = Input::Radio(RadioFrame {
            phy: vec![0x40, 1, 2, 3],
            time: UNIX_EPOCH.into(),
            radio: Radio::default(),
            copies: 0,
        });
        let rec = d.decode(&radio).one();
        assert_eq!(rec.rec_type, record::DEAD_LETTER);
        assert!(
            rec.body.contains("\"head_base64\":\"QAECAw==\""),
            "{}",
            rec.body
        );
        assert_eq!(m.problems("decode_panic"), 2);
        let rec = d.decode(&uplink()).one();
        assert_eq!(rec.rec_type, "io.microshare.environment.unpacked");
    }

    /// A panic decoding an authenticated radio frame's payload (its counter taken) sends the
    /// decrypted payload packed with the reason, not the encrypted frame as a dead letter.
    #[test]
    fn a_panic_after_a_radio_frame_is_decrypted_sends_its_payload_packed() {
        let (mut d, m) = radio_decoder("");
        test_point::arm("uplink");
        let rec = d.decode(&radio_frame(9)).one();
        assert_eq!(rec.rec_type, "io.microshare.lorawan.packed");
        let v = body(&rec);
        assert!(v.to_string().contains("test panic at uplink"), "{v}");
        assert_eq!(m.problems("decode_panic"), 1);
        let iot = &v["obj"]["data"]["meta"]["iot"];
        assert_eq!(
            (&iot["payload"], &iot["fcnt_up"]),
            (&"03670110".into(), &9.into())
        );
        assert_eq!(
            d.decode(&radio_frame(10)).len(),
            1,
            "the next frame decodes"
        );
    }

    /// A frame whose decoding stopped at a record the codec does not know still sends the
    /// readings before it, and the stop is counted.
    #[test]
    fn a_partly_decoded_frame_keeps_its_readings_and_is_counted() {
        let (mut d, m) = codec_decoder("milesight-am307");
        let rec = d
            .decode(&with_payload(&crate::codec::hex(
                "01755c 03673401 046865 0f7f01",
            )))
            .one();
        assert_eq!(rec.rec_type, "io.microshare.environment.unpacked");
        let v: serde_json::Value = serde_json::from_str(&rec.body).unwrap();
        assert_eq!(v["obj"]["data"]["temperature"][0]["value"], 30.8);
        assert_eq!(v["obj"]["data"]["humidity"][0]["value"], 50.5);
        assert_eq!(m.problems("codec_partial"), 1);
    }

    fn body(rec: &Record) -> serde_json::Value {
        serde_json::from_str(&rec.body).unwrap()
    }

    /// An EM300-SLD frame with a reading of now and two history records makes three records:
    /// the live one (the uplink's time and id), then one per history time, in order, with its
    /// readings under the live names and an id of its own; decoded again (a redelivery), the
    /// same ids. A frame of history alone makes only the history records.
    #[test]
    fn history_records_become_records_of_their_own() {
        let (mut d, _) = codec_decoder("milesight-em300-sld");
        let Input::Uplink(mut up) = uplink() else {
            unreachable!()
        };
        // An hour after the first history record.
        up.time = UNIX_EPOCH + Duration::from_secs(1_700_003_600);
        let history = "20CE00F15365F6FF6401 20CE58F35365E1005000";
        up.payload = crate::codec::hex(&format!("03670A01 {history}"));
        let records = d.decode(&Input::Uplink(up.clone()));
        let v: Vec<serde_json::Value> = records.iter().map(body).collect();
        let data = |i: usize| &v[i]["obj"]["data"];
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].id, record::stable_id(&up));
        assert_eq!(data(0)["time"], "2023-11-14T23:13:20.000Z");
        assert_eq!(data(0)["temperature"][0]["value"], 26.6);
        assert!(data(0).get("leak").is_none());
        assert_eq!(data(1)["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(data(1)["temperature"][0]["value"], -1);
        assert_eq!(data(1)["leak"][0]["value"], true);
        assert_eq!(data(2)["time"], "2023-11-14T22:23:20.000Z");
        assert_eq!(data(2)["temperature"][0]["value"], 22.5);
        assert_eq!(data(2)["leak"][0]["value"], false);
        for (i, rec) in records.iter().enumerate() {
            assert_eq!(rec.rec_type, "io.microshare.leak.unpacked");
            assert!(data(i).get("history").is_none());
            assert_eq!(data(i)["meta"]["iot"]["fcnt_up"], 1);
            assert_eq!(data(i)["meta"]["iot"]["time"], "2023-11-14T23:13:20.000Z");
            assert!(
                records[..i].iter().all(|r| r.id != rec.id),
                "distinct ids: {records:?}"
            );
        }
        let bodies = |records: &[Record]| -> Vec<String> {
            records.iter().map(|r| r.body.clone()).collect()
        };
        let again = d.decode(&Input::Uplink(up.clone()));
        assert_eq!(
            bodies(&again),
            bodies(&records),
            "a redelivery makes the same records, ids and all"
        );

        up.payload = crate::codec::hex(history);
        let only: Vec<serde_json::Value> = d.decode(&Input::Uplink(up)).iter().map(body).collect();
        let times: Vec<&serde_json::Value> =
            only.iter().map(|v| &v["obj"]["data"]["time"]).collect();
        assert_eq!(
            times,
            [&data(1)["time"], &data(2)["time"]],
            "history alone: its records, no live one"
        );
    }

    /// The uplink of `uplink()` as a network server that decoded it would hand it over.
    fn with_ns(object: serde_json::Value, normalized: serde_json::Value) -> Input {
        let Input::Uplink(mut up) = uplink() else {
            unreachable!()
        };
        fn obj(v: serde_json::Value) -> Option<serde_json::Map<String, serde_json::Value>> {
            match v {
                serde_json::Value::Object(m) => Some(m),
                _ => None,
            }
        }
        up.ns.object = obj(object);
        up.ns.normalized = match normalized {
            serde_json::Value::Array(a) => a.into_iter().filter_map(obj).collect(),
            _ => Vec::new(),
        };
        Input::Uplink(up)
    }

    /// Normalized measurements with a `time` of their own (The Things Network's schema) make a
    /// record per time, as a built-in codec's history: after the live one, in the order first
    /// met, with the device values measured then. Those without a time, with the uplink's, or
    /// with one that is no time, are of now. Decoded again, the same records.
    #[test]
    fn normalized_measurements_of_their_own_time_become_records_of_their_own() {
        let cfg = Config::parse("[sink]\ntype = \"stdout\"\n").unwrap();
        let mut d = Decoder::new(&cfg, Metrics::new());
        let input = with_ns(
            serde_json::Value::Null,
            serde_json::json!([
                {"time": "2023-11-14T20:13:20Z", "air": {"temperature": 18.5, "location": "in"},
                    "battery": 3.6},
                {"time": "2023-11-14T21:13:20Z", "air": {"temperature": 19.5}},
                {"air": {"temperature": 21}},
                {"time": "2023-11-14T21:13:20+01:00", "air": {"relativeHumidity": 40}},
                {"time": "2023-11-14T22:13:20.000Z", "air": {"relativeHumidity": 41}},
                {"time": "yesterday", "air": {"co2": 600}},
            ]),
        );
        let records = d.decode(&input);
        let v: Vec<serde_json::Value> = records.iter().map(body).collect();
        let data = |i: usize| {
            let mut data = v[i]["obj"]["data"].clone();
            let data = data.as_object_mut().unwrap();
            data.remove("meta");
            data.remove("unpacker");
            serde_json::Value::Object(data.clone())
        };
        assert_eq!(records.len(), 3, "{v:?}");
        let id = "58-A0-CB-00-00-10-12-34";
        let all: Vec<serde_json::Value> = (0..3).map(data).collect();
        assert_eq!(
            all,
            [
                serde_json::json!({
                    "time": "2023-11-14T22:13:20.000Z",
                    "temperature": [{"unit": "°C", "value": 21}],
                    "humidity": [{"unit": "%RH", "value": 41}],
                    "co2": [{"unit": "ppm", "value": 600}],
                    "device_health": {"id": id},
                    "origin": {"normalized": [{}, {}, {"time": "yesterday"}]},
                }),
                serde_json::json!({
                    "time": "2023-11-14T20:13:20.000Z",
                    "temperature": [{"unit": "°C", "value": 18.5}],
                    "humidity": [{"unit": "%RH", "value": 40}],
                    "device_health": {"id": id, "voltage": [{"unit": "V", "value": 3.6}]},
                    "origin": {"normalized": [{"air": {"location": "in"}}, {}]},
                }),
                serde_json::json!({
                    "time": "2023-11-14T21:13:20.000Z",
                    "temperature": [{"unit": "°C", "value": 19.5}],
                    "device_health": {"id": id},
                }),
            ]
        );
        assert_eq!(v[1]["obj"]["createDate"], 1_699_992_800_000_u64);
        for (i, rec) in records.iter().enumerate() {
            assert_eq!(rec.rec_type, rec_type::ENVIRONMENT);
            assert!(records[..i].iter().all(|r| r.id != rec.id), "{records:?}");
        }
        let bodies = |records: &[Record]| -> Vec<String> {
            records.iter().map(|r| r.body.clone()).collect()
        };
        let again = d.decode(&input);
        assert_eq!(bodies(&again), bodies(&records), "a redelivery: the same");
        // Measurements of other times alone: their records, no live one.
        let only = d.decode(&with_ns(
            serde_json::Value::Null,
            serde_json::json!([{"time": "2023-11-14T21:13:20Z", "air": {"temperature": 19.5}}]),
        ));
        assert_eq!(only.len(), 1);
        assert_eq!(
            body(&only[0])["obj"]["data"]["time"],
            "2023-11-14T21:13:20.000Z"
        );
    }

    /// A decoder of the device of `uplink()` with the mapping table `table` (as `m.toml`).
    fn table_decoder(table: &str) -> (Decoder, Arc<Metrics>, tempfile::TempDir) {
        let dir = crate::codec_files::tempdir();
        crate::codec_files::write(dir.path().join("m.toml"), table);
        let text = format!(
            "[codecs]\ndir = {:?}\n[sink]\ntype = \"stdout\"\n\
             [[device]]\ndev_eui = \"58a0cb0000101234\"\nmapping = \"m\"\n",
            dir.path()
        );
        let m = Metrics::new();
        (
            Decoder::new(&Config::parse(&text).unwrap(), m.clone()),
            m,
            dir,
        )
    }

    /// A table's `context_id`s give an EM300-TH's decoded object (Milesight's decoder's names)
    /// the readings and device values the built-in codec writes, byte for byte.
    #[test]
    fn a_tables_context_id_is_written_as_the_built_in_codecs_write_theirs() {
        let (mut builtin, _) = codec_decoder("milesight-em300-th");
        let theirs = builtin
            .decode(&with_payload(&crate::codec::hex("017564 03670AFF 046850")))
            .one();
        let (mut d, _, _dir) = table_decoder(
            "rec_type = \"io.microshare.environment.unpacked\"\n[fields]\n\
             battery = { field = \"charge\", unit = \"%\", health = true }\n\
             temperature = { field = \"temperature\", unit = \"°C\", context_id = \"3\" }\n\
             humidity = { field = \"humidity\", unit = \"%RH\", context_id = \"4\" }\n",
        );
        let ours = d
            .decode(&with_ns(
                serde_json::json!({"battery": 100, "temperature": -24.6, "humidity": 40}),
                serde_json::json!([]),
            ))
            .one();
        let readings = r#""device_health":{"charge":[{"unit":"%","value":100}],"id":"58-A0-CB-00-00-10-12-34"},"humidity":[{"context_id":"4","unit":"%RH","value":40}],"meta":"#;
        let temperature = r#""temperature":[{"context_id":"3","unit":"°C","value":-24.6}],"time":"#;
        for rec in [&theirs, &ours] {
            assert!(rec.body.contains(readings), "{}", rec.body);
            assert!(rec.body.contains(temperature), "{}", rec.body);
        }
    }

    /// A table key ending in `[]` gives Elsys's decoder's repeated probes
    /// (`externalTemperature2`: a number for one probe, an array for several) the readings the
    /// built-in codec writes, byte for byte: one per probe, numbered from 0.
    #[test]
    fn an_array_of_probes_is_read_as_the_built_in_codec_reads_it() {
        let (mut builtin, _) = codec_decoder("elsys");
        let (mut d, _, _dir) = table_decoder(
            "rec_type = \"io.microshare.environment.unpacked\"\n[fields]\n\
             \"externalTemperature2[]\" = { field = \"ext_temperature2\", unit = \"°C\" }\n",
        );
        for (payload, decoded, readings) in [
            (
                "190064 19FF9C",
                serde_json::json!([10, -10]),
                r#""ext_temperature2":[{"context_id":"0","unit":"°C","value":10},{"context_id":"1","unit":"°C","value":-10}],"meta":"#,
            ),
            (
                "190064",
                serde_json::json!(10),
                r#""ext_temperature2":[{"context_id":"0","unit":"°C","value":10}],"meta":"#,
            ),
        ] {
            let theirs = builtin
                .decode(&with_payload(&crate::codec::hex(payload)))
                .one();
            let object = serde_json::json!({ "externalTemperature2": decoded });
            let ours = d.decode(&with_ns(object, serde_json::json!([]))).one();
            for rec in [&theirs, &ours] {
                assert!(rec.body.contains(readings), "{payload}: {}", rec.body);
            }
            assert!(body(&ours)["obj"]["data"].get("origin").is_none());
        }
    }

    /// A decoded object's history (a table's `[history]`) makes records as a built-in
    /// codec's does: the live one, then one per entry in the array's order, each at its own
    /// time with its own id, `createDate` and `tstamp`; the same again on a redelivery; a
    /// frame of history alone makes only those. What the table refuses is counted as
    /// `ns_value_refused` and kept under the live record's `origin`.
    #[test]
    fn a_decoded_objects_history_becomes_records_of_their_own() {
        let (mut d, m, _dir) = table_decoder(
            "rec_type = \"io.microshare.environment.unpacked\"\n[fields]\n\
             temperature = { field = \"temperature\", unit = \"°C\", context_id = \"3\" }\n\
             humidity = { field = \"humidity\", unit = \"%RH\", context_id = \"4\" }\n\
             [history]\npath = \"history\"\ntime = \"timestamp\"\n",
        );
        let history = serde_json::json!([
            {"timestamp": 1_699_992_800, "temperature": 18.5, "humidity": 40},
            {"timestamp": 1_699_996_400, "temperature": 19.5, "humidity": 41},
            {"timestamp": "never", "temperature": 0},
        ]);
        let input = with_ns(
            serde_json::json!({"temperature": 21, "history": history}),
            serde_json::json!([]),
        );
        let records = d.decode(&input);
        let v: Vec<serde_json::Value> = records.iter().map(body).collect();
        let t = |v: serde_json::Value| serde_json::json!([{"context_id": "3", "unit": "°C", "value": v}]);
        let h = |v: serde_json::Value| serde_json::json!([{"context_id": "4", "unit": "%RH", "value": v}]);
        let id = serde_json::json!({"id": "58-A0-CB-00-00-10-12-34"});
        let data = |i: usize| {
            let mut data = v[i]["obj"]["data"].as_object().unwrap().clone();
            data.remove("meta");
            data.remove("unpacker");
            serde_json::Value::Object(data)
        };
        assert_eq!(
            (0..records.len()).map(data).collect::<Vec<_>>(),
            [
                serde_json::json!({"time": "2023-11-14T22:13:20.000Z", "temperature": t(21.into()),
                    "device_health": id,
                    "origin": {"history": [{"timestamp": "never", "temperature": 0}]}}),
                serde_json::json!({"time": "2023-11-14T20:13:20.000Z", "temperature": t(18.5.into()),
                    "humidity": h(40.into()), "device_health": id}),
                serde_json::json!({"time": "2023-11-14T21:13:20.000Z", "temperature": t(19.5.into()),
                    "humidity": h(41.into()), "device_health": id}),
            ]
        );
        let stamps: Vec<_> = v
            .iter()
            .map(|v| (v["obj"]["createDate"].clone(), v["obj"]["tstamp"].clone()))
            .collect();
        let ms = |ms: u64| (serde_json::json!(ms), serde_json::json!(ms));
        assert_eq!(
            stamps,
            [
                ms(1_700_000_000_000),
                ms(1_699_992_800_000),
                ms(1_699_996_400_000)
            ]
        );
        let Input::Uplink(up) = &input else {
            unreachable!()
        };
        let live = record::stable_id(up);
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                live.as_str(),
                &record::history_id(&live, 1_699_992_800, 0),
                &record::history_id(&live, 1_699_996_400, 1),
            ]
        );
        for rec in &records {
            assert_eq!(rec.rec_type, rec_type::ENVIRONMENT);
        }
        assert_eq!(m.problems("ns_value_refused"), 1);
        let again = d.decode(&input);
        let bodies = |r: &[Record]| r.iter().map(|r| r.body.clone()).collect::<Vec<_>>();
        assert_eq!(bodies(&again), bodies(&records), "a redelivery: the same");
        // History alone: its records, no live one.
        let only = d.decode(&with_ns(
            serde_json::json!({"history": [{"timestamp": 1_699_992_800, "temperature": 18.5}]}),
            serde_json::json!([]),
        ));
        let times: Vec<_> = only
            .iter()
            .map(|r| body(r)["obj"]["data"]["time"].clone())
            .collect();
        assert_eq!(times, ["2023-11-14T20:13:20.000Z"]);
    }

    /// A device without a codec of ours (or not in the config at all) whose network server
    /// decoded the payload becomes an unpacked record, not a packed one.
    #[test]
    fn what_the_network_server_decoded_becomes_an_unpacked_record() {
        let dir = crate::codec_files::tempdir();
        crate::codec_files::write(
            dir.path().join("th.toml"),
            "[fields]\nTempC = { field = \"temperature\", unit = \"°C\" }\n",
        );
        let text = format!(
            "[codecs]\ndir = {:?}\n[sink]\ntype = \"stdout\"\n\
             [[device]]\ndev_eui = \"58a0cb0000101234\"\nmapping = \"th\"\n",
            dir.path()
        );
        let m = Metrics::new();
        let mut d = Decoder::new(&Config::parse(&text).unwrap(), m.clone());
        let input = with_ns(
            serde_json::json!({"TempC": 21.5, "fw": "1.2"}),
            serde_json::json!([]),
        );
        let rec = d.decode(&input).one();
        assert_eq!(rec.rec_type, "io.microshare.environment.unpacked");
        let v = body(&rec);
        let data = &v["obj"]["data"];
        assert_eq!(
            data["temperature"],
            serde_json::json!([{"value": 21.5, "unit": "°C"}])
        );
        assert_eq!(data["origin"], serde_json::json!({"fw": "1.2"}));
        assert_eq!(data["unpacker"]["class"], NETWORK);
        assert_eq!(data["device_health"]["id"], "58-A0-CB-00-00-10-12-34");
        assert_eq!(data["meta"]["iot"]["payload"], "088c2e2dffffffff");
        // Not in the config: the normalized payload is mapped by the built-in table.
        let mut other = Decoder::new(
            &Config::parse("[sink]\ntype = \"stdout\"\n").unwrap(),
            Metrics::new(),
        );
        let rec = other
            .decode(&with_ns(
                serde_json::Value::Null,
                serde_json::json!([{"water": {"leak": true}}]),
            ))
            .one();
        assert_eq!(rec.rec_type, "io.microshare.leak.unpacked");
        assert_eq!(body(&rec)["obj"]["data"]["leak"][0]["value"], true);
        let rec = other.decode(&uplink()).one();
        assert_eq!(rec.rec_type, "io.microshare.lorawan.packed");
        assert_eq!(m.problems("codec_file"), 0);
    }

    /// A normalized battery that is no voltage (a percentage) stays under `origin`, and is
    /// counted: from a network server as `ns_value_refused`, from a JavaScript codec's
    /// `normalizeUplink` as `js_value_refused`, apart from the codec's own `js_warning`. Once
    /// the codec's table says the normalized battery is the charge, it is read so, with no
    /// warning on any uplink.
    #[test]
    fn a_normalized_battery_in_percent_is_kept_and_counted() {
        let m = Metrics::new();
        let mut d = Decoder::new(
            &Config::parse("[sink]\ntype = \"stdout\"\n").unwrap(),
            m.clone(),
        );
        let rec = d
            .decode(&with_ns(
                serde_json::Value::Null,
                serde_json::json!([{"battery": 100, "air": {"temperature": 20}}]),
            ))
            .one();
        let data = &body(&rec)["obj"]["data"];
        assert_eq!(
            data["device_health"],
            serde_json::json!({"id": "58-A0-CB-00-00-10-12-34"})
        );
        assert_eq!(
            data["origin"],
            serde_json::json!({"normalized": [{"battery": 100}]})
        );
        assert_eq!(m.problems("ns_value_refused"), 1);
        #[cfg(feature = "js")]
        {
            let dir = crate::codec_files::tempdir();
            crate::codec_files::write(
                dir.path().join("c.js"),
                "function decodeUplink(i) {\n\
                   return {data: {battery: i.bytes[0]}, warnings: i.bytes[1] ? ['odd'] : []};\n\
                 }\n\
                 function normalizeUplink(i) { return {data: {battery: i.data.battery}}; }",
            );
            let (mut d, m) = js_decoder(dir.path(), "js_codec = \"c\"\n", "");
            for (pct, refused) in [(100, 1), (61, 2)] {
                let data = body(&d.decode(&with_payload(&[pct])).one())["obj"]["data"].clone();
                assert_eq!(
                    data["device_health"],
                    serde_json::json!({"id": "58-A0-CB-00-00-10-12-34"})
                );
                assert_eq!(
                    data["origin"],
                    serde_json::json!({"battery": pct, "normalized": [{"battery": pct}]})
                );
                assert_eq!(m.problems("js_value_refused"), refused);
            }
            assert_eq!(m.problems("js_warning"), 0);
            d.decode(&with_payload(&[61, 1])).one();
            assert_eq!(m.problems("js_warning"), 1);
            assert_eq!(m.problems("js_value_refused"), 3);
            crate::codec_files::write(
                dir.path().join("c.toml"),
                "normalized_battery = \"charge\"\n",
            );
            let (mut d, m) = js_decoder(dir.path(), "js_codec = \"c\"\n", "");
            for pct in [100, 3] {
                let data = body(&d.decode(&with_payload(&[pct])).one())["obj"]["data"].clone();
                assert_eq!(
                    data["device_health"]["charge"],
                    serde_json::json!([{"unit": "%", "value": pct}])
                );
            }
            assert_eq!(m.problems("js_value_refused"), 0);
        }
    }

    /// A device without a table of its own (not even a `[[device]]`), or with a table that
    /// does not say, is read by its Device Repository brand: Milesight's normalized battery is
    /// the charge, of 61 to 100 % too, with no warning where volts would refuse it;
    /// `[codecs.normalized_battery]` says it of another brand, or overrides hubgate's. A brand
    /// neither knows, or none, keeps volts: 85 is refused and warned about. A table that says
    /// what it is comes first.
    #[test]
    fn a_devices_brand_says_what_its_normalized_battery_is() {
        let branded = |brand: Option<&str>, battery: u32| {
            let Input::Uplink(mut up) = with_ns(
                serde_json::json!({"battery": battery}),
                serde_json::json!([{ "battery": battery }]),
            ) else {
                unreachable!()
            };
            up.ns.brand = brand.map(str::to_string);
            Input::Uplink(up)
        };
        let health = |d: &mut Decoder, brand: Option<&str>, battery: u32| {
            body(&d.decode(&branded(brand, battery)).one())["obj"]["data"]["device_health"].clone()
        };
        let id = "58-A0-CB-00-00-10-12-34";
        let charge = |v: u32| serde_json::json!({"id": id, "charge": [{"unit": "%", "value": v}]});
        let volts = |v: u32| serde_json::json!({"id": id, "voltage": [{"unit": "V", "value": v}]});
        let refused = serde_json::json!({ "id": id });
        let m = Metrics::new();
        let cfg = Config::parse(
            "[codecs.normalized_battery]\nacme = \"charge\"\n[sink]\ntype = \"stdout\"\n",
        )
        .unwrap();
        let mut d = Decoder::new(&cfg, m.clone());
        // The refusals counted so far, after each.
        for (brand, battery, expected, refusals) in [
            (Some("milesight-iot"), 85, charge(85), 0),
            (Some("acme"), 85, charge(85), 0),
            (Some("milesight-iot"), 45, charge(45), 0),
            (Some("elsys"), 85, refused.clone(), 1),
            (None, 85, refused.clone(), 2),
            (Some("elsys"), 45, volts(45), 2),
            (None, 45, volts(45), 2),
        ] {
            assert_eq!(
                health(&mut d, brand, battery),
                expected,
                "{brand:?} {battery}"
            );
            assert_eq!(
                m.problems("ns_value_refused"),
                refusals,
                "{brand:?} {battery}"
            );
        }
        let cfg = Config::parse(
            "[codecs.normalized_battery]\n\"milesight-iot\" = \"voltage\"\n\
             [sink]\ntype = \"stdout\"\n",
        )
        .unwrap();
        let mut d = Decoder::new(&cfg, Metrics::new());
        assert_eq!(health(&mut d, Some("milesight-iot"), 45), volts(45));
        assert_eq!(health(&mut d, Some("milesight-iot"), 85), refused);
        let dir = crate::codec_files::tempdir();
        crate::codec_files::write(
            dir.path().join("m.toml"),
            "normalized_battery = \"voltage\"\n",
        );
        crate::codec_files::write(
            dir.path().join("t.toml"),
            "[fields]\nTempC = { field = \"temperature\", unit = \"°C\" }\n",
        );
        let with_table = |table: &str| {
            let cfg = Config::parse(&format!(
                "[codecs]\ndir = {:?}\n[sink]\ntype = \"stdout\"\n\
                 [[device]]\ndev_eui = \"58a0cb0000101234\"\nmapping = \"{table}\"\n",
                dir.path()
            ))
            .unwrap();
            let m = Metrics::new();
            (Decoder::new(&cfg, m.clone()), m)
        };
        let (mut d, _) = with_table("m");
        assert_eq!(health(&mut d, Some("milesight-iot"), 45), volts(45));
        // A table that does not say leaves it to the brand.
        let (mut d, m) = with_table("t");
        assert_eq!(health(&mut d, Some("milesight-iot"), 85), charge(85));
        assert_eq!(m.problems("ns_value_refused"), 0);
        assert_eq!(health(&mut d, None, 85), refused);
        assert_eq!(m.problems("ns_value_refused"), 1);
        // A JavaScript codec's normalizer without a table, the same.
        #[cfg(feature = "js")]
        {
            crate::codec_files::write(
                dir.path().join("c.js"),
                "function decodeUplink(i) { return {data: {battery: i.bytes[0]}}; }\n\
                 function normalizeUplink(i) { return {data: {battery: i.data.battery}}; }",
            );
            let (mut d, m) = js_decoder(dir.path(), "js_codec = \"c\"\n", "");
            let Input::Uplink(mut up) = with_payload(&[85]) else {
                unreachable!()
            };
            for (brand, expected, refusals) in [
                (Some("milesight-iot"), charge(85), 0),
                (None, refused.clone(), 1),
            ] {
                up.ns.brand = brand.map(str::to_string);
                let rec = d.decode(&Input::Uplink(up.clone())).one();
                let data = &body(&rec)["obj"]["data"];
                assert_eq!(data["device_health"], expected, "{brand:?}");
                assert_eq!(m.problems("js_value_refused"), refusals, "{brand:?}");
            }
        }
    }

    /// A reloaded mapping table whose `rec_type` goes to a hub no hub can be named (which
    /// the config's check refuses at start) is not taken: the version in use stays, and one
    /// line says why. One that `[sink.topics]` maps to a good hub is taken.
    #[test]
    fn a_reloaded_table_whose_rec_type_names_no_hub_is_not_taken() {
        let dir = crate::codec_files::tempdir();
        let table = dir.path().join("m.toml");
        let write = |rec_type: &str| {
            let text =
                format!("rec_type = {rec_type:?}\n[fields]\nt = {{ field = \"temperature\" }}\n");
            crate::codec_files::write(&table, text);
        };
        write(rec_type::ENVIRONMENT);
        let text = format!(
            "[codecs]\ndir = {:?}\n[sink]\ntype = \"kafka\"\nbrokers = \"x:9092\"\n\
             [sink.topics]\n\"site readings\" = \"site\"\n\
             [[device]]\ndev_eui = \"58a0cb0000101234\"\nmapping = \"m\"\n\
             decode_order = [\"network\"]\n",
            dir.path()
        );
        let m = Metrics::new();
        let mut d = Decoder::new(&Config::parse(&text).unwrap(), m.clone());
        let input = with_ns(serde_json::json!({"t": 21}), serde_json::json!([]));
        assert_eq!(d.decode(&input).one().rec_type, rec_type::ENVIRONMENT);
        write("my site readings");
        d.reloader().reload();
        assert_eq!(d.decode(&input).one().rec_type, rec_type::ENVIRONMENT);
        assert_eq!(m.problems("codec_file"), 1);
        let line = m.recent_problems().remove(0).line;
        assert!(
            line.contains("m.toml: rec_type \"my site readings\" goes to the hub named like it")
                && line.ends_with("; the version loaded before stays in use"),
            "{line}"
        );
        write("site readings");
        d.reloader().reload();
        assert_eq!(d.decode(&input).one().rec_type, "site readings");
        assert_eq!(m.problems("codec_file"), 1);
    }

    /// The device's own codec wins by default; `decode_order` puts the network server's
    /// object first; a codec that fails falls through to the next decoder.
    #[test]
    fn decode_order_decides_who_decodes() {
        let cfg = |order: &str| {
            let text = format!(
                "[sink]\ntype = \"stdout\"\n[[device]]\ndev_eui = \"58a0cb0000101234\"\n\
                 codec = \"browan-tbhh100\"\nmapping = \"missing\"\n{order}"
            );
            let m = Metrics::new();
            (Decoder::new(&Config::parse(&text).unwrap(), m.clone()), m)
        };
        let input = with_ns(
            serde_json::Value::Null,
            serde_json::json!([{"air": {"temperature": 99.0}}]),
        );
        let (mut d, m) = cfg("");
        let v = body(&d.decode(&input).one());
        assert_eq!(v["obj"]["data"]["unpacker"]["class"], "browan-tbhh100");
        assert_eq!(m.problems("codec_file"), 1);
        let (mut d, _) = cfg("decode_order = [\"network\", \"codec\"]\n");
        let v = body(&d.decode(&input).one());
        assert_eq!(v["obj"]["data"]["unpacker"]["class"], NETWORK);
        assert_eq!(v["obj"]["data"]["temperature"][0]["value"], 99);
        let Input::Uplink(mut bad) = input else {
            unreachable!()
        };
        bad.payload.truncate(2);
        let (mut d, m) = cfg("");
        let v = body(&d.decode(&Input::Uplink(bad.clone())).one());
        assert_eq!(v["obj"]["data"]["unpacker"]["class"], NETWORK);
        assert_eq!(m.problems("codec_error"), 1);
        let (mut d, _) = cfg("decode_order = [\"codec\"]\n");
        let rec = d.decode(&Input::Uplink(bad)).one();
        assert_eq!(
            rec.rec_type, "io.microshare.environment.packed",
            "the codec's domain"
        );
        assert!(body(&rec)["obj"]["data"]["error"]
            .as_str()
            .unwrap()
            .contains("too short"));
    }

    /// A decoded payload too large to carry, or one the JSON parser refused, leaves the
    /// uplink packed, saying why, counted.
    #[test]
    fn an_oversized_or_unreadable_network_object_is_sent_packed_with_the_reason() {
        type Spoil = fn(&mut crate::uplink::NsDecoded);
        let cases: [(Spoil, &str, &str); 2] = [
            (
                |ns| ns.oversized = Some(5000),
                "5000 JSON values",
                "ns_object_too_large",
            ),
            (
                |ns| ns.unreadable = Some("number out of range".into()),
                "unreadable: number out of range",
                "ns_object_unreadable",
            ),
        ];
        for (spoil, says, kind) in cases {
            let Input::Uplink(mut up) = uplink() else {
                unreachable!()
            };
            spoil(&mut up.ns);
            let m = Metrics::new();
            let mut d = Decoder::new(
                &Config::parse("[sink]\ntype = \"stdout\"\n").unwrap(),
                m.clone(),
            );
            let rec = d.decode(&Input::Uplink(up)).one();
            assert_eq!(rec.rec_type, "io.microshare.lorawan.packed");
            let error = body(&rec)["obj"]["data"]["error"].clone();
            assert!(error.as_str().unwrap().contains(says), "{error}");
            assert_eq!(m.problems(kind), 1);
        }
    }

    #[cfg(feature = "js")]
    fn js_decoder(dir: &Path, device: &str, more: &str) -> (Decoder, Arc<Metrics>) {
        let text = format!(
            "[codecs]\ndir = {dir:?}\n{more}[sink]\ntype = \"stdout\"\n\
             [[device]]\ndev_eui = \"58a0cb0000101234\"\n{device}"
        );
        let m = Metrics::new();
        (Decoder::new(&Config::parse(&text).unwrap(), m.clone()), m)
    }

    fn with_payload(payload: &[u8]) -> Input {
        let Input::Uplink(mut up) = uplink() else {
            unreachable!()
        };
        up.payload = payload.to_vec();
        Input::Uplink(up)
    }

    /// A device's JavaScript codec decodes its uplinks, mapped by the codec's table; a
    /// device profile can name the codec instead.
    #[cfg(feature = "js")]
    #[test]
    fn a_javascript_codec_decodes_into_an_unpacked_record() {
        let examples = crate::codec_files::examples();
        let examples = examples.path();
        let (mut d, m) = js_decoder(examples, "js_codec = \"example-door\"\n", "");
        let rec = d.decode(&with_payload(&[1, 0, 42, 87])).one();
        assert_eq!(rec.rec_type, "io.microshare.openclose.unpacked");
        let v = body(&rec);
        let data = &v["obj"]["data"];
        assert_eq!(data["open"], serde_json::json!([{"value": true}]));
        assert_eq!(
            data["events_since_reset"],
            serde_json::json!([{"value": 42}])
        );
        assert_eq!(
            data["device_health"]["charge"],
            serde_json::json!([{"value": 87, "unit": "%"}])
        );
        assert_eq!(data["unpacker"]["class"], "js/example-door");
        // The codec throws: packed, with its reason.
        let rec = d.decode(&with_payload(&[1])).one();
        assert_eq!(rec.rec_type, "io.microshare.lorawan.packed");
        assert_eq!(
            body(&rec)["obj"]["data"]["error"],
            "JavaScript example-door: threw Error: need 4 bytes, got 1"
        );
        assert_eq!(m.problems("js_error"), 1);
        // By device profile.
        let (mut d, m) = js_decoder(
            examples,
            "",
            "[codecs.profiles]\n\"TH sensor\" = \"example-th\"\n",
        );
        // One trailing byte: the codec's warning is counted.
        let Input::Uplink(mut up) = with_payload(&[0x08, 0x66, 0x51, 0x0e, 0x10, 0]) else {
            unreachable!()
        };
        up.fport = Some(1);
        up.ns.profile = Some("TH sensor".into());
        let v = body(&d.decode(&Input::Uplink(up)).one());
        assert_eq!(v["obj"]["data"]["temperature"][0]["value"], 21.5);
        assert_eq!(v["obj"]["data"]["humidity"][0]["value"], 40.5);
        assert_eq!(
            v["obj"]["data"]["device_health"]["voltage"][0]["value"],
            3.6
        );
        assert_eq!(
            v["obj"]["data"]["origin"],
            serde_json::json!({"temperature": 21.5, "humidity": 40.5, "battery_mv": 3600})
        );
        assert_eq!(m.problems("js_warning"), 1);
        // A device not in the config: its profile's codec too (a site lists no device then).
        let Input::Uplink(mut up) = with_payload(&[0x08, 0x66, 0x51, 0x0e, 0x10]) else {
            unreachable!()
        };
        up.dev_eui = crate::ids::DevEui::parse("58a0cb00001099aa").unwrap();
        up.fport = Some(1);
        up.ns.profile = Some("TH sensor".into());
        let rec = d.decode(&Input::Uplink(up)).one();
        assert_eq!(rec.rec_type, "io.microshare.environment.unpacked");
        assert_eq!(body(&rec)["obj"]["data"]["temperature"][0]["value"], 21.5);
        assert_eq!(m.problems("unknown_device"), 1);
    }

    /// `[record] usecases` gives a record the usecase of the codec that made it: the
    /// JavaScript codec's for a device whose built-in codec refused the frame, and the profile's
    /// JavaScript codec's for a device reached through `[codecs.profiles]`; where that codec is
    /// not listed, the device's configured codec's.
    #[cfg(feature = "js")]
    #[test]
    fn the_usecase_is_that_of_the_codec_that_decoded() {
        let examples = crate::codec_files::examples();
        let (mut d, _) = js_decoder(
            examples.path(),
            "codec = \"browan-tbhh100\"\njs_codec = \"example-th\"\n",
            "[codecs.profiles]\n\"TH sensor\" = \"example-th\"\n\
             [record]\nusecases = { \"browan-tbhh100\" = \"SE02\", \"example-th\" = \"SE07\" }\n",
        );
        let th = |dev_eui: &str, profile: Option<&str>| {
            let Input::Uplink(mut up) = with_payload(&[0x08, 0x66, 0x51, 0x0e, 0x10]) else {
                unreachable!()
            };
            up.dev_eui = crate::ids::DevEui::parse(dev_eui).unwrap();
            up.fport = Some(1);
            up.ns.profile = profile.map(String::from);
            Input::Uplink(up)
        };
        for up in [
            th("58a0cb0000101234", None),
            th("58a0cb00001099aa", Some("TH sensor")),
        ] {
            let v = body(&d.decode(&up).one());
            assert_eq!(v["obj"]["data"]["unpacker"]["class"], "js/example-th");
            assert_eq!(v["obj"]["data"]["meta"]["usecase"], "SE07");
        }
        // The built-in codec's record, of the same device, has the built-in codec's.
        let v = body(&d.decode(&uplink()).one());
        assert_eq!(v["obj"]["data"]["unpacker"]["class"], "browan-tbhh100");
        assert_eq!(v["obj"]["data"]["meta"]["usecase"], "SE02");
        // A site that lists only the device's built-in codec keeps it on the JavaScript
        // codec's records of that device.
        let (mut d, _) = js_decoder(
            examples.path(),
            "codec = \"browan-tbhh100\"\njs_codec = \"example-th\"\n",
            "[record]\nusecases = { \"browan-tbhh100\" = \"SE02\" }\n",
        );
        let v = body(&d.decode(&th("58a0cb0000101234", None)).one());
        assert_eq!(v["obj"]["data"]["unpacker"]["class"], "js/example-th");
        assert_eq!(v["obj"]["data"]["meta"]["usecase"], "SE02");
    }

    /// A call that ran out of memory, caught it and returned keeps its result, but ended its
    /// worker: it strikes as running out of memory does (`js_oom`), so a device whose every
    /// frame does it is quarantined instead of costing a new worker and every codec's loading
    /// at each frame.
    #[cfg(feature = "js")]
    #[test]
    fn a_call_that_catches_running_out_of_memory_strikes() {
        let dir = crate::codec_files::tempdir();
        crate::codec_files::write(
            dir.path().join("greedy.js"),
            "function decodeUplink(i) {
               try { var a = 'x'; for (;;) { a = a.repeat(2); } } catch (e) { return {data: {n: 1}}; }
             }",
        );
        let (mut d, m) = js_decoder(dir.path(), "js_codec = \"greedy\"\n", "");
        for _ in 0..guard::STRIKES {
            let rec = d.decode(&with_payload(&[1])).one();
            assert_eq!(body(&rec)["obj"]["data"]["origin"]["n"], 1, "{}", rec.body);
        }
        assert_eq!(m.problems("js_oom"), guard::STRIKES as u64);
        assert_eq!(m.problems("js_quarantine_started"), 1);
        let rec = d.decode(&with_payload(&[1])).one();
        assert_eq!(rec.rec_type, "io.microshare.lorawan.packed");
        assert_eq!(m.problems("js_quarantined"), 1);
    }

    /// The same call, caught in the usual vendor form (`catch (e) { return {errors: [...]} }`):
    /// its worker ends all the same, so it strikes all the same, and a device whose every
    /// frame does it is quarantined rather than costing a new worker at each frame.
    #[cfg(feature = "js")]
    #[test]
    fn a_call_that_catches_running_out_of_memory_and_reports_an_error_strikes() {
        // Errors returned (checked by the agent), and nothing returned (by the engine).
        for caught in ["return {errors: ['cannot decode: ' + e]};", ""] {
            let dir = crate::codec_files::tempdir();
            crate::codec_files::write(
                dir.path().join("greedy.js"),
                format!(
                    "function decodeUplink(i) {{
                       try {{ var a = 'x'; for (;;) {{ a = a.repeat(2); }} }}
                       catch (e) {{ {caught} }}
                     }}"
                ),
            );
            let (mut d, m) = js_decoder(dir.path(), "js_codec = \"greedy\"\n", "");
            assert!(d.files.worker_pid().is_some());
            for _ in 0..guard::STRIKES {
                let rec = d.decode(&with_payload(&[1])).one();
                assert_eq!(rec.rec_type, "io.microshare.lorawan.packed");
                // The call ended its worker: the next one starts another.
                assert_eq!(d.files.worker_pid(), None, "{caught}");
            }
            assert_eq!(m.problems("js_oom"), guard::STRIKES as u64, "{caught}");
            assert_eq!(m.problems("js_quarantine_started"), 1);
            d.decode(&with_payload(&[1])).one();
            assert_eq!(m.problems("js_quarantined"), 1);
        }
    }

    /// A codec file that cannot be loaded is a counted problem and its devices' uplinks go
    /// out packed with the reason; a reload (SIGHUP) loads the codecs and mapping tables
    /// again, file by file: one that fails now leaves the version in use in place, saying
    /// why, and a good new version takes over.
    #[cfg(feature = "js")]
    #[test]
    fn codec_files_load_at_start_and_again_on_reload() {
        let dir = crate::codec_files::tempdir();
        let file = dir.path().join("c.js");
        let table = dir.path().join("m.toml");
        crate::codec_files::write(&file, "function decodeUplink( {");
        crate::codec_files::write(&table, "[fields]\nb = { field = \"temperature\" }\n");
        let (mut d, m) = js_decoder(dir.path(), "js_codec = \"c\"\nmapping = \"m\"\n", "");
        assert_eq!(m.problems("codec_file"), 1);
        let rec = d.decode(&with_payload(&[7])).one();
        assert_eq!(rec.rec_type, "io.microshare.lorawan.packed");
        let error = body(&rec)["obj"]["data"]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(error.contains("c.js: threw SyntaxError"), "{error}");
        let version = |v: u32| {
            let js = format!(
                "function decodeUplink(i) {{ return {{data: {{b: i.bytes[0], v: {v}}}}}; }}"
            );
            crate::codec_files::write(&file, js);
        };
        let decoded =
            |d: &mut Decoder| body(&d.decode(&with_payload(&[7])).one())["obj"]["data"].clone();
        version(1);
        d.reloader().reload();
        let data = decoded(&mut d);
        assert_eq!(data["temperature"][0]["value"], 7);
        assert_eq!(data["origin"], serde_json::json!({"v": 1}));
        // Broken now, codec and table: the ones in use stay, and the log says why.
        crate::codec_files::write(&file, "function decodeUplink(i) { return ");
        crate::codec_files::write(&table, "[fields\n");
        d.reloader().reload();
        // Said by the reload itself, before any uplink.
        assert_eq!(m.problems("codec_file"), 3);
        let lines: Vec<String> = m.recent_problems().into_iter().map(|w| w.line).collect();
        let said = |what: &str, why: &str| {
            lines.iter().any(|l| {
                l.starts_with(&format!("{what} {}", dir.path().display()))
                    && l.contains(why)
                    && l.ends_with("; the version loaded before stays in use")
            })
        };
        assert!(
            said("JavaScript codec", "c.js: threw SyntaxError"),
            "{lines:?}"
        );
        assert!(said("mapping table", "m.toml: "), "{lines:?}");
        let data = decoded(&mut d);
        assert_eq!(data["temperature"][0]["value"], 7);
        assert_eq!(data["origin"], serde_json::json!({"v": 1}));
        // Good new versions take over.
        version(2);
        crate::codec_files::write(&table, "[fields]\nb = { field = \"humidity\" }\n");
        d.reloader().reload();
        let data = decoded(&mut d);
        assert_eq!(data["humidity"][0]["value"], 7);
        assert_eq!(data["origin"], serde_json::json!({"v": 2}));
        assert_eq!(m.problems("codec_file"), 3);
    }

    /// A codec at `file` whose records carry `{v}`: which version decoded.
    #[cfg(feature = "js")]
    fn write_version(file: &std::path::Path, v: u32) {
        let js = format!("function decodeUplink(i) {{ return {{data: {{v: {v}}}}}; }}");
        crate::codec_files::write(file, js);
    }

    /// Once the agent stops, a reload loads no codec file and hands the decoder nothing: the
    /// version in use stays, whatever is on disk now.
    #[cfg(feature = "js")]
    #[test]
    fn a_reload_after_the_stop_loads_nothing() {
        let dir = crate::codec_files::tempdir();
        let file = dir.path().join("c.js");
        let version = |v: u32| write_version(&file, v);
        version(1);
        let (mut d, m) = js_decoder(dir.path(), "js_codec = \"c\"\n", "");
        version(2);
        let reloader = d.reloader();
        reloader.stop();
        reloader.reload();
        let rec = d.decode(&with_payload(&[7])).one();
        assert_eq!(
            body(&rec)["obj"]["data"]["origin"],
            serde_json::json!({"v": 1})
        );
        assert_eq!(m.problems("codec_file"), 0);
    }

    /// Reloads with no input between them leave one set waiting, with one worker: each
    /// earlier one's worker has ended (it kept running until the next input before, one more
    /// process per SIGHUP). The codec of the last reload is the one the next input meets.
    #[cfg(feature = "js")]
    #[test]
    fn reloads_without_an_input_between_keep_one_worker() {
        let dir = crate::codec_files::tempdir();
        let file = dir.path().join("c.js");
        let version = |v: u32| write_version(&file, v);
        version(0);
        let (mut d, _m) = js_decoder(dir.path(), "js_codec = \"c\"\n", "");
        let waiting = |d: &Decoder| {
            let pending = d.reloads.lock().unwrap();
            pending.as_ref().and_then(Set::worker_pid).unwrap()
        };
        let mut earlier = Vec::new();
        for v in 1..=3 {
            version(v);
            d.reloader().reload();
            earlier.push(waiting(&d));
        }
        let last = earlier.pop().unwrap();
        for pid in earlier {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "worker {pid} of an earlier reload still runs"
            );
        }
        assert!(std::path::Path::new(&format!("/proc/{last}")).exists());
        let rec = d.decode(&with_payload(&[7])).one();
        assert_eq!(
            body(&rec)["obj"]["data"]["origin"],
            serde_json::json!({"v": 3})
        );
    }

    /// `hubgate decode --js` maps as the pipeline does: with the codec's own table, else
    /// with the device's `mapping` table.
    #[cfg(feature = "js")]
    #[test]
    fn decode_js_with_falls_back_to_the_device_mapping_table() {
        let dir = crate::codec_files::tempdir();
        crate::codec_files::write(
            dir.path().join("c.js"),
            "function Decode(p, b) { return {t: b[0]}; }",
        );
        crate::codec_files::write(
            dir.path().join("m.toml"),
            "[fields]\nt = { field = \"temperature\", unit = \"°C\" }\n",
        );
        let (mut d, _) = js_decoder(dir.path(), "js_codec = \"c\"\nmapping = \"m\"\n", "");
        let Input::Uplink(up) = with_payload(&[21]) else {
            unreachable!()
        };
        let worker = crate::js::Worker::new(Launcher::default());
        let script = crate::js::dir::load(dir.path(), "c", &worker).unwrap();
        let by_decode = body(&d.decode_js_with(&up, &script).unwrap().one());
        let by_pipeline = body(&d.decode(&Input::Uplink(up)).one());
        for v in [&by_decode, &by_pipeline] {
            assert_eq!(v["obj"]["recType"], "io.microshare.environment.unpacked");
            assert_eq!(
                v["obj"]["data"]["temperature"],
                serde_json::json!([{"value": 21, "unit": "°C"}])
            );
        }
    }

    /// A device's `usecase` and `packed_rec_type` win over its codec's usecase, the
    /// recType's code and the site's packed recType; the site's `source` and global tags go
    /// into every record.
    #[test]
    fn device_and_site_settings_go_into_the_records() {
        let cfg = Config::parse(
            "[record]\nsource = \"ShareService\"\nglobal_tags = [\"London\"]\n\
             usecases = { \"browan-tbhh100\" = \"SE02\" }\n\
             [sink]\ntype = \"stdout\"\n\
             [[device]]\ndev_eui = \"58a0cb0000101234\"\ncodec = \"browan-tbhh100\"\n\
             usecase = \"SE01\"\npacked_rec_type = \"io.microshare.environment.packed\"\n\
             tags = [\"Lobby\"]\n",
        )
        .unwrap();
        let mut d = Decoder::new(&cfg, Metrics::new());
        let body = |rec: Record| serde_json::from_str::<serde_json::Value>(&rec.body).unwrap();
        let v = body(d.decode(&uplink()).one());
        assert_eq!(v["source"], "ShareService");
        assert_eq!(v["obj"]["tags"], serde_json::json!(["London", "Lobby"]));
        assert_eq!(v["obj"]["data"]["meta"]["usecase"], "SE01");
        let Input::Uplink(mut bad) = uplink() else {
            unreachable!()
        };
        bad.payload.truncate(2);
        let rec = d.decode(&Input::Uplink(bad)).one();
        assert_eq!(rec.rec_type, "io.microshare.environment.packed");
        assert_eq!(
            body(rec)["obj"]["data"]["meta"]["dc"]["device_type"],
            "packed"
        );
        let (mut plain, _) = decoder();
        let v = body(plain.decode(&uplink()).one());
        assert_eq!(v["source"], "hubgate");
        assert_eq!(v["obj"]["data"]["meta"]["usecase"], "SE09");
        let by_codec = Config::parse(
            "[record]\nusecases = { \"browan-tbhh100\" = \"SE02\" }\n[sink]\ntype = \"stdout\"\n\
             [[device]]\ndev_eui = \"58a0cb0000101234\"\ncodec = \"browan-tbhh100\"\n",
        )
        .unwrap();
        let v = body(
            Decoder::new(&by_codec, Metrics::new())
                .decode(&uplink())
                .one(),
        );
        assert_eq!(
            v["obj"]["data"]["meta"]["usecase"], "SE02",
            "the codec's usecase for a device without its own"
        );
        let status = Input::GatewayStatus {
            gateway_id: "b827ebfffe000001".into(),
            stat: serde_json::Map::new(),
            time: SystemTime::UNIX_EPOCH,
            same_ms_index: 0,
        };
        let v = body(d.decode(&status).one());
        assert_eq!(v["source"], "ShareService");
        assert_eq!(
            v["obj"]["tags"],
            serde_json::json!(["London"]),
            "a gateway's record has the global tags too"
        );
    }

    /// A second gateway's copy of FCnt 15 that arrives after FCnt 16 was taken is a copy (a
    /// duplicate), not a device that restarted its counter: no `fcnt_reset` problem telling
    /// the operator the device looks dead. Past the copy window the same bytes are told as a
    /// restart.
    #[test]
    fn a_late_copy_of_an_early_frame_is_a_duplicate_not_a_counter_restart() {
        let (mut d, m) = radio_decoder("");
        assert_eq!(d.decode(&radio_frame(15)).len(), 1);
        assert_eq!(d.decode(&radio_frame(16)).len(), 1);
        assert!(d.decode(&radio_frame(15)).is_empty(), "the late copy");
        assert_eq!(
            (m.duplicates.get(), m.problems("fcnt_reset")),
            (1, 0),
            "(duplicates, fcnt_reset problems) after a late copy of FCnt 15"
        );
        d.pass(lorawan::fcnt::COPY_WINDOW);
        assert!(
            d.decode(&radio_frame(15)).is_empty(),
            "refused all the same"
        );
        assert_eq!((m.duplicates.get(), m.problems("fcnt_reset")), (1, 1));
    }

    /// For a device that restarts its counter (`resets_fcnt`), a late copy of a frame already
    /// taken (same PHYPayload, MIC included) is a copy too, not a restart: taken as one it
    /// makes the record again (a duplicate once the first is out of the ledger's dedup window,
    /// or delivered before a restart of hubgate: the window is seeded from the buffer only)
    /// and moves the counter back. Past the copy window the same bytes are a restarted
    /// device's frame, and taken.
    #[test]
    fn a_late_copy_for_a_resetting_device_is_a_copy_until_the_window_passed() {
        let (mut d, m) = radio_decoder("resets_fcnt = true\n");
        assert_eq!(d.decode(&radio_frame(100)).len(), 1);
        assert_eq!(d.decode(&radio_frame(101)).len(), 1);
        d.take_counters();
        let late = d.decode(&radio_frame(100));
        let advanced = d.take_counters().advanced;
        assert_eq!(
            (late.len(), advanced.len(), m.duplicates.get()),
            (0, 0, 1),
            "(records, counters advanced, duplicates) of a late copy of FCnt 100"
        );
        d.pass(lorawan::fcnt::COPY_WINDOW);
        let again = d.decode(&radio_frame(100));
        let advanced = d.take_counters().advanced;
        assert_eq!(
            (
                again.len(),
                advanced.iter().map(|a| a.fcnt).collect(),
                m.duplicates.get()
            ),
            (1, vec![100], 1),
            "(records, counters advanced, duplicates) of the same bytes past the window"
        );
    }

    /// A counter kept by an earlier run (500) below the configured `fcnt_from` (1000) leaves
    /// the session at 999 with the MIC of a frame at 999 unknown, not FCnt 500's: the
    /// device's own frame at 999 is old (a replay), not another frame at 999 told as a
    /// counter restart (`fcnt_reset`).
    #[test]
    fn a_frame_below_fcnt_from_is_old_though_the_kept_counter_is_further_behind() {
        let (mut d, m) = radio_decoder("fcnt_from = 1000\n");
        let kept = lorawan::tests::up(500, Some(2), &[0x03, 0x67, 0x01, 0x10]);
        let mic: [u8; 4] = kept[kept.len() - 4..].try_into().unwrap();
        let eui = DevEui([0x58, 0xa0, 0xcb, 0, 0, 0x10, 0x12, 0x34]);
        let dev_addr = lorawan::DevAddr(0x2601_1bda);
        assert!(d.resume_fcnt(dev_addr, eui, 500, Some(mic), None, None));
        assert!(d.decode(&radio_frame(999)).is_empty(), "below fcnt_from");
        assert_eq!(
            (m.duplicates.get(), m.problems("fcnt_reset")),
            (1, 0),
            "(duplicates, fcnt_reset problems) of FCnt 999 below fcnt_from 1000"
        );
        assert_eq!(d.decode(&radio_frame(1000)).len(), 1);
    }

    /// The records one message makes carry its text about once: a The Things Stack uplink
    /// of any device (none in the config) within the default `max_message` (256 KiB), with 40
    /// normalized measurements of their own times, makes 33 records (the uplink's and 32 of
    /// history), and each repeats its metadata: a long `device_id` and gateway id (cut when
    /// read), or a payload longer than a LoRaWAN frame carries (left out of the records of
    /// their own time). What a message costs the forwarder, the buffer and the sink is to
    /// stay within twice its size and a record envelope (2 KB) a record.
    #[test]
    fn the_records_of_a_message_carry_its_text_about_once() {
        use base64::Engine;
        let measurements: Vec<String> = (0..40)
            .map(|i| {
                format!(
                    r#"{{"time":"2024-05-01T09:00:{:02}.{i:03}Z","air":{{"temperature":{}}}}}"#,
                    i % 60,
                    20 + i % 10
                )
            })
            .collect();
        let message = |name: usize, gateway: usize, payload: usize| {
            let payload = base64::engine::general_purpose::STANDARD.encode(vec![7; payload]);
            format!(
                r#"{{"end_device_ids":{{"device_id":"{}","dev_eui":"58A0CB0000101234"}},
                "uplink_message":{{"f_port":103,"f_cnt":42,"frm_payload":"{payload}",
                "rx_metadata":[{{"gateway_ids":{{"gateway_id":"{}"}},"rssi":-50}}],
                "normalized_payload":[{}],"received_at":"2024-05-01T10:00:00.123Z"}}}}"#,
                "d".repeat(name),
                "g".repeat(gateway),
                measurements.join(",")
            )
        };
        for message in [message(200_000, 20_000, 8), message(8, 8, 150_000)] {
            assert!(message.len() < 256 << 10, "{} bytes", message.len());
            let input = crate::source::parse(
                crate::config::UplinkFormat::TtsV3,
                message.as_bytes(),
                UNIX_EPOCH,
            )
            .unwrap()
            .value;
            let cfg = Config::parse("[sink]\ntype = \"stdout\"\n").unwrap();
            let records = Decoder::new(&cfg, Metrics::new()).decode(&input);
            let bytes: usize = records.iter().map(|r| r.body.len()).sum();
            let bound = 2 * message.len() + records.len() * 2048;
            assert!(
                records.len() == 33 && bytes <= bound,
                "a message of {} bytes made {} records of {bytes} bytes (bound {bound})",
                message.len(),
                records.len()
            );
        }
    }
}
