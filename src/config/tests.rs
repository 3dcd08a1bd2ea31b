use std::path::{Path, PathBuf};
use std::time::Duration;

use super::secrets::expand_env;
use super::*;
use crate::lorawan::{DevAddr, Key};

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
    assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
    assert_eq!(parse_size("4096").unwrap(), 4096);
    assert!(parse_size("12 parsecs").is_err());
}

#[test]
fn env_expansion() {
    std::env::set_var("HUBGATE_TEST_SECRET", "s3cret");
    assert_eq!(expand_env("a${HUBGATE_TEST_SECRET}b").unwrap(), "as3cretb");
    assert!(expand_env("${HUBGATE_TEST_UNSET_VAR}").is_err());
    assert!(expand_env("${oops").is_err());
}

/// `${ENV}` is expanded where the template says (secrets and `*_file` paths) and refused
/// everywhere else, by key and line, instead of being taken literally.
#[test]
fn env_references_are_expanded_in_secrets_and_file_paths_only() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.key", APP, 0o600);
    std::env::set_var("HUBGATE_TEST_DIR", dir.path());
    std::env::set_var("HUBGATE_TEST_NWK", NWK);
    std::env::set_var("HUBGATE_TEST_PW", "hunter2");
    std::env::set_var("HUBGATE_TEST_CS2", CS);
    let text = "[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://localhost\"\nusername = \"u\"\npassword = \"${HUBGATE_TEST_PW}\"\n\
         [[device]]\ndev_eui = \"0011223344556677\"\ndev_addr = \"26011bda\"\nnwk_s_key = \"${HUBGATE_TEST_NWK}\"\n\
         app_s_key_file = \"${HUBGATE_TEST_DIR}/app.key\"\n\
         [sink]\ntype = \"eventhubs\"\nconnection_string = \"${HUBGATE_TEST_CS2}\"\n";
    let cfg = Config::load(&write(dir.path(), "env.toml", text, 0o600)).unwrap();
    let SourceConfig::Mqtt(m) = &cfg.sources[0] else {
        panic!("not mqtt")
    };
    assert_eq!(m.password.as_ref().unwrap().expose(), "hunter2");
    let d = &cfg.devices[0];
    assert_eq!(
        d.nwk_s_key.as_ref().unwrap().expose(),
        &Key::from_hex(NWK).unwrap()
    );
    assert_eq!(
        d.app_s_key.as_ref().unwrap().expose(),
        &Key::from_hex(APP).unwrap()
    );
    assert_eq!(
        d.app_s_key_file.as_deref(),
        Some(Path::new("${HUBGATE_TEST_DIR}/app.key"))
    );
    let SinkConfig::Eventhubs(eh) = &cfg.sink else {
        panic!("not eventhubs")
    };
    assert!(eh.connection_string.is_some());
    let kafka = "[sink]\ntype = \"kafka\"\nbrokers = \"x:9093\"\nsasl_username = \"u\"\nsasl_password = \"${HUBGATE_TEST_PW}\"\n";
    let SinkConfig::Kafka(k) = Config::parse(kafka).unwrap().sink else {
        panic!("not kafka")
    };
    assert_eq!(k.sasl_password.unwrap().expose(), "hunter2");

    for (text, key, line) in [
        ("gateway_id = \"${HOSTNAME}\"\n[sink]\ntype = \"stdout\"\n", "gateway_id", 1),
        (
            "[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"udp\"\n[[source]]\ntype = \"mqtt\"\n\nurl = \"mqtt://${BROKER}\"\n",
            "source[1].url",
            8,
        ),
        (
            "[sink]\ntype = \"kafka\"\nbrokers = \"x:9093\"\n[sink.properties]\n\"sasl.password\" = \"${PW}\"\n",
            "sink.properties.\"sasl.password\"",
            5,
        ),
        ("[record]\nglobal_tags = [\"${SITE}\"]\n[sink]\ntype = \"stdout\"\n", "record.global_tags", 2),
        (
            "[sink]\ntype = \"kafka\"\nbrokers = \"x:9093\"\nsasl_password = \"${PW}\"\n[record]\nglobal_tags = [\"${SITE}\"]\n",
            "record.global_tags",
            6,
        ),
    ] {
        let (k, reason) = Config::parse(text).unwrap_err();
        assert_eq!(k, key, "{text}");
        assert!(reason.starts_with("${…} is expanded only in secrets (password, "), "{reason}");
        assert!(reason.ends_with(&format!("(line {line})")), "{text}: {reason}");
    }
}

/// The MQTT source's CA and client certificate paths take `${ENV}` as the secret files'
/// do (a systemd credential).
#[test]
fn env_references_are_expanded_in_the_tls_file_paths() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", "the CA", 0o644);
    write(dir.path(), "client.pem", "the certificate", 0o644);
    write(dir.path(), "client.key", "the key", 0o600);
    std::env::set_var("HUBGATE_TEST_TLS_DIR", dir.path());
    let text = "[[source]]\ntype = \"mqtt\"\nurl = \"mqtts://localhost\"\n\
         ca_file = \"${HUBGATE_TEST_TLS_DIR}/ca.pem\"\n\
         client_cert_file = \"${HUBGATE_TEST_TLS_DIR}/client.pem\"\n\
         client_key_file = \"${HUBGATE_TEST_TLS_DIR}/client.key\"\n\
         [sink]\ntype = \"stdout\"\n";
    let cfg = Config::load(&write(dir.path(), "tls.toml", text, 0o600)).unwrap();
    let SourceConfig::Mqtt(m) = &cfg.sources[0] else {
        panic!("not mqtt")
    };
    assert_eq!(m.tls.ca.as_deref(), Some(&b"the CA"[..]));
    let (cert, key) = m.tls.client.as_ref().unwrap();
    assert_eq!(
        (&cert[..], key.expose().as_str()),
        (&b"the certificate"[..], "the key")
    );
    assert_eq!(m.ca_path(), Some(dir.path().join("ca.pem")));

    let unset = text.replace(
        "${HUBGATE_TEST_TLS_DIR}/ca.pem",
        "${HUBGATE_TEST_UNSET_VAR}/ca.pem",
    );
    let err = Config::load(&write(dir.path(), "unset.toml", &unset, 0o600)).unwrap_err();
    let ConfigError::Invalid { key, reason, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(key, "source[0].ca_file");
    assert_eq!(
        reason,
        "environment variable HUBGATE_TEST_UNSET_VAR is not set"
    );
}

#[test]
fn unknown_key_names_its_path() {
    let text = "[sink]\ntype = \"stdout\"\n[buffer]\nmax_byts = \"1MiB\"\n";
    let (key, reason) = Config::parse(text).unwrap_err();
    assert_eq!(key, "buffer.max_byts");
    assert!(reason.contains("unknown field"), "{reason}");
}

#[test]
fn unknown_key_in_a_tagged_table_names_its_path() {
    let text = "[sink]\ntype = \"stdout\"\nprety = true\n";
    let (key, _) = Config::parse(text).unwrap_err();
    assert_eq!(key, "sink.prety");
}

#[test]
fn hub_names_follow_event_hubs_rules() {
    assert!(valid_hub_name("io.microshare.environment.unpacked"));
    assert!(valid_hub_name("motion_2"));
    assert!(!valid_hub_name(""));
    assert!(!valid_hub_name(".motion"));
    assert!(!valid_hub_name("motion-"));
    assert!(!valid_hub_name("mo tion"));
    assert!(!valid_hub_name(&"a".repeat(257)));
    let text = "[sink]\ntype = \"kafka\"\nbrokers = \"x:9092\"\n[sink.topics]\n\"io.microshare.motion.unpacked\" = \"-motion\"\n[[source]]\ntype = \"udp\"\n";
    let mut cfg = Config::parse(text).unwrap();
    let (key, reason) = cfg.resolve(Path::new(".")).unwrap_err();
    assert_eq!(key, "sink.topics.\"io.microshare.motion.unpacked\"");
    assert!(reason.contains("bad hub name"), "{reason}");
}

