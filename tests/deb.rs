//! The .deb from `cargo deb` (cargo-deb, `[package.metadata.deb]` in Cargo.toml), inspected
//! with dpkg-deb. It packages the hubgate this test was built with (copied where cargo-deb
//! looks for a release build, then `--no-build`), so the test costs no release build.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::agent::changed;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Stdout of a command that must succeed.
fn run(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&support::run_ok(cmd).stdout).into_owned()
}

/// Build the package into `dir/out` and return its path.
fn build_deb(dir: &Path) -> PathBuf {
    let target = dir.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_hubgate"),
        target.join("release/hubgate"),
    )
    .unwrap();
    let out = dir.join("out");
    run(Command::new("cargo")
        .args(["deb", "--no-build", "--fast", "--output"])
        .arg(&out)
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(REPO));
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs.into_iter().next().unwrap()
}

#[test]
fn deb_holds_the_gateway_files_and_installs_cleanly_configured() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());

    let fields = run(Command::new("dpkg-deb").arg("--field").arg(&deb).args([
        "Package",
        "Architecture",
        "Depends",
    ]));
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in\n{fields}"))
            .to_string()
    };
    assert_eq!(field("Package"), "hubgate");
    let arch = run(Command::new("dpkg").arg("--print-architecture"));
    assert_eq!(field("Architecture"), arch.trim());
    let depends = field("Depends");
    assert!(depends.contains("libc6"), "{depends}");
    assert!(depends.contains("systemd"), "{depends}");
    assert!(depends.contains("ca-certificates"), "{depends}");
    // librdkafka is linked in; TLS comes from the system's libssl3 (Raspberry Pi OS ships it,
    // and its security updates then reach hubgate), found by dpkg-shlibdeps.
    assert!(depends.contains("libssl3"), "{depends}");
    assert!(!depends.contains("librdkafka"), "{depends}");

    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let entry = |path: &str| {
        contents
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{contents}"))
            .to_string()
    };
    assert!(entry("usr/bin/hubgate").starts_with("-rwxr-xr-x 0/0 "));
    // The config may hold secrets: not readable by every user.
    assert!(entry("etc/hubgate/hubgate.toml").starts_with("-rw-r----- 0/0 "));
    for path in [
        "usr/lib/systemd/system/hubgate.service",
        "usr/lib/sysusers.d/hubgate.conf",
        "usr/share/doc/hubgate/boards/README.md",
        "usr/share/doc/hubgate/README.md",
        "usr/share/doc/hubgate/docs/operations.md",
    ] {
        assert!(entry(path).starts_with("-rw-r--r-- 0/0 "), "{path}");
    }
    for id in hubgate::board::ids() {
        entry(&format!("usr/share/hubgate/boards/{id}.toml"));
    }
    // Every relative link of the installed README and docs leads to a file installed.
    let doc = "usr/share/doc/hubgate/";
    let installed_docs = contents
        .lines()
        .filter_map(|l| l.rsplit_once(" ./").map(|(_, path)| path))
        .filter(|path| path.ends_with(".md"));
    for installed in installed_docs {
        let from = installed.strip_prefix(doc).unwrap_or_else(|| {
            panic!("{installed}: a document outside {doc}, where its links lead nowhere")
        });
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(from);
        let text = std::fs::read_to_string(&source).unwrap();
        for link in relative_links(&text) {
            let target = resolve(Path::new(installed).parent().unwrap(), link);
            assert!(
                contents
                    .lines()
                    .any(|l| l.ends_with(&format!(" ./{target}"))),
                "{installed} links to {link}, not in the package"
            );
        }
    }
    assert!(
        !contents.contains("eventhubs.secret"),
        "no secret file in the package"
    );

    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/hubgate/hubgate.toml");
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    // On an upgrade the config is the group's before the agent restarts (it could not read
    // a root:root config), and on a first install once sysusers has made the group.
    let at = |what: &str| {
        postinst
            .find(what)
            .unwrap_or_else(|| panic!("no {what} in {postinst}"))
    };
    let call = "\n    config_to_group\n";
    assert!(at(call) < at("try-restart"), "{postinst}");
    assert!(
        at("systemd-sysusers") < postinst.rfind(call).unwrap(),
        "{postinst}"
    );
    postinst_gives_the_config_to_the_group(&control.join("postinst"));
    assert!(
        postinst
            .contains("install -m 0600 -o root -g root /dev/null /etc/hubgate/eventhubs.secret"),
        "{postinst}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh").arg("-n").arg(control.join(script)));
    }

    // The files as installed: the shipped unit and profiles are the repository's, and the
    // shipped binary accepts the shipped default config.
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let same = |installed: &str, repo: &str| {
        assert_eq!(
            std::fs::read(root.join(installed)).unwrap(),
            std::fs::read(Path::new(REPO).join(repo)).unwrap(),
            "{installed}"
        );
    };
    same(
        "usr/lib/systemd/system/hubgate.service",
        "systemd/hubgate.service",
    );
    same(
        "usr/lib/sysusers.d/hubgate.conf",
        "systemd/hubgate.sysusers",
    );
    same("etc/hubgate/hubgate.toml", "config/hubgate.toml");
    for id in hubgate::board::ids() {
        same(
            &format!("usr/share/hubgate/boards/{id}.toml"),
            &format!("boards/{id}.toml"),
        );
    }
    let check = run(Command::new(root.join("usr/bin/hubgate"))
        .args(["check", "-c"])
        .arg(root.join("etc/hubgate/hubgate.toml")));
    assert!(check.contains(": OK"), "{check}");
}

