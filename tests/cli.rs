//! The command line contract (docs/design.md): exit codes, one-line errors, the demo.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;

use support::agent::changed;
use support::listing::{changed_but_sleds, listing};
use support::{buffer_cmd, codec_files, tmpfs};

fn hubgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run hubgate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

#[test]
fn decode_prints_the_unpacked_record() {
    let o = hubgate(&[
        "decode",
        "--codec",
        "browan-tbhh100",
        "--fport",
        "103",
        "088C2E2DFFFFFFFF",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["recType"], "io.microshare.environment.unpacked");
    assert_eq!(v["data"]["temperature"][0]["value"], 14.0);
    assert_eq!(v["data"]["temperature"][0]["unit"], "°C");
    assert_eq!(v["data"]["humidity"][0]["value"], 45.0);
    assert_eq!(v["data"]["humidity"][0]["unit"], "%RH");
    assert_eq!(v["data"]["device_health"]["voltage"][0]["value"], 3.7);
}

#[test]
fn decode_errors_exit_2_with_one_line() {
    let cases: [&[&str]; 4] = [
        &["decode", "--codec", "browan-tbhh100", "08zz"],
        &["decode", "--codec", "no-such-codec", "00"],
        &[
            "decode",
            "--codec",
            "browan-tbhh100",
            "--fport",
            "103",
            "088c",
        ],
        &["decode", "--codec", "cayenne-lpp", "01ff00"],
    ];
    for args in cases {
        let o = hubgate(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("hubgate: "), "{err}");
        assert!(o.stdout.is_empty());
    }
    assert!(stderr(&hubgate(cases[0])).contains("bad hex"));
    assert!(stderr(&hubgate(cases[1])).contains("unknown codec \"no-such-codec\""));
    assert!(stderr(&hubgate(cases[2])).contains("too short"));
    assert!(stderr(&hubgate(cases[3])).contains("offset"));
}

#[test]
fn codecs_lists_ids_with_rec_types() {
    let o = hubgate(&["codecs"]);
    assert!(o.status.success());
    let out = stdout(&o);
    for line in [
        ("browan-tbhh100", "io.microshare.environment.unpacked"),
        ("browan-tbms100", "io.microshare.motion.unpacked"),
        ("browan-tbdw100", "io.microshare.openclose.unpacked"),
        ("browan-tbwl100", "io.microshare.leak.unpacked"),
        ("cayenne-lpp", "io.microshare.environment.unpacked"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().take(2).collect::<Vec<_>>() == [line.0, line.1]),
            "{line:?} missing from:\n{out}"
        );
    }
}

#[test]
fn check_accepts_the_demo_and_the_template() {
    let o = hubgate(&["check", "-c", &repo("config/demo.toml")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("hubgate.toml");
    std::fs::write(&template, hubgate(&["configfile"]).stdout).unwrap();
    let o = hubgate(&["check", "-c", template.to_str().unwrap()]);
    assert!(o.status.success(), "template fails check: {}", stderr(&o));
}

/// `check --print` prints TOML that `check` accepts again and prints the same way: the
/// board's values and every default filled in, secrets from files as their `*_file` keys,
/// `${ENV}` as written. Nothing secret is printed.
#[test]
fn check_print_round_trips_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.display().to_string()
    };
    let cs = secret(
        "eventhubs.secret",
        "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0Cg==\n",
    );
    let app = secret("app.key", "000102030405060708090A0B0C0D0E0F\n");
    let mqtt = secret("mqtt.password", "hunter2\n");
    let replay = secret("up.jsonl", "");
    let config = format!(
        r#"board = "rpi4"
gateway_id = "lobby"
[buffer]
path = "{buffer}"
max_age = "36h"
[[source]]
type = "mqtt"
url = "mqtts://broker.example:8883"
username = "hubgate"
password_file = "{mqtt}"
[[source]]
type = "udp"
listen = "127.0.0.1:1700"
gateways = ["b827ebfffe000001"]
[[source]]
type = "serial"
framing = "lines-hex"
prefix = "radio_rx"
stop_bits = 2
[[source]]
type = "replay"
path = "{replay}"
[[device]]
dev_eui = "58-A0-CB-00-00-10-12-34"
codec = "browan-tbhh100"
dev_addr = "26011BDA"
nwk_s_key = "${{HUBGATE_TEST_NWKSKEY}}"
app_s_key_file = "{app}"
[sink]
type = "eventhubs"
connection_string_file = "{cs}"
compression = "gzip"
[sink.hubs]
"io.microshare.environment.unpacked" = "env"
[sink.properties]
"linger.ms" = "20"
"#,
        buffer = d.join("buffer").display(),
    );
    let check = |text: &str, name: &str| {
        let file = d.join(name);
        std::fs::write(&file, text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["check", "--print", "-c", file.to_str().unwrap()])
            .env("HUBGATE_TEST_NWKSKEY", "2B7E151628AED2A6ABF7158809CF4F3C")
            .output()
            .unwrap()
    };
    let o = check(&config, "site.toml");
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    assert!(
        stderr(&o).contains(": OK (4 source(s), 1 device(s))"),
        "{}",
        stderr(&o)
    );
    for line in [
        "max_age = \"1day 12h\"",
        "max_bytes = \"1GiB\"",
        "device = \"/dev/serial0\"",
        "stop_bits = 2",
        "gateways = [\"B827EBFFFE000001\"]",
        "dev_eui = \"58a0cb0000101234\"",
        "dev_addr = \"26011bda\"",
        "nwk_s_key = \"${HUBGATE_TEST_NWKSKEY}\"",
        &format!("app_s_key_file = \"{app}\""),
        &format!("password_file = \"{mqtt}\""),
        &format!("connection_string_file = \"{cs}\""),
        "compression = \"gzip\"",
        "provisioning = \"auto\"",
        "partitions = 4",
        "\"linger.ms\" = \"20\"",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "no {line:?} in\n{printed}"
        );
    }
    for secret in ["c2VjcmV0", "hunter2", "2B7E1516", "00010203"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    let again = check(&printed, "printed.toml");
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), printed);
}