fn pairs(plan: &[(String, String)]) -> Vec<(&str, &str)> {
    plan.iter().map(|(r, h)| (r.as_str(), h.as_str())).collect()
}

/// The packed recTypes the decode stage gives devices with a built-in codec are planned: a
/// payload their codec rejects must not find its hub missing weeks after the start with a
/// Manage key (docs/eventhubs.md).
#[test]
fn hub_plan_maps_the_rec_types_the_config_can_emit() {
    let text = "[sink]\ntype = \"kafka\"\nbrokers = \"x:9092\"\n[sink.topics]\n\"io.microshare.motion.unpacked\" = \"motion\"\n[[source]]\ntype = \"udp\"\n[[device]]\ndev_eui = \"0000000000000001\"\ncodec = \"browan-tbms100\"\n[[device]]\ndev_eui = \"0000000000000002\"\ncodec = \"browan-tbhh100\"\n[[device]]\ndev_eui = \"0000000000000003\"\ncodec = \"browan-tbhh100\"\npacked_rec_type = \"site.packed\"\n";
    let cfg = Config::parse(text).unwrap();
    assert_eq!(
        pairs(&cfg.hub_plan()),
        [
            (
                "io.microshare.environment.packed",
                "io.microshare.environment.packed"
            ),
            (
                "io.microshare.environment.unpacked",
                "io.microshare.environment.unpacked"
            ),
            (
                "io.microshare.lorawan.packed",
                "io.microshare.lorawan.packed"
            ),
            ("io.microshare.motion.packed", "io.microshare.motion.packed"),
            ("io.microshare.motion.unpacked", "motion"),
            ("site.packed", "site.packed"),
        ]
    );
}

/// `netvox-r718` decides the recType per frame: each of its models' is planned.
#[test]
fn a_codec_family_plans_every_rec_type_of_its_models() {
    let text = "[sink]\ntype = \"kafka\"\nbrokers = \"x:9092\"\n[[source]]\ntype = \"udp\"\n[[device]]\ndev_eui = \"0000000000000001\"\ncodec = \"netvox-r718\"\n";
    let cfg = Config::parse(text).unwrap();
    let rec_types: Vec<String> = cfg.rec_types().into_iter().collect();
    assert_eq!(
        rec_types,
        [
            "io.microshare.environment.packed",
            "io.microshare.environment.unpacked",
            "io.microshare.leak.unpacked",
            "io.microshare.lorawan.packed",
            "io.microshare.openclose.unpacked",
        ]
    );
}

/// The recTypes the mapping tables of the codec directory declare are planned: a JavaScript
/// codec's own table and a device's `mapping` table. A codec without a table, a table that
/// does not load and a file the config does not name add none.
#[test]
fn hub_plan_has_the_rec_types_the_codec_directory_declares() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    file("own.js", "");
    file(
        "own.toml",
        "rec_type = \"io.microshare.feedback.unpacked\"\n",
    );
    file("plain.js", "");
    file("broken.js", "");
    file("broken.toml", "rec_type = 1\n");
    file("ns.toml", "rec_type = \"site.meters\"\n");
    file("unnamed.toml", "rec_type = \"site.unnamed\"\n");
    let text = format!(
        "[codecs]\ndir = {:?}\n[codecs.profiles]\nmeter = \"plain\"\n[sink]\ntype = \"kafka\"\nbrokers = \"x:9092\"\n[sink.topics]\n\"site.meters\" = \"meters\"\n[[source]]\ntype = \"udp\"\n\
         [[device]]\ndev_eui = \"0000000000000001\"\njs_codec = \"own\"\n\
         [[device]]\ndev_eui = \"0000000000000002\"\njs_codec = \"broken\"\n\
         [[device]]\ndev_eui = \"0000000000000003\"\nmapping = \"ns\"\n",
        dir.path()
    );
    let cfg = Config::parse(&text).unwrap();
    assert_eq!(
        pairs(&cfg.hub_plan()),
        [
            (
                "io.microshare.feedback.unpacked",
                "io.microshare.feedback.unpacked"
            ),
            (
                "io.microshare.lorawan.packed",
                "io.microshare.lorawan.packed"
            ),
            ("site.meters", "meters"),
        ]
    );
}

#[test]
fn bad_codec_names_device_index() {
    let text =
        "[sink]\ntype = \"stdout\"\n[[device]]\ndev_eui = \"0011223344556677\"\ncodec = \"nope\"\n";
    let (key, reason) = Config::parse(text).unwrap_err();
    assert_eq!(key, "device[0].codec");
    assert!(reason.contains("unknown codec \"nope\""), "{reason}");
}

const SESSION: &str = "[sink]\ntype = \"stdout\"\n[[device]]\ndev_eui = \"0011223344556677\"\n";

#[test]
fn device_session_parses() {
    let text = format!(
        "{SESSION}dev_addr = \"26011BDA\"\nnwk_s_key = \"2B7E151628AED2A6ABF7158809CF4F3C\"\napp_s_key = \"000102030405060708090A0B0C0D0E0F\"\n"
    );
    let cfg = Config::parse(&text).unwrap();
    let d = &cfg.devices[0];
    assert_eq!(d.dev_addr, Some(DevAddr(0x2601_1bda)));
    assert!(d.nwk_s_key.is_some() && d.app_s_key.is_some());
    cfg.check_sessions().unwrap();
    let printed = format!("{cfg:?}");
    assert!(
        !printed.to_ascii_lowercase().contains("2b7e1516"),
        "{printed}"
    );
    assert!(printed.contains("DevAddr(26011bda)"), "{printed}");
}

#[test]
fn short_session_key_names_its_path_and_hides_the_key() {
    let text =
        format!("{SESSION}dev_addr = \"26011bda\"\nnwk_s_key = \"2B7E151628AED2A6ABF71588\"\n");
    let (key, reason) = Config::parse(&text).unwrap_err();
    assert_eq!(key, "device[0].nwk_s_key");
    assert!(reason.contains("32 hex digits"), "{reason}");
    assert!(!reason.contains("2B7E"), "{reason}");
}

#[test]
fn bad_dev_addr_names_its_path() {
    let text = format!("{SESSION}dev_addr = \"26011b\"\n");
    let (key, reason) = Config::parse(&text).unwrap_err();
    assert_eq!(key, "device[0].dev_addr");
    assert!(reason.contains("8 hex digits"), "{reason}");
}

/// `resets_fcnt` is an option of a LoRaWAN session, off unless set.
#[test]
fn resets_fcnt_needs_a_session() {
    let session = format!(
        "{SESSION}dev_addr = \"26011BDA\"\nnwk_s_key = \"2B7E151628AED2A6ABF7158809CF4F3C\"\napp_s_key = \"000102030405060708090A0B0C0D0E0F\"\n"
    );
    let cfg = Config::parse(&session).unwrap();
    assert!(!cfg.devices[0].resets_fcnt);
    let cfg = Config::parse(&format!("{session}resets_fcnt = true\n")).unwrap();
    assert!(cfg.devices[0].resets_fcnt);
    cfg.check_sessions().unwrap();
    let cfg = Config::parse(&format!("{SESSION}resets_fcnt = true\n")).unwrap();
    let (key, reason) = cfg.check_sessions().unwrap_err();
    assert_eq!(key, "device[0].resets_fcnt");
    assert!(reason.contains("LoRaWAN session"), "{reason}");
    let (key, _) = Config::parse(&format!("{session}resets_fcnt = \"yes\"\n")).unwrap_err();
    assert_eq!(key, "device[0].resets_fcnt");
    let cfg = Config::parse(&format!("{session}fcnt_from = 2000000\n")).unwrap();
    assert_eq!(cfg.devices[0].fcnt_from, Some(2_000_000));
    cfg.check_sessions().unwrap();
    let cfg = Config::parse(&format!("{SESSION}fcnt_from = 2000000\n")).unwrap();
    let (key, _) = cfg.check_sessions().unwrap_err();
    assert_eq!(key, "device[0].fcnt_from");
}