/// A command `name` in `dir` that logs its arguments to `log`, then runs `body`.
fn shim(dir: &Path, log: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho {name} \"$@\" >> {}\n{body}\n",
            log.display()
        ),
    )
    .unwrap();
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&path, executable).unwrap();
}

/// Runs the package's `postinst configure` with the commands it calls replaced by scripts
/// that log their arguments (nothing on this machine changes): `chgrp` runs where the group
/// exists and the config is still root's group, and not where the operator chose another.
fn postinst_gives_the_config_to_the_group(postinst: &Path) {
    for (config_gid, chgrps) in [("0", 2), ("1234", 0)] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let shim = |name: &str, body: &str| shim(dir.path(), &log, name, body);
        shim("getent", "exit 0");
        shim("stat", &format!("echo {config_gid}"));
        for name in [
            "chgrp",
            "install",
            "systemd-sysusers",
            "systemctl",
            "deb-systemd-invoke",
        ] {
            shim(name, "exit 0");
        }
        shim("deb-systemd-helper", "exit 1");
        // The upgrade's check of the kept config passes (it has a test of its own).
        shim("hubgate", "exit 0");
        let script = dir.path().join("postinst");
        let text = std::fs::read_to_string(postinst).unwrap();
        let hubgate = dir.path().join("hubgate");
        std::fs::write(
            &script,
            changed(
                &text,
                &[("/usr/bin/hubgate", &hubgate.display().to_string())],
            ),
        )
        .unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap()
        );
        run(Command::new("sh")
            .arg(&script)
            .args(["configure", "0.1.0"])
            .env("PATH", path));
        let log = std::fs::read_to_string(&log).unwrap();
        let chgrp = "chgrp hubgate /etc/hubgate/hubgate.toml";
        assert_eq!(log.lines().filter(|l| *l == chgrp).count(), chgrps, "{log}");
        assert!(log.contains("systemd-sysusers hubgate.conf"), "{log}");
    }
}