/// A secret written inline is printed as `***`, and `***` given back where a secret belongs
/// is refused by name, not taken as the password "***".
#[test]
fn check_print_masks_inline_secrets_and_refuses_the_mask() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inline.toml");
    std::fs::write(
        &file,
        "[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1\"\nusername = \"u\"\npassword = \"hunter2\"\n\
         [sink]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9093\"\nsasl_username = \"u\"\nsasl_password = \"pa55\"\n\
         [sink.properties]\n\"ssl.key.password\" = \"k3y\"\n",
    )
    .unwrap();
    let o = hubgate(&["check", "--print", "-c", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    for line in [
        "password = \"***\"",
        "sasl_password = \"***\"",
        "\"ssl.key.password\" = \"***\"",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "no {line:?} in\n{printed}"
        );
    }
    for secret in ["hunter2", "pa55", "k3y"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    // Each mask given back is refused by its key path.
    let secrets = [
        ("source[0].password", "password", "\"hunter2\""),
        ("sink.sasl_password", "sasl_password", "\"pa55\""),
        (
            "sink.properties.\"ssl.key.password\"",
            "\"ssl.key.password\"",
            "\"k3y\"",
        ),
    ];
    let restore = |text: &str, (_, name, secret): (&str, &str, &str)| {
        changed(
            text,
            &[(
                &format!("\n{name} = \"***\""),
                &format!("\n{name} = {secret}"),
            )],
        )
    };
    for (i, (key, _, _)) in secrets.iter().enumerate() {
        let others = secrets.iter().enumerate().filter(|(j, _)| *j != i);
        let text = others.fold(printed.clone(), |t, (_, s)| restore(&t, *s));
        std::fs::write(&file, &text).unwrap();
        let o = hubgate(&["check", "-c", file.to_str().unwrap()]);
        assert!(!o.status.success(), "{key}: the mask was taken");
        let err = stderr(&o);
        assert!(
            err.contains(&format!(": {key}: \"***\" stands for a secret")),
            "{err}"
        );
    }
    let text = secrets.iter().fold(printed, |t, s| restore(&t, *s));
    std::fs::write(&file, &text).unwrap();
    let o = hubgate(&["check", "-c", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `hubgate check` warns about a mapping table without `rec_type` whose fields map into
/// more than one recType, once though it is a codec's own table and devices' `mapping` too,
/// naming the file and the recTypes; a table with `rec_type` is not warned about.
#[test]
fn check_warns_about_a_table_that_leaves_the_rec_type_to_each_frame() {
    let dir = tempfile::tempdir().unwrap();
    let codecs = dir.path().join("codecs");
    codec_files::create_dir(&codecs);
    codec_files::copy_example("example-th.js", &codecs.join("mixed.js"));
    codec_files::write(
        codecs.join("mixed.toml"),
        "[fields]\nmotion = { field = \"motion_count\" }\nt = { field = \"temperature\" }\n",
    );
    codec_files::write(
        codecs.join("pinned.toml"),
        "rec_type = \"io.microshare.environment.unpacked\"\n[fields]\n\
         motion = { field = \"motion_count\" }\nt = { field = \"temperature\" }\n",
    );
    let config = dir.path().join("hubgate.toml");
    std::fs::write(
        &config,
        "[codecs]\ndir = \"codecs\"\n[sink]\ntype = \"stdout\"\n\
         [[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:1700\"\n\
         [[device]]\ndev_eui = \"0000000000000001\"\njs_codec = \"mixed\"\n\
         [[device]]\ndev_eui = \"0000000000000002\"\nmapping = \"mixed\"\n\
         [[device]]\ndev_eui = \"0000000000000003\"\nmapping = \"pinned\"\n",
    )
    .unwrap();
    let o = hubgate(&["check", "-c", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("mapping table"))
        .collect();
    let line = format!(
        "mapping table {}: no rec_type, and its fields map into io.microshare.motion.unpacked, \
         io.microshare.environment.unpacked: each record takes the first of these its frame has a \
         field of, so one device's records can change hub from frame to frame; set rec_type",
        codecs.join("mixed.toml").display()
    );
    assert_eq!(warned.len(), 1, "{err}");
    assert!(warned[0].ends_with(&line), "{err}");
}

/// Each bad config exits non-zero with one line naming the file and the key.
/// `check` says what `run` warns about at every start: here a Kafka sink without TLS.
#[test]
fn check_prints_the_warnings_run_logs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("insecure.toml");
    std::fs::write(
        &file,
        "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"kafka\"\nbrokers = \"x:9092\"\n\
         security_protocol = \"plaintext\"\ninsecure = true\n",
    )
    .unwrap();
    let o = hubgate(&["check", "-c", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim(),
        "hubgate: warning: sink.insecure = true: sink.security_protocol: no TLS: everything, \
         the login included, goes over the network in clear text"
    );
}

#[test]
fn check_names_file_and_key_of_each_error() {
    let dir = tempfile::tempdir().unwrap();
    let replay = dir.path().join("up.jsonl");
    std::fs::write(&replay, "").unwrap();
    let source = format!(
        "[[source]]\ntype = \"replay\"\npath = \"{}\"\n",
        replay.display()
    );
    let cases = [
        ("[sink]\ntype = \"stdout\"\n[bufer]\npath = \"/tmp/x\"\n", "bufer", "unknown field"),
        ("[sink]\ntype = \"stdout\"\n[buffer]\nmax_age = 5\n", "buffer.max_age", "invalid type"),
        ("[sink]\ntype = \"stdout\"\n[buffer]\nmax_age = \"5 fortnights\"\n", "buffer.max_age", "bad duration"),
        ("[sink]\ntype = \"stdout\"\n[buffer]\nmax_bytes = \"1 parsec\"\n", "buffer.max_bytes", "bad size"),
        ("[sink]\ntype = \"stdout\"\n[[device]]\ndev_eui = \"0011223344556677\"\ncodec = \"acme-x\"\n", "device[0].codec", "unknown codec"),
        ("[sink]\ntype = \"stdout\"\n[[device]]\ndev_eui = \"0011\"\n", "device[0].dev_eui", "bad DevEUI"),
        ("[sink]\ntype = \"eventhubs\"\nconnection_string_file = \"/nonexistent/eh.secret\"\n", "sink.connection_string_file", "cannot read secret file"),
        ("[sink]\ntype = \"eventhubs\"\nconnection_string = \"SharedAccessSignature sr=x&sig=SECRETSIG&se=1\"\n", "sink.connection_string", "SharedAccessSignature"),
        ("[sink]\ntype = \"stdout\"\nprety = true\n", "sink.prety", "unknown field"),
        ("[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1\"\nmax_message = \"32MiB\"\n[sink]\ntype = \"stdout\"\n", "source[1].max_message", "16 MiB"),
    ];
    for (i, (body, key, what)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, format!("{source}{body}")).unwrap();
        let o = hubgate(&["check", "-c", file.to_str().unwrap()]);
        let err = stderr(&o);
        assert!(!o.status.success(), "case {i} passed check");
        assert_eq!(err.trim_end().lines().count(), 1, "case {i}: {err}");
        assert!(
            err.contains(&file.display().to_string()),
            "case {i} lacks the file: {err}"
        );
        assert!(
            err.contains(&format!(": {key}: ")),
            "case {i} lacks key {key}: {err}"
        );
        assert!(err.contains(what), "case {i} lacks {what:?}: {err}");
        assert!(
            !err.contains("SECRETSIG"),
            "case {i} leaks the secret: {err}"
        );
    }
}

/// A TOML error on a line inside a value written over several lines (a multi-line string, an
/// array) is put on that value's key: the text before a `=` on such a line is the value's, a
/// secret's base64 padding or a connection string's part, and never shown as a key.
#[test]
fn check_names_the_key_of_a_value_over_several_lines_not_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let source = "[[source]]\ntype = \"udp\"\n";
    let cases = [
        (
            "[sink]\ntype = \"eventhubs\"\nconnection_string = \"\"\"Endpoint=sb://a.servicebus.windows.net/;\n\
             SharedAccessKeyName=k;\nSECRETKEYMATERIALc2VjcmV0=;\\q\"\"\"\n",
            "sink.connection_string",
            "(line 7)",
        ),
        (
            "[sink]\ntype = \"kafka\"\nbrokers = \"x:9093\"\n[sink.properties]\n\
             \"ssl.key.pem\" = \"\"\"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n\
             SECRETKEYMATERIALd4t4==\u{1}\n-----END PRIVATE KEY-----\"\"\"\n",
            "sink.properties.\"ssl.key.pem\"",
            "(line 9)",
        ),
        (
            "[sink]\ntype = \"kafka\"\nbrokers = \"x:9093\"\n[sink.properties]\n\
             note = '''one \"\"\" and '' inside'''\nlist = [\n  \"a\",\n  SECRETKEYMATERIAL=1,\n]\n",
            "sink.properties.list",
            "(line 10)",
        ),
        // No key at all: the text before `=` is no TOML key.
        (
            "[sink]\ntype = \"stdout\"\n\"SECRETKEYMATERIAL=x = 1\n",
            "(parse)",
            "(line 5)",
        ),
        // A line inside a value that starts with `[` is the value's text, not a table header.
        (
            "[sink]\ntype = \"eventhubs\"\nconnection_string = \"\"\"Endpoint=sb://x.servicebus.windows.net/;\n\
             [SECRETKEYMATERIAL]\nSharedAccessKeyName=k;SharedAccessKey=abc\"\"\"\nbogus = \n",
            "sink.bogus",
            "(line 8)",
        ),
        (
            "[sink]\ntype = \"stdout\"\nx = [\n [\"SECRETKEYMATERIAL=1\"],\n]\nbad = \n",
            "sink.bad",
            "(line 8)",
        ),
        // Nor is a `[[source]]` in a string another source.
        (
            "note = \"\"\"\n[[source]]\n\"\"\"\n[[source]]\ntype = \"udp\"\nbad = \n",
            "source[1].bad",
            "(line 8)",
        ),
        // An error inside a tagged table is put on the line of its key, not on one in a value.
        (
            "[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://x\"\nusername = \"u\"\npassword = \"\"\"\n\
             [[source]]\nlisten = 1\n\"\"\"\n[[source]]\ntype = \"udp\"\nlisten = 5\n",
            "source[2].listen",
            "(line 13)",
        ),
    ];
    for (i, (body, key, line)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("multi{i}.toml"));
        std::fs::write(&file, format!("{source}{body}")).unwrap();
        let o = hubgate(&["check", "-c", file.to_str().unwrap()]);
        let err = stderr(&o);
        assert!(!o.status.success(), "case {i} passed check");
        assert!(
            err.starts_with(&format!("hubgate: {}: {key}: ", file.display())),
            "case {i} lacks key {key}: {err}"
        );
        assert!(
            err.trim_end().ends_with(line),
            "case {i} lacks {line}: {err}"
        );
        assert!(
            !err.contains("SECRETKEYMATERIAL"),
            "case {i} leaks the secret: {err}"
        );
    }
}

/// A Kafka SASL setting with a security protocol that sends none (`ssl`, the default) is
/// never sent: warned about, naming the setting's key, never its value, and the protocol
/// that sends it; the config still passes, as a broker may take TLS without a login. With
/// that protocol the same login passes without the warning.
#[test]
fn check_warns_of_a_kafka_login_its_protocol_never_sends() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("kafka.password");
    std::fs::write(&secret, "kafka-unsent-pw").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sink =
        "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9093\"\n";
    let login = format!("sasl_password_file = \"{}\"\n", secret.display());
    let cases = [
        (
            format!("{sink}sasl_username = \"u\"\n{login}"),
            "sink.sasl_username: never sent: security_protocol is \"ssl\" (the default), which has \
             no SASL login, so the sink connects without it; set security_protocol = \
             \"sasl_ssl\" to log in, or remove the login",
        ),
        (
            format!("{sink}security_protocol = \"plaintext\"\ninsecure = true\n{login}"),
            "sink.sasl_password_file: never sent: security_protocol is \"plaintext\", which has \
             no SASL login, so the sink connects without it; set security_protocol = \
             \"sasl_plaintext\" to log in, or remove the login",
        ),
        (
            format!("{sink}{login}[sink.properties]\n\"security.protocol\" = \"ssl\"\n"),
            "sink.sasl_password_file: never sent: [sink.properties] \"security.protocol\" is \"ssl\", \
             which has no SASL login, so the sink connects without it; set \"security.protocol\" = \
             \"sasl_ssl\" there to log in, or remove the login",
        ),
        (
            format!("{sink}[sink.properties]\n\"sasl.password\" = \"kafka-unsent-pw\"\n"),
            "sink.properties.\"sasl.password\": never sent: security_protocol is \"ssl\" (the \
             default), which has no SASL login, so the sink connects without it; set \
             security_protocol = \"sasl_ssl\" to log in, or remove the login",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("unsent{i}.toml"));
        std::fs::write(&file, body).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let o = hubgate(&["check", "-c", file.to_str().unwrap()]);
        let err = stderr(&o);
        assert!(o.status.success(), "case {i} failed check: {err}");
        let warnings: Vec<&str> = err.lines().filter(|l| l.contains("never sent")).collect();
        assert_eq!(warnings, [format!("hubgate: warning: {want}")], "case {i}");
        assert!(!err.contains("kafka-unsent-pw"), "case {i} leaks: {err}");
    }
    // The protocol in [sink.properties] is the one librdkafka uses.
    for (i, protocol) in [
        "security_protocol = \"sasl_ssl\"\n",
        "[sink.properties]\n\"security.protocol\" = \"SASL_SSL\"\n",
    ]
    .iter()
    .enumerate()
    {
        let file = dir.path().join(format!("sent{i}.toml"));
        std::fs::write(
            &file,
            format!("{sink}sasl_username = \"u\"\n{login}{protocol}"),
        )
        .unwrap();
        let o = hubgate(&["check", "-c", file.to_str().unwrap()]);
        assert!(o.status.success(), "case {i}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("never sent"),
            "case {i}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn demo_prints_decoded_records_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let demo = std::fs::read_to_string(repo("config/demo.toml")).unwrap();
    let config = dir.path().join("demo.toml");
    let demo = changed(
        &demo,
        &[
            (
                "/tmp/hubgate-demo-buffer",
                &dir.path().join("buffer").display().to_string(),
            ),
            ("demo-uplinks.jsonl", &repo("config/demo-uplinks.jsonl")),
            ("interval = \"100ms\"", "interval = \"0s\""),
        ],
    );
    std::fs::write(&config, demo).unwrap();
    let o = hubgate(&["run", "-c", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let records: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let lines = std::fs::read_to_string(repo("config/demo-uplinks.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(records.len(), lines, "one record per replayed uplink");
    let first = &records[0];
    assert_eq!(first["recType"], "io.microshare.environment.unpacked");
    assert_eq!(first["obj"]["data"]["temperature"][0]["value"], 14.0);
    let packed = records
        .iter()
        .filter(|r| r["recType"] == "io.microshare.lorawan.packed")
        .count();
    assert_eq!(packed, 3, "the demo's unknown sensor goes out packed");
}

/// `hubgate codecs` lists every codec with its example (the table in `src/codec`), and
/// `hubgate decode` decodes each example with the listed recType: a record a line, one per
/// history time after the live one (EM300-SLD's example is a live reading and a history
/// record).
#[test]
fn every_listed_codec_decodes_its_example_with_its_rec_type() {
    let empty = tempfile::tempdir().unwrap();
    let o = hubgate(&["codecs", "--dir", empty.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = stdout(&o);
    // A directory that cannot be listed is an error when named, after the built-ins.
    let missing = hubgate(&["codecs", "--dir", "/nonexistent"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(stdout(&missing), listing);
    assert_eq!(
        stderr(&missing),
        "hubgate: codec directory /nonexistent: No such file or directory (os error 2)\n"
    );
    let mut ids = Vec::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [id, rec_type, fport, hex] = cols[..] else {
            panic!("not `id recType fport hex`: {line:?}");
        };
        let o = hubgate(&["decode", "--codec", id, "--fport", fport, hex]);
        assert!(o.status.success(), "{id}: {}", stderr(&o));
        let records: Vec<serde_json::Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let times: Vec<&serde_json::Value> = records.iter().map(|v| &v["data"]["time"]).collect();
        let history = usize::from(id == "milesight-em300-sld");
        assert_eq!(records.len(), 1 + history, "{id}: {times:?}");
        for v in &records {
            assert_eq!(v["recType"], rec_type, "{id}");
            assert_eq!(v["data"]["unpacker"]["class"], id);
            assert!(v["data"].get("history").is_none(), "{id}");
        }
        if history > 0 {
            assert_ne!(records[0]["id"], records[1]["id"]);
            assert_ne!(times[0], times[1]);
        }
        ids.push(id.to_string());
    }
    let all: Vec<&str> = hubgate::codec::Codec::ALL.iter().map(|c| c.id()).collect();
    assert_eq!(ids, all, "one line per codec, in order");
}

/// Run hubgate with its stdout on a pipe whose reader has gone.
///
/// The pipe is close-on-exec: a reader inherited by a program another test starts meanwhile
/// would keep the pipe open, and the write would succeed.
fn closed_output(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::from(writer))
        .output()
        .unwrap()
}

/// `hubgate configfile | head -1`, `hubgate check --print | head`: a reader that goes away
/// ends the command by SIGPIPE, like any other tool, never with a panic.
#[test]
fn a_closed_output_pipe_ends_quietly() {
    let demo = repo("config/demo.toml");
    for args in [
        &["configfile"][..],
        &["codecs"],
        &["check", "--print", "-c", &demo],
    ] {
        let o = closed_output(args);
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?}",
            o.status
        );
    }
}

/// Records `buffer_stats_export_and_purge` puts in the buffer.
const BUFFER_RECORDS: u64 = 10_000;
/// Set to a buffer path, [`fill_a_buffer_for_the_buffer_commands`] fills it.
const FILL_BUFFER: &str = "HUBGATE_TEST_FILL_BUFFER";
/// Set too, every record is made 40 days ago by the clock, which then stepped 40 days (kept
/// in the buffer's state).
const FILL_STEPPED: &str = "HUBGATE_TEST_FILL_STEPPED";
/// The step [`FILL_STEPPED`] keeps, in ms.
const STEP_MS: u64 = 40 * 86_400_000;
/// Set to a number, the buffer is marked with that layout, as the release of that layout
/// marks its own.
const FILL_LAYOUT: &str = "HUBGATE_TEST_FILL_LAYOUT";
/// Set too, sled's log is made to span several of its segments (state entries hubgate
/// never reads), for a test to damage one segment's header.
const FILL_SLED_SEGMENTS: &str = "HUBGATE_TEST_FILL_SLED_SEGMENTS";

/// The user the buffer commands' test gives the buffer to.
const NOBODY: u32 = 65534;

/// `path` and everything under it.
fn walk(path: &Path) -> Vec<PathBuf> {
    let mut all = vec![path.to_path_buf()];
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            all.extend(walk(&entry.unwrap().path()));
        }
    }
    all
}

/// Owner of `path`, not following a symbolic link.
fn owner(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().uid()
}

fn buffer_body(i: u64) -> String {
    format!("{{\"id\":\"r{i}\",\"pad\":\"{}\"}}", "x".repeat(900))
}

/// Not a test of its own: the process in which `buffer_stats_export_and_purge` fills its
/// buffer (does nothing unless [`FILL_BUFFER`] is set). Prints the encoded records' bytes.
#[test]
fn fill_a_buffer_for_the_buffer_commands() {
    use hubgate::buffer::{SledStore, Store};
    let Some(buffer) = std::env::var_os(FILL_BUFFER) else {
        return;
    };
    let stepped = std::env::var_os(FILL_STEPPED).is_some();
    let mut store = SledStore::open(Path::new(&buffer)).unwrap();
    if stepped {
        let step = [BUFFER_RECORDS.to_be_bytes(), STEP_MS.to_be_bytes()].concat();
        store.state_set(b"clock-steps", &step).unwrap();
    }
    let mut bytes = 0;
    for seq in 0..BUFFER_RECORDS {
        let now = hubgate::record::ms_since_epoch(std::time::SystemTime::now());
        // The oldest made before the gateway's clock was set.
        let created_ms = match seq {
            _ if stepped => now - STEP_MS,
            0 => 0,
            _ => now,
        };
        let value = buffer_cmd::stored_record(seq, created_ms, buffer_body(seq));
        bytes += value.len();
        store.insert(seq, value).unwrap();
    }
    for seq in BUFFER_RECORDS..BUFFER_RECORDS + 2 {
        store.dead_letter(seq, vec![7; 100]).unwrap();
    }
    if let Some(layout) = std::env::var_os(FILL_LAYOUT) {
        let layout: u32 = layout.to_str().unwrap().parse().unwrap();
        store.state_set(b"layout", &layout.to_be_bytes()).unwrap();
    }
    if std::env::var_os(FILL_SLED_SEGMENTS).is_some() {
        for i in 0u32..20_000 {
            let key = [&b"test-fill-"[..], &i.to_be_bytes()].concat();
            store.state_set(&key, &[7; 100]).unwrap();
        }
    }
    store.flush().unwrap();
    println!("filled bytes={bytes}");
}

/// The buffer `buffer` filled with [`BUFFER_RECORDS`] records ([`buffer_body`]) and two
/// dead letters; returns the records' encoded bytes.
fn fill_buffer(buffer: &Path) -> usize {
    fill_buffer_with(buffer, &[])
}

/// [`fill_buffer`] with the settings `set` of the fill ([`FILL_STEPPED`], [`FILL_LAYOUT`],
/// [`FILL_SLED_SEGMENTS`]) as (name, value).
fn fill_buffer_with(buffer: &Path, set: &[(&str, &str)]) -> usize {
    // Written by a process of its own: sled lets go of its file lock on a background thread
    // some time after the last handle is dropped (sled issue 1289), and in this process
    // that thread may hold it past the `hubgate` commands' wait.
    let mut fill = Command::new(std::env::current_exe().unwrap());
    fill.args([
        "fill_a_buffer_for_the_buffer_commands",
        "--exact",
        "--nocapture",
    ])
    .env(FILL_BUFFER, buffer)
    .envs(set.iter().copied());
    let child = fill.output().unwrap();
    assert!(child.status.success(), "{}", stderr(&child));
    stdout(&child)
        .lines()
        .find_map(|l| l.strip_prefix("filled bytes="))
        .unwrap_or_else(|| panic!("no byte count in {}", stdout(&child)))
        .parse()
        .unwrap()
}

/// The number on `name`'s line of `hubgate buffer stats`' output `o`.
fn stat(o: &Output, name: &str) -> u64 {
    stdout(o)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name:?} in {}", stdout(o)))
        .parse()
        .unwrap()
}

/// A buffer filled by [`fill_buffer`] in a directory of its own, and a config naming it:
/// (the directory, the buffer, the config's path, the records' bodies in order).
fn filled_buffer() -> (tempfile::TempDir, PathBuf, String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    fill_buffer(&buffer);
    let (_, config) = buffer_cmd::config(dir.path());
    let bodies = (0..BUFFER_RECORDS).map(buffer_body).collect();
    (dir, buffer, config.to_str().unwrap().to_string(), bodies)
}

/// One start of the agent on `buffer` (a replay source of nothing, the stdout sink), which
/// ends once the replay has: what a start does to the buffer, as on a gateway (a database
/// that will not open moved aside). Its config is `start.toml` beside the buffer.
fn start_once(buffer: &Path) -> Output {
    let dir = buffer.parent().unwrap();
    let replay = dir.join("none.jsonl");
    std::fs::write(&replay, "").unwrap();
    let config = dir.join("start.toml");
    std::fs::write(
        &config,
        format!(
            "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"replay\"\npath = \"{}\"\n\
             [sink]\ntype = \"stdout\"\n[metrics]\nlisten = \"off\"\n",
            buffer.display(),
            replay.display()
        ),
    )
    .unwrap();
    let run = support::output_within(
        Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["run", "-c"])
            .arg(&config),
        std::time::Duration::from_secs(60),
    );
    assert!(run.status.success(), "{}", stderr(&run));
    run
}

/// A buffer whose database will not open is left as it is by the `buffer` commands (`stats`
/// fails, saying why, and moves nothing), then moved aside by the agent's start: returns
/// the directory it was moved to.
fn moved_aside_by_a_start(buffer: &Path, cfg: &str) -> PathBuf {
    let stats = hubgate(&["buffer", "stats", "-c", cfg]);
    assert!(!stats.status.success(), "{}", stdout(&stats));
    assert!(
        stderr(&stats).contains("will not open") && stderr(&stats).contains("left as it is"),
        "{}",
        stderr(&stats)
    );
    let aside = || {
        hubgate::buffer::moved_aside(buffer)
            .into_iter()
            .next()
            .map(|(p, _)| p)
    };
    assert_eq!(aside(), None, "moved aside by buffer stats");
    let run = start_once(buffer);
    assert!(stderr(&run).contains("will not open"), "{}", stderr(&run));
    aside().expect("the database moved aside")
}

/// `hubgate buffer stats|export|purge` on a buffer left by an outage: the numbers, every
/// record as one JSON line in order with progress on stderr, and a purge that gives the
/// disk space back.
#[test]
fn buffer_stats_export_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let n = BUFFER_RECORDS;
    let bodies: Vec<String> = (0..n).map(buffer_body).collect();
    let bytes = fill_buffer(&buffer);
    let (_, config) = buffer_cmd::config(dir.path());
    let cfg = config.to_str().unwrap();
    // SAFETY: geteuid has no failure mode.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        // The agent's buffer, as under `User=hubgate`; the commands are run as root.
        for p in walk(&buffer) {
            std::os::unix::fs::lchown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let stats = hubgate(&["buffer", "stats", "-c", cfg]);
    assert!(stats.status.success(), "{}", stderr(&stats));
    assert_eq!(stat(&stats, "records"), n);
    assert_eq!(stat(&stats, "bytes"), bytes as u64);
    assert_eq!(stat(&stats, "dead letters"), 2);
    let on_disk = stat(&stats, "on disk");
    assert!(on_disk >= bytes as u64, "{on_disk}");
    assert!(
        stdout(&stats).contains("oldest: unknown (made before the clock was set)\n"),
        "{}",
        stdout(&stats)
    );

    let export = hubgate(&["buffer", "export", "-c", cfg]);
    assert!(export.status.success(), "{}", stderr(&export));
    let lines: Vec<String> = stdout(&export).lines().map(String::from).collect();
    assert_eq!(lines, bodies, "every record, oldest first, one per line");
    let export_log = stderr(&export);
    let progress: Vec<&str> = export_log
        .lines()
        .filter(|l| l.contains("exported"))
        .map(|l| l.trim_start_matches("hubgate: "))
        .collect();
    assert_eq!(progress.first(), Some(&"exported 1000 of 10000 record(s)"));
    assert_eq!(progress.last(), Some(&"exported 10000 of 10000 record(s)"));
    assert_eq!(progress.len(), 10);

    if root {
        // A segment the agent's user cannot read: its records are left out, named, and the
        // export goes on past them and fails at the end.
        let mut segments: Vec<PathBuf> = walk(&buffer)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segments.sort();
        let locked = &segments[segments.len() / 2];
        std::fs::set_permissions(locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let export = hubgate(&["buffer", "export", "-c", cfg]);
        std::fs::set_permissions(locked, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(export.status.code(), Some(1), "{}", stderr(&export));
        let log = stderr(&export);
        let left_out: Vec<usize> = log
            .lines()
            .filter_map(|l| l.strip_prefix("hubgate: record #"))
            .filter(|l| l.contains("cannot be read, left out"))
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(!left_out.is_empty(), "{log}");
        assert!(
            log.ends_with(&format!(
                "hubgate: {} record(s) left out of the export\n",
                left_out.len()
            )),
            "{log}"
        );
        let kept: Vec<String> = (0..bodies.len())
            .filter(|i| !left_out.contains(i))
            .map(|i| bodies[i].clone())
            .collect();
        assert_eq!(stdout(&export).lines().collect::<Vec<_>>(), kept);
        let run = left_out[0]..left_out[0] + left_out.len();
        assert_eq!(left_out, run.collect::<Vec<_>>(), "one segment's records");
    }

    // A reader that goes away (`| head`) ends the export by SIGPIPE, not a panic.
    let o = closed_output(&["buffer", "export", "-c", cfg]);
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "{:?}", o.status);

    let purge = hubgate(&["buffer", "purge", "-c", cfg]);
    assert!(purge.status.success(), "{}", stderr(&purge));
    assert_eq!(stdout(&purge).trim(), format!("purged {n} record(s)"));
    let stats = hubgate(&["buffer", "stats", "-c", cfg]);
    assert_eq!(stat(&stats, "records"), 0);
    assert_eq!(
        stat(&stats, "dead letters"),
        2,
        "purge keeps the dead letters"
    );
    let after = stat(&stats, "on disk");
    assert!(
        after * 4 < on_disk,
        "purge gives the space back: {on_disk} -> {after}"
    );
    if root {
        let owners: BTreeSet<u32> = walk(&buffer).iter().map(|p| owner(p)).collect();
        assert_eq!(
            owners,
            BTreeSet::from([NOBODY]),
            "the agent can open it again"
        );
    } else {
        eprintln!("not root: the buffer's owner is left to CI");
    }
}

/// `hubgate buffer purge --dead-letters` deletes the dead letters, and only them: every
/// record is still there to be delivered, in order.
#[test]
fn buffer_purge_of_the_dead_letters_keeps_every_record() {
    let (_dir, _, cfg, bodies) = filled_buffer();
    let cfg = cfg.as_str();
    let count = |what: &str| {
        let stats = hubgate(&["buffer", "stats", "-c", cfg]);
        assert!(stats.status.success(), "{}", stderr(&stats));
        stat(&stats, what)
    };
    assert_eq!(count("dead letters"), 2);

    let purge = hubgate(&["buffer", "purge", "--dead-letters", "-c", cfg]);
    assert!(purge.status.success(), "{}", stderr(&purge));
    assert_eq!(stdout(&purge).trim(), "purged 2 dead letter(s)");
    assert_eq!(count("dead letters"), 0);
    let letters = hubgate(&["buffer", "export", "--dead-letters", "-c", cfg]);
    assert!(letters.status.success(), "{}", stderr(&letters));
    assert_eq!(stdout(&letters), "");
    assert_eq!(count("records"), BUFFER_RECORDS);
    let export = hubgate(&["buffer", "export", "-c", cfg]);
    assert!(export.status.success(), "{}", stderr(&export));
    assert_eq!(stdout(&export).lines().collect::<Vec<_>>(), bodies);
}

/// `hubgate buffer recover DIR` carries every record of a database moved aside because it
/// would not open back into the buffer, in order; run again it carries nothing more, and
/// one that stopped part-way goes on after the segments it had carried.
#[test]
fn buffer_recover_carries_a_broken_databases_records() {
    let (dir, buffer, cfg, bodies) = filled_buffer();
    let cfg = cfg.as_str();
    std::fs::write(buffer.join("sled").join("conf"), b"\xff not sled's config").unwrap();
    let aside = moved_aside_by_a_start(&buffer, cfg);
    let aside = aside.to_str().unwrap();
    let export = || -> Vec<String> {
        let o = hubgate(&["buffer", "export", "-c", cfg]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).lines().map(String::from).collect()
    };
    let recover = |dir: &str| hubgate(&["buffer", "recover", "-c", cfg, dir]);

    let o = recover(aside);
    assert!(o.status.success(), "{}", stderr(&o));
    let segments = std::fs::read_dir(Path::new(aside).join("values"))
        .unwrap()
        .count();
    assert!(segments > 4, "{segments} segments");
    let out = stdout(&o);
    let said: Vec<&str> = out.lines().collect();
    assert_eq!(said.len(), 2, "{out}");
    assert_eq!(
        said[0],
        format!(
            "carried {} record(s) from {segments} of {segments} segment(s) (0 damaged \
             byte(s) left out); the buffer held 0",
            BUFFER_RECORDS
        )
    );
    carried_by_a_synchronised_clock(Some(said[1]));
    assert_eq!(
        stderr(&o).lines().last(),
        Some(format!("hubgate: segment {segments} of {segments} read, {BUFFER_RECORDS} record(s) carried").as_str())
    );
    assert_eq!(export(), bodies, "every record, in order");

    let o = recover(aside);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        format!("{aside} was recovered before: nothing more to carry")
    );
    assert_eq!(export().len(), bodies.len(), "nothing carried twice");

    // Stopped after three segments: the next run carries the rest, after what the buffer
    // holds. The progress names the last segment carried by its number.
    let mut files: Vec<String> = std::fs::read_dir(Path::new(aside).join("values"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let third: u32 = files[2].trim_end_matches(".seg").parse().unwrap();
    let progress = Path::new(aside).join("hubgate-recovered");
    let last: u32 = files[files.len() - 1]
        .trim_end_matches(".seg")
        .parse()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&progress).unwrap(),
        format!("through {last}\n")
    );
    std::fs::write(&progress, format!("through {third}\n")).unwrap();
    let o = recover(aside);
    assert!(o.status.success(), "{}", stderr(&o));
    let all = export();
    let rest = all.len() - bodies.len();
    assert!(rest > 0 && rest < bodies.len(), "{rest} carried");
    assert_eq!(all[..bodies.len()], bodies[..]);
    assert_eq!(all[bodies.len()..], bodies[bodies.len() - rest..]);

    let o = recover(buffer.join("sled").to_str().unwrap());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is the buffer in use"),
        "{}",
        stderr(&o)
    );
    let o = recover(dir.path().to_str().unwrap());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a buffer database moved aside"),
        "{}",
        stderr(&o)
    );
}

/// This release's buffer layout, as the package's prerm names it (a unit test keeps the two
/// the same).
fn this_layout() -> u32 {
    std::fs::read_to_string(repo("systemd/deb/prerm"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("layout="))
        .expect("layout= in the prerm")
        .parse()
        .unwrap()
}

/// The line an open of the buffer whose database is `db` refuses it with, written by the
/// release of buffer layout `newer`.
fn newer_layout_refusal(db: &Path, newer: u32) -> String {
    format!(
        "hubgate: buffer storage: {}: written by a newer hubgate (buffer layout {newer}; this \
         one reads layout {}): refused, its records left as they are. Run the newer hubgate \
         until the buffer has drained, or move {} away to start with an empty buffer\n",
        db.display(),
        this_layout(),
        db.parent().unwrap().display()
    )
}

/// A copy of the directory `from` (files and directories) at `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_dir(&entry.path(), &target),
            false => drop(std::fs::copy(entry.path(), target).unwrap()),
        }
    }
}

