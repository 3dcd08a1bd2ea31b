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
//! that cannot be read, or not whole (a bad block: what reads is carried), is named and
//! passed over, and tried again, whole, by the next run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use super::segments::{passes, Segments, SEGMENT_SIZE, VALUES_DIR};
use super::{BufferError, SledStore, Store};

/// In the directory moved aside: the number of the last segment (in the order written)
/// carried, and those before it that could not be read whole (see [`Progress`]).
const PROGRESS_FILE: &str = "hubgate-recovered";
/// Free space kept beyond a segment's records before they are carried: sled's log grows
/// too, and sled hangs when the disk is full.
const RESERVE: u64 = 4 << 20;

/// What a recovery did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Segment files in the directory, and how many of them an earlier run had carried.
    pub segments: usize,
    pub done_before: usize,
    /// Records carried, and bytes left out because no entry that decodes covers them
    /// (damage, a torn tail, what could not be read).
    pub records: u64,
    pub damaged: u64,
    /// Segments that could not be read, or not whole, with the reason: the records in what
    /// could not be read are not carried, and the next run tries the segment again.
    pub unreadable: Vec<(u32, String)>,
}

/// The progress file: `through N` (segments up to number `N`, in the order written, were
/// looked at) and `again A B ...` (those of them to read again: they could not be read
/// whole). Numbers, not positions: a segment file removed or repaired between runs moves
/// nothing. An earlier release wrote the count of segments carried, a bare number.
#[derive(Debug, Default, PartialEq, Eq)]
struct Progress {
    through: Option<u32>,
    again: BTreeSet<u32>,
}