/// The package's postinst on an upgrade (`configure <old version>`), with the machine's paths
/// moved into `dir` (`etc` holds the kept config and the secret, `/usr/bin/hubgate` is the
/// binary just built) and the commands it calls replaced by scripts that log their arguments.
/// `in_use` is what `systemctl is-active`/`is-enabled` answer. Returns its exit status,
/// stderr and the log.
fn upgrade_postinst(
    dir: &Path,
    postinst: &str,
    in_use: bool,
) -> (std::process::ExitStatus, String, String) {
    let systemd = dir.join("run-systemd-system");
    std::fs::create_dir_all(&systemd).unwrap();
    let script = dir.join("postinst");
    std::fs::write(
        &script,
        changed(
            postinst,
            &[
                ("/etc/hubgate", &dir.join("etc").display().to_string()),
                ("/run/systemd/system", &systemd.display().to_string()),
                ("/usr/bin/hubgate", env!("CARGO_BIN_EXE_hubgate")),
            ],
        ),
    )
    .unwrap();
    let shims = dir.join("bin");
    std::fs::create_dir_all(&shims).unwrap();
    let log = dir.join("log");
    let _ = std::fs::remove_file(&log);
    let systemctl = format!(
        "case \"$1\" in is-active|is-enabled) exit {} ;; esac",
        if in_use { 0 } else { 1 }
    );
    for (name, body) in [
        ("getent", "exit 0"),
        ("stat", "echo 1234"),
        ("chgrp", "exit 0"),
        ("install", "exit 0"),
        ("systemd-sysusers", "exit 0"),
        ("systemctl", &systemctl),
        ("deb-systemd-helper", "exit 1"),
        // systemctl try-restart of a unit whose ExecStartPre fails answers 1.
        ("deb-systemd-invoke", "exit 1"),
    ] {
        shim(&shims, &log, name, body);
    }
    let path = format!("{}:{}", shims.display(), std::env::var("PATH").unwrap());
    let out = Command::new("sh")
        .arg(&script)
        .args(["configure", "0.1.0-1"])
        .env("PATH", path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    (out.status, stderr, log)
}

/// An upgrade whose new `check` refuses the config the operator kept (a conffile). The
/// previous release accepts `packed_rec_type = "io.microshare lorawan"`, this one refuses it:
/// restarted, the unit's `ExecStartPre=hubgate check` would fail every start for good
/// (`StartLimitIntervalSec=0`) while `try-restart ... || true` let apt report success. The
/// postinst checks with the new binary first: with the agent in use it fails configure,
/// naming the problem, and does not restart it; not in use, it warns and goes on. A config
/// reading its secret as the unit's credential passes (the check sees /etc/hubgate as the
/// credential directory) and the agent is restarted.
#[test]
fn an_upgrade_whose_check_refuses_the_kept_config_does_not_stop_the_running_agent() {
    let dir = tempfile::tempdir().unwrap();
    let postinst = maintainer_script(dir.path(), "postinst");

    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let config = etc.join("hubgate.toml");
    std::fs::write(
        &config,
        "[[source]]\ntype = \"udp\"\n[record]\npacked_rec_type = \"io.microshare lorawan\"\n\
         [sink]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n",
    )
    .unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_hubgate"))
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!refused.status.success(), "the new check refuses it");
    let restart = "deb-systemd-invoke try-restart hubgate.service";

    let (status, stderr, log) = upgrade_postinst(dir.path(), &postinst, true);
    assert!(
        !status.success() && !log.contains(restart),
        "postinst restarted the agent into a config its check refuses or reported success \
         (exit {status}):\n{stderr}\n{log}"
    );
    assert!(
        stderr.contains("refuses the kept") && stderr.contains("record.packed_rec_type"),
        "{stderr}"
    );
    assert!(stderr.contains("dpkg --configure -a"), "{stderr}");

    let (status, stderr, log) = upgrade_postinst(dir.path(), &postinst, false);
    assert!(status.success(), "not in use: {stderr}\n{log}");
    assert!(stderr.contains("warning"), "{stderr}");

    eventhubs_secret(&etc);
    std::fs::write(
        &config,
        "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"eventhubs\"\n\
         connection_string_file = \"${CREDENTIALS_DIRECTORY}/eventhubs.secret\"\n",
    )
    .unwrap();
    let (status, stderr, log) = upgrade_postinst(dir.path(), &postinst, true);
    assert!(status.success(), "accepted: {stderr}\n{log}");
    assert!(log.contains(restart), "{log}");
    assert!(!stderr.contains("hubgate:"), "{stderr}");

    // A secret the unit's own environment gives (EnvironmentFile=) is not there to check:
    // the upgrade says so and goes on.
    std::fs::write(
        &config,
        "[[source]]\ntype = \"udp\"\n[sink]\ntype = \"eventhubs\"\n\
         connection_string = \"${HUBGATE_TEST_UNSET_CONNECTION}\"\n",
    )
    .unwrap();
    let (status, stderr, log) = upgrade_postinst(dir.path(), &postinst, true);
    assert!(status.success(), "from the environment: {stderr}\n{log}");
    assert!(log.contains(restart), "{log}");
    assert!(
        stderr.contains("names an environment variable this upgrade"),
        "{stderr}"
    );
}

/// A package named hubgate at `version` whose only content is its prerm `prerm`, built in
/// `dir`: the scripts are what dpkg's downgrade runs between two releases.
fn prerm_only_deb(dir: &Path, version: &str, prerm: &str) -> PathBuf {
    let tree = dir.join(format!("tree-{version}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: hubgate\nVersion: {version}\nArchitecture: all\n\
             Maintainer: test <test@example.invalid>\nDescription: prerm only\n"
        ),
    )
    .unwrap();
    let script = tree.join("DEBIAN/prerm");
    std::fs::write(&script, prerm).unwrap();
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&script, executable).unwrap();
    let deb = dir.join(format!("hubgate_{version}_all.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&tree)
        .arg(&deb));
    deb
}