/// `buffer stats` and `buffer export` refuse a buffer a newer release wrote with one line
/// naming both layouts and what to do, and no word of a running hubgate (none holds the
/// lock). Every file is left as it was, what a power cut left of a rebuild's swap and of a
/// salvaged database's removal too, but the reserve on a disk short of its room, given back
/// first as at any open (sled writes as it opens, to read the layout too), and sled's own
/// files of the database it opened (its log's tail, a snapshot). Needs root, for the small
/// disk.
#[test]
fn a_newer_layouts_buffer_is_refused_by_the_buffer_commands_on_a_short_disk() {
    use hubgate::buffer::{disk, reserve};
    let dir = tempfile::tempdir().unwrap();
    let small = tmpfs::Tmpfs::mount(dir.path().join("disk"), "64M");
    let (buffer, config) = buffer_cmd::config(&small.0);
    let cfg = config.to_str().unwrap();
    let newer = this_layout() + 1;
    fill_buffer_with(&buffer, &[(FILL_LAYOUT, &newer.to_string())]);
    let db = buffer.join("sled");
    copy_dir(&db, &buffer.join("sled.new"));
    let salvaged = buffer.join("sled.salvaged");
    std::fs::create_dir(&salvaged).unwrap();
    std::fs::write(salvaged.join("db"), b"what was not removed yet").unwrap();
    std::fs::write(buffer.join("reserve"), vec![0; reserve::BYTES as usize]).unwrap();
    std::fs::write(buffer.join("reserve.new"), b"half a reserve").unwrap();
    // Room for sled to open, less than a reserve's.
    let free = disk::free(&buffer).unwrap();
    std::fs::write(small.0.join("taken"), vec![0; (free - (4 << 20)) as usize]).unwrap();
    assert!(disk::free(&buffer).unwrap() < reserve::BYTES);
    let reserve = ["reserve", "reserve.new"].map(PathBuf::from);
    for (command, given_back) in [("stats", &reserve[..]), ("export", &[])] {
        let before = listing(&buffer);
        let o = hubgate(&["buffer", command, "-c", cfg]);
        assert_eq!(o.status.code(), Some(1), "{command}: {}", stderr(&o));
        assert_eq!(stdout(&o), "", "{command}");
        assert_eq!(stderr(&o), newer_layout_refusal(&db, newer), "{command}");
        let after = listing(&buffer);
        let changed = changed_but_sleds(&before, &after, Path::new("sled"));
        let gone: Vec<_> = changed
            .iter()
            .filter(|(_, _, after)| after.is_none())
            .map(|(name, _, _)| name.as_path())
            .collect();
        assert_eq!(gone, given_back, "{command}: {changed:?}");
        assert_eq!(changed.len(), gone.len(), "{command}: {changed:?}");
    }
}