#[test]
fn partial_session_is_refused() {
    let text = format!(
        "{SESSION}dev_addr = \"26011bda\"\napp_s_key = \"000102030405060708090A0B0C0D0E0F\"\n"
    );
    let cfg = Config::parse(&text).unwrap();
    let (key, reason) = cfg.check_sessions().unwrap_err();
    assert_eq!(key, "device[0].nwk_s_key");
    assert!(reason.starts_with("missing"), "{reason}");
}

fn serial(extra: &str) -> Result<Config, (String, String)> {
    let text = format!(
        "[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://x\"\n\
         [[source]]\ntype = \"serial\"\ndevice = \"/dev/ttyUSB0\"\n{extra}\n"
    );
    let mut cfg = Config::parse(&text)?;
    cfg.resolve(Path::new("."))?;
    Ok(cfg)
}

#[test]
fn serial_source_defaults_and_keys() {
    let cfg = serial("framing = \"lines-hex\"\nprefix = \"radio_rx\"").unwrap();
    let SourceConfig::Serial(s) = &cfg.sources[1] else {
        panic!("not serial")
    };
    assert_eq!(s.baud, 115_200);
    assert_eq!(
        (s.parity, s.stop_bits, s.data_bits),
        (Parity::None, StopBits::One, DataBits(8))
    );
    assert_eq!((s.max_frame, s.content), (1024, SerialContent::Cbor));
    assert_eq!(s.reopen_max, Duration::from_secs(30));
    let cfg = serial(
        "framing = \"cobs\"\nbaud = 9600\nparity = \"even\"\nstop_bits = 2\ndata_bits = 7\n\
         max_frame = 2048\nreopen_max = \"2s\"",
    )
    .unwrap();
    let SourceConfig::Serial(s) = &cfg.sources[1] else {
        panic!("not serial")
    };
    assert_eq!(
        (s.baud, s.parity, s.stop_bits, s.data_bits),
        (9600, Parity::Even, StopBits::Two, DataBits(7))
    );
    assert_eq!(s.framing, crate::framing::Framing::Cobs);
}

#[test]
fn serial_errors_name_their_key() {
    let cases = [
        (
            "framing = \"slip\"\nmax_frame = 4096",
            "source[1].max_frame",
            "max_frame",
        ),
        (
            "framing = \"slip\"\nprefix = \"x\"",
            "source[1].prefix",
            "lines-hex",
        ),
        (
            "framing = \"slip\"\nstop_bits = 3",
            "source[1].stop_bits",
            "stop_bits must be 1 or 2",
        ),
        (
            "framing = \"slip\"\ndata_bits = 9",
            "source[1].data_bits",
            "data_bits must be",
        ),
        (
            "framing = \"slip\"\nparity = \"mark\"",
            "source[1].parity",
            "mark",
        ),
        ("framing = \"hdlc\"", "source[1].framing", "hdlc"),
        (
            "framing = \"slip\"\nbaud_rate = 9600",
            "source[1].baud_rate",
            "unknown field",
        ),
    ];
    for (extra, key, reason) in cases {
        let (k, r) = serial(extra).unwrap_err();
        assert_eq!(k, key, "{extra}");
        assert!(r.contains(reason), "{extra}: reason {r}");
    }
}

/// An error inside a `[[source]]` or `[sink]` names the key and the line it is on, not
/// just the table (serde's tagged enums lose both).
#[test]
fn errors_inside_tagged_tables_name_key_and_line() {
    let head = "[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"udp\"\n[[source]]\n";
    let cases = [
        (
            "type = \"serial\"\nframing = \"slip\"\ndevice = \"x\"\nstop_bits = 3\n",
            "source[1].stop_bits",
            "(line 9)",
        ),
        ("type = 3\n", "source[1].type", "(line 6)"),
        ("type = \"mqttx\"\n", "source[1].type", "(line 6)"),
        (
            "url = \"mqtt://x\"\n",
            "source[1]",
            "missing field `type` (line 5)",
        ),
        (
            "type = \"mqtt\"\n  url = \"http://x\"\n",
            "source[1].url",
            "(line 7)",
        ),
    ];
    for (table, key, reason) in cases {
        let (k, r) = Config::parse(&format!("{head}{table}")).unwrap_err();
        assert_eq!(k, key, "{table}");
        assert!(r.ends_with(reason), "{table}: {r}");
    }
    let (k, r) = Config::parse("[sink]\ntype = \"stdout\"\n\nprety = true\n").unwrap_err();
    assert_eq!(
        (k.as_str(), r.as_str()),
        (
            "sink.prety",
            "unknown field `prety`, expected `pretty` (line 4)"
        )
    );
}

const CS: &str =
    "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0";

fn sink(sink: &str) -> Result<Config, (String, String)> {
    let text = format!("[[source]]\ntype = \"udp\"\n[sink]\n{sink}\n");
    let mut cfg = Config::parse(&text)?;
    cfg.resolve(Path::new("."))?;
    Ok(cfg)
}

/// The Kafka SASL password from `sasl_password_file` (a relative one from the config's
/// directory) is the one the sink logs in with.
#[test]
fn the_kafka_sasl_password_is_read_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "kafka.secret", "pa55word\n", 0o600);
    let text = "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"kafka\"\nbrokers = \"x:9093\"\n\
                sasl_username = \"u\"\nsasl_password_file = \"kafka.secret\"\n";
    let cfg = Config::load(&write(dir.path(), "kafka.toml", text, 0o600)).unwrap();
    let SinkConfig::Kafka(k) = &cfg.sink else {
        panic!("not kafka")
    };
    assert_eq!(k.sasl_password.as_ref().unwrap().expose(), "pa55word");
    let client = crate::sink::kafka::sink_config(k);
    assert_eq!(client.get("sasl.password"), Some("pa55word"));
}

/// A Kafka sink whose `[sink]` gives the SASL login may not set `sasl.*` in
/// `[sink.properties]`: the property would win, and a rotated `sasl_password_file` would not
/// change the password the sink logs in with. The error names the key and what to use; a
/// sink whose `[sink]` gives no login may still log in through its properties.
#[test]
fn a_kafka_sasl_login_in_sink_refuses_sasl_properties() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "kafka.secret", "pa55word\n", 0o600);
    let kafka = "type = \"kafka\"\nbrokers = \"x:9093\"";
    let logins = [
        "sasl_username = \"u\"".to_string(),
        "sasl_password = \"pa55word\"".to_string(),
        format!("sasl_password_file = \"{}\"", file.display()),
    ];
    for login in &logins {
        for (key, instead) in [
            ("sasl.username", "set sasl_username in [sink] instead"),
            (
                "sasl.password",
                "set sasl_password or sasl_password_file in [sink] instead",
            ),
            ("sasl.mechanism", "set sasl_mechanism in [sink] instead"),
            ("sasl.mechanisms", "set sasl_mechanism in [sink] instead"),
            (
                "sasl.kerberos.service.name",
                "remove it: sasl_mechanism, sasl_username",
            ),
        ] {
            let text = format!("{kafka}\n{login}\n[sink.properties]\n{key:?} = \"v4lue\"");
            let cfg = sink(&text).unwrap();
            let (path, reason) = crate::sink::check(&cfg.sink).unwrap_err();
            assert_eq!(path, format!("sink.properties.{key:?}"), "{login}");
            assert!(
                reason.starts_with("refused: [sink] gives the SASL login")
                    && reason.contains(instead),
                "{login}, {key}: {reason}"
            );
            assert!(
                !reason.contains("pa55word") && !reason.contains("v4lue"),
                "{reason}"
            );
        }
    }
    let by_properties = format!(
        "{kafka}\n[sink.properties]\n\"sasl.mechanisms\" = \"PLAIN\"\n\
         \"sasl.username\" = \"u\"\n\"sasl.password\" = \"pa55word\""
    );
    crate::sink::check(&sink(&by_properties).unwrap().sink).unwrap();
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

