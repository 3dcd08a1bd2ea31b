//! Every board profile in `boards/`: compiled in, valid through the normal config checks, on a
//! target `cross.toml` builds, listed in `boards/README.md` with its real values, and merged
//! under the site config by `hubgate check --print`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use hubgate::board::{self, Profile};
use hubgate::config::{parse_size, Config, SourceConfig};
use support::agent::changed;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn profiles() -> Vec<Profile> {
    board::ids()
        .into_iter()
        .map(|id| board::find(id).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// A site config that leaves everything the profile sets to the profile.
fn site(id: &str, extra: &str) -> String {
    format!(
        "board = \"{id}\"\n{extra}\n[[source]]\ntype = \"serial\"\nframing = \"slip\"\n\
         [sink]\ntype = \"stdout\"\n"
    )
}

fn load(dir: &Path, text: &str) -> Config {
    let path = dir.join("hubgate.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_file_in_boards_is_compiled_in_under_its_own_id() {
    let files: BTreeSet<String> = std::fs::read_dir(repo("boards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let compiled: BTreeSet<String> = board::ids().into_iter().map(String::from).collect();
    assert_eq!(files, compiled);
    for (id, text) in board::PROFILES {
        let on_disk = std::fs::read_to_string(repo(&format!("boards/{id}.toml"))).unwrap();
        assert_eq!(*text, on_disk, "{id}");
    }
    for id in board::ids() {
        assert_eq!(board::find(id).unwrap().board.id, id, "boards/{id}.toml");
    }
    for id in [
        "rpi-zero-w",
        "rpi-zero-2-w",
        "rpi3",
        "rpi4",
        "rpi5",
        "rak7248",
        "seeed-wm1302",
    ] {
        assert!(compiled.contains(id), "missing board {id}");
    }
}

#[test]
fn every_profile_is_valid_and_reaches_the_config() {
    let cross: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo("cross.toml")).unwrap()).unwrap();
    let targets: BTreeSet<&str> = cross["target"]
        .as_table()
        .expect("cross.toml has [target.<triple>] tables")
        .keys()
        .map(String::as_str)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for p in profiles() {
        let id = &p.board.id;
        assert!(
            targets.contains(p.board.target.as_str()),
            "{id}: target {} not in cross.toml {targets:?}",
            p.board.target
        );
        assert!(
            !p.board.description.is_empty() && !p.board.provenance.is_empty(),
            "{id}"
        );
        // A HAT's header UART carries its GNSS: no default device there (the site sets one).
        let device = p.serial.get("device").map(|d| d.as_str().unwrap());
        let device = device.unwrap_or("/dev/ttyUSB0");
        assert!(Path::new(device).is_absolute(), "{id}: {device}");
        let max_bytes = parse_size(p.buffer["max_bytes"].as_str().unwrap()).unwrap();

        let buffer = format!("[buffer]\npath = \"{}\"", dir.path().display());
        let mut text = site(id, &buffer);
        if !p.serial.contains_key("device") {
            text = changed(
                &text,
                &[("[[source]]\n", "[[source]]\ndevice = \"/dev/ttyUSB0\"\n")],
            );
        }
        let cfg = load(dir.path(), &text);
        assert_eq!(cfg.board.as_deref(), Some(id.as_str()));
        assert_eq!(cfg.buffer.max_bytes, max_bytes, "{id}");
        assert_eq!(
            cfg.buffer.max_in_flight as i64,
            p.buffer["max_in_flight"].as_integer().unwrap(),
            "{id}"
        );
        let SourceConfig::Serial(s) = &cfg.sources[0] else {
            panic!("{id}: not serial")
        };
        assert_eq!(s.device, Path::new(device), "{id}");
    }
}

#[test]
fn site_keys_override_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "board = \"rpi-zero-w\"\n[buffer]\npath = \"{}\"\nmax_bytes = \"32MiB\"\n\
         [[source]]\ntype = \"serial\"\ndevice = \"/dev/ttyUSB0\"\nframing = \"slip\"\n\
         [[source]]\ntype = \"serial\"\nframing = \"cobs\"\n\
         [sink]\ntype = \"stdout\"\n",
        dir.path().display()
    );
    let cfg = load(dir.path(), &text);
    assert_eq!(cfg.buffer.max_bytes, 32 << 20);
    let devices: Vec<&Path> = cfg
        .sources
        .iter()
        .map(|s| match s {
            SourceConfig::Serial(s) => s.device.as_path(),
            _ => panic!("not serial"),
        })
        .collect();
    assert_eq!(
        devices,
        [Path::new("/dev/ttyUSB0"), Path::new("/dev/serial0")],
        "the site's device, then the profile's"
    );
}

/// The shipped template leaves the board's keys to the board once `board` is uncommented.
#[test]
fn template_with_a_board_takes_the_boards_values() {
    let template = std::fs::read_to_string(repo("config/hubgate.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(
        dir.path(),
        &changed(
            &template,
            &[("\n# board = \"rpi4\"\n", "\nboard = \"rpi-zero-w\"\n")],
        ),
    );
    assert_eq!(cfg.buffer.max_bytes, 64 << 20);
}

#[test]
fn readme_table_lists_every_profile_with_its_values() {
    let readme = std::fs::read_to_string(repo("boards/README.md")).unwrap();
    let rows: Vec<Vec<String>> = readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect();
    let profiles = profiles();
    assert_eq!(rows.len(), profiles.len(), "one row per profile");
    for p in profiles {
        let id = &p.board.id;
        let row = rows
            .iter()
            .find(|r| &r[0] == id)
            .unwrap_or_else(|| panic!("{id} not in boards/README.md"));
        let expected = [
            p.board.target.clone(),
            p.serial
                .get("device")
                .map_or("none", |d| d.as_str().unwrap())
                .to_string(),
            p.buffer["max_bytes"].as_str().unwrap().to_string(),
            p.buffer["max_in_flight"].to_string(),
        ];
        assert_eq!(row[2..], expected, "{id}");
    }
}

fn check(dir: &Path, text: &str) -> std::process::Output {
    let path = dir.join("hubgate.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(["check", "--print", "-c"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn check_print_shows_the_merged_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), &site("rpi4", "[buffer]\nmax_age = \"1d\""));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "board = \"rpi4\"",
        "device = \"/dev/serial0\"",
        "max_bytes = \"1GiB\"",
        "max_age = \"1day\"",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in\n{stdout}"
        );
    }
}

/// The HAT boards' header UART `/dev/ttyAMA0` carries the HAT's GNSS: their profiles give a
/// serial source no default device, so one without `device` fails the check as on any
/// config, instead of opening the GNSS port exclusively from under the packet forwarder.
#[test]
fn a_hat_board_does_not_default_a_serial_source_to_its_gnss_port() {
    let dir = tempfile::tempdir().unwrap();
    for board in ["rak7248", "seeed-wm1302"] {
        let out = check(dir.path(), &site(board, ""));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("device"),
            "{board}: a serial source without device passed the check:\n{stdout}{stderr}"
        );
        assert!(!stdout.contains("/dev/ttyAMA0"), "{board}:\n{stdout}");
    }
}

#[test]
fn unknown_board_is_a_one_line_error_listing_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(dir.path(), &site("rpi9", ""));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(": board: unknown board \"rpi9\"; known boards: rpi-zero-w, rpi-zero-2-w, rpi3, rpi4, rpi5, rak7248, seeed-wm1302"),
        "{stderr}"
    );
    let out = check(dir.path(), &site("rpi4", "[buffer]\nmax_bytes = \"lots\""));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("buffer.max_bytes"), "{stderr}");
}