/// The buffer commands beside a hubgate that holds the buffer's lock say, in one line, to
/// stop it first.
#[test]
fn a_buffer_command_beside_a_running_hubgate_says_to_stop_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, config) = buffer_cmd::config(dir.path());
    std::fs::create_dir_all(buffer.join("sled")).unwrap();
    let _running = hubgate::buffer::BufferLock::take(&buffer).unwrap();
    let o = hubgate(&["buffer", "stats", "-c", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "hubgate: buffer storage: {}: could not acquire lock: another hubgate uses this \
             buffer (is hubgate running? stop it first)\n",
            buffer.join("lock").display()
        )
    );
}

/// `buffer recover` refuses a database a newer release wrote, in one line naming both
/// layouts and the release to recover it with, before it reads a record or writes a
/// progress file there, and carries nothing. One marked with an older layout (a
/// database of this release's layout marked with the one before it: 3 marked 2) is carried
/// whole: layouts from 1 on keep the bodies in segment files as this one does, which is all
/// a recovery reads.
#[test]
fn buffer_recover_refuses_a_newer_layout_and_carries_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, config) = buffer_cmd::config(dir.path());
    // The buffer carried into, as the agent's first start makes it.
    start_once(&buffer);
    let cfg = config.to_str().unwrap();
    let layout = this_layout();
    let recover = |db: &Path| hubgate(&["buffer", "recover", "-c", cfg, db.to_str().unwrap()]);
    let records = || {
        let o = hubgate(&["buffer", "export", "-c", cfg]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o).lines().map(String::from).collect::<Vec<_>>()
    };

    let newer = dir.path().join("newer");
    fill_buffer_with(&newer, &[(FILL_LAYOUT, &(layout + 1).to_string())]);
    let aside = newer.join("sled");
    let o = recover(&aside);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        format!(
            "hubgate: buffer storage: {}: written by a newer hubgate (buffer layout {}; this \
             one reads layout {layout}): nothing was carried. Recover it with a release that \
             reads layout {}\n",
            aside.display(),
            layout + 1,
            layout + 1
        )
    );
    assert!(!aside.join("hubgate-recovered").exists());
    assert_eq!(records(), Vec::<String>::new());

    let older = dir.path().join("older");
    fill_buffer_with(&older, &[(FILL_LAYOUT, &(layout - 1).to_string())]);
    let o = recover(&older.join("sled"));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let carried = out.lines().next().unwrap_or_default();
    assert!(
        carried.starts_with(&format!("carried {BUFFER_RECORDS} record(s) from "))
            && carried.ends_with(" segment(s) (0 damaged byte(s) left out); the buffer held 0"),
        "{out}"
    );
    let bodies: Vec<String> = (0..BUFFER_RECORDS).map(buffer_body).collect();
    assert_eq!(records(), bodies, "every record, in order");
}

/// `buffer recover` on a directory whose sled another process holds (another buffer's, its
/// hubgate running) refuses in one line once sled's lock wait is over, carrying nothing and
/// writing no progress file there: its records are that hubgate's to deliver.
#[test]
fn buffer_recover_refuses_a_directory_whose_sled_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, config) = buffer_cmd::config(dir.path());
    // The buffer carried into, as the agent's first start makes it.
    start_once(&buffer);
    let cfg = config.to_str().unwrap();
    let other = dir.path().join("other");
    fill_buffer(&other);
    let running = hubgate::buffer::SledStore::open(&other).unwrap();
    let aside = other.join("sled");
    let o = hubgate(&["buffer", "recover", "-c", cfg, aside.to_str().unwrap()]);
    drop(running);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        format!(
            "hubgate: buffer storage: {}: nothing was carried: its sled is in use by another \
             process (a hubgate running on it? stop it first)\n",
            aside.display()
        )
    );
    assert!(!aside.join("hubgate-recovered").exists());
    let o = hubgate(&["buffer", "stats", "-c", cfg]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\nrecords: 0\n"), "{}", stdout(&o));
}

/// The size of the segments of sled's log in the database at `db`, from its `conf`.
fn segment_size(db: &Path) -> u64 {
    let conf = String::from_utf8_lossy(&std::fs::read(db.join("conf")).unwrap()).into_owned();
    conf.lines()
        .find_map(|l| l.strip_prefix("segment_size: "))
        .unwrap_or_else(|| panic!("{conf}"))
        .parse()
        .unwrap()
}

/// Give the highest of sled's log segments' headers in the database at `db` to the one
/// below it as well, as damage to the card could: sled's open asserts on two segments at one
/// log position. A header is 20 bytes at the start of each segment (`segment_size` apart,
/// from `conf`): a CRC, then the segment's log position XOR 0x7FFF_FFFF_FFFF_FFFF, little
/// endian, a multiple of the segment size, and all ones where none was written.
fn one_segment_header_twice(db: &Path) {
    let segment = segment_size(db) as usize;
    let mut log = std::fs::read(db.join("db")).unwrap();
    let mut headers: Vec<(u64, usize)> = (0..log.len() / segment)
        .map(|i| i * segment)
        .filter_map(|at| {
            let xored = u64::from_le_bytes(log[at + 4..at + 12].try_into().unwrap());
            let lsn = xored ^ 0x7FFF_FFFF_FFFF_FFFF;
            let written = lsn != 0x7FFF_FFFF_FFFF_FFFF && lsn % segment as u64 == 0;
            written.then_some((lsn, at))
        })
        .collect();
    headers.sort();
    let [.., (_, below), (_, highest)] = headers[..] else {
        panic!("two segments written: {headers:?}")
    };
    log.copy_within(highest..highest + 20, below);
    std::fs::write(db.join("db"), log).unwrap();
}

/// A database sled's open panics on (two of its log segments with one header) costs
/// neither the agent nor its records: `buffer recover` carries every record from it, and
/// `buffer stats` refuses it as one that will not open and a start moves it aside, where
/// neither aborted the process before.
#[test]
fn a_database_sled_panics_on_is_recovered_and_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (buffer, config) = buffer_cmd::config(dir.path());
    // The buffer carried into, as the agent's first start makes it.
    start_once(&buffer);
    let cfg = config.to_str().unwrap();
    let damaged = dir.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    let (other, other_config) = buffer_cmd::config(&damaged);
    fill_buffer_with(&other, &[(FILL_SLED_SEGMENTS, "1")]);
    let db = other.join("sled");
    one_segment_header_twice(&db);

    let o = hubgate(&["buffer", "recover", "-c", cfg, db.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    let out = stdout(&o);
    let carried = out.lines().next().unwrap_or_default();
    assert!(
        carried.starts_with(&format!("carried {BUFFER_RECORDS} record(s) from ")),
        "{out}"
    );
    let o = hubgate(&["buffer", "export", "-c", cfg]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bodies: Vec<String> = (0..BUFFER_RECORDS).map(buffer_body).collect();
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), bodies);

    let said = format!(
        "buffer database {} will not open (IO error: sled's open failed on damage to its log: \
         panicked at ",
        db.display()
    );
    let o = hubgate(&["buffer", "stats", "-c", other_config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&said), "{}", stderr(&o));
    assert_eq!(
        hubgate::buffer::moved_aside(&other),
        vec![],
        "moved by stats"
    );
    let o = start_once(&other);
    let [(aside, _)] = &hubgate::buffer::moved_aside(&other)[..] else {
        panic!("one database moved aside: {}", stderr(&o))
    };
    assert!(stderr(&o).contains(&said), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("moved to {}", aside.display())),
        "{}",
        stderr(&o)
    );
}

