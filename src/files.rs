//! Reading the files an operator points hubgate at (config, secrets, CA bundles): only
//! regular files under a size cap, so a wrong path such as `/dev/zero` or a FIFO fails at
//! once instead of filling memory or hanging; and who else may read a file holding secrets.
//! Replacing a small file of hubgate's own so that a power cut leaves the old or the new one.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The config file: a few KB in practice.
pub const CONFIG_CAP: u64 = 4 << 20;
/// A secret (connection string, password, key): a few hundred bytes in practice.
pub const SECRET_CAP: u64 = 64 << 10;
/// A CA bundle (the system's whole store is ~220 KB).
pub const CA_CAP: u64 = 1 << 20;

/// The text of `path`, which must be a regular file of at most `cap` bytes.
pub fn read_capped(path: &Path, cap: u64) -> Result<String, String> {
    read_open(open(path, 0)?, cap)
}

/// Non-blocking, so that opening a FIFO does not wait for a writer.
fn open(path: &Path, flags: i32) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | flags)
        .open(path)
        .map_err(|e| e.to_string())
}

fn read_open(file: std::fs::File, cap: u64) -> Result<String, String> {
    check_regular(&file.metadata().map_err(|e| e.to_string())?, cap)?;
    let mut text = String::new();
    // One byte more than the cap tells a file that grew since the check.
    file.take(cap + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > cap {
        return Err(too_large(cap));
    }
    Ok(text)
}

/// The certificates of a PEM CA bundle, which must hold at least one: with none, no peer's
/// certificate can be verified (and librdkafka will not start with it).
pub fn ca_certificates(pem: &[u8]) -> Result<Vec<openssl::x509::X509>, String> {
    let certs = openssl::x509::X509::stack_from_pem(pem).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

/// `path` is a directory (of certificates, as OpenSSL takes one), or a regular file of at
/// most [`CA_CAP`] bytes with a PEM certificate in it ([`ca_certificates`]): a CA bundle
/// another library reads, such as librdkafka.
pub fn check_ca_bundle(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.is_dir() {
        return Ok(());
    }
    ca_certificates(read_capped(path, CA_CAP)?.as_bytes()).map(drop)
}

fn check_regular(meta: &std::fs::Metadata, cap: u64) -> Result<(), String> {
    if !meta.is_file() {
        return Err("not a regular file (a device, FIFO or socket cannot be read as one)".into());
    }
    if meta.len() > cap {
        return Err(too_large(cap));
    }
    Ok(())
}

fn too_large(cap: u64) -> String {
    format!("larger than {} KiB: not the file meant?", cap >> 10)
}

/// Replace `path` with `bytes`, durably: written to `path` + `.new`, synced, renamed over
/// `path`, and the directory synced, so that a power cut leaves either content. `path` ends
/// up mode 0600 (umask applied on top) whatever its mode was: what is written this way is the
/// buffer's (see [`create_private_dir`]). The `.new` is made afresh: one a power cut left
/// (an older version's, 0644) is removed first, and so is a symbolic link in its place.
pub fn replace_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut new = path.as_os_str().to_owned();
    new.push(".new");
    let new = std::path::PathBuf::from(new);
    match std::fs::remove_file(&new) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(&new)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&new, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

/// The mode of a file hubgate makes in the buffer directory (umask applied on top).
pub const PRIVATE_FILE: u32 = 0o600;
/// The mode of a directory hubgate makes for the buffer, or in it (umask applied on top).
pub const PRIVATE_DIR: u32 = 0o700;

/// Create directory `dir` and any missing parent, each mode 0700 (umask applied on top), as
/// one `mkdir` each, with no moment when another user could open it: the buffer directory
/// holds the readings, and an agent run by hand has the shell's umask (often 0022), not the
/// unit's 0077. An existing directory is left as it is ([`dir_open_to_others`] warns).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
}

/// Run the `#[ignore]`d test `name` (its path in the crate, `files::tests::…`) of this test
/// binary alone in a child process under umask 0022, as an agent run from a shell has it:
/// the umask is the process's, shared by the tests running in parallel threads here.
#[cfg(test)]
pub(crate) fn run_under_umask_022(name: &str) {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child.args(["--exact", name, "--ignored", "--test-threads=1"]);
    // SAFETY: umask is async-signal-safe and has no failure mode.
    unsafe {
        child.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        })
    };
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed;"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Make the entries of directory `dir` (creations, renames) survive a power cut.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The agent's group, as the .deb's sysusers entry makes it.
const AGENT_GROUP: &str = "hubgate";

