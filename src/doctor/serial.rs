//! The serial step: whether the agent will be able to open a serial device. Doctor runs as
//! root (the config is readable by root and the agent's group only), and root may open
//! anything: the device is judged for the agent's user instead, and against the device
//! classes the shipped unit lets it open.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::Outcome;

/// The device classes the shipped unit's `DeviceAllow=` lets the agent open.
const UNIT_ALLOWS: [&str; 4] = ["ttyS", "ttyAMA", "ttyUSB", "ttyACM"];

/// Who the agent runs as, as far as file modes tell: a user id and its groups.
#[derive(Debug, PartialEq)]
pub(super) struct AgentUser {
    uid: u32,
    groups: Vec<u32>,
    /// How it was found, for the step's line.
    name: String,
}

/// The agent's user when doctor runs as root: the owner of the buffer directory (or of its
/// nearest existing parent), as `hubgate buffer` takes it, else the `hubgate` system user;
/// with its groups from `etc` (`passwd`, `group`) and `dialout`, which the unit adds. `None`
/// when not root, or when neither is found: the device is judged for this user then.
pub(super) fn agent_user(buffer: &Path, etc: &Path) -> Option<AgentUser> {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
    let owner = buffer
        .ancestors()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.uid(), m.gid()))
        .filter(|(uid, _)| *uid != 0);
    // (name, uid, gid) of each user.
    let users: Vec<(&str, u32, u32)> = passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                *f.first()?,
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect();
    let (uid, gid, name) = match owner {
        Some((uid, gid)) => (uid, gid, users.iter().find(|u| u.1 == uid).map(|u| u.0)),
        None => users
            .iter()
            .find(|u| u.0 == "hubgate")
            .map(|&(n, uid, gid)| (uid, gid, Some(n)))?,
    };
    let mut groups = vec![gid];
    for g in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
        let [gname, _, id, members] = g[..] else {
            continue;
        };
        let member = name.is_some_and(|n| members.split(',').any(|m| m == n));
        if gname == "dialout" || member {
            groups.extend(id.parse::<u32>().ok());
        }
    }
    let name = match name {
        Some(n) => format!("the agent's user {n} (uid {uid})"),
        None => format!("the agent's user (uid {uid}, the buffer's owner)"),
    };
    Some(AgentUser { uid, groups, name })
}

/// The serial step for `device`, judged for `agent` (root running doctor), else for this
/// user. Not opened: opening a port can reset the board behind it.
pub(super) fn serial(device: &Path, agent: Option<&AgentUser>) -> Outcome {
    let meta =
        match std::fs::metadata(device) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Outcome::Fail(
                "no such device: is it plugged in? (a /dev/serial/by-id/... link keeps its name)"
                    .into(),
            ),
            Err(e) => return Outcome::Fail(e.to_string()),
        };
    if !meta.file_type().is_char_device() {
        return Outcome::Fail("not a character device, so not a serial port".into());
    }
    let owner = format!(
        "owner {}:{}, mode {:o}",
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o777
    );
    let who = match agent {
        Some(a) if !may_open(&meta, a) => {
            return Outcome::Fail(format!(
                "{} may not read and write it ({owner}): give it to the dialout group, or \
                 add that user to the device's group",
                a.name
            ))
        }
        Some(a) => a.name.clone(),
        None => {
            let Ok(c) = std::ffi::CString::new(device.as_os_str().as_encoded_bytes()) else {
                return Outcome::Fail("bad device path".into());
            };
            // SAFETY: `c` is a valid NUL-terminated path.
            if unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK) } != 0 {
                return Outcome::Fail(format!(
                    "this user may not read and write it ({owner}): add the user to its group, usually dialout"
                ));
            }
            "this user".into()
        }
    };
    let text = std::fs::read_to_string("/proc/devices").unwrap_or_default();
    let classes = device_classes(&text, libc::major(meta.rdev()));
    // A major can be listed under several names (4: `/dev/vc/0`, `tty`, `ttyS`); the unit's
    // `DeviceAllow=char-ttyS` allows the whole major, so any allowed name will do.
    if let Some(c) = classes.iter().find(|c| UNIT_ALLOWS.contains(c)) {
        return Outcome::Ok(format!(
            "{c} character device, readable and writable by {who} ({owner})"
        ));
    }
    // The name to add: a plain one (`pts`) rather than a path (`/dev/vc/0`).
    let class = classes
        .iter()
        .find(|c| !c.starts_with('/'))
        .or(classes.first());
    Outcome::Warn(format!(
        "readable and writable by {who} ({owner}), but a {} device, which the shipped \
         unit's DeviceAllow= does not let the agent open: add `DeviceAllow=char-{} rw` in \
         a drop-in (systemctl edit hubgate)",
        class.unwrap_or(&"(unknown class)"),
        class.unwrap_or(&"<class>")
    ))
}

/// What the mode bits let `user` do: read and write.
fn may_open(meta: &std::fs::Metadata, user: &AgentUser) -> bool {
    let mode = meta.mode();
    let bits = if user.uid == 0 {
        0o6
    } else if meta.uid() == user.uid {
        mode >> 6
    } else if user.groups.contains(&meta.gid()) {
        mode >> 3
    } else {
        mode
    };
    bits & 0o6 == 0o6
}

/// The names `/proc/devices` (its text) gives the character devices of `major` (`ttyUSB`,
/// `pts`), in its order.
fn device_classes(text: &str, major: u32) -> Vec<&str> {
    text.lines()
        .skip_while(|l| !l.starts_with("Character devices:"))
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.trim().split_once(' '))
        .filter(|(n, _)| n.parse() == Ok(major))
        .map(|(_, name)| name.trim())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As root, the agent's user comes from the buffer directory's owner, with its groups
    /// from `group` and dialout; with a root-owned buffer, the `hubgate` user.
    #[test]
    fn the_agents_user_is_the_buffers_owner_else_hubgate() {
        // SAFETY: geteuid has no failure mode.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (chown)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0::/root:/bin/sh\nhubgate:x:990:990::/:/usr/sbin/nologin\nsam:x:4343:4300::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            "dialout:x:20:\nsensors:x:77:sam,other\nhubgate:x:990:\n",
        )
        .unwrap();
        let owned = dir.path().join("owned");
        std::fs::create_dir(&owned).unwrap();
        std::os::unix::fs::chown(&owned, Some(4343), Some(4300)).unwrap();
        let sam = agent_user(&owned.join("not-yet"), &etc).unwrap();
        assert_eq!((sam.uid, sam.groups.clone()), (4343, vec![4300, 20, 77]));
        assert_eq!(sam.name, "the agent's user sam (uid 4343)");
        let hubgate = agent_user(dir.path(), &etc).unwrap();
        assert_eq!((hubgate.uid, hubgate.groups), (990, vec![990, 20]));
        std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        assert_eq!(agent_user(dir.path(), &etc), None, "judged for root then");
    }

    #[test]
    fn every_name_of_a_major_is_its_class() {
        let text = "Character devices:\n  1 mem\n  4 /dev/vc/0\n  4 tty\n  4 ttyS\n\
                    136 pts\n188 ttyUSB\n\nBlock devices:\n  4 notachar\n";
        assert_eq!(device_classes(text, 4), ["/dev/vc/0", "tty", "ttyS"]);
        assert_eq!(device_classes(text, 188), ["ttyUSB"]);
        assert_eq!(device_classes(text, 99), Vec::<&str>::new());
    }
}