/// A sound buffer on a disk short of room, a salvaged database not removed yet beside it:
/// sled, opened first to read the layout, fills its log's segment past the last entry and
/// then cannot write the snapshot it takes as it opens, leaving it cut short; the open
/// removes the salvaged database, and sled, opened again with room, would read that
/// snapshot as its last and report the buffer corrupted. `buffer stats` counts every
/// record instead, nothing moved aside, with one warning naming the unfinished snapshot it
/// removed. Needs root, for the small disk.
#[test]
fn a_snapshot_a_full_disk_cut_short_does_not_move_a_sound_buffer_aside() {
    use hubgate::buffer::disk;
    let dir = tempfile::tempdir().unwrap();
    let small = tmpfs::Tmpfs::mount(dir.path().join("disk"), "64M");
    let (buffer, config) = buffer_cmd::config(&small.0);
    fill_buffer(&buffer);
    let salvaged = buffer.join("sled.salvaged");
    std::fs::create_dir(&salvaged).unwrap();
    std::fs::write(salvaged.join("db"), vec![0; 4 << 20]).unwrap();
    // Room for sled to fill the rest of its log's one segment, none for a snapshot.
    let sled = buffer.join("sled");
    let segment = segment_size(&sled);
    let log = std::fs::metadata(sled.join("db")).unwrap();
    assert!(log.len() < segment, "{} bytes of log", log.len());
    let room = segment - log.blocks() * 512;
    let free = disk::free(&buffer).unwrap();
    std::fs::write(small.0.join("taken"), vec![0; (free - room) as usize]).unwrap();
    assert_eq!(disk::free(&buffer), Some(room));
    let o = hubgate(&["buffer", "stats", "-c", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("\nrecords: {BUFFER_RECORDS}\n")),
        "{out}"
    );
    let err = stderr(&o);
    let removed = format!(
        "hubgate::buffer::sled_store] buffer: removed {}/snap.",
        sled.display()
    );
    let lines: Vec<_> = err.lines().collect();
    assert!(
        matches!(&lines[..], [line] if line.contains(" WARN ")
            && line.contains(&removed)
            && line.ends_with(".generating, a snapshot sled did not finish")),
        "{err}"
    );
    assert!(!salvaged.exists());
    assert_eq!(hubgate::buffer::moved_aside(&buffer), vec![]);
}

/// The lines `buffer recover` says how the records carried age with: the clock known to be
/// synchronised when it ran, or not.
const CARRIED_AGE_FROM_NOW: &str = "the records carried age from now (their creation time set \
     to it, or kept if later): none is dropped as expired at once, one older than max_age is \
     delivered late";
const CARRIED_WITHOUT_TIME: &str = "the records carried have no creation time (the clock is not \
     known to be synchronised now): each run of hubgate ages them from its first trusted reading \
     of the clock (a restart starts their age again), none is dropped as expired at once";

/// Whether `buffer recover` found the clock known to be synchronised, told by the line it
/// said how the records carried age with (`line`), which must be one of the two: the state
/// the child acted on, whatever this process reads before or after it.
fn carried_by_a_synchronised_clock(line: Option<&str>) -> bool {
    match line {
        Some(CARRIED_AGE_FROM_NOW) => true,
        Some(CARRIED_WITHOUT_TIME) => false,
        other => panic!("not a line on how the records carried age: {other:?}"),
    }
}

/// A buffer whose records were all made before a forward step of the clock of 40 days (a Pi
/// booted at fake-hwclock's time, then synchronised; the step kept in its state) would not
/// open. The agent's start moves it aside; once recovered, its records age from the recovery:
/// `buffer stats` ages the oldest as the drain does for `max_age` (7 days by default), by
/// seconds, not 40 days, so the first drain does not drop them; with the clock not known to
/// be synchronised here they have no time. Their bodies are carried as they were.
#[test]
fn buffer_recover_carries_records_from_before_a_clock_step_without_aging_them_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let bodies: Vec<String> = (0..BUFFER_RECORDS).map(buffer_body).collect();
    fill_buffer_with(&buffer, &[(FILL_STEPPED, "1")]);
    let (_, config) = buffer_cmd::config(dir.path());
    let cfg = config.to_str().unwrap();
    let stats = || {
        let o = hubgate(&["buffer", "stats", "-c", cfg]);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let oldest = |o: &Output| -> String {
        let out = stdout(o);
        out.lines()
            .find_map(|l| l.strip_prefix("oldest: "))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string()
    };
    // Seconds at most: the test's own time.
    let seconds = |oldest: &str| humantime::parse_duration(oldest).is_ok_and(|d| d.as_secs() < 600);
    let before = oldest(&stats());
    assert!(seconds(&before), "the step kept out: {before}");

    std::fs::write(buffer.join("sled").join("conf"), b"\xff not sled's config").unwrap();
    let aside = moved_aside_by_a_start(&buffer, cfg);
    let o = hubgate(&["buffer", "recover", "-c", cfg, aside.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 2, "{out}");
    let synchronised = carried_by_a_synchronised_clock(out.lines().nth(1));

    let o = stats();
    assert!(
        stdout(&o).contains(&format!("records: {BUFFER_RECORDS}\n")),
        "{}",
        stdout(&o)
    );
    let after = oldest(&o);
    match synchronised {
        true => assert!(seconds(&after), "aged from the recovery: {after}"),
        false => assert_eq!(after, "unknown (made before the clock was set)"),
    }
    let o = hubgate(&["buffer", "export", "-c", cfg]);
    assert!(o.status.success(), "{}", stderr(&o));
    let exported: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(exported, bodies, "every body as it was, in order");
}

/// `hubgate decode --js FILE` prints the record like the built-in codecs, mapped by the
/// table beside the file; a codec that throws is one line on stderr, exit 2.
#[cfg(feature = "js")]
#[test]
fn decode_with_a_javascript_codec() {
    let examples = codec_files::examples();
    let door = examples.path().join("example-door.js");
    let door = door.to_str().unwrap();
    let o = hubgate(&["decode", "--js", door, "--fport", "2", "01002a57"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["recType"], "io.microshare.openclose.unpacked");
    assert_eq!(v["data"]["open"], serde_json::json!([{"value": true}]));
    assert_eq!(v["data"]["unpacker"]["class"], "js/example-door");
    let o = hubgate(&["decode", "--js", door, "01"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "hubgate: js/example-door: threw Error: need 4 bytes, got 1\n"
    );
    // A file the agent would refuse (group-writable) is the operator's own here: a warning.
    std::fs::set_permissions(door, std::os::unix::fs::PermissionsExt::from_mode(0o664)).unwrap();
    let o = hubgate(&["decode", "--js", door, "--fport", "2", "01002a57"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "hubgate: warning: {door} holds a codec and is writable by its group (mode 0664): \
             the agent would refuse it; chmod go-w\n"
        )
    );
    let o = hubgate(&["decode", "--js", &repo("codecs/missing.js"), "01"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("hubgate: --js "), "{}", stderr(&o));
}

/// A codec that writes its history as Dragino's do, a text of `[temperature,humidity,date
/// time],` entries in the JavaScript engine's local time, mapped by a table with
/// `zone = "local"`: each entry is a record at the instant the device logged, in summer time
/// and in winter time; a time the local clock shows twice (the hour summer time ends) or
/// skips (the hour it begins) makes no record and stays under `origin`, with a warning.
#[cfg(feature = "js")]
#[test]
fn a_datalog_text_in_local_time_is_read_in_the_gateways_zone() {
    let (_dir, js) = js_codec(
        r#"function two(n) { return (n < 10 ? "0" : "") + n; }
function decodeUplink(input) {
  // A clock the gateway's zone skips, as an engine of another zone may write it.
  if (input.fPort == 4) return { data: { DATALOG: "[20,40,2024-03-31 02:30:00]," } };
  var b = input.bytes, log = "";
  for (var i = 0; i + 8 <= b.length; i += 8) {
    var t = (b[i] << 24 >> 16 | b[i + 1]) / 100, h = (b[i + 2] << 8 | b[i + 3]) / 10;
    var d = new Date(((b[i + 4] << 24 >>> 0) + (b[i + 5] << 16 | b[i + 6] << 8 | b[i + 7])) * 1000);
    log += "[" + t + "," + h + "," + d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" +
      two(d.getDate()) + " " + two(d.getHours()) + ":" + two(d.getMinutes()) + ":" +
      two(d.getSeconds()) + "],";
  }
  return { data: { Node_type: "LHT65N", DATALOG: log } };
}
"#,
        "rec_type = \"io.microshare.environment.unpacked\"\n\
         [fields]\n\
         TempC_SHT = { field = \"temperature\", unit = \"°C\" }\n\
         Hum_SHT = { field = \"humidity\", unit = \"%RH\" }\n\
         [history]\npath = \"DATALOG\"\ntime = \"time\"\nzone = \"local\"\n\
         columns = [\"TempC_SHT\", \"Hum_SHT\", \"time\"]\n",
    );
    // 2024-05-01 09:50 UTC, 2024-01-15 11:00 UTC, 2024-10-27 00:30 UTC (02:30 summer time,
    // an hour before 02:30 winter time).
    let log = "0859020066321048 ff3301e065a51030 086601df671d8988";
    let decode = |fport, payload| {
        let at = "2024-11-01T00:00:00Z";
        decoded_in_zone(&js, "Europe/Berlin", fport, payload, at)
    };
    let (o, records) = decode("3", log);
    let shown: Vec<_> = records
        .iter()
        .map(|r| {
            let d = &r["data"];
            (
                d["time"].as_str().unwrap().to_string(),
                d["temperature"][0]["value"].clone(),
                d["humidity"][0]["value"].clone(),
            )
        })
        .collect();
    use serde_json::json;
    assert_eq!(
        shown,
        [
            ("2024-11-01T00:00:00.000Z".into(), json!(null), json!(null)),
            ("2024-05-01T09:50:00.000Z".into(), json!(21.37), json!(51.2)),
            ("2024-01-15T11:00:00.000Z".into(), json!(-2.05), json!(48)),
        ]
    );
    assert_eq!(
        records[0]["data"]["origin"],
        json!({"Node_type": "LHT65N", "DATALOG": "[21.5,47.9,2024-10-27 02:30:00]"})
    );
    assert!(
        stderr(&o).contains(
            "1 DATALOG entry without a time read as Unix seconds, RFC 3339 or a local date and \
             time (the first: DATALOG[2].time \"2024-10-27 02:30:00\" is two local times \
             (the clock went back over it)), kept under origin"
        ),
        "{}",
        stderr(&o)
    );
    let (o, records) = decode("4", "00");
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0]["data"]["origin"],
        json!({"DATALOG": "[20,40,2024-03-31 02:30:00]"})
    );
    assert!(
        stderr(&o).contains(
            "(the first: DATALOG[0].time \"2024-03-31 02:30:00\" is no local time (the clock \
             skipped it, or out of its range)), kept under origin"
        ),
        "{}",
        stderr(&o)
    );
}

/// A directory holding the JavaScript codec `js` and its mapping table `table`, and the
/// codec's path.
#[cfg(feature = "js")]
fn js_codec(js: &str, table: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = codec_files::tempdir();
    let path = dir.path().join("codec.js");
    codec_files::write(&path, js);
    codec_files::write(dir.path().join("codec.toml"), table);
    (dir, path)
}

/// `hubgate decode --js JS --fport FPORT PAYLOAD --time AT` run in the zone `tz`: its output,
/// and the records it wrote, each read.
#[cfg(feature = "js")]
fn decoded_in_zone(
    js: &Path,
    tz: &str,
    fport: &str,
    payload: &str,
    at: &str,
) -> (Output, Vec<serde_json::Value>) {
    let o = Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args([
            "decode",
            "--js",
            js.to_str().unwrap(),
            "--fport",
            fport,
            payload,
        ])
        .args(["--time", at])
        .env("RUST_LOG", "warn")
        .env("TZ", zone(tz))
        .output()
        .unwrap();
    assert!(o.status.success(), "{tz}: {}", stderr(&o));
    let records = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (o, records)
}

/// The zone `name` as `TZ` names it, failing the test where the system has no such zone
/// (no tzdata: the C library would read it as UTC, silently).
#[cfg(feature = "js")]
fn zone(name: &str) -> &str {
    let file = Path::new("/usr/share/zoneinfo").join(name);
    assert!(file.exists(), "{} missing: install tzdata", file.display());
    name
}

/// A text log in local time is read at each entry's instant where the zone has no summer
/// time (Tokyo) and where the standard offset went back (Moscow on 2014-10-26 and Volgograd
/// on 2020-12-27, each from +04 to +03 at 02:00): a time before or after the change is one
/// instant, one the clock showed twice is none, with a warning.
#[cfg(feature = "js")]
#[test]
fn a_datalog_text_in_local_time_is_read_across_a_change_of_standard_offset() {
    let (_dir, js) = js_codec(
        "function decodeUplink(input) {\n\
         return { data: { DATALOG: String.fromCharCode.apply(null, input.bytes) } };\n}\n",
        "rec_type = \"io.microshare.environment.unpacked\"\n\
         [fields]\nTempC_SHT = { field = \"temperature\", unit = \"°C\" }\n\
         [history]\npath = \"DATALOG\"\ntime = \"time\"\nzone = \"local\"\n\
         columns = [\"TempC_SHT\", \"time\"]\n",
    );
    for (tz, log, times, twice) in [
        (
            "Asia/Tokyo",
            "[20,2024-05-01 18:50:00],[21,2024-01-01 09:00:00],",
            &["2024-05-01T09:50:00.000Z", "2024-01-01T00:00:00.000Z"][..],
            None,
        ),
        (
            "Europe/Moscow",
            "[20,2014-10-26 00:30:00],[21,2014-10-26 02:30:00],[22,2014-10-26 01:30:00],",
            &["2014-10-25T20:30:00.000Z", "2014-10-25T23:30:00.000Z"][..],
            Some("DATALOG[2].time \"2014-10-26 01:30:00\""),
        ),
        (
            "Europe/Volgograd",
            "[20,2020-12-27 01:59:59],[21,2020-12-27 02:00:00],",
            &["2020-12-26T23:00:00.000Z"][..],
            Some("DATALOG[0].time \"2020-12-27 01:59:59\""),
        ),
    ] {
        let payload: String = log.bytes().map(|b| format!("{b:02x}")).collect();
        let (o, records) = decoded_in_zone(&js, tz, "3", &payload, "2025-01-01T00:00:00Z");
        let read: Vec<_> = records
            .iter()
            .filter(|r| r["data"]["temperature"].is_array())
            .map(|r| r["data"]["time"].as_str().unwrap())
            .collect();
        assert_eq!(read, times, "{tz}");
        let warned = stderr(&o).contains("is two local times");
        assert_eq!(warned, twice.is_some(), "{tz}: {}", stderr(&o));
        if let Some(first) = twice {
            assert!(
                stderr(&o).contains(&format!(
                    "1 DATALOG entry without a time read as Unix seconds, RFC 3339 or a local \
                     date and time (the first: {first} is two local times (the clock went back \
                     over it)), kept under origin"
                )),
                "{tz}: {}",
                stderr(&o)
            );
        }
    }
}

/// Where `TZ` is unset, the agent names the zone file `/etc/localtime` points to as its `TZ`
/// and hands it to the JavaScript worker: a worker started again after a change of zone reads
/// the zone the agent started with, not the new one.
#[cfg(feature = "js")]
#[test]
fn without_tz_the_worker_is_given_the_zone_file_of_the_start() {
    // The top level runs until the load's limit (2 s of CPU time): the worker lives meanwhile.
    let (_dir, js) = js_codec(
        "while (true) {}\nfunction decodeUplink(input) { return { data: {} }; }\n",
        "rec_type = \"io.microshare.environment.unpacked\"\n",
    );
    let mut decode = Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(["decode", "--js", js.to_str().unwrap(), "--fport", "1", "00"])
        .env("RUST_LOG", "warn")
        .env_remove("TZ")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let environ = loop {
        if let Some(environ) = js_worker_of(decode.id())
            .and_then(|pid| std::fs::read(format!("/proc/{pid}/environ")).ok())
        {
            break environ;
        }
        assert!(std::time::Instant::now() < deadline, "no js-worker child");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    decode.kill().unwrap();
    decode.wait().unwrap();
    let tz: Vec<_> = environ
        .split(|&b| b == 0)
        .filter_map(|v| v.strip_prefix(b"TZ="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let file = std::fs::canonicalize("/etc/localtime").unwrap_or_else(|_| "/etc/localtime".into());
    assert_eq!(tz, [format!(":{}", file.display())]);
}

/// The child of process `parent` that runs `hubgate js-worker` (past its exec), if any.
#[cfg(feature = "js")]
fn js_worker_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": the command may hold spaces and parentheses.
        let ppid: u32 = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (ppid == parent && cmdline.split(|&b| b == 0).any(|a| a == b"js-worker")).then_some(pid)
    })
}

/// `hubgate codecs --dir DIR` lists the directory's JavaScript codecs after the built-in
/// ones, with their table's recType and whether they load.
#[cfg(feature = "js")]
#[test]
fn codecs_lists_the_javascript_codecs_of_a_directory() {
    let dir = codec_files::tempdir();
    for f in ["example-door.js", "example-door.toml", "example-th.js"] {
        codec_files::copy_example(f, &dir.path().join(f));
    }
    codec_files::write(dir.path().join("broken.js"), "function Decode( {");
    let out = stdout(&hubgate(&["codecs", "--dir", dir.path().to_str().unwrap()]));
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("js/")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("js/broken") && lines[0].contains("SyntaxError"),
        "{out}"
    );
    let words = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        words(lines[1]),
        ["js/example-door", "io.microshare.openclose.unpacked", "ok"]
    );
    assert_eq!(words(lines[2]), ["js/example-th", "-", "ok"]);
}