const NWK: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
const APP: &str = "000102030405060708090A0B0C0D0E0F";

/// Session keys and the MQTT password come from files like the connection string; a
/// file readable by every user is warned about, a 0600 one is not.
#[test]
fn session_keys_and_mqtt_password_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nwk = write(d, "nwk.key", &format!("{NWK}\n"), 0o600);
    let app = write(d, "app.key", APP, 0o644);
    let pw = write(d, "mqtt.pw", "hunter2\n", 0o600);
    let text = format!(
        "[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://localhost\"\nusername = \"u\"\npassword_file = \"{}\"\n\
         [[device]]\ndev_eui = \"0011223344556677\"\ndev_addr = \"26011bda\"\n\
         nwk_s_key_file = \"{}\"\napp_s_key_file = \"{}\"\n[sink]\ntype = \"stdout\"\n",
        pw.display(),
        nwk.display(),
        app.display()
    );
    let cfg = Config::load(&write(d, "hubgate.toml", &text, 0o644)).unwrap();
    let dev = &cfg.devices[0];
    assert_eq!(
        dev.nwk_s_key.as_ref().unwrap().expose(),
        &Key::from_hex(NWK).unwrap()
    );
    assert_eq!(
        dev.app_s_key.as_ref().unwrap().expose(),
        &Key::from_hex(APP).unwrap()
    );
    let SourceConfig::Mqtt(m) = &cfg.sources[0] else {
        panic!("not mqtt")
    };
    assert_eq!(m.password.as_ref().unwrap().expose(), "hunter2");
    let warnings = cfg.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&format!(
            "{} holds a secret and is readable by every user (mode 0644)",
            app.display()
        )),
        "{warnings:?}"
    );
    let printed = format!("{cfg:?}");
    assert!(
        !printed.contains("hunter2") && !printed.contains("2B7E"),
        "{printed}"
    );

    // A bad key in a file is named by its key path, not quoted.
    write(d, "nwk.key", "2B7E1516", 0o600);
    let e = Config::load(&d.join("hubgate.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("device[0].nwk_s_key_file: ") && !e.contains("2B7E"),
        "{e}"
    );
    let both = text.replace("username = \"u\"", "username = \"u\"\npassword = \"x\"");
    let e = Config::load(&write(d, "both.toml", &both, 0o600))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("source[0].password: give password or password_file, not both"),
        "{e}"
    );
}

/// A password sent over plain MQTT to another machine is warned about; over TLS or to
/// this machine it is not.
#[test]
fn a_password_over_plain_mqtt_to_another_host_is_warned_about() {
    let mqtt = |url: &str| {
        let text = format!("[[source]]\ntype = \"mqtt\"\nurl = \"{url}\"\nusername = \"u\"\npassword = \"p\"\n[sink]\ntype = \"stdout\"\n");
        Config::parse(&text).unwrap().warnings()
    };
    let w = mqtt("mqtt://broker.example");
    assert_eq!(
        w,
        ["source[0]: the MQTT password goes over the network in clear text to mqtt://broker.example; use mqtts://"]
    );
    for quiet in [
        "mqtts://broker.example",
        "mqtt://localhost",
        "mqtt://127.0.0.1:1883",
        "mqtt://[::1]:1883",
    ] {
        assert!(mqtt(quiet).is_empty(), "{quiet}: {:?}", mqtt(quiet));
    }
}

/// Secrets written into a config file every user can read are warned about by key
/// path; `${ENV}` references and 0640 files are not.
#[test]
fn inline_secrets_in_a_world_readable_config_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("HUBGATE_TEST_CS", CS);
    let eh = |cs: &str| {
        format!("[[source]]\ntype = \"udp\"\n[sink]\ntype = \"eventhubs\"\nconnection_string = \"{cs}\"\n")
    };
    let open = write(dir.path(), "open.toml", &eh(CS), 0o644);
    let warnings = Config::load(&open).unwrap().warnings();
    assert_eq!(
        warnings,
        vec![format!(
            "{} holds secrets inline (sink.connection_string) and is readable by every user (mode 0644): chmod 600, or 640 with the agent's group (chgrp hubgate)",
            open.display()
        )]
    );
    assert!(!warnings[0].contains("c2VjcmV0"));
    let closed = write(dir.path(), "closed.toml", &eh(CS), 0o640);
    assert!(Config::load(&closed).unwrap().warnings().is_empty());
    let env = write(dir.path(), "env.toml", &eh("${HUBGATE_TEST_CS}"), 0o644);
    assert!(Config::load(&env).unwrap().warnings().is_empty());
}

/// Secret librdkafka properties are always inline: warned about like the other secrets,
/// by key path and without their value; other properties are not.
#[test]
fn inline_secret_properties_in_a_world_readable_config_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"kafka\"\nbrokers = \"b:9093\"\n\
                [sink.properties]\n\"ssl.key.password\" = \"hunter2\"\n\"linger.ms\" = \"5\"\n";
    let open = write(dir.path(), "open.toml", text, 0o644);
    let warnings = Config::load(&open).unwrap().warnings();
    for key in [
        "sasl.oauthbearer.assertion.private.key.pem",
        "sasl.oauthbearer.assertion.private.key.passphrase",
    ] {
        assert!(super::sink::Properties::is_secret(key), "{key}");
    }
    assert_eq!(
        warnings,
        vec![format!(
            "{} holds secrets inline (sink.properties.\"ssl.key.password\") and is readable by every user (mode 0644): chmod 600, or 640 with the agent's group (chgrp hubgate)",
            open.display()
        )]
    );
}

