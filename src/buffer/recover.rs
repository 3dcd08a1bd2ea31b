//! Carrying back the records of a buffer database that was moved aside because it would
//! not open (`<path>/sled.broken-<time>`). Its pointers cannot be read, but its segment
//! files hold the records' bodies, each entry whole or not, and each record checks itself
//! (CRC) when decoded. Every whole entry that decodes is carried into the buffer in use,
//! oldest segment first, under sequence numbers after the buffer's own: a record that had
//! already left (delivered, dead-lettered) while others in its segment stayed comes again,
//! a duplicate with the same record id, rather than an acknowledged one being lost.
//!
//! Progress is kept in the directory moved aside, after each segment's records are flushed:
//! a recovery stopped part-way (killed, the disk full) goes on where it stopped when run
//! again, and one that finished carries nothing more. A crash between the flush and the
//! progress file costs a segment carried twice, duplicates again. A segment that cannot be
//! read for a reason that may pass (descriptors, permission) stops the run before it; one
//! that cannot be read at all is named and passed over.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::segments::{passes, Segments, SEGMENT_SIZE, VALUES_DIR};
use super::{BufferError, SledStore, Store};

/// In the directory moved aside: how many of its segments (in the order written) were
/// carried.
const PROGRESS_FILE: &str = "hubgate-recovered";
/// Free space kept beyond a segment's records before they are carried: sled's log grows
/// too, and sled hangs when the disk is full.
const RESERVE: u64 = 4 << 20;

/// What a recovery did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Segment files in the directory, and how many an earlier run had carried.
    pub segments: usize,
    pub done_before: usize,
    /// Records carried, and whole entries left out because they do not decode (damaged).
    pub records: u64,
    pub damaged: u64,
    /// Segments that could not be read, with the reason: their records are not carried.
    pub unreadable: Vec<(u32, String)>,
}

/// Carry the records of the database moved aside to `aside` into `store`, flushing after
/// each segment; `progress(segments done, segments, records carried)` after each one.
pub fn recover(
    store: &mut SledStore,
    aside: &Path,
    mut progress: impl FnMut(usize, usize, u64),
) -> Result<Recovered, BufferError> {
    let fail = |what: &str, e: std::io::Error| {
        BufferError::Storage(format!("{what} {}: {e}", aside.display()))
    };
    if !aside.join(VALUES_DIR).is_dir() {
        return Err(BufferError::Storage(format!(
            "{} holds no segment directory {VALUES_DIR}: not a buffer database moved aside",
            aside.display()
        )));
    }
    let progress_file = aside.join(PROGRESS_FILE);
    let done_before = match std::fs::read_to_string(&progress_file) {
        Ok(text) => text.trim().parse().map_err(|_| {
            BufferError::Storage(format!(
                "{} does not hold a number of segments: remove it to start over",
                progress_file.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(fail("reading the progress of", e)),
    };
    let segments =
        Segments::open(aside, BTreeMap::new()).map_err(|e| fail("opening the segments of", e))?;
    let numbers = segments
        .numbers_as_written()
        .map_err(|e| fail("listing the segments of", e))?;
    let mut done = Recovered {
        segments: numbers.len(),
        done_before,
        ..Recovered::default()
    };
    let mut next = store.last_seq().map_or(0, |s| s + 1);
    for (i, &number) in numbers.iter().enumerate().skip(done_before) {
        if let Some(free) = store.disk_free() {
            if free < SEGMENT_SIZE + RESERVE {
                return Err(BufferError::Storage(format!(
                    "only {free} bytes free on the buffer's disk: stopped before segment {} of \
                     {}, {} record(s) carried; make room and run it again to go on",
                    i + 1,
                    numbers.len(),
                    done.records
                )));
            }
        }
        match segments.entries(number) {
            Ok(entries) => {
                for (_, body) in entries {
                    if super::decode(&body).is_err() {
                        done.damaged += 1;
                        continue;
                    }
                    store.insert(next, body)?;
                    next += 1;
                    done.records += 1;
                }
            }
            // Out of descriptors, no permission: counted as carried, the segment would
            // never be tried again.
            Err(e) if passes(&e) => {
                return Err(BufferError::Storage(format!(
                    "segment {number} cannot be read for now ({e}): stopped before it, {} \
                     record(s) carried; run it again to go on",
                    done.records
                )))
            }
            Err(e) => done.unreadable.push((number, e.to_string())),
        }
        store.flush()?;
        save_progress(&progress_file, i + 1).map_err(|e| fail("saving the progress in", e))?;
        progress(i + 1, numbers.len(), done.records);
    }
    Ok(done)
}

/// Written to a new file, synced, then renamed over the old one and the directory synced:
/// a power cut leaves either count.
fn save_progress(path: &Path, segments: usize) -> std::io::Result<()> {
    let new = path.with_extension("new");
    let mut f = std::fs::File::create(&new)?;
    writeln!(f, "{segments}")?;
    f.sync_all()?;
    std::fs::rename(&new, path)?;
    path.parent().map_or(Ok(()), super::durable::sync_dir)
}
