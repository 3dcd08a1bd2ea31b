//! cross.toml: every Raspberry Pi target gets the pre-build step and the CFLAGS
//! that rdkafka's cmake build needs inside a `cross` image, docs/building.md documents the command
//! that makes cross read the file, and no `Cross.toml` twin breaks case-insensitive checkouts.
//! That the real `cross` picks all of this up is proven by scripts/check-cross-config.sh.

use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Pi Zero/1 (ARMv6), Pi 2-5 with a 32-bit OS, Pi 3-5 with a 64-bit OS.
const PI_TARGETS: [&str; 3] = [
    "arm-unknown-linux-gnueabihf",
    "armv7-unknown-linux-gnueabihf",
    "aarch64-unknown-linux-gnu",
];

/// Where scripts/cross-pre-build.sh puts curl's headers inside the image.
const CURL_INCLUDE: &str = "/opt/curl-include";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn targets() -> Table {
    let config: Table = read("cross.toml")
        .parse()
        .unwrap_or_else(|e| panic!("cross.toml: {e}"));
    match config.get("target") {
        Some(Value::Table(t)) => t.clone(),
        other => panic!("cross.toml: no [target.*] tables: {other:?}"),
    }
}

#[test]
fn targets_are_exactly_the_pi_triples() {
    let mut found: Vec<String> = targets().keys().cloned().collect();
    found.sort();
    let mut expected = PI_TARGETS.map(String::from).to_vec();
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn every_target_runs_the_pre_build_script_that_installs_curl_headers() {
    let script = read("scripts/cross-pre-build.sh");
    assert!(
        script.contains("libcurl4-openssl-dev:$CROSS_DEB_ARCH"),
        "{script}"
    );
    assert!(
        script.contains(&format!("mkdir -p {CURL_INCLUDE}")),
        "{script}"
    );
    for triple in PI_TARGETS {
        let pre_build = targets()[triple].get("pre-build").cloned();
        assert_eq!(
            pre_build,
            Some(Value::from("scripts/cross-pre-build.sh")),
            "{triple}"
        );
    }
}

#[test]
fn every_target_puts_the_curl_headers_on_its_c_include_path() {
    for triple in PI_TARGETS {
        let passthrough = targets()[triple]
            .get("env")
            .and_then(|env| env.get("passthrough"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| panic!("{triple}: no env.passthrough"));
        let cflags = format!("CFLAGS_{}=-I{CURL_INCLUDE}", triple.replace('-', "_"));
        assert!(
            passthrough.contains(&Value::from(cflags.as_str())),
            "{triple}: {passthrough:?} lacks {cflags}"
        );
    }
}

#[test]
fn building_doc_shows_cross_config_for_every_target() {
    let doc = read("docs/building.md");
    for triple in PI_TARGETS {
        // The 32-bit ARM cross builds go without the default `js` feature: rquickjs ships no
        // ARMv6 bindings, and its ARMv7 ones were not tried with the cross images' compilers.
        let features = if triple.starts_with("aarch64") {
            "--features vendored-openssl"
        } else {
            "--no-default-features --features vendored-openssl"
        };
        let command =
            format!("CROSS_CONFIG=cross.toml cross build --release {features} --target {triple}");
        assert!(doc.contains(&command), "docs/building.md lacks `{command}`");
    }
}

/// On case-insensitive file systems `Cross.toml` and `cross.toml` are one file.
#[test]
fn no_capitalised_twin_of_cross_toml() {
    let names: Vec<String> = std::fs::read_dir(repo("."))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.eq_ignore_ascii_case("cross.toml"))
        .collect();
    assert_eq!(names, ["cross.toml"]);
}
