//! Compaction of the segments: a segment goes only once every record in it has left, so a
//! recType parked for long (its hub missing) while the others flow through the buffer
//! would keep every segment written since, many times what `max_bytes` counts. Compaction
//! copies the records left in the sparsest segment ([`Segments::sparsest`]) to the segment
//! being appended to and points sled at the copies; the emptied segment then goes like a
//! drained one.
//!
//! The records moved were acknowledged long ago, so at no moment may a power cut leave a
//! durable pointer to a body that is not on the disk:
//! 1. the bodies are copied (appended, not synced);
//! 2. the next flush syncs the copies' segment (it is prepared after the copies);
//! 3. once it succeeded, each record's pointer is swapped to its copy, only if it still
//!    names the original (the record may have left meanwhile);
//! 4. the original segment, emptied, is deleted after the flush after that, which makes
//!    the swapped pointers durable ([`Segments::deletable`]).
//!
//! sled may write its log to disk at any time after step 3 (its buffers fill), which is
//! why the swap waits for the copies' sync; until step 4 the original stays, so either
//! pointer a power cut leaves reads the same body. A failed flush drops the copies (the
//! pointers still name the originals); a later round copies again.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::index::Index;
use super::segments::{passes, read_entry, Pointer, ReadError, Segments};
use super::BufferError;

/// Bytes of records that left that the closed segments may hold before compaction starts
/// (besides as much as the records still held take): a few segments, so that a backlog
/// drained in order, whose oldest segment alone holds records that left, never starts it.
pub const SLACK: u64 = 4 << 20;

/// Free space a round leaves beyond its copies (sled's own writes; it hangs on ENOSPC),
/// unless the buffer keeps less free (`min_free`).
const RESERVE: u64 = 1 << 20;
/// A round that failed for a reason that may pass is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Whether a round that copies `needed` bytes may run with `free` bytes free on the disk
/// (`None`: unknown), where the buffer keeps `keep_free` free. Not by `keep_free` alone:
/// below it the buffer still stores records in place of those that leave, and compaction
/// is then all that gives the space of parked records' segments back.
pub fn has_room(free: Option<u64>, needed: u64, keep_free: u64) -> bool {
    free.is_none_or(|f| f >= keep_free.min(needed + RESERVE))
}

/// Why a round stopped.
enum Failed {
    /// The segment cannot be read: it is left as it is for the run.
    Segment(String),
    /// The disk, sled or a read error that may pass: tried again at a later flush.
    Round(String),
    /// The segment cannot be opened now, for a reason that may pass (no descriptor, no
    /// permission): the next one is tried, this one again at a later flush.
    Later(String),
}

/// A record's body copied to another segment.
#[derive(Clone, Copy, Debug)]
struct Move {
    seq: u64,
    from: Pointer,
    to: Pointer,
}

#[derive(Default)]
pub struct Compaction {
    /// Copied since the last flush was prepared.
    copied: Vec<Move>,
    /// Copied before the running flush was prepared: swapped in once it succeeded.
    syncing: Vec<Move>,
    /// Pointers were swapped since the last flush was prepared: the next one makes them
    /// durable and deletes the segments they emptied.
    swapped: bool,
    /// Segments a round could not empty (an entry that is not there whole, which the drain
    /// reports as damage, or one that could not be read): not tried again in this run.
    stuck: BTreeSet<u32>,
    /// When a round that failed for a reason that may pass was last logged.
    warned: Option<Instant>,
}

impl Compaction {
    /// Something waits for a flush: copies to sync, or swapped pointers to make durable.
    pub fn wants_flush(&self) -> bool {
        !self.copied.is_empty() || !self.syncing.is_empty() || self.swapped
    }

    /// A flush is prepared: it syncs the copies made so far.
    pub fn prepared(&mut self) {
        self.syncing.append(&mut self.copied);
        self.swapped = false;
    }

