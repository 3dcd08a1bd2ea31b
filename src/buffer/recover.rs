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
//!
//! A directory a newer release wrote is refused before a record in it is read or a progress file
//! written: this release could take that layout's entries for damage, and its progress file would
//! tell the newer release's recovery they were carried. The layout is in sled's state, read where
//! sled opens the directory (one a salvage could not read all of, one a downgrade left); sled's
//! open may rewrite its own files there (its log's tail, a torn log segment, a snapshot), never
//! what its trees hold. One whose sled will not open as damaged has no layout to read, and its
//! segments are read as this release's, each record checking itself; one whose sled is held by
//! another process, or will not open for a reason that passes, is refused until it opens. Layouts 1
//! to 3 keep the bodies in the same segment entries, all a recovery reads, so it reads them as they
//! are; the layout before them kept the bodies in sled and has no segment directory to read.
//!
//! Every record carried ages from the recovery. The drain counts a record's age for
//! `max_age` from its creation time less the forward steps of the clock kept after its
//! number (`pipeline::clock_steps`), and credits the time across a restart from the clock's
//! last reading; the database moved aside kept both in sled's state, which may not open, and
//! its numbers are not the buffer's. Its records, taken by a clock that was stepped since (a
//! Pi booted at fake-hwclock's time, then synchronised), would be aged across the step and
//! dropped as expired at the first drain: acknowledged readings lost. So the creation time
//! of each record carried is set to the recovery's (kept if later), and with the clock not
//! known to be synchronised now to none, as for a record made before the clock was set (it
//! ages from each run's first trusted reading of the clock). A record already older than
//! `max_age` is then delivered late
//! rather than dropped. Only that time changes: the record's body, with the time of its
//! measurement, is carried as it was. The records carried are numbered past the buffer's
//! steps too, as a run numbers its own, so that no step taken before the recovery counts for
//! them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use super::segments::{passes, Segments, SEGMENT_SIZE, VALUES_DIR};
use super::sled_store::{newer_layout_at, LAYOUT};
use super::{BufferError, ClockState, SledStore, Store};
use crate::pipeline::clock_steps::ClockSteps;
use crate::record::ms_since_epoch;

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