/// Who besides the agent may read `path`, which holds `what` (e.g. "the connection
/// string"); `None` when only its owner and the agent's group can: the process's own group,
/// or `hubgate` (`0640 root:hubgate` is how the .deb installs the config, and root runs
/// `hubgate check` on it too).
pub fn readable_by_others(path: &Path, what: &str) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    open_to_others(
        path,
        &meta,
        what,
        0o004,
        "chmod 600, or 640 with the agent's group (chgrp hubgate)",
    )
}

/// [`readable_by_others`] for a directory that holds `what`: who besides the agent may list
/// it or open what is inside (read or search permission). Files the agent makes there are
/// its own; those an older version made, sled's and those of an agent run with a looser
/// umask follow the umask, so the directory's mode is what keeps them in. A warning, not a
/// refusal nor a chmod: the directory is the operator's, and an upgrade must not stop an
/// agent.
pub fn dir_open_to_others(path: &Path, what: &str) -> Option<String> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_dir())?;
    open_to_others(
        path,
        &meta,
        what,
        0o005,
        "chmod 700, or 750 with the agent's group (chgrp hubgate)",
    )
}

/// `path` (holding `what`, `meta` its metadata) is open to every user if any of
/// `other_bits` is set in its mode, to a group not the agent's if any of the same bits is
/// set for the group.
fn open_to_others(
    path: &Path,
    meta: &std::fs::Metadata,
    what: &str,
    other_bits: u32,
    fix: &str,
) -> Option<String> {
    let mode = meta.mode() & 0o777;
    if mode & other_bits != 0 {
        return Some(format!(
            "{} holds {what} and {} (mode {mode:04o}): {fix}",
            path.display(),
            allowed(meta, mode & other_bits, "every user")
        ));
    }
    // SAFETY: getegid has no failure mode.
    let own_group = unsafe { libc::getegid() };
    let group = group_name(meta.gid());
    let agents = meta.gid() == own_group || group.as_deref() == Some(AGENT_GROUP);
    let group_bits = (mode >> 3) & other_bits;
    if group_bits != 0 && !agents {
        let who = format!("group {}", group.as_deref().unwrap_or("unnamed"));
        return Some(format!(
            "{} holds {what} and {} (gid {}, mode {mode:04o}), not the agent's own: {fix}",
            path.display(),
            allowed(meta, group_bits, &who),
            meta.gid()
        ));
    }
    None
}

/// What `who` may do to the file or directory of `meta`, given their permission bits
/// `bits` (read 4, search 1): a directory others may only search is not listed, but the
/// names in it can be opened.
fn allowed(meta: &std::fs::Metadata, bits: u32, who: &str) -> String {
    if !meta.is_dir() {
        return format!("is readable by {who}");
    }
    let may = match (bits & 0o4 != 0, bits & 0o1 != 0) {
        (true, true) => "list and enter",
        (true, false) => "list",
        _ => "enter",
    };
    format!("{who} may {may} it")
}

/// Who besides root and the agent's user may change `path`, which holds `what` (the config,
/// a secret, trusted CAs); `None` when nobody else can. Whoever can write the config can send
/// the secrets to a broker of theirs, a secret file swap the key, a CA file vouch for any
/// host. A warning, not a refusal as for codecs (code the agent runs): a group-writable config
/// is what umask 002 gives, and refusing it would stop an agent at an upgrade.
pub fn writable_by_others(path: &Path, what: &str) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    untrusted(&meta, path, what).map(|u| {
        format!(
            "{}: whoever can change it can redirect or replace what it holds; {}",
            u.what, u.fix
        )
    })
}

/// Why a file or directory hubgate runs code from could be changed by someone other than
/// root or the agent's own user, who could then make the agent run their code.
#[derive(Debug, Clone, PartialEq)]
pub struct Untrusted {
    /// What is wrong, naming the path.
    pub what: String,
    /// The command that puts it right.
    pub fix: &'static str,
}

impl Untrusted {
    /// The one-line error of a file the agent refuses.
    pub fn refused(&self) -> String {
        format!("{}: refused; {}", self.what, self.fix)
    }
}