/// A config, secret or CA path that is a device or FIFO fails at once, naming the key.
#[test]
fn devices_and_fifos_are_refused_where_files_are_expected() {
    let e = Config::load(Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (key, reason) = sink(&format!(
        "type = \"eventhubs\"\nconnection_string_file = \"{}\"",
        fifo.display()
    ))
    .unwrap_err();
    assert_eq!(key, "sink.connection_string_file");
    assert!(reason.contains("not a regular file"), "{reason}");
    let (key, reason) = sink(&format!(
        "type = \"eventhubs\"\nconnection_string = \"{CS}\"\nca_location = \"/dev/zero\""
    ))
    .unwrap_err();
    assert_eq!(key, "sink.ca_location");
    assert!(reason.contains("not a regular file"), "{reason}");
    let (key, _) = sink(&format!(
        "type = \"kafka\"\nbrokers = \"x:9093\"\n[sink.properties]\n\"ssl.ca.location\" = \"{}\"",
        fifo.display()
    ))
    .unwrap_err();
    assert_eq!(key, "sink.properties.\"ssl.ca.location\"");
}

#[test]
fn template_parses() {
    Config::parse(TEMPLATE).unwrap();
}

/// A sub-second period is a typo that would log, ping or reconnect in a tight loop (rumqttc
/// panics on a keep-alive under a second): refused, naming the key.
#[test]
fn periods_under_a_second_are_refused() {
    let mqtt = "[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\nformat = \"chirpstack-v4\"\n";
    for (table, key) in [
        (
            "[metrics]\nstatus_interval = \"1ms\"\n",
            "metrics.status_interval",
        ),
        (
            &format!("{mqtt}keep_alive = \"500ms\"\n"),
            "source[0].keep_alive",
        ),
        (
            &format!("{mqtt}reconnect_max = \"0s\"\n"),
            "source[0].reconnect_max",
        ),
    ] {
        let text = format!("[sink]\ntype = \"stdout\"\n{table}");
        let (k, reason) = Config::parse(&text).unwrap_err();
        assert_eq!(k, key, "{text}");
        assert!(reason.contains("under a second"), "{reason}");
    }
    // MQTT carries the keep-alive as whole seconds in 16 bits.
    for bad in ["1500ms", "65536s", "1d"] {
        let text = format!("[sink]\ntype = \"stdout\"\n{mqtt}keep_alive = \"{bad}\"\n");
        let (k, reason) = Config::parse(&text).unwrap_err();
        assert_eq!(k, "source[0].keep_alive", "{bad}");
        assert!(reason.contains("from 1 to 65535"), "{reason}");
    }
    let text = format!("[sink]\ntype = \"stdout\"\n{mqtt}keep_alive = \"65535s\"\n");
    let cfg = Config::parse(&text).unwrap();
    assert!(matches!(&cfg.sources[0], SourceConfig::Mqtt(m) if m.keep_alive.as_secs() == 65535));
    let text =
        format!("[sink]\ntype = \"stdout\"\n{mqtt}keep_alive = \"0s\"\nreconnect_max = \"1s\"\n");
    let cfg = Config::parse(&text).unwrap();
    assert!(matches!(&cfg.sources[0], SourceConfig::Mqtt(m) if m.keep_alive.is_zero()));
}

#[test]
fn metrics_defaults_and_off() {
    let cfg = Config::parse("[sink]\ntype = \"stdout\"\n").unwrap();
    assert_eq!(cfg.metrics.listen, Some("127.0.0.1:9898".parse().unwrap()));
    assert_eq!(cfg.metrics.status_interval, Duration::from_secs(60));
    assert!(cfg.warnings().is_empty());
    let text = "[sink]\ntype = \"stdout\"\n[metrics]\nlisten = \"off\"\nstatus_interval = \"0s\"\n";
    let cfg = Config::parse(text).unwrap();
    assert_eq!(cfg.metrics.listen, None);
    assert!(cfg.metrics.status_interval.is_zero());
    let dir = tempfile::tempdir().unwrap();
    let load = |metrics: &str| {
        let path = dir.path().join("hubgate.toml");
        let text = format!(
            "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"stdout\"\n[metrics]\n{metrics}\n"
        );
        std::fs::write(&path, text).unwrap();
        Config::load(&path).map_err(|e| e.to_string())
    };
    let lan = "listen = \"0.0.0.0:9898\"\n";
    // Unguarded on the LAN: the agent starts (readings matter more), the page is not served.
    let cfg = load(lan).unwrap();
    assert_eq!(cfg.metrics.served(), None);
    assert!(
        cfg.warnings()
            .iter()
            .any(|w| w.contains("not served until you set metrics.password_file")),
        "{:?}",
        cfg.warnings()
    );
    let cfg = load(&format!("{lan}lan_read_only = true")).unwrap();
    let warnings = cfg.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("open to the network without a password")),
        "{warnings:?}"
    );
    let password = dir.path().join("password");
    std::fs::write(&password, "\n").unwrap();
    let with_file = format!("{lan}password_file = \"{}\"", password.display());
    let e = load(&with_file).unwrap_err();
    assert!(
        e.ends_with(&format!(
            ": metrics.password_file: the file {} is empty",
            password.display()
        )),
        "{e}"
    );
    std::fs::write(&password, "pw\n").unwrap();
    let cfg = load(&with_file).unwrap();
    assert_eq!(
        cfg.metrics.password.as_ref().map(|p| p.expose().as_str()),
        Some("pw")
    );
    assert!(
        !cfg.warnings()
            .iter()
            .any(|w| w.contains("without a password")),
        "{:?}",
        cfg.warnings()
    );
    let (key, reason) =
        Config::parse("[sink]\ntype = \"stdout\"\n[metrics]\nlisten = \"9898\"\n").unwrap_err();
    assert_eq!(key, "metrics.listen");
    assert!(reason.contains("\"off\""), "{reason}");
}

/// `[metrics] hosts` takes plain host names: a port or a URL there would never match a
/// request's `Host`, and the page would answer 421 under the name the operator meant.
#[test]
fn metrics_hosts_are_plain_host_names() {
    let dir = tempfile::tempdir().unwrap();
    let load = |hosts: &str| {
        let path = dir.path().join("hubgate.toml");
        let text = format!(
            "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"stdout\"\n[metrics]\nhosts = {hosts}\n"
        );
        std::fs::write(&path, text).unwrap();
        Config::load(&path).map_err(|e| e.to_string())
    };
    let cfg = load("[\"gw.example.net\", \"Gate-1.lan\"]").unwrap();
    assert_eq!(cfg.metrics.hosts, ["gw.example.net", "Gate-1.lan"]);
    let e = load("[\"gw.example.net\", \"http://gw.example.net:9898\"]").unwrap_err();
    assert!(
        e.ends_with(": metrics.hosts[1]: \"http://gw.example.net:9898\" is not a host name: give the name alone (letters, digits, '-' and '.'), without scheme, port or path"),
        "{e}"
    );
    assert!(Config::parse("[sink]\ntype = \"stdout\"\n")
        .unwrap()
        .metrics
        .hosts
        .is_empty());
}

/// `compression` is what the producer is built with; Event Hubs takes none or gzip only, and
/// librdkafka's own names for it in `[sink.properties]` are refused (with the preset's, which
/// of two names wins is not defined).
#[test]
fn compression_reaches_the_producer() {
    let codec = |cfg: &Config| {
        crate::sink::kafka_client_config(&cfg.sink)
            .unwrap()
            .unwrap()
            .get("compression.codec")
            .map(String::from)
    };
    let eh = format!("type = \"eventhubs\"\nconnection_string = \"{CS}\"");
    assert_eq!(codec(&sink(&eh).unwrap()).as_deref(), Some("none"));
    let gzip = sink(&format!("{eh}\ncompression = \"gzip\"")).unwrap();
    assert_eq!(codec(&gzip).as_deref(), Some("gzip"));
    crate::sink::check(&gzip.sink).unwrap();
    let (key, reason) = sink(&format!("{eh}\ncompression = \"lz4\"")).unwrap_err();
    assert_eq!(key, "sink.compression");
    assert!(reason.contains("\"none\" or \"gzip\""), "{reason}");
    let kafka = sink("type = \"kafka\"\nbrokers = \"x:9093\"\ncompression = \"lz4\"").unwrap();
    assert_eq!(codec(&kafka).as_deref(), Some("lz4"));
    for alias in ["compression.type", "compression.codec"] {
        let cfg = sink(&format!("{eh}\n[sink.properties]\n\"{alias}\" = \"gzip\"")).unwrap();
        let (key, reason) = crate::sink::check(&cfg.sink).unwrap_err();
        assert_eq!(key, format!("sink.properties.{alias:?}"));
        assert!(reason.contains("set compression in [sink]"), "{reason}");
    }
}

