//! `hubgate lorawan` against the contract in docs/design.md, run as the built binary.

mod support;

use std::process::{Command, Output};

use support::lorawan::{APP_S_KEY as APP, NWK_S_KEY as NWK};
/// The worked example of docs/codecs.md.
const WORKED: &str = "40DA1B0126000700024026C89CB85521E3";

fn hubgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .arg("lorawan")
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run hubgate")
}

/// Key files in a directory of their own, and the arguments naming them.
struct Keys {
    _dir: tempfile::TempDir,
    nwk: String,
    app: String,
}

impl Keys {
    fn new(nwk: &str, app: &str) -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.to_str().unwrap().to_string()
        };
        // One file ends in a newline, the other not: both are read.
        let (nwk, app) = (path("nwk", &format!("{nwk}\n")), path("app", app));
        Keys {
            _dir: dir,
            nwk,
            app,
        }
    }

    /// `--nwkskey-file F --appskey-file F`.
    fn both(&self) -> [&str; 4] {
        ["--nwkskey-file", &self.nwk, "--appskey-file", &self.app]
    }

    /// The NwkSKey's file alone.
    fn nwk(&self) -> [&str; 2] {
        ["--nwkskey-file", &self.nwk]
    }
}

fn keys() -> Keys {
    Keys::new(NWK, APP)
}