/// The text of `path` (as [`read_capped`]) and, if so, why it is [`Untrusted`]: a symbolic
/// link (its target is read, but whoever owns the link's directory entry decides where it
/// points, so the agent takes none), an owner other than root and the agent's user, or
/// writable by its group or by every user. The checks are made on the opened file, so a file
/// replaced between the check and the read cannot slip through.
pub fn read_checked(
    path: &Path,
    cap: u64,
    what: &str,
) -> Result<(String, Option<Untrusted>), String> {
    let (file, link) = match open(path, libc::O_NOFOLLOW) {
        Ok(file) => (file, None),
        Err(_) if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink()) => {
            let link = Untrusted {
                what: format!("{} holds {what} and is a symbolic link", path.display()),
                fix: "copy the file in instead",
            };
            // One that points nowhere says so: "No such file" of a name `ls` shows misleads.
            let followed = open(path, 0)
                .map_err(|e| format!("a symbolic link to nothing it can open ({e})"))?;
            (followed, Some(link))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let untrusted = link.or_else(|| untrusted(&meta, path, what));
    Ok((read_open(file, cap)?, untrusted))
}

/// `Err` unless `dir` is a directory (a symbolic link to one is followed: the directory is the
/// config's choice) that only root or the agent's user may change.
pub fn check_trusted_dir(dir: &Path, what: &str) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    match untrusted(&meta, dir, what) {
        Some(u) => Err(u.refused()),
        None => Ok(()),
    }
}

fn untrusted(meta: &std::fs::Metadata, path: &Path, what: &str) -> Option<Untrusted> {
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let by = if mode & 0o002 != 0 {
            "every user"
        } else {
            "its group"
        };
        return Some(Untrusted {
            what: format!(
                "{} holds {what} and is writable by {by} (mode {mode:04o})",
                path.display()
            ),
            fix: "chmod go-w",
        });
    }
    // SAFETY: geteuid has no failure mode.
    let agent = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != agent {
        return Some(Untrusted {
            what: format!(
                "{} holds {what} and is owned by uid {}, neither root nor the agent's user (uid {agent})",
                path.display(),
                meta.uid()
            ),
            fix: "chown root",
        });
    }
    None
}