/// `body` (a record that decodes) with the creation time it is carried with: `now`, the
/// recovery's (ms; `None`: the clock is not known to be synchronised now, no time), or its
/// own if later; a record without a time keeps none.
fn restamped(body: Vec<u8>, now: Option<u64>) -> Vec<u8> {
    let Ok(mut record) = super::decode(&body) else {
        return body;
    };
    let created_ms = match (record.created_ms, now) {
        (0, _) | (_, None) => 0,
        (t, Some(now)) => t.max(now),
    };
    if created_ms == record.created_ms {
        return body;
    }
    record.created_ms = created_ms;
    super::encode(&record)
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
/// each segment, each aging from `now` (the recovery's time, from a clock known to be
/// synchronised; `None`: not known to be, no time); `progress(segments done, segments,
/// records carried)` after each one.
pub fn recover(
    store: &mut SledStore,
    aside: &Path,
    now: Option<SystemTime>,
    mut progress: impl FnMut(usize, usize, u64),
) -> Result<Recovered, BufferError> {
    let fail = |what: &str, e: std::io::Error| {
        BufferError::Storage(format!("{what} {}: {e}", aside.display()))
    };
    // First, before a record is read or progress written there: this release would take a
    // newer layout's entries for damage, and its progress file would tell that release's
    // recovery that they were carried.
    match newer_layout_at(aside) {
        Ok(None) => {}
        Ok(Some(layout)) => {
            return Err(BufferError::Storage(format!(
                "{}: written by a newer hubgate (buffer layout {layout}; this one reads layout \
                 {LAYOUT}): nothing was carried. Recover it with a release that reads layout \
                 {layout}",
                aside.display()
            )))
        }
        Err(why) => {
            return Err(BufferError::Storage(format!(
                "{}: nothing was carried: {why}",
                aside.display()
            )))
        }
    }
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
    let now = now.map(ms_since_epoch);
    let steps = ClockSteps::decode(&super::clock_state(store, ClockState::Steps)?);
    let mut next = store
        .last_seq()
        .map_or(0, |s| s + 1)
        .max(steps.first_after());
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
                    store.insert(next, restamped(body, now))?;
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
        crate::files::replace_durably(&progress_file, saved.text().as_bytes())
            .map_err(|e| fail("saving the progress in", e))?;
        looked += 1;
        progress(looked, numbers.len(), done.records);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;

    use super::super::test_support::with_disk_free;
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
            let done = recover(&mut store, &aside, None, |_, _, _| {}).unwrap();
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

    /// The ids [`three_segments`] carries when its second segment is passed over.
    fn all_but_second(in_first: u64, in_second: u64) -> Vec<String> {
        let mut carried = ids(0..in_first);
        carried.extend(ids(in_first + in_second..30));
        carried
    }

    /// The number a segment file is named by.
    fn segment_number(seg: &Path) -> u32 {
        seg.file_stem().unwrap().to_str().unwrap().parse().unwrap()
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
        let done = recover(&mut store, &aside, None, |_, _, _| {}).unwrap();
        assert_eq!(done.unreadable.len(), 1, "{done:?}");
        assert_eq!(done.records, 30 - in_second);
        assert_eq!(carried(&store), all_but_second(in_first, in_second));

        // Repaired: the next run carries it, and only it.
        std::fs::remove_dir(&segs[1]).unwrap();
        std::fs::rename(&kept, &segs[1]).unwrap();
        let done = recover(&mut store, &aside, None, |_, _, _| {}).unwrap();
        assert_eq!((done.segments, done.done_before), (3, 2), "{done:?}");
        assert_eq!(done.records, in_second);
        assert!(done.unreadable.is_empty());
        let mut all = all_but_second(in_first, in_second);
        all.extend(ids(in_first..in_first + in_second));
        assert_eq!(carried(&store), all);

        let done = recover(&mut store, &aside, None, |_, _, _| {}).unwrap();
        assert_eq!((done.done_before, done.records), (3, 0), "{done:?}");
    }

    /// The progress names segments by number: a segment file removed between runs does not
    /// shift where the next run goes on, and a count above the segments (an earlier
    /// release's progress) is all of them, not an overflow.
    #[test]
    fn progress_survives_a_removed_segment_and_a_count_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (aside, segs, in_first, in_second) = three_segments(dir.path());
        let progress = aside.join(PROGRESS_FILE);
        std::fs::write(&progress, format!("through {}\n", segment_number(&segs[1]))).unwrap();
        // Its records carried, an operator removes the second segment.
        std::fs::remove_file(&segs[1]).unwrap();
        let mut store = SledStore::open(&dir.path().join("new")).unwrap();
        let done = recover(&mut store, &aside, None, |_, _, _| {}).unwrap();
        assert_eq!((done.segments, done.done_before), (2, 1), "{done:?}");
        assert_eq!(carried(&store), ids(in_first + in_second..30));
        assert_eq!(
            std::fs::read_to_string(&progress).unwrap(),
            format!("through {}\n", segment_number(&segs[2]))
        );

        std::fs::write(&progress, "7\n").unwrap();
        let done = recover(&mut store, &aside, None, |_, _, _| {}).unwrap();
        assert_eq!((done.segments, done.done_before, done.records), (2, 2, 0));
        std::fs::write(&progress, "1\n").unwrap();
        let done = recover(&mut store, &aside, None, |_, _, _| {}).unwrap();
        assert_eq!((done.segments, done.done_before), (2, 1), "{done:?}");
        assert_eq!(done.records, 30 - in_first - in_second);
    }

    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;

    /// Record `i` made at `created_ms` (0: no time), encoded.
    fn made_at(i: u64, created_ms: u64) -> Vec<u8> {
        encode(&Record {
            created_ms,
            ..record(i, 10)
        })
    }

    /// The numbers, ids and creation times of the records in `store`, in order.
    fn times(store: &SledStore) -> Vec<(u64, String, u64)> {
        store
            .scan(None, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(seq, v)| decode(&v).map(|r| (seq, r.id, r.created_ms)).unwrap())
            .collect()
    }

    /// A buffer database at `buffer` (its directory) made as it is by `fill`, then damaged so
    /// that sled will not open it: the fresh database the next open starts, and the one it
    /// moved aside.
    fn broken(buffer: &Path, fill: impl FnOnce(&mut SledStore)) -> (SledStore, PathBuf) {
        let mut old = SledStore::open(buffer).unwrap();
        fill(&mut old);
        old.flush().unwrap();
        drop(old);
        std::fs::write(buffer.join("sled").join("conf"), b"\xff not sled's config").unwrap();
        let store = SledStore::open(buffer).unwrap();
        assert!(store.moved_aside_at_open());
        let mut kept = crate::buffer::moved_aside(buffer);
        assert_eq!(kept.len(), 1, "{kept:?}");
        (store, kept.remove(0).0)
    }

    fn set_steps(store: &mut SledStore, steps: &ClockSteps) {
        store
            .state_set(ClockState::Steps.key(), &steps.encode())
            .unwrap();
    }

    /// The age at `now` of the oldest record, as the drain counts it for `max_age`.
    fn oldest(store: &SledStore, now: SystemTime) -> Option<Option<std::time::Duration>> {
        crate::pipeline::oldest_age(store, now)
    }

    fn age(ms: u64) -> Option<Option<std::time::Duration>> {
        Some(Some(std::time::Duration::from_millis(ms)))
    }

    /// A Pi booted at fake-hwclock's time, 40 days old, buffered three readings an hour ago,
    /// then NTP stepped the clock (kept in sled's state); two more came after the step, one
    /// before the clock was trusted. A power cut damaged sled's files; the fresh database
    /// took two readings of its own, two days old. Carried, every record ages from the
    /// recovery: the drain does not drop the three from before the step as 40 days old (past
    /// `max_age`, 7 days), the one without a time keeps none, and the bodies are carried as
    /// they were. The buffer's own readings (the ones the drain reaches first) keep their
    /// times, and their two days.
    #[test]
    fn records_taken_before_a_clock_step_are_not_dropped_once_carried() {
        let max_age = crate::config::BufferConfig::default().max_age.as_millis() as u64;
        assert_eq!(max_age, 7 * DAY);
        let now = SystemTime::now();
        let now_ms = ms_since_epoch(now);
        let dir = tempfile::tempdir().unwrap();
        let (mut store, aside) = broken(dir.path(), |old| {
            for i in 0..3 {
                old.insert(i, made_at(i, now_ms - 40 * DAY - HOUR)).unwrap();
            }
            let mut steps = ClockSteps::default();
            steps.stepped(3, 40 * DAY);
            set_steps(old, &steps);
            for i in 3..5 {
                old.insert(i, made_at(i, now_ms - HOUR)).unwrap();
            }
            old.insert(5, made_at(5, 0)).unwrap();
        });
        for i in 0..2 {
            store.insert(i, made_at(100 + i, now_ms - 2 * DAY)).unwrap();
        }

        let done = recover(&mut store, &aside, Some(now), |_, _, _| {}).unwrap();
        assert_eq!(done.records, 6, "{done:?}");
        let id = |i: u64| format!("id-{i}");
        assert_eq!(
            times(&store),
            vec![
                (0, id(100), now_ms - 2 * DAY),
                (1, id(101), now_ms - 2 * DAY),
                (2, id(0), now_ms),
                (3, id(1), now_ms),
                (4, id(2), now_ms),
                (5, id(3), now_ms),
                (6, id(4), now_ms),
                (7, id(5), 0),
            ]
        );
        for (seq, v) in store.scan(Some(1), usize::MAX).unwrap() {
            let carried = decode(&v).unwrap();
            let i = seq - 2;
            let made = Record {
                created_ms: carried.created_ms,
                ..record(i, 10)
            };
            assert_eq!(carried, made, "only the creation time changes");
        }
        let steps = crate::buffer::clock_state(&store, ClockState::Steps);
        assert_eq!(steps.unwrap(), Vec::<u8>::new(), "no step carried");

        assert_eq!(oldest(&store, now), age(2 * DAY), "the buffer's own");
        store.remove(0).unwrap();
        store.remove(1).unwrap();
        assert_eq!(oldest(&store, now), age(0), "carried from before the step");
        let later = now + std::time::Duration::from_millis(HOUR);
        assert_eq!(oldest(&store, later), age(HOUR), "aging from the recovery");
    }

    /// Records carried are numbered past the steps the buffer kept, as a run numbers its
    /// own: a step taken before the recovery does not count for them, and the buffer's own
    /// records keep theirs. Here the buffer took two readings before a step of 40 days it
    /// kept and two after; then with a salvage's state (steps past its highest number, its
    /// later records sent straight to the sink).
    #[test]
    fn records_carried_are_numbered_past_the_buffers_steps() {
        let now = SystemTime::now();
        let now_ms = ms_since_epoch(now);
        let wrong = now_ms - 40 * DAY - HOUR;
        let fill = |old: &mut SledStore| {
            for i in 0..3 {
                old.insert(i, made_at(i, wrong)).unwrap();
            }
        };

        let dir = tempfile::tempdir().unwrap();
        let (mut store, aside) = broken(dir.path(), fill);
        for i in 0..4 {
            let t = if i < 2 { wrong } else { now_ms - HOUR };
            store.insert(i, made_at(100 + i, t)).unwrap();
        }
        let mut kept = ClockSteps::default();
        kept.stepped(2, 40 * DAY);
        set_steps(&mut store, &kept);
        let own = times(&store);
        recover(&mut store, &aside, Some(now), |_, _, _| {}).unwrap();
        let got = times(&store);
        assert_eq!(got[..4], own[..], "the buffer's own as they were");
        let carried: Vec<(u64, u64)> = got[4..].iter().map(|(s, _, t)| (*s, *t)).collect();
        assert_eq!(carried, [(4, now_ms), (5, now_ms), (6, now_ms)]);
        let steps = crate::buffer::clock_state(&store, ClockState::Steps).unwrap();
        assert_eq!(
            ClockSteps::decode(&steps),
            kept,
            "the buffer's steps as they were"
        );
        assert_eq!(
            oldest(&store, now),
            age(HOUR),
            "the step still counts for its own"
        );

        let dir = tempfile::tempdir().unwrap();
        let (mut store, aside) = broken(dir.path(), fill);
        let mut kept = ClockSteps::default();
        kept.stepped(10, HOUR);
        set_steps(&mut store, &kept);
        recover(&mut store, &aside, Some(now), |_, _, _| {}).unwrap();
        let numbered: Vec<(u64, u64)> = times(&store).iter().map(|(s, _, t)| (*s, *t)).collect();
        assert_eq!(numbered, [(10, now_ms), (11, now_ms), (12, now_ms)]);
        let later = now + std::time::Duration::from_millis(2 * HOUR);
        assert_eq!(
            oldest(&store, later),
            age(2 * HOUR),
            "no step counted for them"
        );
    }

    /// With the clock not known to be synchronised at the recovery, the records carried keep
    /// no time, as records made before the clock was set: they age from each run's first
    /// trusted reading of the clock. With it known to be, a record stamped after the
    /// recovery's time (a clock stepped back since) keeps its own.
    #[test]
    fn records_carried_keep_no_time_when_the_clock_is_not_known_to_be_synchronised() {
        let now = SystemTime::now();
        let now_ms = ms_since_epoch(now);
        let created = [now_ms - 40 * DAY, now_ms + HOUR, 0];
        for synchronised in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (mut store, aside) = broken(dir.path(), |old| {
                for (i, &t) in created.iter().enumerate() {
                    old.insert(i as u64, made_at(i as u64, t)).unwrap();
                }
            });
            recover(
                &mut store,
                &aside,
                synchronised.then_some(now),
                |_, _, _| {},
            )
            .unwrap();
            let expected = match synchronised {
                true => [now_ms, now_ms + HOUR, 0],
                false => [0, 0, 0],
            };
            let got: Vec<u64> = times(&store).into_iter().map(|(_, _, t)| t).collect();
            assert_eq!(got, expected, "synchronised {synchronised}");
            let first = match synchronised {
                true => age(0),
                false => Some(None),
            };
            assert_eq!(oldest(&store, now), first, "synchronised {synchronised}");
        }
    }

    /// A progress file that cannot be read (here, not text) stops the recovery before a
    /// record is carried, and is left as it was: taken for no progress, the run would carry
    /// every segment again, each record a second time.
    #[test]
    fn a_progress_file_that_cannot_be_read_stops_the_run_before_a_record_is_carried() {
        let dir = tempfile::tempdir().unwrap();
        let (aside, _, _, _) = three_segments(dir.path());
        let progress = aside.join(PROGRESS_FILE);
        std::fs::write(&progress, b"through \xff\n").unwrap();
        let mut store = SledStore::open(&dir.path().join("new")).unwrap();
        let e = recover(&mut store, &aside, None, |_, _, _| {}).unwrap_err();
        assert!(
            matches!(&e, BufferError::Storage(why) if why == &format!(
                "reading the progress of {}: stream did not contain valid UTF-8",
                aside.display()
            )),
            "{e}"
        );
        assert_eq!(carried(&store), Vec::<String>::new());
        assert_eq!(std::fs::read(&progress).unwrap(), b"through \xff\n");
    }

    /// A segment that cannot be opened for good (a dangling link in its place) is named and
    /// passed over, not taken for one that cannot be read for now, which would stop every
    /// run before it and the segments after it; the progress is told after each segment.
    #[test]
    fn a_segment_that_cannot_be_opened_is_passed_over_and_progress_told_after_each() {
        let dir = tempfile::tempdir().unwrap();
        let (aside, segs, in_first, in_second) = three_segments(dir.path());
        std::fs::remove_file(&segs[1]).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &segs[1]).unwrap();
        let mut store = SledStore::open(&dir.path().join("new")).unwrap();
        let mut told = Vec::new();
        let done = recover(&mut store, &aside, None, |i, of, records| {
            told.push((i, of, records))
        })
        .unwrap();
        let second = segment_number(&segs[1]);
        let unreadable: Vec<u32> = done.unreadable.iter().map(|(n, _)| *n).collect();
        assert_eq!(unreadable, [second], "{done:?}");
        assert_eq!(done.records, 30 - in_second);
        assert_eq!(carried(&store), all_but_second(in_first, in_second));
        assert_eq!(
            told,
            [(1, 3, in_first), (2, 3, in_first), (3, 3, 30 - in_second)]
        );
    }

    /// A segment is carried only with room for it and 4 MiB more on the buffer's disk (sled
    /// hangs on a full disk): with a byte less the run stops before it, nothing carried, and
    /// says how to go on; with that room, it is carried.
    #[test]
    fn a_segment_is_carried_only_with_room_for_it_and_4_mib() {
        let dir = tempfile::tempdir().unwrap();
        let (aside, segs, _, _) = three_segments(dir.path());
        let first = segment_number(&segs[0]);
        let room = SEGMENT_SIZE + (4 << 20);
        let mut store = SledStore::open(&dir.path().join("new")).unwrap();
        let e = with_disk_free(room - 1, || recover(&mut store, &aside, None, |_, _, _| {}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "only {} bytes free on the buffer's disk: stopped before segment {first} (0 of 3 \
                 looked at), 0 record(s) carried",
                room - 1
            )),
            "{e}"
        );
        assert_eq!(carried(&store), Vec::<String>::new());
        let done =
            with_disk_free(room, || recover(&mut store, &aside, None, |_, _, _| {})).unwrap();
        assert_eq!(done.records, 30);
        assert_eq!(carried(&store), ids(0..30));
    }
}