/// A config named by a relative path resolves its relative paths from its own directory to
/// absolute ones, which `check --print` shows: the agent's working directory is `/`.
#[test]
fn relative_paths_of_a_relative_config_are_printed_absolute() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hubgate.toml"),
        "[codecs]\ndir = \"codecs\"\n[sink]\ntype = \"stdout\"\n\
         [[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:1700\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(["check", "--print", "-c", "hubgate.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let printed: toml::Table = toml::from_str(&stdout(&o)).unwrap();
    let codecs = std::path::absolute(dir.path().join("codecs")).unwrap();
    assert_eq!(printed["codecs"]["dir"].as_str(), codecs.to_str());
}

/// `hubgate codecs -c` reads only the config's `[codecs]`: an operator's shell cannot read
/// the connection string the agent's service gets (systemd `LoadCredential=`), which must not
/// stop the listing. A config that cannot be read at all still lists the built-in codecs,
/// then says why on one line.
#[test]
fn codecs_list_without_reading_the_configs_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let codecs = dir.path().join("codecs");
    codec_files::create_dir(&codecs);
    codec_files::write(
        codecs.join("th.js"),
        "function decodeUplink(input) { return {data: {}}; }",
    );
    let config = dir.path().join("hubgate.toml");
    std::fs::write(
        &config,
        "[codecs]\ndir = \"codecs\"\n\
         [[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:1700\"\n\
         [sink]\ntype = \"eventhubs\"\n\
         connection_string_file = \"/run/credentials/hubgate.service/eventhubs.secret\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let o = hubgate(&["check", "-c", config]);
    assert_eq!(o.status.code(), Some(1), "the secret is unreadable here");
    assert!(
        stderr(&o).contains("connection_string_file"),
        "{}",
        stderr(&o)
    );
    let all = hubgate::codec::Codec::ALL.len();
    let o = hubgate(&["codecs", "-c", config]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), all + 1, "{out}");
    assert!(lines[all].starts_with("js/th "), "{out}");

    // A config that is no file: the built-ins, then one line naming it, exit 2.
    let o = hubgate(&["codecs", "-c", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), all, "{}", stdout(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}

/// Without `--dir`, `hubgate codecs` lists the config's `[codecs] dir`; `hubgate check`
/// warns about each JavaScript codec or mapping table the config names that does not load
/// (missing, broken, a top level too slow for a call), naming the file and the reason, and
/// still passes the config: the agent runs without them.
#[cfg(feature = "js")]
#[test]
fn codecs_and_check_read_the_configs_codec_directory() {
    let dir = tempfile::tempdir().unwrap();
    let codecs = dir.path().join("codecs");
    codec_files::create_dir(&codecs);
    codec_files::copy_example("example-th.js", &codecs.join("th.js"));
    codec_files::write(codecs.join("broken.js"), "function Decode( {");
    codec_files::write(
        codecs.join("slow.js"),
        "var n = 0;\nfor (var i = 0; i < 3e6; i++) { n += i; }\nfunction Decode(p, b) { return {}; }",
    );
    let config = dir.path().join("hubgate.toml");
    std::fs::write(
        &config,
        "[codecs]\ndir = \"codecs\"\n[sink]\ntype = \"stdout\"\n\
         [[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:1700\"\n\
         [[device]]\ndev_eui = \"0000000000000001\"\njs_codec = \"th\"\n\
         [[device]]\ndev_eui = \"0000000000000002\"\njs_codec = \"broken\"\n\
         [[device]]\ndev_eui = \"0000000000000003\"\njs_codec = \"gone\"\nmapping = \"nomap\"\n\
         [[device]]\ndev_eui = \"0000000000000004\"\njs_codec = \"slow\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let o = hubgate(&["codecs", "-c", config]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let js: Vec<&str> = out.lines().filter(|l| l.starts_with("js/")).collect();
    assert_eq!(js.len(), 3, "{out}");
    assert!(
        js[0].starts_with("js/broken") && js[0].contains("broken.js: threw SyntaxError"),
        "{out}"
    );
    assert!(
        js[1].starts_with("js/slow") && js[1].contains("slow.js: its top level took "),
        "{out}"
    );
    assert!(
        js[2].starts_with("js/th ") && js[2].ends_with(" ok"),
        "{out}"
    );
    let o = hubgate(&["codecs", "-c", "/nonexistent/hubgate.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let o = hubgate(&["check", "-c", config]);
    assert!(o.status.success(), "{}", stderr(&o));
    let warnings: Vec<String> = stderr(&o)
        .lines()
        .filter(|l| l.starts_with("hubgate: warning: "))
        .map(String::from)
        .collect();
    let at = |f: &str| codecs.join(f).display().to_string();
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&format!(
            "hubgate: warning: JavaScript codec {}: threw SyntaxError",
            at("broken.js")
        )),
        "{warnings:?}"
    );
    assert!(
        warnings[1].starts_with(&format!(
            "hubgate: warning: JavaScript codec {}: No such file",
            at("gone.js")
        )),
        "{warnings:?}"
    );
    assert!(
        warnings[2].starts_with(&format!(
            "hubgate: warning: JavaScript codec {}: its top level took ",
            at("slow.js")
        )) && warnings[2].ends_with("it may take at most 50 ms of a call's 100 ms"),
        "{warnings:?}"
    );
    assert!(
        warnings[3].starts_with(&format!(
            "hubgate: warning: mapping table {}: No such file",
            at("nomap.toml")
        )),
        "{warnings:?}"
    );
}

/// A config's relative `buffer.path` is taken from the config's directory, as every path in
/// it is: `hubgate buffer stats` (or `recover`, `purge`) run from another directory looks at
/// the agent's buffer, not at (or making) a second one there.
#[test]
fn a_relative_buffer_path_is_the_configs_whatever_the_working_directory() {
    let conf = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = conf.path().join("hubgate.toml");
    std::fs::write(
        &config,
        "[buffer]\npath = \"buf\"\n[sink]\ntype = \"stdout\"\n\
         [[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:1700\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(["buffer", "stats", "-c", config.to_str().unwrap()])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let made_here = elsewhere.path().join("buf").exists();
    let want = format!("no buffer at {} ", conf.path().join("buf").display());
    assert!(
        stderr(&o).contains(&want) && !made_here,
        "wanted {want:?}; printed:\n{}a buffer made in the working directory: {made_here}",
        stderr(&o)
    );
}

/// A relative secret file (`metrics.password_file` here; the same for every `*_file` and
/// `ca_file`) is read from the config's directory, so `check` says the same from any working
/// directory (the service's is `/`).
#[test]
fn a_relative_secret_file_is_read_from_the_configs_directory() {
    let conf = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let pw = conf.path().join("status.pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = conf.path().join("hubgate.toml");
    std::fs::write(
        &config,
        "[metrics]\npassword_file = \"status.pw\"\n[sink]\ntype = \"stdout\"\n\
         [[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:1700\"\n",
    )
    .unwrap();
    let check_from = |dir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["check", "-c", config.to_str().unwrap()])
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let there = check_from(conf.path());
    let here = check_from(elsewhere.path());
    assert_eq!(
        (there.status.success(), here.status.success()),
        (true, true),
        "from the config's directory: {}from elsewhere: {}",
        stderr(&there),
        stderr(&here)
    );
}

/// `hubgate buffer stats` where there is no buffer (a wrong `-c`, a typo in `buffer.path`)
/// says so, exits 1 and makes none (it made an empty one and reported `records: 0`).
#[test]
fn buffer_stats_where_there_is_no_buffer_says_so_and_makes_none() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("no-such-buffer");
    let config = dir.path().join("hubgate.toml");
    std::fs::write(
        &config,
        format!(
            "[buffer]\npath = {:?}\n[sink]\ntype = \"stdout\"\n\
             [[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:1700\"\n",
            buffer.display().to_string()
        ),
    )
    .unwrap();
    let o = hubgate(&["buffer", "stats", "-c", config.to_str().unwrap()]);
    assert!(
        !o.status.success() && !buffer.exists(),
        "exit {:?}, {} made; printed:\n{}",
        o.status.code(),
        buffer.display(),
        stdout(&o)
    );
}

/// Write `text` to `path` with `mode` and run `hubgate check -c` on it: (exit success, stderr).
fn check_file(path: &Path, mode: u32, text: &str) -> (bool, String) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    let o = hubgate(&["check", "-c", path.to_str().unwrap()]);
    (o.status.success(), stderr(&o))
}

/// `check` (also `ExecStartPre=`, so the journal) on a config with secrets written as
/// numbers: serde's type error would quote the number; the error names the key only.
#[test]
fn a_secret_written_as_a_number_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = "[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1\"\nusername = \"u\"\n";
    let device = "[sink]\ntype = \"stdout\"\n[[device]]\ndev_eui = \"0011223344556677\"\n\
                  codec = \"browan-tbhh100\"\ndev_addr = \"01020304\"\n";
    let cases = [
        (
            format!("{mqtt}password = 31415926\n[sink]\ntype = \"stdout\"\n"),
            "source[0].password",
            "31415926",
        ),
        (
            format!("{mqtt}password = 2718.2818\n[sink]\ntype = \"stdout\"\n"),
            "source[0].password",
            "2718",
        ),
        (
            "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9093\"\n\
             sasl_username = \"u\"\nsasl_password = 16180339\n"
                .to_string(),
            "sink.sasl_password",
            "16180339",
        ),
        (
            format!("{device}app_s_key = 1122334455667788\n"),
            "device[0].app_s_key",
            "1122334455667788",
        ),
        (
            "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9093\"\n\
             [sink.properties]\n\"sasl.password\" = 14142135\n"
                .to_string(),
            "sasl.password",
            "14142135",
        ),
    ];
    for (i, (text, key, secret)) in cases.iter().enumerate() {
        let (ok, err) = check_file(&dir.path().join(format!("num{i}.toml")), 0o600, text);
        assert!(!ok, "{key}: taken");
        assert!(err.contains(key), "{err}");
        assert!(
            !err.contains(secret),
            "{key}: the secret is in the error: {err}"
        );
    }
}