/// `check` refuses a Kafka or Event Hubs sink whose properties lower `acks` or turn the
/// idempotent producer off (`insecure` does not allow it), or that librdkafka would refuse
/// only when the producer is created, with one line naming the property.
#[test]
fn check_refuses_properties_that_weaken_delivery() {
    let eh = format!("type = \"eventhubs\"\nconnection_string = \"{CS}\"");
    let kafka = "type = \"kafka\"\nbrokers = \"x:9093\"\ninsecure = true".to_string();
    for base in [eh, kafka] {
        for (key, value, why) in [
            ("acks", "1", "only all"),
            ("request.required.acks", "0", "only all"),
            ("enable.idempotence", "false", "idempotent producer"),
            ("retries", "0", "1 or more"),
        ] {
            let cfg = sink(&format!("{base}\n[sink.properties]\n{key:?} = {value:?}")).unwrap();
            let (path, reason) = crate::sink::check(&cfg.sink).unwrap_err();
            assert_eq!(path, format!("sink.properties.{key:?}"), "{base}");
            assert!(reason.contains(why) && !reason.contains('\n'), "{reason}");
        }
        let cfg = sink(&format!("{base}\n[sink.properties]\n\"acks\" = \"-1\"")).unwrap();
        crate::sink::check(&cfg.sink).unwrap();
    }
}

/// The .deb installs the connection string's file empty: `check` says so, not "missing
/// Endpoint".
#[test]
fn an_empty_connection_string_file_is_called_empty() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "eventhubs.secret", " \n", 0o600);
    let (key, reason) = sink(&format!(
        "type = \"eventhubs\"\nconnection_string_file = \"{}\"",
        file.display()
    ))
    .unwrap_err();
    assert_eq!(key, "sink.connection_string_file");
    assert_eq!(reason, format!("the file {} is empty", file.display()));
}

/// A round budget of nothing is refused by `check`, naming the key; any other is taken.
#[test]
fn a_zero_round_budget_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = |budget: &str| {
        let text = format!(
            "[codecs]\nround_budget = \"{budget}\"\n[[source]]\ntype = \"udp\"\n\
             [sink]\ntype = \"stdout\"\n"
        );
        Config::load(&write(dir.path(), "hubgate.toml", &text, 0o600))
    };
    let e = config("0s").unwrap_err().to_string();
    assert!(
        e.ends_with(
            "codecs.round_budget: must be more than 0: the wall time the JavaScript calls of \
             one round of the forwarder may take (default \"5s\")"
        ),
        "{e}"
    );
    let cfg = config("1ms").unwrap();
    assert_eq!(cfg.codecs.round_budget, Duration::from_millis(1));
}

/// `[codecs.normalized_battery]` takes a brand's "voltage", "charge" or "skip"; anything
/// else is refused, naming the brand's key.
#[test]
fn normalized_battery_by_brand_is_read_and_a_bad_value_refused() {
    use crate::mapping::NormalizedBattery;
    let config = |value: &str| {
        Config::parse(&format!(
            "[codecs.normalized_battery]\n\"milesight-iot\" = \"voltage\"\nacme = {value}\n\
             [sink]\ntype = \"stdout\"\n"
        ))
    };
    let cfg = config("\"charge\"").unwrap();
    assert_eq!(
        cfg.codecs
            .normalized_battery
            .into_iter()
            .collect::<Vec<_>>(),
        [
            ("acme".to_string(), NormalizedBattery::Charge),
            ("milesight-iot".to_string(), NormalizedBattery::Voltage),
        ]
    );
    let (key, e) = config("\"percent\"").unwrap_err();
    assert_eq!(key, "codecs.normalized_battery.acme");
    assert!(
        e.starts_with("unknown variant `percent`, expected one of `voltage`, `charge`, `skip`"),
        "{e}"
    );
}

/// A `[codecs.profiles]` key longer than the device profile names hubgate reads (256 bytes)
/// never matches: `check` refuses it.
#[test]
fn a_profile_name_longer_than_hubgate_reads_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = |profile: &str| {
        let text = format!(
            "[codecs.profiles]\n{profile:?} = \"c\"\n[[source]]\ntype = \"udp\"\n\
             [sink]\ntype = \"stdout\"\n"
        );
        Config::load(&write(dir.path(), "hubgate.toml", &text, 0o600))
    };
    let longest = "é".repeat(128);
    assert_eq!(config(&longest).unwrap().codecs.profiles.len(), 1);
    let e = config(&format!("{longest}x")).unwrap_err().to_string();
    assert!(
        e.ends_with(&format!(
            "codecs.profiles.{:?}: a device profile name of 257 bytes never matches: hubgate \
             reads the first 256 bytes of the network server's",
            "é".repeat(20)
        )),
        "{e}"
    );
}

/// A `[codecs.normalized_battery]` key that is no brand as The Things Stack sends it (upper
/// case, a typo's space or underscore, too long) never matches: `check` refuses it, naming
/// the key and the rule.
#[test]
fn a_normalized_battery_brand_must_be_a_tts_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = |brand: &str| {
        let text = format!(
            "[codecs.normalized_battery]\n{brand:?} = \"charge\"\n[[source]]\ntype = \"udp\"\n\
             [sink]\ntype = \"stdout\"\n"
        );
        Config::load(&write(dir.path(), "hubgate.toml", &text, 0o600))
    };
    let longest = "a".repeat(36);
    for brand in ["milesight-iot", "ab", &longest] {
        let cfg = config(brand).unwrap();
        assert_eq!(
            cfg.codecs.normalized_battery.keys().collect::<Vec<_>>(),
            [brand]
        );
    }
    let longer = "a".repeat(37);
    for brand in [
        "Milesight-IoT",
        "milesight_iot",
        "milesight iot",
        "a",
        "",
        &longer,
    ] {
        let e = config(brand).unwrap_err().to_string();
        assert!(
            e.ends_with(&format!(
                "codecs.normalized_battery.{brand:?}: not a brand of The Things Network's \
                 Device Repository as The Things Stack sends it (version_ids.brand_id, \
                 \"milesight-iot\"): 2 to 36 lowercase letters, digits and dashes"
            )),
            "{e}"
        );
    }
}