/// The maintainer script `name` of the package built in `dir`.
fn maintainer_script(dir: &Path, name: &str) -> String {
    let deb = build_deb(dir);
    let control = dir.join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    std::fs::read_to_string(control.join(name)).unwrap()
}

/// An Event Hubs connection string in `etc/eventhubs.secret`, where the documented config
/// reads it (`${CREDENTIALS_DIRECTORY}/eventhubs.secret`).
fn eventhubs_secret(etc: &Path) {
    std::fs::write(
        etc.join("eventhubs.secret"),
        "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;\
         SharedAccessKey=c2VjcmV0Cg==\n",
    )
    .unwrap();
}

/// The override of the prerm's refusal of a downgrade.
const OVERRIDE: &str = "HUBGATE_DOWNGRADE_LOSES_BUFFER";

/// The shipped prerm, run by `sh` outside dpkg: the config it reads (in `dir/etc`, the
/// documented Event Hubs setup) names the buffer `dir/buffer`, and the hubgate it runs is the
/// one this test was built with.
struct Prerm {
    dir: tempfile::TempDir,
    buffer: PathBuf,
    /// The script as the package holds it.
    shipped: String,
    /// The script with this test's paths.
    text: String,
    script: PathBuf,
}

impl Prerm {
    fn new() -> Prerm {
        let dir = tempfile::tempdir().unwrap();
        let shipped = maintainer_script(dir.path(), "prerm");
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        let buffer = dir.path().join("buffer");
        // The documented Event Hubs setup: the secret from the unit's credential directory.
        eventhubs_secret(&etc);
        std::fs::write(
            etc.join("hubgate.toml"),
            format!(
                "[[source]]\ntype = \"udp\"\n[buffer]\npath = \"{}\"\n[sink]\ntype = \"eventhubs\"\n\
                 connection_string_file = \"${{CREDENTIALS_DIRECTORY}}/eventhubs.secret\"\n",
                buffer.display()
            ),
        )
        .unwrap();
        let text = changed(
            &shipped,
            &[
                ("/etc/hubgate", &etc.display().to_string()),
                ("/usr/bin/hubgate", env!("CARGO_BIN_EXE_hubgate")),
            ],
        );
        let script = dir.path().join("prerm");
        std::fs::write(&script, &text).unwrap();
        Prerm {
            dir,
            buffer,
            shipped,
            text,
            script,
        }
    }

    /// Runs it with `args`, with the override if `allow`: whether it succeeded, and its stderr.
    fn run(&self, args: &[&str], allow: bool) -> (bool, String) {
        self.run_finding_first(args, allow, None)
    }

    /// [`Prerm::run`], the commands in `bin` (if any) found before the system's.
    fn run_finding_first(&self, args: &[&str], allow: bool, bin: Option<&Path>) -> (bool, String) {
        let mut cmd = Command::new("sh");
        cmd.arg(&self.script)
            .args(args)
            .env_remove(OVERRIDE)
            .env_remove("CREDENTIALS_DIRECTORY");
        if allow {
            cmd.env(OVERRIDE, "yes");
        }
        if let Some(bin) = bin {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let paths = std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&path));
            cmd.env("PATH", std::env::join_paths(paths).unwrap());
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stderr)
    }
}

/// Buffers `n` records (bodies `{}`, sequence numbers from 0) in the buffer at `buffer`.
fn buffer_records(buffer: &Path, n: u64) {
    use hubgate::buffer::{SledStore, Store};
    let mut store = SledStore::open(buffer).unwrap();
    for seq in 0..n {
        let value = support::buffer_cmd::stored_record(seq, 0, "{}".into());
        store.insert(seq, value).unwrap();
    }
    store.flush().unwrap();
}