/// A secret given where its file goes: the connection string pasted into
/// `connection_string_file`, or the `${VAR}` that holds a secret (the template's
/// `connection_string = "${EVENTHUBS_CONNECTION_STRING}"`) written under the `*_file` key. The
/// path that cannot be read is then the secret itself, from the config or from the unit's
/// environment; `check` (`ExecStartPre=` and the package's postinst), `run` and `doctor` must
/// not print it, as the `lorawan` command does not print a key given as its key file.
#[test]
fn a_secret_given_as_its_file_path_is_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let key = "S2V5R2l2ZW5Bc0l0c0ZpbGVQYXRo";
    let cs = format!(
        "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={key}"
    );
    let eventhubs = "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"eventhubs\"\n";
    let kafka = "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"kafka\"\n\
                 brokers = \"127.0.0.1:9093\"\nsecurity_protocol = \"sasl_ssl\"\n\
                 sasl_username = \"u\"\n";
    let mqtt = "[[source]]\ntype = \"mqtt\"\nurl = \"mqtts://broker.example\"\n\
                username = \"u\"\n";
    let cases = [
        (
            format!(
                "{eventhubs}connection_string_file = \"${{HUBGATE_TEST_EH_CONNECTION_STRING}}\"\n"
            ),
            "sink.connection_string_file",
            key,
        ),
        (
            format!("{eventhubs}connection_string_file = \"{cs}\"\n"),
            "sink.connection_string_file",
            key,
        ),
        (
            format!("{kafka}sasl_password_file = \"${{HUBGATE_TEST_KAFKA_PASSWORD}}\"\n"),
            "sink.sasl_password_file",
            "Tr0ub4dor-3-horse",
        ),
        (
            format!("{mqtt}password_file = \"correct-horse-battery\"\n[sink]\ntype = \"stdout\"\n"),
            "source[0].password_file",
            "correct-horse-battery",
        ),
        (
            "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"stdout\"\n[[device]]\n\
             dev_eui = \"0011223344556677\"\ndev_addr = \"01020304\"\n\
             nwk_s_key_file = \"2B7E151628AED2A6ABF7158809CF4F3C\"\n\
             app_s_key = \"000102030405060708090A0B0C0D0E0F\"\n"
                .to_string(),
            "device[0].nwk_s_key_file",
            "2B7E151628AED2A6ABF7158809CF4F3C",
        ),
    ];
    let mut echoed = Vec::new();
    for (i, (text, at, secret)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("as-path{i}.toml"));
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        for command in ["check", "run", "doctor"] {
            let o = Command::new(env!("CARGO_BIN_EXE_hubgate"))
                .args([command, "-c", file.to_str().unwrap()])
                .env("RUST_LOG", "warn")
                .env("HUBGATE_TEST_EH_CONNECTION_STRING", &cs)
                .env("HUBGATE_TEST_KAFKA_PASSWORD", "Tr0ub4dor-3-horse")
                .output()
                .unwrap();
            let said = format!("{}{}", stdout(&o), stderr(&o));
            assert!(!o.status.success(), "{command} {at}: taken: {said}");
            assert!(said.contains(at), "{command} {at}: {said}");
            if said.contains(secret) {
                echoed.push(format!("{command} {at}: {}", said.trim()));
            }
        }
    }
    assert!(
        echoed.is_empty(),
        "the secret is in the output:\n{}",
        echoed.join("\n")
    );
}

