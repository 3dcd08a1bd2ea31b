//! Board profiles (`boards/<id>.toml`): the Rust target a board needs and the defaults that
//! suit it (serial device, buffer size for its SD card and RAM). `board = "<id>"` in the site
//! config puts a profile's defaults under the site's own keys: any key the site sets wins.
//!
//! The profiles are compiled in, so a gateway always has the ones its binary was tested with;
//! the .deb also ships the files under `/usr/share/hubgate/boards/` for reading.

use serde::Deserialize;
use toml::{Table, Value};

/// Every profile as `(id, TOML text)`; a test checks this list against `boards/*.toml`.
pub const PROFILES: &[(&str, &str)] = &[
    ("rpi-zero-w", include_str!("../boards/rpi-zero-w.toml")),
    ("rpi-zero-2-w", include_str!("../boards/rpi-zero-2-w.toml")),
    ("rpi3", include_str!("../boards/rpi3.toml")),
    ("rpi4", include_str!("../boards/rpi4.toml")),
    ("rpi5", include_str!("../boards/rpi5.toml")),
    ("rak7248", include_str!("../boards/rak7248.toml")),
    ("seeed-wm1302", include_str!("../boards/seeed-wm1302.toml")),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub board: BoardInfo,
    /// Defaults for each `[[source]]` of `type = "serial"` (checked like the site's own keys).
    #[serde(default)]
    pub serial: Table,
    /// Defaults for `[buffer]` (checked like the site's own keys).
    #[serde(default)]
    pub buffer: Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardInfo {
    pub id: String,
    pub description: String,
    /// Rust target triple of the hubgate build that runs on this board.
    pub target: String,
    /// Where the facts in the profile come from.
    pub provenance: Vec<String>,
    /// What an operator should know before wiring things up.
    #[serde(default)]
    pub notes: Option<String>,
}

/// Ids of the compiled-in profiles.
pub fn ids() -> Vec<&'static str> {
    PROFILES.iter().map(|(id, _)| *id).collect()
}

/// The profile `id`, or a one-line error that lists the known ids.
pub fn find(id: &str) -> Result<Profile, String> {
    let (_, text) = PROFILES
        .iter()
        .find(|(i, _)| *i == id)
        .ok_or_else(|| format!("unknown board {id:?}; known boards: {}", ids().join(", ")))?;
    parse(text).map_err(|e| format!("board {id:?}: {e}"))
}

/// Parse a profile's TOML text.
pub fn parse(text: &str) -> Result<Profile, String> {
    toml::from_str(text).map_err(|e| e.message().trim().replace('\n', " "))
}

impl Profile {
    /// Put this profile's defaults under the parsed site config `site`.
    pub fn apply(&self, site: &mut Table) {
        if !self.buffer.is_empty() {
            let buffer = site
                .entry("buffer")
                .or_insert_with(|| Value::Table(Table::new()));
            // A `buffer` that is not a table is left for the config check to report.
            if let Value::Table(t) = buffer {
                fill(t, &self.buffer);
            }
        }
        if let Some(Value::Array(sources)) = site.get_mut("source") {
            for source in sources {
                if let Value::Table(t) = source {
                    if t.get("type").and_then(Value::as_str) == Some("serial") {
                        fill(t, &self.serial);
                    }
                }
            }
        }
    }
}

/// Add each key of `defaults` that `dst` does not have.
fn fill(dst: &mut Table, defaults: &Table) {
    for (key, value) in defaults {
        dst.entry(key.clone()).or_insert_with(|| value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_board_lists_the_known_ones_on_one_line() {
        let e = find("rpi9").unwrap_err();
        assert_eq!(
            e,
            "unknown board \"rpi9\"; known boards: rpi-zero-w, rpi-zero-2-w, rpi3, rpi4, rpi5, rak7248, seeed-wm1302"
        );
    }

    #[test]
    fn site_keys_win_and_missing_ones_are_filled() {
        let profile = find("rpi4").unwrap();
        let mut site: Table = toml::from_str(
            "[buffer]\nmax_bytes = \"8MiB\"\n\
             [[source]]\ntype = \"serial\"\nframing = \"slip\"\n\
             [[source]]\ntype = \"serial\"\ndevice = \"/dev/ttyUSB0\"\nframing = \"slip\"\n\
             [[source]]\ntype = \"udp\"\n",
        )
        .unwrap();
        profile.apply(&mut site);
        assert_eq!(site["buffer"]["max_bytes"].as_str(), Some("8MiB"));
        assert_eq!(site["buffer"]["max_in_flight"].as_integer(), Some(500));
        let sources = site["source"].as_array().unwrap();
        assert_eq!(sources[0]["device"].as_str(), Some("/dev/serial0"));
        assert_eq!(sources[1]["device"].as_str(), Some("/dev/ttyUSB0"));
        assert!(sources[2].get("device").is_none(), "udp source untouched");
    }
}