    /// The running flush is done: if it succeeded, swap the pointers of the copies it synced
    /// (each only if it still names the original); if not, drop those copies. Then, with
    /// nothing in progress, start the next round: copy the records of the sparsest segment,
    /// if one is due. Returns the number of records copied, which the next flush syncs.
    /// `room` says whether the disk has room for a round's copies of so many bytes (see
    /// [`has_room`]).
    pub fn flushed(
        &mut self,
        ok: bool,
        room: impl Fn(u64) -> bool,
        segments: &mut Segments,
        index: &mut Index,
    ) -> Result<usize, BufferError> {
        let mut failed = None;
        for m in std::mem::take(&mut self.syncing) {
            let swapped = ok
                && failed.is_none()
                && match index.swap(m.seq, m.from, m.to) {
                    Ok(named) => named,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                };
            // The copy counted first: were the original the segment's last record, the
            // segment being appended to could otherwise be retired as drained.
            if swapped {
                segments.removed(m.from);
                self.swapped = true;
            } else {
                segments.removed(m.to);
            }
        }
        if let Some(e) = failed {
            return Err(BufferError::Storage(format!(
                "compaction: pointing records at their copies: {e}"
            )));
        }
        if !ok || !self.copied.is_empty() {
            return Ok(0);
        }
        // A segment that cannot be read is not tried again in this run (the same failure at
        // every flush would keep the others from being compacted), and the next one is
        // tried at once. What was copied before a failure is swapped in as usual. One that
        // cannot be opened for now is passed over in this round only: it would otherwise
        // stay the sparsest and end every round while its cause lasts.
        let mut skip = self.stuck.clone();
        while let Some(number) = segments.sparsest(SLACK, &skip) {
            if !room(segments.held_bytes(number)) {
                break;
            }
            match self.copy(number, segments, index) {
                Ok(_) => {}
                Err(Failed::Segment(why)) => {
                    log::warn!("buffer: {why}: that segment is left as it is");
                    self.stuck.insert(number);
                    skip.insert(number);
                }
                Err(Failed::Later(why)) => {
                    self.warn(&why);
                    skip.insert(number);
                }
                Err(Failed::Round(why)) => {
                    self.warn(&why);
                    break;
                }
            }
            if !self.copied.is_empty() {
                break;
            }
        }
        Ok(self.copied.len())
    }

    /// A failure that may pass, logged at most once every [`WARN_EVERY`].
    fn warn(&mut self, why: &str) {
        if self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            self.warned = Some(Instant::now());
            log::warn!("buffer: {why}: compaction tries again later");
        }
    }

    /// Copy the records still in segment `number`.
    fn copy(
        &mut self,
        number: u32,
        segments: &mut Segments,
        index: &Index,
    ) -> Result<usize, Failed> {
        let why = |what: &str, e: &dyn std::fmt::Display| {
            format!("compacting segment {number}: {what}: {e}")
        };
        let (file, headers) = segments.headers(number).map_err(|e| {
            let why = why("reading it", &e);
            if passes(&e) {
                Failed::Later(why)
            } else {
                Failed::Segment(why)
            }
        })?;
        for (seq, at) in headers {
            let named = index.get(seq).map_err(|e| Failed::Round(why("sled", &e)))?;
            if named != Some(at) {
                continue;
            }
            let value = read_entry(&file, seq, at).map_err(|e| match e {
                ReadError::Passing(_) => Failed::Round(why("reading", &e)),
                ReadError::Damaged(_) | ReadError::Io(_) => Failed::Segment(why("reading", &e)),
            })?;
            let to = segments
                .append(seq, &value)
                .map_err(|e| Failed::Round(why("appending", &e)))?;
            segments.added(to);
            self.copied.push(Move { seq, from: at, to });
        }
        let copied = self.copied.len();
        if (copied as u64) < segments.held(number) {
            log::warn!(
                "buffer: segment {number} holds {} record(s) whose entries cannot be read whole: \
                 it stays until they leave",
                segments.held(number) - copied as u64
            );
            self.stuck.insert(number);
        }
        Ok(copied)
    }

    /// Every record left (a purge): the copies name nothing.
    pub fn clear(&mut self) {
        self.copied.clear();
        self.syncing.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::{has_room, RESERVE};

    /// A round runs with room for its copies and the reserve, below `min_free` too (it is
    /// what gives space back there); with less, it waits; with no reserve asked, it runs.
    #[test]
    fn a_round_needs_room_for_its_copies_not_min_free() {
        let min_free = 16 << 20;
        let needed = 300_000;
        assert!(has_room(None, needed, min_free));
        assert!(has_room(Some(min_free), needed, min_free));
        assert!(has_room(Some(needed + RESERVE), needed, min_free));
        assert!(!has_room(Some(needed + RESERVE - 1), needed, min_free));
        assert!(!has_room(Some(0), needed, min_free));
        assert!(has_room(Some(0), needed, 0));
    }
}