impl Progress {
    /// `numbers` as written: the count an earlier release wrote is a position in them (one
    /// past the end is all of them).
    fn parse(text: &str, numbers: &[u32]) -> Option<Progress> {
        if let Ok(count) = text.trim().parse::<usize>() {
            let through = count.min(numbers.len()).checked_sub(1).map(|i| numbers[i]);
            return Some(Progress {
                through,
                again: BTreeSet::new(),
            });
        }
        let mut progress = Progress::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("through") => {
                    progress.through = Some(words.next()?.parse().ok()?);
                    if words.next().is_some() {
                        return None;
                    }
                }
                Some("again") => {
                    for n in words {
                        progress.again.insert(n.parse().ok()?);
                    }
                }
                None => {}
                Some(_) => return None,
            }
        }
        Some(progress)
    }

    fn text(&self) -> String {
        let mut text = String::new();
        if let Some(n) = self.through {
            text.push_str(&format!("through {n}\n"));
        }
        if !self.again.is_empty() {
            let again: Vec<String> = self.again.iter().map(u32::to_string).collect();
            text.push_str(&format!("again {}\n", again.join(" ")));
        }
        text
    }

    /// `numbers` as written, each with whether it is `through` or comes before it (placed
    /// among them by its number, should its file be gone).
    fn looked_at(&self, numbers: &[u32]) -> Vec<(u32, bool)> {
        let Some(through) = self.through else {
            return numbers.iter().map(|&n| (n, false)).collect();
        };
        let mut with = numbers.to_vec();
        if !with.contains(&through) {
            with.push(through);
            with.sort_unstable();
        }
        let order = super::segments::written_order(with);
        let pos = order.iter().position(|&n| n == through).expect("put in");
        let before: BTreeSet<u32> = order[..=pos].iter().copied().collect();
        numbers.iter().map(|&n| (n, before.contains(&n))).collect()
    }
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
    let segments =
        Segments::open(aside, BTreeMap::new()).map_err(|e| fail("opening the segments of", e))?;
    let numbers = segments
        .numbers_as_written()
        .map_err(|e| fail("listing the segments of", e))?;
    let progress_file = aside.join(PROGRESS_FILE);
    let mut saved = match std::fs::read_to_string(&progress_file) {
        Ok(text) => Progress::parse(&text, &numbers).ok_or_else(|| {
            BufferError::Storage(format!(
                "{} does not hold the progress of a recovery: remove it to start over",
                progress_file.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Progress::default(),
        Err(e) => return Err(fail("reading the progress of", e)),
    };
    // A segment to read again whose file is gone has nothing left to carry.
    saved.again.retain(|n| numbers.contains(n));
    // Each segment not carried yet, with whether it comes before `through` (to read again).
    let todo: Vec<(u32, bool)> = saved
        .looked_at(&numbers)
        .into_iter()
        .filter(|(n, before)| !before || saved.again.contains(n))
        .collect();
    let done_before = numbers.len() - todo.len();
    let mut done = Recovered {
        segments: numbers.len(),
        done_before,
        ..Recovered::default()
    };
    let mut next = store.last_seq().map_or(0, |s| s + 1);
    let mut looked = done_before;
    for (number, before) in todo {
        if let Some(free) = store.disk_free() {
            if free < SEGMENT_SIZE + RESERVE {
                return Err(BufferError::Storage(format!(
                    "only {free} bytes free on the buffer's disk: stopped before segment \
                     {number} ({} of {} looked at), {} record(s) carried; make room and run \
                     it again to go on",
                    looked,
                    numbers.len(),
                    done.records
                )));
            }
        }
        match segments.scan(number, |v| super::decode(v).is_ok()) {
            Ok(found) => {
                for (_, body) in found.entries {
                    store.insert(next, body)?;
                    next += 1;
                    done.records += 1;
                }
                done.damaged += found.skipped;
                match found.failed {
                    Some(e) => {
                        let bad = found.unreadable;
                        done.unreadable
                            .push((number, format!("{e} ({bad} byte(s) unread)")));
                        saved.again.insert(number);
                    }
                    None => {
                        saved.again.remove(&number);
                    }
                }
            }
            // Out of descriptors, no permission: nothing is known of the segment, and the
            // run goes on from it once that passes.
            Err(e) if passes(&e) => {
                return Err(BufferError::Storage(format!(
                    "segment {number} cannot be read for now ({e}): stopped before it, {} \
                     record(s) carried; run it again to go on",
                    done.records
                )))
            }
            Err(e) => {
                done.unreadable.push((number, e.to_string()));
                saved.again.insert(number);
            }
        }
        // One to read again, before `through`, leaves it where it is.
        if !before {
            saved.through = Some(number);
        }
        store.flush()?;
        save_progress(&progress_file, &saved.text())
            .map_err(|e| fail("saving the progress in", e))?;
        looked += 1;
        progress(looked, numbers.len(), done.records);
    }
    Ok(done)
}

/// Written to a new file, synced, then renamed over the old one and the directory synced:
/// a power cut leaves either progress.
fn save_progress(path: &Path, text: &str) -> std::io::Result<()> {
    let new = path.with_extension("new");
    let mut f = std::fs::File::create(&new)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&new, path)?;
    path.parent().map_or(Ok(()), super::durable::sync_dir)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;

    use super::*;
    use crate::buffer::{decode, encode};
    use crate::record::Record;

    fn record(i: u64, pad: usize) -> Record {
        Record {
            id: format!("id-{i}"),
            rec_type: "t".into(),
            key: "k".into(),
            created_ms: 1,
            body: format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(pad)),
        }
    }

    /// A database with `n` records of about `pad` bytes, moved aside as it is: returns its
    /// `sled` directory.
    fn aside_with(dir: &Path, n: u64, pad: usize) -> PathBuf {
        let mut store = SledStore::open(&dir.join("old")).unwrap();
        for i in 0..n {
            store.insert(i, encode(&record(i, pad))).unwrap();
        }
        store.flush().unwrap();
        drop(store);
        dir.join("old").join("sled")
    }

    /// The segment files of `aside`, in order.
    fn segment_files(aside: &Path) -> Vec<PathBuf> {
        let mut segs: Vec<_> = std::fs::read_dir(aside.join(VALUES_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segs.sort();
        segs
    }

    /// The (offset, len) of each entry header in segment file `seg`.
    fn entries_of(seg: &Path) -> Vec<(u64, u32)> {
        let bytes = std::fs::read(seg).unwrap();
        let (mut at, mut out) = (0usize, Vec::new());
        while at + 12 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            out.push((at as u64, len));
            at += 12 + len as usize;
        }
        out
    }

    fn carried(store: &SledStore) -> Vec<String> {
        store
            .scan(None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, v)| decode(&v).unwrap().id)
            .collect()
    }

    fn ids(range: std::ops::Range<u64>) -> Vec<String> {
        range.map(|i| format!("id-{i}")).collect()
    }

    /// One bit flipped in one entry's length field (the kind of damage that gets a database
    /// moved aside) costs that entry only: the scan goes on past it to the next entry that
    /// decodes, and the bytes passed over are reported as damaged.
    #[test]
    fn a_damaged_length_costs_only_its_entry() {
        for bit in [0, 20] {
            let dir = tempfile::tempdir().unwrap();
            let aside = aside_with(dir.path(), 50, 100);
            let segs = segment_files(&aside);
            assert_eq!(segs.len(), 1, "{segs:?}");
            let entries = entries_of(&segs[0]);
            assert_eq!(entries.len(), 50);
            let (at, len) = entries[10];
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&segs[0])
                .unwrap();
            file.write_all_at(&(len ^ 1 << bit).to_be_bytes(), at + 8)
                .unwrap();
            drop(file);

            let mut store = SledStore::open(&dir.path().join("new")).unwrap();
            let done = recover(&mut store, &aside, |_, _, _| {}).unwrap();
            let expected: Vec<String> = ids(0..10).into_iter().chain(ids(11..50)).collect();
            assert_eq!(carried(&store), expected, "bit {bit}: {done:?}");
            assert_eq!(done.records, 49);
            assert_eq!(done.damaged, 12 + u64::from(len), "bit {bit}");
            assert!(done.unreadable.is_empty());
        }
    }

    /// A database of 30 records of about 100 KB (10 a segment), moved aside: its `sled`
    /// directory, its 3 segment files, and how many records the first and second hold.
    fn three_segments(dir: &Path) -> (PathBuf, Vec<PathBuf>, u64, u64) {
        let aside = aside_with(dir, 30, 100_000);
        let segs = segment_files(&aside);
        assert_eq!(segs.len(), 3, "{segs:?}");
        let in_first = entries_of(&segs[0]).len() as u64;
        let in_second = entries_of(&segs[1]).len() as u64;
        (aside, segs, in_first, in_second)
    }

    /// A segment that cannot be read is named, and not counted as carried: run again once
    /// it is repaired, the recovery carries it, and nothing else twice.
    #[test]
    fn a_segment_that_could_not_be_read_is_read_again_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let (aside, segs, in_first, in_second) = three_segments(dir.path());
        // The second unreadable: a directory in its place (EISDIR).
        let kept = dir.path().join("kept");
        std::fs::rename(&segs[1], &kept).unwrap();
        std::fs::create_dir(&segs[1]).unwrap();

        let mut store = SledStore::open(&dir.path().join("new")).unwrap();
        let done = recover(&mut store, &aside, |_, _, _| {}).unwrap();
        assert_eq!(done.unreadable.len(), 1, "{done:?}");
        assert_eq!(done.records, 30 - in_second);
        let expected: Vec<String> = ids(0..in_first)
            .into_iter()
            .chain(ids(in_first + in_second..30))
            .collect();
        assert_eq!(carried(&store), expected);

        // Repaired: the next run carries it, and only it.
        std::fs::remove_dir(&segs[1]).unwrap();
        std::fs::rename(&kept, &segs[1]).unwrap();
        let done = recover(&mut store, &aside, |_, _, _| {}).unwrap();
        assert_eq!((done.segments, done.done_before), (3, 2), "{done:?}");
        assert_eq!(done.records, in_second);
        assert!(done.unreadable.is_empty());
        let mut all = expected;
        all.extend(ids(in_first..in_first + in_second));
        assert_eq!(carried(&store), all);

        let done = recover(&mut store, &aside, |_, _, _| {}).unwrap();
        assert_eq!((done.done_before, done.records), (3, 0), "{done:?}");
    }

    /// The progress names segments by number: a segment file removed between runs does not
    /// shift where the next run goes on, and a count above the segments (an earlier
    /// release's progress) is all of them, not an overflow.
    #[test]
    fn progress_survives_a_removed_segment_and_a_count_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (aside, segs, in_first, in_second) = three_segments(dir.path());
        let number =
            |p: &Path| -> u32 { p.file_stem().unwrap().to_str().unwrap().parse().unwrap() };
        let progress = aside.join(PROGRESS_FILE);
        std::fs::write(&progress, format!("through {}\n", number(&segs[1]))).unwrap();
        // Its records carried, an operator removes the second segment.
        std::fs::remove_file(&segs[1]).unwrap();
        let mut store = SledStore::open(&dir.path().join("new")).unwrap();
        let done = recover(&mut store, &aside, |_, _, _| {}).unwrap();
        assert_eq!((done.segments, done.done_before), (2, 1), "{done:?}");
        assert_eq!(carried(&store), ids(in_first + in_second..30));
        assert_eq!(
            std::fs::read_to_string(&progress).unwrap(),
            format!("through {}\n", number(&segs[2]))
        );

        std::fs::write(&progress, "7\n").unwrap();
        let done = recover(&mut store, &aside, |_, _, _| {}).unwrap();
        assert_eq!((done.segments, done.done_before, done.records), (2, 2, 0));
        std::fs::write(&progress, "1\n").unwrap();
        let done = recover(&mut store, &aside, |_, _, _| {}).unwrap();
        assert_eq!((done.segments, done.done_before), (2, 1), "{done:?}");
        assert_eq!(done.records, 30 - in_first - in_second);
    }
}