fn ok_json(args: &[&str]) -> (String, serde_json::Value) {
    let out = hubgate(args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let v = serde_json::from_str(&stdout).unwrap();
    (stdout, v)
}

fn bad_input(args: &[&str]) -> String {
    let out = hubgate(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn worked_example_with_keys() {
    let (out, _) = ok_json(&[&keys().both()[..], &[WORKED]].concat());
    for field in [
        r#""mtype":"UnconfirmedDataUp""#,
        r#""devaddr":"26011bda""#,
        r#""fcnt":7"#,
        r#""fport":2"#,
        r#""payload":"03670110""#,
        r#""mic_valid":true"#,
    ] {
        assert!(out.contains(field), "{field} missing in {out}");
    }
}

#[test]
fn output_has_the_contract_fields_in_order() {
    let (out, _) = ok_json(&[&keys().both()[..], &[WORKED]].concat());
    assert_eq!(
        out.trim_end(),
        r#"{"mtype":"UnconfirmedDataUp","devaddr":"26011bda","fcnt":7,"fport":2,"payload":"03670110","mic_valid":true,"fcnt32":7}"#
    );
}

/// The worked example's frame sent with a 32-bit counter (hex): the MIC and the keystream use
/// all 32 bits, while the frame carries the low 16.
fn with_fcnt32(fcnt: u32) -> String {
    hex::encode(support::lorawan::frame(fcnt))
}

/// A device past FCnt 65535: the MIC verifies with the counter the agent would try, the
/// payload decrypts; beyond the tried counters `--fcnt32` names it.
#[test]
fn counters_past_16_bits() {
    let files = keys();
    let keys = files.both();
    let (_, v) = ok_json(&[&keys[..], &[&with_fcnt32(0x3_0007)]].concat());
    assert_eq!(v["fcnt"], 7);
    assert_eq!(v["fcnt32"], 0x3_0007);
    assert_eq!(v["mic_valid"], true);
    assert_eq!(v["payload"], "03670110");
    let far = with_fcnt32(0x40_0007);
    let (_, v) = ok_json(&[&keys[..], &[&far]].concat());
    assert_eq!(v["mic_valid"], false);
    assert!(v.get("fcnt32").is_none(), "{v}");
    let (_, v) = ok_json(&[&keys[..], &["--fcnt32", "4194311", &far]].concat());
    assert_eq!(
        (&v["mic_valid"], &v["fcnt32"]),
        (&true.into(), &0x40_0007.into())
    );
    assert_eq!(v["payload"], "03670110");
    let err = bad_input(&[&keys[..], &["--fcnt32", "8", &far]].concat());
    assert!(err.contains("--fcnt32 8"), "{err}");
}

#[test]
fn altered_mic_is_reported_invalid() {
    let altered = format!("{}E4", &WORKED[..WORKED.len() - 2]);
    let (out, v) = ok_json(&[&keys().both()[..], &[&altered]].concat());
    assert!(out.contains(r#""mic_valid":false"#), "{out}");
    assert_eq!(v["devaddr"], "26011bda");
}

#[test]
fn without_keys_prints_the_encrypted_payload_and_null_mic() {
    let (_, v) = ok_json(&[WORKED]);
    assert_eq!(v["payload"], "4026c89c");
    assert!(v["mic_valid"].is_null());
    assert_eq!(v["fcnt"], 7);
    // The NwkSKey alone checks the MIC; FPort 2 still needs the AppSKey.
    let (_, v) = ok_json(&[&keys().nwk()[..], &[WORKED]].concat());
    assert_eq!(v["mic_valid"], true);
    assert_eq!(v["payload"], "4026c89c");
}

#[test]
fn lower_case_and_spaced_hex_are_accepted() {
    let lower = Keys::new(&NWK.to_lowercase(), APP);
    let (_, v) = ok_json(
        &[
            &lower.both()[..],
            &["40 da1b0126 00 0700 02 4026c89c b85521e3"],
        ]
        .concat(),
    );
    assert_eq!(v["payload"], "03670110");
    assert_eq!(v["mic_valid"], true);
}

#[test]
fn join_request_prints_its_euis() {
    let (_, v) = ok_json(&["0008070605040302013412100000cba058cdab01020304"]);
    assert_eq!(v["mtype"], "JoinRequest");
    assert_eq!(v["app_eui"], "0102030405060708");
    assert_eq!(v["dev_eui"], "58a0cb0000101234");
    assert_eq!(v["dev_nonce"], 0xABCD);
    assert!(v["mic_valid"].is_null());
}

#[test]
fn join_accept_and_proprietary_are_identified() {
    let (_, v) = ok_json(&[&format!("20{}", "00".repeat(16))]);
    assert_eq!(v["mtype"], "JoinAccept");
    let (_, v) = ok_json(&["E00102"]);
    assert_eq!(v["mtype"], "Proprietary");
    assert_eq!(v["payload"], "0102");
}

#[test]
fn bad_hex_is_one_line_exit_2() {
    let err = bad_input(&["40DA1B0126zz"]);
    assert!(err.contains("bad hex"), "{err}");
    bad_input(&["40DA1"]);
}

#[test]
fn truncated_frame_is_one_line_exit_2() {
    let err = bad_input(&[&WORKED[..18]]);
    assert!(err.contains("too short"), "{err}");
    bad_input(&[""]);
    let mut bad_fopts = WORKED.to_string();
    bad_fopts.replace_range(10..12, "0F");
    let err = bad_input(&[&bad_fopts]);
    assert!(err.contains("FOptsLen"), "{err}");
}

#[test]
fn bad_key_is_one_line_exit_2_without_the_key() {
    let short = Keys::new("2B7E151628AED2A6", APP);
    let err = bad_input(&[&short.nwk()[..], &[WORKED]].concat());
    assert!(err.contains("--nwkskey-file"), "{err}");
    assert!(!err.contains("2B7E"), "{err}");
}

/// A key on the command line (where `ps` and the shell's history show it) is refused with
/// one line that points to the key's file option and does not quote the key, in either
/// spelling of the option, with or without the other options.
#[test]
fn keys_on_the_command_line_are_refused_without_quoting_them() {
    let files = keys();
    for (flag, key) in [("--nwkskey", NWK), ("--appskey", APP)] {
        let joined = format!("{flag}={key}");
        for args in [
            vec![flag, key, WORKED],
            vec![&joined, WORKED],
            [&files.both()[..], &[flag, key, WORKED]].concat(),
        ] {
            let err = bad_input(&args);
            assert!(err.contains(&format!("{flag}-file")), "{args:?}: {err}");
            assert!(err.contains("is not accepted"), "{args:?}: {err}");
            assert!(!err.contains(key), "{args:?}: {err}");
            assert!(!err.contains(&key[..8]), "{args:?}: {err}");
        }
    }
}

/// A key given where its file goes (`--nwkskey-file HEX`, the likely slip after the refusal
/// above) is not quoted in the error that no such file exists, in any spelling a key takes,
/// with a typo or other separators too; an argument that looks like a path (a `/` or `.` in
/// it, or an entry of the directory) is named.
#[test]
fn a_key_given_as_the_file_is_not_quoted() {
    let split = |sep: &str, width: usize| {
        NWK.as_bytes()
            .chunks(width)
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect::<Vec<_>>()
            .join(sep)
    };
    let (colons, dashes) = (split(":", 2), split("-", 4));
    let (lower, prefixed) = (APP.to_lowercase(), format!("0x{NWK}"));
    let typo = format!("{}G", &NWK[..31]);
    for (flag, key, quoted) in [
        ("--nwkskey-file", NWK, &NWK[..8]),
        ("--appskey-file", APP, &APP[..8]),
        ("--appskey-file", &lower, &lower[..8]),
        ("--nwkskey-file", &prefixed, &NWK[..8]),
        ("--nwkskey-file", &colons, &colons[..8]),
        ("--nwkskey-file", &NWK[..16], &NWK[..8]),
        ("--nwkskey-file", &typo, &NWK[..8]),
        ("--nwkskey-file", &dashes, &dashes[..9]),
    ] {
        let joined = format!("{flag}={key}");
        for args in [vec![flag, key, WORKED], vec![&joined, WORKED]] {
            let err = bad_input(&args);
            assert!(
                err.starts_with(&format!(
                    "hubgate: {flag}: its argument is no file that can be read (No such file"
                )),
                "{args:?}: {err}"
            );
            assert!(err.contains("if it is the key itself"), "{args:?}: {err}");
            assert!(!err.contains(quoted), "{args:?}: {err}");
        }
    }
    for named in ["/nonexistent/nwk.key", "nwk.key", "src"] {
        let err = bad_input(&["--nwkskey-file", named, WORKED]);
        assert!(
            err.starts_with(&format!("hubgate: --nwkskey-file {named}: ")),
            "{err}"
        );
    }
}

/// A mistyped key option is pointed at the key's file option, not at the refused one that
/// takes the key itself (which clap would suggest, being the closest name).
#[test]
fn a_mistyped_key_option_is_pointed_at_the_file_option() {
    for (typo, meant) in [
        ("--nwk-skey", "--nwkskey-file"),
        ("--appskeys", "--appskey-file"),
        ("--nwkskeyfile", "--nwkskey-file"),
    ] {
        let out = hubgate(&[typo, "k", WORKED]);
        assert_eq!(out.status.code(), Some(2), "{typo}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains(&format!("tip: a similar argument exists: '{meant}'\n")),
            "{typo}: {stderr}"
        );
    }
}

/// Keys from standard input give the same answer as keys from files.
#[test]
fn keys_from_files_and_stdin() {
    use std::io::Write;
    let (from_files, _) = ok_json(&[&keys().both()[..], &[WORKED]].concat());
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args([
            "lorawan",
            "--nwkskey-file",
            "-",
            "--appskey-file",
            "-",
            WORKED,
        ])
        .env("RUST_LOG", "off")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    write!(child.stdin.take().unwrap(), "{NWK}\n{APP}\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), from_files);
    let e = bad_input(&["--nwkskey-file", "/dev/zero", WORKED]);
    assert!(e.contains("not a regular file"), "{e}");
}