/// A `decode_order` that names a step twice or none is refused, naming the device.
#[test]
fn a_decode_order_names_each_step_at_most_once_and_one_at_least() {
    let dir = tempfile::tempdir().unwrap();
    let config = |order: &str| {
        let text = format!(
            "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"stdout\"\n\
             [[device]]\ndev_eui = \"58a0cb0000101234\"\n\
             [[device]]\ndev_eui = \"58a0cb0000101235\"\ndecode_order = {order}\n"
        );
        Config::load(&write(dir.path(), "hubgate.toml", &text, 0o600))
    };
    let e = config(r#"["js", "network", "js"]"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with(r#"device[1].decode_order: names "js" twice"#),
        "{e}"
    );
    let e = config("[]").unwrap_err().to_string();
    assert!(
        e.ends_with(
            r#"device[1].decode_order: is empty: name at least one of "codec", "js", "network""#
        ),
        "{e}"
    );
    let cfg = config(r#"["network", "js"]"#).unwrap();
    assert_eq!(
        cfg.devices[1].decode_order,
        [DecodeStep::Network, DecodeStep::Js]
    );
}

fn mqtt_sources(sources: &[(&str, Option<&str>)]) -> Config {
    let mut text =
        "gateway_id = \"gw\"\n[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"udp\"\n".to_string();
    for (url, id) in sources {
        text += &format!("[[source]]\ntype = \"mqtt\"\nurl = \"{url}\"\n");
        if let Some(id) = id {
            text += &format!("client_id = \"{id}\"\n");
        }
    }
    Config::parse(&text).unwrap()
}

/// Each MQTT source has its own client id by default; the first without one keeps the id
/// (and so the broker's session) every MQTT source had before.
#[test]
fn mqtt_sources_have_distinct_default_client_ids() {
    let cfg = mqtt_sources(&[
        ("mqtt://localhost", None),
        ("mqtt://localhost", Some("mine")),
        ("mqtt://localhost", None),
        ("mqtt://other", None),
    ]);
    let ids = cfg.mqtt_client_ids();
    let ids: Vec<Option<&str>> = ids.iter().map(Option::as_deref).collect();
    assert_eq!(
        ids,
        [
            None,
            Some("hubgate-gw"),
            Some("mine"),
            Some("hubgate-gw-2"),
            Some("hubgate-gw-3")
        ]
    );
    let mut cfg = cfg;
    cfg.resolve(Path::new(".")).unwrap();
}

/// Two MQTT sources with one client id on one broker are refused, whether the id is given or
/// a default; on different brokers they are fine.
#[test]
fn one_client_id_twice_on_one_broker_is_refused() {
    let refused = |sources: &[(&str, Option<&str>)]| {
        mqtt_sources(sources).resolve(Path::new(".")).unwrap_err()
    };
    let (key, reason) = refused(&[
        ("mqtt://localhost", Some("a")),
        ("mqtt://LOCALHOST:1883", Some("a")),
    ]);
    assert_eq!(key, "source[2].client_id");
    assert_eq!(
        reason,
        "client id \"a\" is source[1]'s too, on the same broker localhost:1883: give each MQTT source its own client_id"
    );
    let (key, _) = refused(&[
        ("mqtt://localhost", None),
        ("mqtt://localhost", Some("hubgate-gw")),
    ]);
    assert_eq!(key, "source[2].client_id");
    mqtt_sources(&[
        ("mqtt://localhost", Some("a")),
        ("mqtt://localhost:1884", Some("a")),
        ("mqtts://localhost", Some("a")),
    ])
    .resolve(Path::new("."))
    .unwrap();
}

/// One broker on this machine named two ways (`localhost`, `127.0.0.1`, `[::1]`) with one
/// client id: the two sessions would take each other over at every connect.
#[test]
fn one_client_id_on_two_names_of_one_local_broker_is_refused() {
    for other in ["mqtt://127.0.0.1:1883", "mqtt://[::1]"] {
        let (key, reason) = mqtt_sources(&[("mqtt://localhost", Some("a")), (other, Some("a"))])
            .resolve(Path::new("."))
            .unwrap_err();
        assert_eq!(key, "source[2].client_id", "{other}");
        assert!(reason.contains("same broker localhost:1883"), "{reason}");
    }
    mqtt_sources(&[
        ("mqtt://127.0.0.1", Some("a")),
        ("mqtt://broker.example", Some("a")),
    ])
    .resolve(Path::new("."))
    .unwrap();
}

/// A topic filter the broker would refuse is refused at load, not retried at every connect.
#[test]
fn an_invalid_topic_filter_is_refused() {
    for topic in ["", "a/#/b", "a+/b", "a/#x"] {
        let text = format!("[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://x\"\ntopic = \"{topic}\"\n");
        let (key, reason) = Config::parse(&text)
            .unwrap()
            .resolve(Path::new("."))
            .unwrap_err();
        assert_eq!(key, "source[0].topic", "{topic}");
        assert!(reason.contains("not an MQTT topic filter"), "{reason}");
    }
    let text = "[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://x\"\ntopic = \"a/+/b/#\"\n";
    Config::parse(text)
        .unwrap()
        .resolve(Path::new("."))
        .unwrap();
}

/// A topic with a NUL, or so long that its SUBSCRIBE is over the largest packet hubgate sends
/// (which rumqttc would refuse at every connect), is refused with the reason, as a filter read
/// back from the session file is; the longest one is taken.
#[test]
fn a_topic_filter_mqtt_cannot_carry_is_refused() {
    let resolved = |topic: &str| {
        let text = format!("[sink]\ntype = \"stdout\"\n[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://x\"\ntopic = \"{topic}\"\n");
        Config::parse(&text).unwrap().resolve(Path::new("."))
    };
    let (key, reason) = resolved("a/\\u0000/b").unwrap_err();
    assert_eq!(key, "source[0].topic");
    assert_eq!(
        reason,
        "\"a/\\0/b\" is not an MQTT topic filter (it holds a NUL character, which MQTT does not allow)"
    );
    let (key, reason) = resolved(&"x".repeat(65528)).unwrap_err();
    assert_eq!(key, "source[0].topic");
    assert_eq!(
        reason,
        format!(
            "\"{}… (65408 more bytes)\" is not an MQTT topic filter (it is 65528 bytes long: its SUBSCRIBE would be 65537 bytes, over the 65536 hubgate sends in one packet)",
            "x".repeat(120)
        )
    );
    resolved(&"x".repeat(65527)).unwrap();
}

/// A config whose buffer can keep nothing is refused, not run: `max_age = "0s"` (other
/// periods read "0s" as off) would expire every buffered record the first time the drain saw
/// it, after its source was acknowledged; a `max_bytes` under 1 MiB (0, "0.5B", a bare 256
/// meant as MiB) would drop every record that must spill; an empty path is none; and a
/// second UDP source on the first one's address would fail the start.
#[test]
fn a_config_that_keeps_nothing_or_cannot_start_is_refused() {
    let accepted: Vec<&str> = [
        ("[buffer]\nmax_age = \"0s\"\n", "buffer.max_age"),
        ("[buffer]\nmax_bytes = 0\n", "buffer.max_bytes"),
        ("[buffer]\nmax_bytes = \"0.5B\"\n", "buffer.max_bytes"),
        ("[buffer]\nmax_bytes = 256\n", "buffer.max_bytes"),
        ("[buffer]\npath = \"\"\n", "buffer.path"),
        ("[[source]]\ntype = \"udp\"\n", "source[1].listen"),
    ]
    .into_iter()
    .filter(|(extra, key)| {
        let text = format!("[[source]]\ntype = \"udp\"\n[sink]\ntype = \"stdout\"\n{extra}");
        let refused = Config::parse(&text).and_then(|mut cfg| cfg.resolve(Path::new(".")));
        refused.as_ref().map_err(|(k, _)| k.as_str()) != Err(*key)
    })
    .map(|(extra, _)| extra)
    .collect();
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
}

/// A value of the wrong sign, one past TOML's integers, or a duration past 100 years names its
/// key and says what is wrong, instead of serde's "untagged enum Size" or the key "(parse)";
/// so does a value past an integer in the second of two `[[source]]` tables.
#[test]
fn size_and_integer_errors_name_the_key_and_the_problem() {
    let base = "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"stdout\"\n";
    let errors: Vec<(String, String)> = [
        ("[buffer]\nmax_bytes = -1\n", "buffer.max_bytes", "cannot be negative"),
        ("[record]\ndedup_window = 18446744073709551615\n", "record.dedup_window", "(line 6)"),
        ("[buffer]\nmax_age = \"200years\"\n", "buffer.max_age", "100 years"),
        ("[codecs]\nquarantine = \"200years\"\n", "codecs.quarantine", "100 years"),
        (
            "[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:1701\"\nrcvbuf = 99999999999999999999\n",
            "source[1].rcvbuf",
            "(line 8)",
        ),
    ]
    .iter()
    .map(|(extra, key, says)| {
        let (k, reason) = Config::parse(&format!("{base}{extra}")).unwrap_err();
        (k == *key && reason.contains(says)).then_some(()).ok_or((k, reason))
    })
    .filter_map(Result::err)
    .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// A recType no hub is mapped for goes to the hub named like it: one that cannot be a hub's
/// name is refused by `check` (its records would wait parked until `max_age`), unless mapped.
#[test]
fn a_rec_type_that_cannot_name_its_hub_is_refused_unless_mapped() {
    let base = "[[source]]\ntype = \"udp\"\n[record]\npacked_rec_type = \"io.microshare lorawan\"\n[sink]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n";
    let resolve = |text: &str| Config::parse(text).and_then(|mut c| c.resolve(Path::new(".")));
    let (key, why) = resolve(base).unwrap_err();
    assert_eq!(key, "record.packed_rec_type");
    assert!(
        why.contains("\"io.microshare lorawan\"") && why.contains("[sink.topics]"),
        "{why}"
    );
    let mapped = format!("{base}[sink.topics]\n\"io.microshare lorawan\" = \"packed\"\n");
    assert!(resolve(&mapped).is_ok());
}

/// Two serial sources on one device, named alike or one by a link to it, are refused: the
/// port is opened exclusively, so the second could never read. Two devices are fine.
#[test]
fn one_serial_device_twice_is_refused_and_two_names_of_one_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let tty = dir.path().join("ttyUSB0");
    std::fs::write(&tty, "").unwrap();
    let by_id = dir.path().join("usb-FTDI_radio-if00-port0");
    std::os::unix::fs::symlink(&tty, &by_id).unwrap();
    let resolve = |devices: &[&Path]| {
        let mut text = String::from("[sink]\ntype = \"stdout\"\n");
        for d in devices {
            text += &format!(
                "[[source]]\ntype = \"serial\"\ndevice = \"{}\"\nframing = \"slip\"\n",
                d.display()
            );
        }
        let mut cfg = Config::parse(&text).unwrap();
        cfg.resolve(Path::new(".")).map(|()| cfg)
    };
    let (key, reason) = resolve(&[&tty, &dir.path().join("ttyUSB1"), &tty]).unwrap_err();
    assert_eq!(key, "source[2].device");
    assert_eq!(
        reason,
        format!(
            "{} is source[0]'s device too: one serial source per device",
            tty.display()
        )
    );
    let missing = dir.path().join("ttyACM0");
    let (key, _) = resolve(&[&missing, &missing]).unwrap_err();
    assert_eq!(key, "source[1].device");
    assert!(resolve(&[&tty, &missing]).unwrap().warnings().is_empty());
    // A link and the device it leads to at this boot: the config stands (the next boot may
    // name the devices otherwise), with a warning naming both.
    let warnings = resolve(&[&tty, &by_id]).unwrap().warnings();
    assert_eq!(
        warnings,
        [format!(
            "source[1].device {} and source[0].device {} are one device now ({}): a port opens for one source only, so the other reads nothing while this lasts",
            by_id.display(),
            tty.display(),
            tty.canonicalize().unwrap().display()
        )]
    );
}

/// A section is a table: an array of its keys in their order, which serde's derived visitor
/// would take, is refused as any other value of the wrong type.
#[test]
fn a_section_written_as_an_array_of_its_keys_is_refused() {
    for (text, key, reason) in [
        (
            "buffer = [\"/tmp/b\"]\n",
            "buffer",
            "invalid type: sequence, expected struct BufferConfig (line 1)",
        ),
        (
            "device = [[\"0011223344556677\", \"EM300-TH\"]]\n",
            "device[0]",
            "invalid type: sequence, expected struct DeviceConfig (line 1)",
        ),
    ] {
        let (k, r) = Config::parse(text).unwrap_err();
        assert_eq!((k.as_str(), r.as_str()), (key, reason), "{text}");
    }
}

/// `sasl_mechanism` takes the three mechanisms of a Kafka login; another (a misspelling) is
/// refused by `check`, naming the key, rather than by the producer at start.
#[test]
fn an_unknown_sasl_mechanism_is_refused_naming_its_key() {
    let config = |mechanism: &str| {
        Config::parse(&format!(
            "[sink]\ntype = \"kafka\"\nbrokers = \"x:9093\"\nsecurity_protocol = \"sasl_ssl\"\n\
             sasl_mechanism = \"{mechanism}\"\nsasl_username = \"u\"\nsasl_password = \"p\"\n"
        ))
    };
    for known in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        assert!(config(known).is_ok(), "{known}");
    }
    let (key, e) = config("scram-sha-256").unwrap_err();
    assert_eq!(key, "sink.sasl_mechanism");
    assert!(
        e.starts_with(
            "unknown variant `scram-sha-256`, expected one of `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`"
        ),
        "{e}"
    );
}