/// A SASL login written into the Kafka sink's `brokers` as a URL's user info
/// (`hubgate:PASSWORD@host:port`, as Kafka URLs are written elsewhere): librdkafka takes
/// everything before the port for the host name and names that broker so in every line, and
/// `doctor` names the host it looks up. An MQTT url with a login is refused for this; the
/// brokers' password must not reach the agent's log or the output of `check` and `doctor`
/// either, whether the config is refused or taken.
#[test]
fn a_password_in_the_kafka_brokers_reaches_neither_the_log_nor_doctor() {
    let dir = tempfile::tempdir().unwrap();
    let password = "Pa55-in-the-brokers-9c1d";
    let body = format!(
        "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n\
         [sink]\ntype = \"kafka\"\nbrokers = \"hubgate:{password}@127.0.0.1:9\"\n",
        dir.path().join("buffer").display(),
        support::free_port(),
    );
    let mut agent = support::agent::Agent::begin(dir.path(), &body);
    let config = dir.path().join("hubgate.toml");
    let said = |command: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args([command, "-c", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
    };
    let (taken, check) = said("check");
    let (_, doctor) = said("doctor");
    // Taken, librdkafka names the broker, login and all, in every failed connection.
    assert!(!taken && check.contains("sink.brokers"), "{check}");
    let run = agent.wait_exit(support::agent::WAIT, "a refused config");
    assert!(!run.success(), "run took what check refused");
    let log = agent.full_log();
    let leaks: Vec<&str> = log
        .lines()
        .chain(check.lines())
        .chain(doctor.lines())
        .filter(|l| l.contains(password))
        .collect();
    assert!(
        leaks.is_empty(),
        "the password is in {} line(s) of the log and the output of check and doctor:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

/// A sink's CA bundle that holds no certificate (empty, or not PEM) cannot verify any broker:
/// librdkafka refuses to create the client with it, so `run` stops at the start (and systemd
/// starts it again and again) while `check`, which `ExecStartPre=` and the package's postinst
/// run, said OK: `check` refuses it, as it refuses an MQTT source's `ca_file` without one.
#[test]
fn a_sink_ca_without_a_certificate_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let eventhubs = "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"eventhubs\"\n\
                     connection_string = \"Endpoint=sb://acme.servicebus.windows.net/;\
                     SharedAccessKeyName=send;SharedAccessKey=a2V5\"\n";
    let kafka = "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9\"\n";
    let cases = [
        (
            format!("{eventhubs}ca_location = \"{}\"\n", empty.display()),
            "sink.ca_location",
        ),
        (
            format!("{kafka}ca_location = \"{}\"\n", junk.display()),
            "sink.ca_location",
        ),
        (
            format!(
                "{kafka}[sink.properties]\n\"ssl.ca.location\" = \"{}\"\n",
                empty.display()
            ),
            "sink.properties.\"ssl.ca.location\"",
        ),
    ];
    let mut taken = Vec::new();
    for (i, (text, key)) in cases.iter().enumerate() {
        let (ok, err) = check_file(&dir.path().join(format!("ca{i}.toml")), 0o600, text);
        if ok {
            taken.push(format!("{key}: check said OK"));
        } else if !err.contains(key) {
            taken.push(format!("{key} not named: {}", err.trim()));
        }
    }
    assert!(
        taken.is_empty(),
        "check passed a CA bundle without a certificate:\n{}",
        taken.join("\n")
    );
}

/// An Event Hubs connection string in `dir/eh.secret`, mode 0600.
fn eh_secret(dir: &Path) -> PathBuf {
    let secret = dir.join("eh.secret");
    std::fs::write(
        &secret,
        "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=a2V5\n",
    )
    .unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    secret
}

/// The Event Hubs connection string is the SASL password, key included, and goes to whatever
/// `bootstrap.servers` says: `[sink.properties]` may not set that (under either name), nor the
/// SASL settings or the protocol hubgate derives from the string.
#[test]
fn eventhubs_properties_may_not_set_what_the_connection_string_gives() {
    let dir = tempfile::tempdir().unwrap();
    let secret = eh_secret(dir.path());
    for (key, value) in [
        ("bootstrap.servers", "collector.example.net:9093"),
        ("metadata.broker.list", "collector.example.net:9093"),
        ("sasl.username", "$ConnectionString"),
        ("sasl.password", "pa55"),
        ("sasl.mechanism", "PLAIN"),
        ("security.protocol", "sasl_ssl"),
    ] {
        let text = format!(
            "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"eventhubs\"\n\
             connection_string_file = \"{}\"\n[sink.properties]\n\"{key}\" = \"{value}\"\n",
            secret.display()
        );
        let (ok, err) = check_file(&dir.path().join("elsewhere.toml"), 0o600, &text);
        assert!(!ok, "{key} taken: {err}");
        assert!(
            err.contains(&format!(
                "sink.properties.\"{key}\": refused: hubgate sets this from the connection string"
            )),
            "{err}"
        );
    }
}

/// `mqtt://` with port 8883 (the MQTT-over-TLS port: an `s` forgotten) is plain TCP, and the
/// password would go out in the CONNECT in clear text before the broker's TLS listener drops
/// the connection: with the port saying TLS it is a slip, not a choice, so it is refused.
#[test]
fn plain_mqtt_to_the_tls_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = check_file(
        &dir.path().join("slip.toml"),
        0o600,
        "[[source]]\ntype = \"mqtt\"\nurl = \"mqtt://broker.example:8883\"\nusername = \"u\"\n\
         password = \"hunter2\"\n[sink]\ntype = \"stdout\"\n",
    );
    assert!(!ok, "taken: {err}");
    assert!(
        err.contains("source[0].url") && err.contains("write mqtts://broker.example:8883"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A secret that is partly a `${ENV}` reference and partly written inline (the namespace from
/// the environment, the key in the file) is inline: `check --print` masks it, and a config
/// every user can read holding it is warned about.
#[test]
fn a_secret_partly_from_the_environment_counts_as_inline() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.toml");
    let key = "S2V5TWF0ZXJpYWxOZXZlclByaW50ZWQ=";
    std::fs::write(
        &file,
        format!(
            "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"eventhubs\"\n\
             connection_string = \"Endpoint=sb://${{HUBGATE_TEST_EH_NS}}.servicebus.windows.net/;\
             SharedAccessKeyName=send;SharedAccessKey={key}\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(["check", "--print", "-c", file.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .env("HUBGATE_TEST_EH_NS", "acme")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("connection_string = ")),
        "{printed}"
    );
    assert!(!printed.contains(key), "the key is printed:\n{printed}");
    let err = stderr(&o);
    assert!(
        err.contains("holds secrets inline (sink.connection_string)"),
        "no warning about a world-readable config holding the key: {err}"
    );
}

/// A password that holds `${` (a generated one) is taken for a reference; the error for the
/// unset "variable" must not quote the part of the password between the braces.
#[test]
fn an_unset_variable_in_a_partly_inline_secret_is_not_named() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = check_file(
        &dir.path().join("pw.toml"),
        0o600,
        "[[source]]\ntype = \"mqtt\"\nurl = \"mqtts://broker.example\"\nusername = \"u\"\n\
         password = \"Xq7${Hu9kLm2Pz}w4\"\n[sink]\ntype = \"stdout\"\n",
    );
    assert!(!ok, "taken: {err}");
    assert!(
        err.contains(
            ": source[0].password: a ${…} in it names an environment variable that is not set"
        ),
        "{err}"
    );
    assert!(
        !err.contains("Hu9kLm2Pz"),
        "part of the password is in the error: {err}"
    );
    // A value that is nothing but a reference names the variable: nothing secret is in it.
    let (ok, err) = check_file(
        &dir.path().join("env.toml"),
        0o600,
        "[[source]]\ntype = \"mqtt\"\nurl = \"mqtts://broker.example\"\nusername = \"u\"\n\
         password = \"${HUBGATE_TEST_UNSET_PW}\"\n[sink]\ntype = \"stdout\"\n",
    );
    assert!(!ok, "taken: {err}");
    assert!(
        err.contains(": source[0].password: environment variable HUBGATE_TEST_UNSET_PW is not set"),
        "{err}"
    );
}

/// An MQTT password without a username is never sent (MQTT 3.1.1 has no password without a
/// user name): the session would go out anonymous while the site believes it logs in.
#[test]
fn an_mqtt_password_without_a_username_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("mqtt.password");
    std::fs::write(&secret, "hunter2\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file_key = format!("password_file = \"{}\"", secret.display());
    for password in ["password = \"hunter2\"", file_key.as_str()] {
        let (ok, err) = check_file(
            &dir.path().join("nouser.toml"),
            0o600,
            &format!(
                "[[source]]\ntype = \"mqtt\"\nurl = \"mqtts://broker.example\"\n{password}\n\
                 [sink]\ntype = \"stdout\"\n"
            ),
        );
        assert!(!ok, "{password}: taken: {err}");
        assert!(err.contains(": source[0].username: missing: "), "{err}");
    }
}

/// A config, secret file or CA file that others may write is warned about: whoever can write
/// the config can send the connection string to a broker of theirs (a Kafka sink's `brokers`),
/// whoever can write the secret file can swap the key, and whoever can write a CA file can
/// vouch for any host.
#[test]
fn a_config_secret_or_ca_file_others_can_write_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let secret = eh_secret(dir.path());
    // A real one: check refuses a CA bundle without a certificate.
    let ca = support::Certs::generate(&dir.path().join("certs")).ca;
    let file = dir.path().join("open.toml");
    std::fs::write(
        &file,
        format!(
            "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"eventhubs\"\nconnection_string_file = \"{}\"\n\
             ca_location = \"{}\"\n",
            secret.display(),
            ca.display()
        ),
    )
    .unwrap();
    for (modes, open) in [
        ([0o622, 0o600, 0o644], Some(&file)),
        ([0o600, 0o622, 0o644], Some(&secret)),
        ([0o600, 0o600, 0o664], Some(&ca)),
        ([0o600, 0o600, 0o644], None),
    ] {
        for (path, mode) in [&file, &secret, &ca].into_iter().zip(modes) {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let o = hubgate(&["check", "-c", file.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "a warning, not a refusal: {}",
            stderr(&o)
        );
        let err = stderr(&o);
        let warned: Vec<&str> = err.lines().filter(|l| l.contains("writable by")).collect();
        match open {
            Some(open) => assert!(
                warned.len() == 1 && warned[0].contains(&format!("{} holds", open.display())),
                "modes {:?}: no warning that others can write {}: {err}",
                modes.map(|m| format!("{m:04o}")),
                open.display()
            ),
            None => assert!(warned.is_empty(), "{err}"),
        }
    }
}

/// A Kafka sink's SASL password comes from a file (0600, or a systemd credential) like every
/// other secret: else it is written into the config, or passed by `Environment=`, which
/// systemd shows to every local user (`systemctl show`).
#[test]
fn the_kafka_sasl_password_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("kafka.secret");
    std::fs::write(&secret, "pa55word\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = dir.path().join("kafka.toml");
    std::fs::write(
        &file,
        format!(
            "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9093\"\n\
             security_protocol = \"sasl_ssl\"\nsasl_username = \"u\"\nsasl_password_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let o = hubgate(&["check", "--print", "-c", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    assert!(
        printed
            .lines()
            .any(|l| l == format!("sasl_password_file = \"{}\"", secret.display())),
        "{printed}"
    );
    assert!(!printed.contains("pa55word"), "{printed}");
    // Not both: which would win is not for the site to guess.
    let both = std::fs::read_to_string(&file).unwrap() + "sasl_password = \"other\"\n";
    let (ok, err) = check_file(&file, 0o600, &both);
    assert!(!ok, "taken: {err}");
    assert!(
        err.contains(": sink.sasl_password: give sasl_password or sasl_password_file, not both"),
        "{err}"
    );
}

/// operations.md moves the buffer off the SD card by setting `buffer.path` (a USB disk, with
/// `ReadWritePaths=`). Done on a gateway whose buffer holds a backlog (an outage filling the
/// card is when one would), the agent starts on an empty buffer at the new path and the
/// acknowledged records left in the unit's state directory (`StateDirectory=hubgate`, which
/// systemd names in `STATE_DIRECTORY`) are never sent: nothing reads that buffer again. The
/// start and `hubgate doctor` name it, and leave it as it is.
#[test]
fn records_left_in_the_state_directory_by_a_new_buffer_path_are_told_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fill_buffer(&state);
    let usb = dir.path().join("usb").join("hubgate");
    let replay = dir.path().join("none.jsonl");
    std::fs::write(&replay, "").unwrap();
    let config = dir.path().join("hubgate.toml");
    std::fs::write(
        &config,
        format!(
            "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"replay\"\npath = \"{}\"\n\
             [sink]\ntype = \"stdout\"\n[metrics]\nlisten = \"off\"\n",
            usb.display(),
            replay.display()
        ),
    )
    .unwrap();
    let run = support::output_within(
        Command::new(env!("CARGO_BIN_EXE_hubgate"))
            .args(["run", "-c"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("STATE_DIRECTORY", &state),
        std::time::Duration::from_secs(60),
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let doctor = Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(["doctor", "-c"])
        .arg(&config)
        .env("STATE_DIRECTORY", &state)
        .output()
        .unwrap();
    let told = |text: &str| {
        text.contains(&format!("the state directory {} holds", state.display()))
            && text.contains(&state.join("sled").display().to_string())
            && text.contains("hubgate buffer recover")
    };
    assert!(
        told(&stderr(&run)) && told(&stdout(&doctor)),
        "{BUFFER_RECORDS} records left in {}, at the start:\n{}\nby doctor:\n{}",
        state.display(),
        stderr(&run),
        stdout(&doctor)
    );
    // Left as it was: every record still there.
    let reader = dir.path().join("reader");
    std::fs::create_dir_all(&reader).unwrap();
    let reader = buffer_cmd::config_for(&reader, &state, "");
    let kept = hubgate(&["buffer", "stats", "-c", reader.to_str().unwrap()]);
    assert_eq!(stat(&kept, "records"), BUFFER_RECORDS, "{}", stderr(&kept));
    // What the warning says to do carries them into the buffer at the new path.
    let cfg = config.to_str().unwrap();
    let sled = state.join("sled");
    let recovered = hubgate(&["buffer", "recover", "-c", cfg, sled.to_str().unwrap()]);
    assert!(recovered.status.success(), "{}", stderr(&recovered));
    let moved = hubgate(&["buffer", "stats", "-c", cfg]);
    assert_eq!(
        stat(&moved, "records"),
        BUFFER_RECORDS,
        "{}",
        stderr(&moved)
    );
}

/// `buffer recover` refuses a config whose path holds no buffer, as stats, export and
/// purge do (a wrong path would read as empty): made there, it would be a buffer nothing
/// reads, and the progress kept in the directory moved aside, which does not say where the
/// records went, would have the run with the agent's config carry nothing ("was recovered
/// before"). Run first with a config that names another path (a copy of the config, the
/// default one while the agent runs with its own), it carries nothing and says which path.
#[test]
fn a_recovery_into_a_new_buffer_elsewhere_does_not_keep_the_records_from_the_agents_buffer() {
    let (dir, buffer, cfg, bodies) = filled_buffer();
    std::fs::write(buffer.join("sled").join("conf"), b"\xff not sled's config").unwrap();
    let aside = moved_aside_by_a_start(&buffer, &cfg);
    let aside = aside.to_str().unwrap();
    let elsewhere = dir.path().join("copy");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let other = buffer_cmd::config_for(&elsewhere, &elsewhere.join("buffer"), "");

    let first = hubgate(&["buffer", "recover", "-c", other.to_str().unwrap(), aside]);
    assert!(!first.status.success(), "{}", stdout(&first));
    let told = format!(
        "no buffer at {} (no {}; buffer.path in {})",
        elsewhere.join("buffer").display(),
        elsewhere.join("buffer").join("sled").display(),
        other.display()
    );
    assert!(stderr(&first).contains(&told), "{}", stderr(&first));
    assert!(
        !elsewhere.join("buffer").exists(),
        "a buffer made elsewhere"
    );
    let second = hubgate(&["buffer", "recover", "-c", &cfg, aside]);
    let export = hubgate(&["buffer", "export", "-c", &cfg]);
    assert!(export.status.success(), "{}", stderr(&export));
    let exported = stdout(&export).lines().count();
    assert_eq!(
        exported,
        bodies.len(),
        "the agent's buffer holds {exported} of the {} records; recovered with the other \
         config: {}{}\nthen with the agent's: {}{}",
        bodies.len(),
        stdout(&first),
        stderr(&first).lines().last().unwrap_or(""),
        stdout(&second),
        stderr(&second)
    );
}

/// A board's `[buffer]` defaults are the agent's (`board = "rpi-zero-w"`: `max_bytes` 64 MiB),
/// and the `buffer` commands read them too. `buffer recover` warns when what it carried puts
/// the buffer past `max_bytes`, to be raised before the agent starts: past it the agent
/// makes room by `when_full`, by default deleting the oldest records, acknowledged ones.
/// Checked against the default 256 MiB instead, a recovery that leaves the buffer between
/// the board's cap and that would say nothing.
#[test]
fn buffer_recover_warns_past_the_max_bytes_a_board_gives() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    let record_bytes = fill_buffer(&old);
    let aside = old.join("sled");
    let buffer = dir.path().join("buffer");
    // The buffer carried into, as the agent's first start makes it.
    start_once(&buffer);
    let config = dir.path().join("hubgate.toml");
    std::fs::write(
        &config,
        format!(
            "board = \"rpi-zero-w\"\n[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\n\
             [sink]\ntype = \"stdout\"\n",
            buffer.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let printed = hubgate(&["check", "--print", "-c", cfg]);
    assert!(printed.status.success(), "{}", stderr(&printed));
    let cap: u64 = 64 << 20;
    assert!(
        stdout(&printed).contains(&format!("max_bytes = {cap}"))
            || stdout(&printed).contains("max_bytes = \"64MiB\""),
        "the agent's cap is the board's:\n{}",
        stdout(&printed)
    );
    // The same directory carried again (its progress removed, as the error for a bad one
    // says) until the buffer holds more than the board's cap.
    let runs = cap / record_bytes as u64 + 1;
    let mut last = None;
    for _ in 0..runs {
        let _ = std::fs::remove_file(aside.join("hubgate-recovered"));
        let o = hubgate(&["buffer", "recover", "-c", cfg, aside.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        last = Some(o);
    }
    let last = last.unwrap();
    let stats = hubgate(&["buffer", "stats", "-c", cfg]);
    let held = stat(&stats, "bytes");
    assert!(held > cap, "{held} bytes");
    assert!(
        stderr(&last).contains("more than [buffer] max_bytes"),
        "the buffer holds {held} bytes, more than the agent's max_bytes ({cap}), and the \
         recovery that put them there said:\n{}{}",
        stdout(&last),
        stderr(&last)
    );
}