/// The name of group `gid`, if it has one.
fn group_name(gid: u32) -> Option<String> {
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found = std::ptr::null_mut();
    // SAFETY: getgrgid_r writes into `group` and `buf`, both alive and sized as passed.
    let r = unsafe { libc::getgrgid_r(gid, &mut group, buf.as_mut_ptr(), buf.len(), &mut found) };
    if r != 0 || found.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points at a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(group.gr_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn devices_fifos_and_large_files_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let reason = read_capped(Path::new("/dev/zero"), CONFIG_CAP).unwrap_err();
        assert!(reason.contains("not a regular file"), "{reason}");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reason = read_capped(&fifo, SECRET_CAP).unwrap_err();
        assert!(reason.contains("not a regular file"), "{reason}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 2048]).unwrap();
        assert_eq!(read_capped(&big, 2048).unwrap().len(), 2048);
        let reason = read_capped(&big, 2047).unwrap_err();
        assert!(reason.contains("larger than"), "{reason}");
        check_ca_bundle(dir.path()).unwrap();
        let reason = check_ca_bundle(&fifo).unwrap_err();
        assert!(reason.contains("not a regular file"), "{reason}");
    }

    #[test]
    fn world_and_foreign_group_readable_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "x").unwrap();
        let chmod = |mode| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode));
        chmod(0o600).unwrap();
        assert_eq!(readable_by_others(&file, "a key"), None);
        // The file's group is the creator's, the agent's own here: 0640 is fine.
        chmod(0o640).unwrap();
        assert_eq!(readable_by_others(&file, "a key"), None);
        chmod(0o644).unwrap();
        let w = readable_by_others(&file, "a key").unwrap();
        assert!(w.contains("readable by every user (mode 0644)"), "{w}");
        // A group other than the agent's (giving the file to it needs root, as CI runs).
        let c = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
        let other = unsafe { libc::getegid() } + 1;
        // SAFETY: a valid path; -1 keeps the owner.
        let chowned = unsafe { libc::chown(c.as_ptr(), u32::MAX, other) };
        assert_eq!(chowned, 0, "{}", std::io::Error::last_os_error());
        chmod(0o640).unwrap();
        let w = readable_by_others(&file, "a key").unwrap();
        assert!(
            w.contains("readable by group ")
                && w.contains(&format!("(gid {other}, mode 0640), not the agent's own")),
            "{w}"
        );
    }

    /// A directory others may list or search is told about, saying which, a file path or a
    /// missing one not (the agent makes it, private).
    #[test]
    fn a_directory_open_to_others_is_told_about() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = dir.path().join("buffer");
        assert_eq!(dir_open_to_others(&buffer, "readings"), None);
        std::fs::create_dir(&buffer).unwrap();
        let chgrp = |gid: u32| {
            let c = std::ffi::CString::new(buffer.to_str().unwrap()).unwrap();
            // SAFETY: a valid path; -1 keeps the owner.
            let r = unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) };
            assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        };
        // The agent's own group, whatever group the temporary directory passes on.
        let own = unsafe { libc::getegid() };
        chgrp(own);
        let chmod = |mode| std::fs::set_permissions(&buffer, std::fs::Permissions::from_mode(mode));
        for (mode, told) in [
            (0o700, None),
            (0o750, None),
            (0o755, Some("list and enter")),
            (0o701, Some("enter")),
            (0o711, Some("enter")),
            (0o704, Some("list")),
            (0o702, None),
        ] {
            chmod(mode).unwrap();
            let w = dir_open_to_others(&buffer, "readings");
            let at = told.map(|may| {
                format!(
                    "{} holds readings and every user may {may} it (mode 0{mode:o}): chmod 700",
                    buffer.display()
                )
            });
            assert_eq!(
                w,
                at.map(|at| format!("{at}, or 750 with the agent's group (chgrp hubgate)"))
            );
        }
        // A group other than the agent's (giving the directory to it needs root, as CI runs).
        chgrp(own + 1);
        chmod(0o710).unwrap();
        let w = dir_open_to_others(&buffer, "readings").unwrap();
        assert!(
            w.contains(" may enter it (gid ")
                && w.contains(&format!(
                    "(gid {}, mode 0710), not the agent's own",
                    own + 1
                )),
            "{w}"
        );
        chmod(0o700).unwrap();
        assert_eq!(dir_open_to_others(&buffer, "readings"), None);
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(dir_open_to_others(&file, "readings"), None);
    }

    /// Under umask 0022, as an agent run from a shell has it: the directories made are
    /// 0700, the parent made with them too; one already there is left as it is.
    #[test]
    fn private_dirs_and_files_are_made_without_the_umask_opening_them() {
        run_under_umask_022("files::tests::private_dirs_and_files_under_umask_022");
    }

    #[test]
    #[ignore = "run by private_dirs_and_files_are_made_without_the_umask_opening_them"]
    fn private_dirs_and_files_under_umask_022() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        let (parent, buffer) = (dir.path().join("state"), dir.path().join("state/buffer"));
        create_private_dir(&buffer).unwrap();
        assert_eq!((mode(&parent), mode(&buffer)), (0o700, 0o700));
        std::fs::set_permissions(&buffer, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&buffer).unwrap();
        assert_eq!(mode(&buffer), 0o755);
        let file = buffer.join("session");
        replace_durably(&file, b"first").unwrap();
        assert_eq!(mode(&file), 0o600);
    }

    /// A `.new` a power cut left (an older version's, mode 0644) neither keeps its mode in
    /// the replaced file nor its content; a symbolic link in its place is not followed.
    #[test]
    fn replace_durably_makes_the_new_file_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        let file = dir.path().join("mqtt-session-x");
        let new = dir.path().join("mqtt-session-x.new");
        std::fs::write(&new, "left over, and longer than what replaces it").unwrap();
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o644)).unwrap();
        replace_durably(&file, b"first").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"first");
        assert_eq!(mode(&file) & 0o077, 0, "{:o}", mode(&file));
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "not hubgate's").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &new).unwrap();
        replace_durably(&file, b"second").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"second");
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"not hubgate's");
        assert!(!std::fs::symlink_metadata(&file).unwrap().is_symlink());
    }

    #[test]
    fn replace_durably_leaves_the_new_content_and_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state");
        replace_durably(&file, b"first").unwrap();
        replace_durably(&file, b"second").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state"]);
        // A directory that is gone is an error, not a file written elsewhere.
        let gone = dir.path().join("gone").join("state");
        assert_eq!(
            replace_durably(&gone, b"x").unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
    }
}