/// The mask `check --print` shows for an inline secret, given back as a secret, is refused
/// by its key path, not taken as the password `***`.
#[test]
fn the_mask_given_back_as_a_secret_is_refused() {
    for (text, key) in [
        (
            "[sink]\ntype = \"kafka\"\nbrokers = \"x:9093\"\nsasl_username = \"u\"\nsasl_password = \"***\"\n",
            "sink.sasl_password",
        ),
        (
            "[sink]\ntype = \"eventhubs\"\nconnection_string = \"***\"\n",
            "sink.connection_string",
        ),
    ] {
        let (k, reason) = Config::parse(text).unwrap_err();
        assert_eq!(k, key, "{text}");
        assert!(reason.starts_with("\"***\" stands for a secret"), "{reason}");
    }
    let mut cfg = Config::parse(
        "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"kafka\"\nbrokers = \"x:9093\"\n[sink.properties]\n\"ssl.key.password\" = \"***\"\n",
    )
    .unwrap();
    let (k, reason) = cfg.resolve(Path::new(".")).unwrap_err();
    assert_eq!(k, "sink.properties.\"ssl.key.password\"");
    assert!(
        reason.starts_with("\"***\" stands for a secret"),
        "{reason}"
    );
}

/// Every librdkafka property that holds a secret is one `check --print` masks, and only
/// those: a private key or an OAuth config printed in clear is a leaked key.
#[test]
fn every_secret_sink_property_is_masked_and_no_other() {
    for (key, secret) in [
        ("sasl.password", true),
        ("ssl.key.password", true),
        ("ssl.key.pem", true),
        ("sasl.oauthbearer.client.secret", true),
        ("sasl.oauthbearer.config", true),
        ("sasl.oauthbearer.assertion.private.key.pem", true),
        ("sasl.oauthbearer.assertion.private.key.passphrase", true),
        ("ssl.certificate.pem", false),
        ("sasl.username", false),
        ("linger.ms", false),
    ] {
        assert_eq!(super::sink::Properties::is_secret(key), secret, "{key}");
    }
}

/// A secret given where its file goes (pasted in, or the `${VAR}` holding it) is the path
/// that cannot be read: the error names the key and never that path, whether it was written
/// relative (resolved from the config's directory) or came from the environment. A path
/// that looks like one is named.
#[test]
fn a_secret_given_as_its_file_path_is_not_named() {
    std::env::set_var("HUBGATE_TEST_PW_AS_PATH", "Tr0ub4dor-3-horse");
    let dir = tempfile::tempdir().unwrap();
    let kafka = "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"kafka\"\nbrokers = \"x:9093\"\nsecurity_protocol = \"sasl_ssl\"\nsasl_username = \"u\"\n";
    for (written, secret) in [
        ("${HUBGATE_TEST_PW_AS_PATH}", "Tr0ub4dor"),
        ("correct-horse-battery", "correct-horse"),
    ] {
        let mut cfg =
            Config::parse(&format!("{kafka}sasl_password_file = \"{written}\"\n")).unwrap();
        let (key, reason) = cfg.resolve(dir.path()).unwrap_err();
        assert_eq!(key, "sink.sasl_password_file");
        assert!(
            reason.starts_with("cannot read the file it names: "),
            "{reason}"
        );
        assert!(!reason.contains(secret), "{reason}");
    }
    // A path that looks like one is named, beside relative ones that are not.
    let missing = dir.path().join("missing.secret");
    let text = format!(
        "[buffer]\npath = \"buffer\"\n{kafka}sasl_password_file = \"{}\"\n",
        missing.display()
    );
    let (_, reason) = Config::parse(&text)
        .unwrap()
        .resolve(dir.path())
        .unwrap_err();
    assert!(
        reason.starts_with(&format!("cannot read secret file {}: ", missing.display())),
        "{reason}"
    );
}