/// What `hubgate buffer export` prints (the dead letters' bodies if `dead_letters`) for the
/// buffer whose database is `sled`: moved to `<reader>/sled` first, as the prerm's line says
/// (`reader` a new directory), and read with a config holding only `[buffer]`.
fn export_moved(reader: &Path, sled: &Path, dead_letters: bool) -> String {
    std::fs::create_dir_all(reader).unwrap();
    std::fs::rename(sled, reader.join("sled")).unwrap();
    let only_buffer = reader.with_extension("toml");
    std::fs::write(
        &only_buffer,
        format!("[buffer]\npath = \"{}\"\n", reader.display()),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubgate"));
    cmd.args(["buffer", "export", "-c"]).arg(&only_buffer);
    if dead_letters {
        cmd.arg("--dead-letters");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A downgrade to a release older than the buffer's layout (`prerm upgrade <older>`, run from
/// the installed package) is refused while the buffer holds records, or while the agent runs
/// and holds it (it cannot be counted then), unless HUBGATE_DOWNGRADE_LOSES_BUFFER=yes. No
/// buffer, an empty one to a release before 0.2.0, or an upgrade go on; an empty one to a
/// release from 0.2.0 on (which refuses a newer layout even empty) goes on with the database
/// moved aside, its dead letters readable there. The refusal says what the older release does
/// with the records: one before 0.2.0 deletes them, one from 0.2.0 on refuses to start.
/// With real dpkg (in a scratch root): the refusal holds against a release whose prerm
/// refuses in `failed-upgrade` too, as this one does; the releases before the guard (0.1.0-1,
/// whose prerm knows only `remove`) let dpkg go on, as docs/operations.md says.
#[test]
fn a_downgrade_below_the_buffer_layout_is_refused_with_records_and_moves_an_empty_buffer_aside() {
    use hubgate::buffer::{encode, BufferLock, SledStore, Store};

    let fx = Prerm::new();
    let dir = &fx.dir;
    let buffer = &fx.buffer;
    let shipped = &fx.shipped;
    let prerm = &fx.text;
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        shipped.contains(&format!("\nthis_version={version}\n")),
        "the prerm names the package's version {version}:\n{shipped}"
    );
    let override_var = OVERRIDE;
    let prerm_run = |args: &[&str], allow: bool| fx.run(args, allow);

    // No buffer yet (the agent never ran): nothing to lose.
    let (ok, stderr) = prerm_run(&["upgrade", "0.1.0-1"], false);
    assert!(ok, "{stderr}");
    let (ok, stderr) = prerm_run(&["upgrade", "0.2.0-1"], false);
    assert!(ok, "{stderr}");

    // An empty buffer: a release before 0.2.0 ignores it; one from 0.2.0 on refuses to start
    // on this layout even so, so the database is moved aside for it, its dead letters in it.
    let dead = hubgate::record::Record {
        id: "dead".into(),
        rec_type: "io.microshare.environment.unpacked".into(),
        key: "58-A0-CB-00-00-10-12-34".into(),
        created_ms: 0,
        body: "{\"refused\":1}".into(),
    };
    let mut store = SledStore::open(buffer).unwrap();
    store.dead_letter(9, encode(&dead)).unwrap();
    store.flush().unwrap();
    drop(store);
    let (ok, stderr) = prerm_run(&["upgrade", "0.1.0-1"], false);
    assert!(ok, "{stderr}");
    assert!(buffer.join("sled").is_dir(), "{stderr}");
    let (ok, stderr) = prerm_run(&["upgrade", "0.2.0-1"], false);
    assert!(
        ok,
        "a downgrade to a release that refuses the empty buffer: {stderr}"
    );
    assert!(!buffer.join("sled").exists(), "{stderr}");
    let aside = moved_aside_for_downgrade(buffer);
    assert_eq!(aside.len(), 1, "{stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line says where it went: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "was moved to \"{}\" with its 1 dead letter(s)",
            aside[0].display()
        )),
        "{stderr}"
    );
    // Read as the line says: the directory moved aside as `sled` of a config's buffer path.
    let read = export_moved(&dir.path().join("reader"), &aside[0], true);
    assert_eq!(read, "{\"refused\":1}\n");

    // The installed release's prerm refuses a later release's downgrade to it: from
    // `failed-upgrade` an empty buffer is not moved, its removal named.
    drop(SledStore::open(buffer).unwrap());
    // A refused downgrade to `to` of an empty buffer: its removal named, the database kept.
    let refused_empty = |(ok, stderr): &(bool, String), to: &str| {
        assert!(!ok, "{stderr}");
        assert!(
            stderr.contains(&format!(
                "refusing the downgrade to {to}: the buffer is empty"
            )) && stderr.contains(&format!("sudo rm -r \"{}/sled\")", buffer.display())),
            "{stderr}"
        );
        assert!(buffer.join("sled").is_dir());
    };
    refused_empty(&prerm_run(&["failed-upgrade", "99.0.0-1"], false), version);
    assert!(moved_aside_for_downgrade(buffer).is_empty());
    // An empty buffer whose database cannot be moved aside for the older release (`mv`
    // fails; a directory of the name it would take, one left by an earlier downgrade, is
    // refused as a database kept aside first): refused, its removal named. Only the prerm
    // of a release before 0.3.0 lets dpkg go on then, so only for such a release the
    // refusal says so.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    shim(&bin, &dir.path().join("mv.log"), "mv", "exit 1");
    let not_backed = "prerm does not back this refusal up for an empty buffer";
    for (to, warned) in [("0.2.1-1", true), ("0.3.0-1", false)] {
        let run = fx.run_finding_first(&["upgrade", to], false, Some(&bin));
        refused_empty(&run, to);
        assert_eq!(run.1.contains(not_backed), warned, "{to}: {}", run.1);
    }
    assert!(moved_aside_for_downgrade(buffer).is_empty());

    buffer_records(buffer, 3);

    let (ok, stderr) = prerm_run(&["upgrade", "0.1.0-1"], false);
    assert!(!ok, "a downgrade with 3 records went on: {stderr}");
    assert!(
        stderr.contains("refusing the downgrade to 0.1.0-1: the buffer holds 3 record(s)"),
        "{stderr}"
    );
    assert!(stderr.contains(override_var), "{stderr}");
    assert!(stderr.contains("do not back this refusal up"), "{stderr}");
    assert!(
        stderr.contains("0.1.0-1 cannot read this buffer's layout: it does not see these records")
            && stderr.contains("drained its own buffer it deletes them"),
        "{stderr}"
    );
    let (ok, stderr) = prerm_run(&["upgrade", "0.1.0-1"], true);
    assert!(ok, "the override: {stderr}");
    // A release from 0.2.0 on deletes nothing: it refuses to start on this layout.
    let (ok, stderr) = prerm_run(&["upgrade", "0.2.1-1"], false);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("refusing the downgrade to 0.2.1-1: the buffer holds 3 record(s)")
            && stderr
                .contains("0.2.1-1 cannot read this buffer's layout: it refuses to start on it")
            && stderr.contains("it deletes nothing")
            && stderr.contains("which moves the buffer's database aside for 0.2.1-1"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("deletes them") && !stderr.contains("accepting the loss"),
        "{stderr}"
    );
    assert!(!stderr.contains("do not back this refusal up"), "{stderr}");
    // 0.3.0 reads the layout before this one's (its index groups in their first encoding).
    let (ok, stderr) = prerm_run(&["upgrade", "0.3.0-1"], false);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("0.3.0-1 cannot read this buffer's layout: it refuses to start on it"),
        "{stderr}"
    );
    let (ok, stderr) = prerm_run(&["upgrade", "99.0.0-1"], false);
    assert!(ok, "an upgrade: {stderr}");
    assert_eq!(stderr, "");
    let (ok, stderr) = prerm_run(&["failed-upgrade", "99.0.0-1"], false);
    assert!(!ok, "failed-upgrade from a newer release: {stderr}");
    assert!(
        stderr.contains(&format!("refusing the downgrade to {version}")),
        "{stderr}"
    );
    let (ok, stderr) = prerm_run(&["failed-upgrade", "0.1.0-1"], false);
    assert!(ok, "failed-upgrade from an older release: {stderr}");
    let (ok, stderr) = prerm_run(&["failed-upgrade", &format!("{version}-1")], false);
    assert!(ok, "failed-upgrade of a reinstall: {stderr}");

    // A running agent holds the buffer's lock: not counted, refused.
    let lock = BufferLock::take(buffer).unwrap();
    let (ok, stderr) = prerm_run(&["upgrade", "0.1.0-1"], false);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("the buffer could not be counted") && stderr.contains("lock"),
        "{stderr}"
    );
    let (ok, stderr) = prerm_run(&["upgrade", "0.2.0-1"], false);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("the buffer could not be counted")
            && stderr
                .contains("0.2.0-1 cannot read this buffer's layout: it refuses to start on it"),
        "{stderr}"
    );
    drop(lock);

    // Real dpkg, in a scratch root; the scripts run outside it (they name the scratch paths).
    let root = dir.path().join("root");
    let admin = root.join("var/lib/dpkg");
    for sub in ["info", "updates"] {
        std::fs::create_dir_all(admin.join(sub)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    let dpkg = |deb: &Path, allow: bool| {
        let mut cmd = Command::new("dpkg");
        cmd.arg(format!("--root={}", root.display()))
            .args([
                "--force-script-chrootless",
                "--force-not-root",
                "--log=/dev/null",
            ])
            .arg("-i")
            .arg(deb)
            .env_remove(override_var);
        if allow {
            cmd.env(override_var, "yes");
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let installed = || {
        run(Command::new("dpkg-query")
            .arg(format!("--admindir={}", admin.display()))
            .args(["-W", "-f", "${Version} ${Status}", "hubgate"]))
    };
    // A later release with a layout this one cannot read.
    let later = changed(
        prerm,
        &[
            (
                "\nreads_buffer_since=0.4.0\n",
                "\nreads_buffer_since=99.0.0\n",
            ),
            (
                &format!("\nthis_version={version}\n"),
                "\nthis_version=99.0.0\n",
            ),
        ],
    );
    let (ok, out) = dpkg(&prerm_only_deb(dir.path(), "99.0.0-1", &later), false);
    assert!(ok, "{out}");
    let this = prerm_only_deb(dir.path(), &format!("{version}-1"), prerm);
    let (ok, out) = dpkg(&this, false);
    assert!(!ok, "dpkg downgraded with 3 records: {out}");
    assert_eq!(installed(), "99.0.0-1 install ok installed", "{out}");
    // The override: the later release's prerm moves the database aside for this one (which
    // refuses a newer layout); put back, for the downgrades below.
    let (ok, out) = dpkg(&this, true);
    assert!(ok, "the override: {out}");
    assert_eq!(installed(), format!("{version}-1 install ok installed"));
    let aside = moved_aside_for_downgrade(buffer);
    assert_eq!(aside.len(), 1, "{out}");
    assert!(out.contains("with its 3 record(s)"), "{out}");
    std::fs::rename(&aside[0], buffer.join("sled")).unwrap();

    // 0.1.0-1's prerm, as cargo-deb made it: dpkg runs it for `failed-upgrade` when the
    // refusal fails `upgrade`, it succeeds, and dpkg goes on.
    let before_guard =
        "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then\n\
                        \tdeb-systemd-invoke stop hubgate.service >/dev/null || true\nfi\n";
    let (ok, out) = dpkg(&prerm_only_deb(dir.path(), "0.1.0-1", before_guard), false);
    assert!(out.contains("refusing the downgrade to 0.1.0-1"), "{out}");
    assert!(ok, "{out}");
    assert_eq!(installed(), "0.1.0-1 install ok installed", "{out}");

    // Back to this release, the buffer emptied, then down to 0.2.0-1: this prerm moves the
    // empty database aside, dpkg never needs 0.2.0-1's prerm (which would let it go on for an
    // empty buffer: the one below does the same), and 0.2.0-1 is installed.
    let (ok, out) = dpkg(&this, false);
    assert!(ok, "{out}");
    let mut store = SledStore::open(buffer).unwrap();
    assert_eq!(store.purge().unwrap(), 3);
    drop(store);
    let (ok, out) = dpkg(&prerm_only_deb(dir.path(), "0.2.0-1", before_guard), false);
    assert!(ok, "{out}");
    assert_eq!(installed(), "0.2.0-1 install ok installed", "{out}");
    assert!(!buffer.join("sled").exists(), "{out}");
    let aside = moved_aside_for_downgrade(buffer);
    assert_eq!(aside.len(), 1, "{out}");
    assert!(
        out.contains(&format!("was moved to \"{}\"", aside[0].display())),
        "{out}"
    );
}

/// With HUBGATE_DOWNGRADE_LOSES_BUFFER=yes, a downgrade to 0.2.x (which refuses to start on
/// this layout) moves the buffer's database aside with its records, as it does an empty one:
/// nothing is deleted, and this release reads them once the directory is `sled` again.
/// Beside a running agent (not counted, nothing moved) it goes on, saying 0.2.x does not
/// start until the database is moved away. For a release before 0.2.0 nothing is moved.
#[test]
fn the_override_of_a_downgrade_to_0_2_moves_the_buffer_aside_with_its_records() {
    use hubgate::buffer::BufferLock;

    let fx = Prerm::new();
    let sled = fx.buffer.join("sled");
    buffer_records(&fx.buffer, 3);

    let (ok, stderr) = fx.run(&["upgrade", "0.1.0-1"], true);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("the buffer is not counted"), "{stderr}");
    assert!(sled.is_dir(), "{stderr}");
    assert!(moved_aside_for_downgrade(&fx.buffer).is_empty());

    let lock = BufferLock::take(&fx.buffer).unwrap();
    let (ok, stderr) = fx.run(&["upgrade", "0.2.0-1"], true);
    drop(lock);
    assert!(ok, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("the buffer could not be counted")
            && stderr.contains("0.2.0-1 does not start until <buffer.path>/sled (buffer.path in "),
        "{stderr}"
    );
    assert!(sled.is_dir(), "{stderr}");
    assert!(moved_aside_for_downgrade(&fx.buffer).is_empty());

    let (ok, stderr) = fx.run(&["upgrade", "0.2.1-1"], true);
    assert!(ok, "{stderr}");
    assert!(!sled.exists(), "{stderr}");
    let aside = moved_aside_for_downgrade(&fx.buffer);
    assert_eq!(aside.len(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line says where: {stderr}");
    assert!(
        stderr.contains(&format!(
            "was moved to \"{}\" with its 3 record(s) and 0 dead letter(s), nothing deleted",
            aside[0].display()
        )) && stderr.contains(&format!(
            "0.4.0 or later sends them once that directory is \"{}\" again: after the buffer \
             0.2.1-1 makes there has been drained (hubgate buffered 0) and removed",
            sled.display()
        )),
        "{stderr}"
    );
    // As the line says: put back as `sled`, every record is read.
    assert_eq!(export_moved(&fx.buffer, &aside[0], false), "{}\n{}\n{}\n");
}

/// The databases moved aside in the buffer directory `buffer` for a downgrade.
fn moved_aside_for_downgrade(buffer: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(buffer)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sled.layout3-"))
        })
        .collect()
}

/// A buffer whose database will not open still holds its records: its segments keep their
/// bodies, and `hubgate buffer recover` carries them once the agent's start has moved the
/// database aside (`sled.broken-<time>`) and started a fresh one. The downgrade guard counts
/// the buffer with `hubgate buffer stats`, which must neither move the database aside to
/// count the fresh one (0 records) nor count that fresh one alone once the agent has: each
/// downgrade is refused, naming why (the database that will not open, then the one kept
/// aside).
#[test]
fn a_downgrade_is_refused_while_the_buffers_records_are_in_a_database_that_will_not_open() {
    let fx = Prerm::new();
    let sled = fx.buffer.join("sled");
    buffer_records(&fx.buffer, 3);
    // As in the power-cut damage the open moves aside for: sled will not read its config.
    std::fs::write(sled.join("conf"), b"\xff not sled's config").unwrap();
    let broken = || -> Vec<PathBuf> {
        let aside = hubgate::buffer::moved_aside(&fx.buffer);
        aside.into_iter().map(|(p, _)| p).collect()
    };
    // Those that went on, and refusals that do not say why.
    let wrong = |told: &str| -> Vec<(&str, String)> {
        ["0.1.0-1", "0.2.1-1"]
            .into_iter()
            .map(|to| (to, fx.run(&["upgrade", to], false)))
            .filter(|(_, (ok, stderr))| *ok || !stderr.contains(told))
            .map(|(to, (_, stderr))| (to, stderr))
            .collect()
    };

    let unmoved = wrong("will not open");
    assert!(
        unmoved.is_empty() && broken().is_empty(),
        "with the buffer's 3 records in a database that will not open, moved to {:?}: {unmoved:#?}",
        broken()
    );
    // The agent's start moves it aside and makes a fresh, empty buffer.
    drop(hubgate::buffer::SledStore::open(&fx.buffer).unwrap());
    let aside = broken();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let moved = wrong(&aside[0].display().to_string());
    assert!(
        moved.is_empty(),
        "with the buffer's 3 records in {aside:?}: {moved:#?}"
    );
    // The buffer itself is empty: 0.2.x's own prerm lets dpkg go on for it, which is said.
    let (_, stderr) = fx.run(&["upgrade", "0.2.1-1"], false);
    assert!(
        stderr.contains("prerm does not back this refusal up for an empty buffer"),
        "{stderr}"
    );
}

/// The targets of a Markdown text's relative links (`[text](target)`, without an anchor),
/// web and in-page links left out.
fn relative_links(text: &str) -> Vec<&str> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target))
        .map(|target| target.split('#').next().unwrap_or_default())
        .filter(|target| {
            !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:")
        })
        .collect()
}

/// `link` from the directory `from`, as a path without `.` or `..`.
fn resolve(from: &Path, link: &str) -> String {
    let mut parts: Vec<&str> = from.to_str().unwrap().split('/').collect();
    for part in link.split('/') {
        match part {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}
