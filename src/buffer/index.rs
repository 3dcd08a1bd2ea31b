//! The record index: where each buffered record's body is ([`Pointer`] into a segment),
//! kept in sled one entry per group of 256 consecutive sequence numbers rather than one
//! per record. sled's bookkeeping per entry and its leaves (a leaf holds up to 16 entries,
//! and its cache keeps at least one per LRU shard) made an outage's memory grow with the
//! backlog; a group's entry takes a few bytes per record instead.
//!
//! An entry's key is the group's number (`seq >> 8`, big-endian, so sled's order is the
//! records' order); its value is [`FORMAT`], the group's record count (varint), then runs
//! of records. A run's records lie back to back in one segment (each entry starts where the
//! one before ends, [`Pointer::end`]), as appends leave them, gaps in their numbers allowed.
//! A run is its record count, the segment and the offset of its first entry, the low byte
//! of its first sequence number and its first length, then per further record one varint:
//! the change of its length from the one before (zigzag), shifted left once, its low bit
//! set when the record's number is not the one after the record before; only then a byte
//! follows: how far past that next number it is (the difference of the low bytes minus 2). Every
//! varint is a u32 in at most five bytes. A record appended right after the one before
//! takes a byte when its length changes by 31 or less either way, one after a gap two:
//! records of one recType parked while others are delivered lie back to back with gaps
//! when they spill. The index is what an outage's memory grows with, as sled holds its few
//! leaves whole. A record not back to back with the one before starts a run of its own. A
//! group of 256 records each in a run of its own takes about 4 KiB, far below the size past
//! which sled keeps a value apart as a blob (128 KiB), even 16 to a leaf.
//!
//! [`FORMAT_ONE`] (0.3.0's) had the same runs, with per record the low byte of its sequence
//! number and its length: about three bytes a record. It is still read: a group stays as
//! it is until it changes. A buffer that may hold groups of [`FORMAT`] is of layout 3
//! ([`super::sled_store::LAYOUT`]). 0.3.0 reads the index before it checks the layout: it
//! logs each group of [`FORMAT`] as damaged, then refuses the buffer, changing nothing.
//!
//! Changes are held in memory, per group, until [`Index::write`] puts them into sled in
//! one batch: the store does that before each flush (so a flush makes durable what it made
//! durable when sled held an entry per record), and whenever more than [`HELD_GROUPS`]
//! groups changed (not durable before a flush either way). Reads see the changed groups
//! over sled's.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Mutex, PoisonError};

use super::segments::{Pointer, MAX_VALUE};

/// sled's tree of groups.
pub const TREE: &str = "record_groups";
/// The low bits of a sequence number that a group's records differ in.
const GROUP_BITS: u32 = 8;
/// The first byte of a group's value: its encoding. [`encode`] writes this one;
/// [`decode`] reads it and [`FORMAT_ONE`].
const FORMAT: u8 = 2;
/// The encoding of 0.3.0, whose groups stay as they are until they change.
const FORMAT_ONE: u8 = 1;
/// Changed groups held in memory before they are written into sled without a flush.
const HELD_GROUPS: usize = 64;

/// One group's records, by sequence number.
pub type Group = BTreeMap<u64, Pointer>;

pub struct Index {
    tree: sled::Tree,
    /// Groups changed since the last [`Index::write`], with their whole contents (empty:
    /// the group's entry goes).
    changed: BTreeMap<u64, Group>,
    /// Groups found damaged, reported once each.
    reported: Mutex<BTreeSet<u64>>,
    /// The last group a point lookup decoded, one not held: the salvage and relink look
    /// records up one after another, mostly in the same group, which is decoded once so.
    /// A change to the group takes it ([`Index::group_mut`]), so it is never stale.
    looked_up: Mutex<Option<(u64, Group)>>,
    /// Groups decoded from sled for point lookups and changes.
    #[cfg(test)]
    decodes: std::sync::atomic::AtomicUsize,
}

fn group_of(seq: u64) -> u64 {
    seq >> GROUP_BITS
}

impl Index {
    pub fn open(db: &sled::Db) -> sled::Result<Index> {
        Ok(Index {
            tree: db.open_tree(TREE)?,
            changed: BTreeMap::new(),
            reported: Mutex::new(BTreeSet::new()),
            looked_up: Mutex::new(None),
            #[cfg(test)]
            decodes: Default::default(),
        })
    }

    /// Record `seq`'s pointer.
    pub fn get(&self, seq: u64) -> sled::Result<Option<Pointer>> {
        let key = group_of(seq);
        if let Some(g) = self.changed.get(&key) {
            return Ok(g.get(&seq).copied());
        }
        let mut looked_up = self.looked_up();
        if let Some((_, g)) = looked_up.as_ref().filter(|(k, _)| *k == key) {
            return Ok(g.get(&seq).copied());
        }
        let group = self.group(key)?.into_owned();
        let p = group.get(&seq).copied();
        *looked_up = Some((key, group));
        Ok(p)
    }

    pub fn contains(&self, seq: u64) -> sled::Result<bool> {
        Ok(self.get(seq)?.is_some())
    }

    /// Point record `seq` at `p`; returns the pointer it held. A length over [`MAX_VALUE`]
    /// is refused: the group's value would not decode.
    pub fn insert(&mut self, seq: u64, p: Pointer) -> sled::Result<Option<Pointer>> {
        if p.len > MAX_VALUE {
            return Err(sled::Error::Unsupported(format!(
                "record #{seq}'s pointer has a length of {} bytes, over {MAX_VALUE}",
                p.len
            )));
        }
        let old = self.group_mut(group_of(seq))?.insert(seq, p);
        self.write_if_many();
        Ok(old)
    }

    /// Record `seq` leaves; returns the pointer it held.
    pub fn remove(&mut self, seq: u64) -> sled::Result<Option<Pointer>> {
        if !self.contains(seq)? {
            return Ok(None);
        }
        let old = self.group_mut(group_of(seq))?.remove(&seq);
        self.write_if_many();
        Ok(old)
    }

    /// Point record `seq` at `to` if it still points at `from`; whether it did.
    pub fn swap(&mut self, seq: u64, from: Pointer, to: Pointer) -> sled::Result<bool> {
        if self.get(seq)? != Some(from) {
            return Ok(false);
        }
        self.insert(seq, to)?;
        Ok(true)
    }

    /// Up to `limit` records above `after`, in order.
    pub fn scan(&self, after: Option<u64>, limit: usize) -> sled::Result<Vec<(u64, Pointer)>> {
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut from = after.map_or(Bound::Unbounded, |a| Bound::Included(group_of(a)));
        let above = after.map_or(Bound::Unbounded, Bound::Excluded);
        while out.len() < limit {
            let Some((key, group)) = self.next_group(from)? else {
                break;
            };
            let left = limit - out.len();
            out.extend(
                group
                    .range((above, Bound::Unbounded))
                    .take(left)
                    .map(|(s, p)| (*s, *p)),
            );
            from = Bound::Excluded(key);
        }
        Ok(out)
    }

    /// Up to `limit` sequence numbers, newest first.
    pub fn back(&self, limit: usize) -> sled::Result<Vec<u64>> {
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut to = Bound::Unbounded;
        while out.len() < limit {
            let Some((key, group)) = self.prev_group(to)? else {
                break;
            };
            let left = limit - out.len();
            out.extend(group.keys().rev().take(left));
            to = Bound::Excluded(key);
        }
        Ok(out)
    }

    pub fn first(&self) -> sled::Result<Option<u64>> {
        let first = self.next_group(Bound::Unbounded)?;
        Ok(first.and_then(|(_, g)| g.keys().next().copied()))
    }

    pub fn last(&self) -> sled::Result<Option<u64>> {
        let last = self.prev_group(Bound::Unbounded)?;
        Ok(last.and_then(|(_, g)| g.keys().next_back().copied()))
    }

    /// Put the changed groups into sled, in one batch. On failure they stay held, to be
    /// written again.
    pub fn write(&mut self) -> sled::Result<()> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, group) in &self.changed {
            if group.is_empty() {
                batch.remove(&key.to_be_bytes());
            } else {
                batch.insert(&key.to_be_bytes(), encode(group));
            }
        }
        self.tree.apply_batch(batch)?;
        self.changed.clear();
        Ok(())
    }

    /// Whether a group was found damaged: its records cannot be found.
    pub fn damaged(&self) -> bool {
        !self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Whether record `seq` is in a group found damaged: its pointer is lost, its body may
    /// still be in a segment.
    pub fn in_damaged(&self, seq: u64) -> bool {
        self.reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&group_of(seq))
    }

    /// Every record leaves.
    pub fn clear(&mut self) -> sled::Result<()> {
        self.changed.clear();
        *self.looked_up() = None;
        self.tree.clear()
    }

    fn looked_up(&self) -> std::sync::MutexGuard<'_, Option<(u64, Group)>> {
        self.looked_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Past [`HELD_GROUPS`] changed groups, write them into sled. A failure keeps them held:
    /// the next flush writes them again, and fails as sled does.
    fn write_if_many(&mut self) {
        if self.changed.len() > HELD_GROUPS {
            let _ = self.write();
        }
    }

    /// Group `key` as it is now.
    fn group(&self, key: u64) -> sled::Result<Cow<'_, Group>> {
        if let Some(g) = self.changed.get(&key) {
            return Ok(Cow::Borrowed(g));
        }
        let stored = self.tree.get(key.to_be_bytes())?;
        #[cfg(test)]
        self.decodes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Cow::Owned(stored.map_or_else(Group::new, |v| {
            self.decoded(&key.to_be_bytes(), &v)
        })))
    }

    /// Group `key`, held as changed. A damaged one is refused: written over, it would no
    /// longer show the next open that its records' bodies are to be looked for.
    fn group_mut(&mut self, key: u64) -> sled::Result<&mut Group> {
        if !self.changed.contains_key(&key) {
            let looked_up = self.looked_up().take_if(|(k, _)| *k == key);
            let group = match looked_up {
                Some((_, g)) => g,
                None => self.group(key)?.into_owned(),
            };
            if self.in_damaged(key << GROUP_BITS) {
                return Err(sled::Error::Unsupported(format!(
                    "the index entry of records #{}..=#{} is damaged: it is not written over",
                    key << GROUP_BITS,
                    key << GROUP_BITS | 0xff
                )));
            }
            self.changed.insert(key, group);
        }
        Ok(self.changed.entry(key).or_default())
    }

    /// A stored group, or none when it is damaged (reported once).
    fn decoded(&self, key: &[u8], value: &[u8]) -> Group {
        decode(key, value).map_or_else(
            |why| {
                let k = <[u8; 8]>::try_from(key).map_or(u64::MAX, u64::from_be_bytes);
                let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
                if reported.insert(k) {
                    log::error!("buffer: {}", damage(key, &why));
                }
                Group::new()
            },
            |(_, g)| g,
        )
    }

    /// The first group with records whose key is within `from`, and its key.
    fn next_group(&self, from: Bound<u64>) -> sled::Result<Option<(u64, Cow<'_, Group>)>> {
        self.step(from, true)
    }

    /// The last group with records whose key is within `to`, and its key.
    fn prev_group(&self, to: Bound<u64>) -> sled::Result<Option<(u64, Cow<'_, Group>)>> {
        self.step(to, false)
    }

    /// The group with records nearest `bound` within it, upwards when `up`: sled's next
    /// group or the next changed one, whichever comes first; a changed group stands for
    /// sled's of the same key. A stored key that is not a group's is passed over.
    fn step(&self, bound: Bound<u64>, up: bool) -> sled::Result<Option<(u64, Cow<'_, Group>)>> {
        let mut held_at = bound;
        let mut stored_at = bound.map(|k| k.to_be_bytes().to_vec());
        loop {
            let stored = if up {
                self.tree
                    .range((stored_at.clone(), Bound::Unbounded))
                    .next()
            } else {
                self.tree
                    .range((Bound::Unbounded, stored_at.clone()))
                    .next_back()
            }
            .transpose()?;
            let held = if up {
                self.changed.range((held_at, Bound::Unbounded)).next()
            } else {
                self.changed.range((Bound::Unbounded, held_at)).next_back()
            };
            let stored = match stored {
                Some((k, v)) => match <[u8; 8]>::try_from(&k[..]) {
                    Ok(key) => Some((u64::from_be_bytes(key), v)),
                    Err(_) => {
                        self.decoded(&k, &v);
                        stored_at = Bound::Excluded(k.to_vec());
                        continue;
                    }
                },
                None => None,
            };
            let (key, group) = match (stored, held) {
                (Some((sk, _)), Some((hk, hg))) if (*hk <= sk) == up || *hk == sk => {
                    (*hk, Cow::Borrowed(hg))
                }
                (Some((sk, v)), _) => (sk, Cow::Owned(self.decoded(&sk.to_be_bytes(), &v))),
                (None, Some((hk, hg))) => (*hk, Cow::Borrowed(hg)),
                (None, None) => return Ok(None),
            };
            if !group.is_empty() {
                return Ok(Some((key, group)));
            }
            held_at = Bound::Excluded(key);
            stored_at = Bound::Excluded(key.to_be_bytes().to_vec());
        }
    }
}

impl Drop for Index {
    /// As sled writes what it holds when it is closed: changes not flushed are not durable
    /// either way, but a store closed and opened again sees them as it did.
    fn drop(&mut self) {
        let _ = self.write();
    }
}

/// A group's value, in [`FORMAT`]. Its records must all be in one group.
pub fn encode(group: &Group) -> Vec<u8> {
    let entries: Vec<(u64, Pointer)> = group.iter().map(|(s, p)| (*s, *p)).collect();
    let mut out = Vec::with_capacity(16 + entries.len());
    out.push(FORMAT);
    put_varint(&mut out, entries.len() as u32);
    for run in entries.chunk_by(back_to_back) {
        let (first, at) = run[0];
        debug_assert_eq!(group_of(first), group_of(run[run.len() - 1].0));
        put_varint(&mut out, run.len() as u32);
        put_varint(&mut out, at.segment);
        put_varint(&mut out, at.offset);
        out.push(first as u8);
        put_varint(&mut out, at.len);
        for pair in run.windows(2) {
            let change = i64::from(pair[1].1.len) - i64::from(pair[0].1.len);
            // Zigzag, so that small changes either way are small numbers; lengths are at
            // most MAX_VALUE (2^26, refused above at insert), so shifted once more it fits
            // 32 bits.
            let zigzag = ((change << 1) ^ (change >> 63)) as u32;
            // Both records are in one group: their numbers differ by 1 to 255.
            let step = (pair[1].0 - pair[0].0) as u8;
            put_varint(&mut out, zigzag << 1 | u32::from(step > 1));
            if step > 1 {
                out.push(step - 2);
            }
        }
    }
    out
}

/// Whether `b`'s entry starts where `a`'s ends, in the same segment: a run goes on.
fn back_to_back(a: &(u64, Pointer), b: &(u64, Pointer)) -> bool {
    a.1.segment == b.1.segment && a.1.end() == Some(b.1.offset)
}

/// A group's key and records, from sled's key and value (either format); why when they
/// are damaged.
pub fn decode(key: &[u8], value: &[u8]) -> Result<(u64, Group), String> {
    let key = <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| format!("a key of {} bytes", key.len()))?;
    if key > u64::MAX >> GROUP_BITS {
        return Err(format!("key {key} is past the last group"));
    }
    let base = key << GROUP_BITS;
    let mut r = Reader(value);
    let format = r.byte()?;
    if format != FORMAT_ONE && format != FORMAT {
        return Err(format!("encoding {format}, not {FORMAT_ONE} or {FORMAT}"));
    }
    let total = r.varint()?;
    if total == 0 || total > 1 << GROUP_BITS {
        return Err(format!("a group of {total} records"));
    }
    let mut group = Group::new();
    let mut last: Option<u8> = None;
    while group.len() < total as usize {
        let n = r.varint()?;
        if n == 0 || n as usize > total as usize - group.len() {
            return Err(format!("a run of {n} records"));
        }
        let segment = r.varint()?;
        let mut offset = r.varint()?;
        let mut low = 0;
        let mut len = 0;
        for i in 0..n {
            if format == FORMAT_ONE || i == 0 {
                low = r.byte()?;
                if last.is_some_and(|l| l >= low) {
                    return Err(format!("record {low} after record {}", last.unwrap_or(0)));
                }
                len = r.varint()?;
            } else {
                let v = r.varint()?;
                let step = match v & 1 {
                    0 => 1,
                    _ => 2 + u32::from(r.byte()?),
                };
                low = u8::try_from(u32::from(low) + step)
                    .map_err(|_| format!("a record {step} after record {low}, past 255"))?;
                let zigzag = i64::from(v >> 1);
                let change = (zigzag >> 1) ^ -(zigzag & 1);
                len = u32::try_from(i64::from(len) + change)
                    .map_err(|_| format!("a length change of {change} from {len} bytes"))?;
            }
            if len > MAX_VALUE {
                return Err(format!("a length of {len} bytes"));
            }
            last = Some(low);
            let p = Pointer {
                segment,
                offset,
                len,
            };
            group.insert(base | u64::from(low), p);
            if i + 1 < n {
                offset = p.end().ok_or("an offset past 4 GiB")?;
            }
        }
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes past the records", r.0.len()));
    }
    Ok((key, group))
}

/// A group's value in [`FORMAT_ONE`], as 0.3.0 wrote it: runs of back-to-back records,
/// gaps in their numbers allowed, per record its low byte and its length.
#[cfg(test)]
pub(super) fn format_one(group: &Group) -> Vec<u8> {
    let entries: Vec<(u64, Pointer)> = group.iter().map(|(s, p)| (*s, *p)).collect();
    let mut out = vec![FORMAT_ONE];
    put_varint(&mut out, entries.len() as u32);
    for run in entries.chunk_by(back_to_back) {
        put_varint(&mut out, run.len() as u32);
        put_varint(&mut out, run[0].1.segment);
        put_varint(&mut out, run[0].1.offset);
        for (seq, p) in run {
            out.push(*seq as u8);
            put_varint(&mut out, p.len);
        }
    }
    out
}

/// What the log says of the stored entry `key` that does not decode, and `why`.
fn damage(key: &[u8], why: &str) -> String {
    match <[u8; 8]>::try_from(key).map(u64::from_be_bytes) {
        Ok(k) if k <= u64::MAX >> GROUP_BITS => format!(
            "the index entry of records #{}..=#{} is damaged ({why}): those records cannot be \
             found",
            k << GROUP_BITS,
            k << GROUP_BITS | 0xff
        ),
        _ => format!(
            "the index holds an entry that is no group's ({why}): the records it was written \
             for cannot be found"
        ),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let (&b, rest) = self.0.split_first().ok_or("cut short")?;
        self.0 = rest;
        Ok(b)
    }

    /// A u32 in at most five bytes.
    fn varint(&mut self) -> Result<u32, String> {
        let mut v = 0u32;
        for i in 0..5 {
            let b = self.byte()?;
            if i == 4 && b > 0x0f {
                return Err("a number past 32 bits".to_string());
            }
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a number past 32 bits".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a fixed sequence for a fixed seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn p(segment: u32, offset: u32, len: u32) -> Pointer {
        Pointer {
            segment,
            offset,
            len,
        }
    }

    /// `n` records from `first` on, back to back in segment 1 from offset 0, of `len` bytes.
    fn run(first: u64, n: u64, len: u32) -> Group {
        let mut offset = 0;
        (first..first + n)
            .map(|seq| {
                let at = p(1, offset, len);
                offset = at.end().unwrap();
                (seq, at)
            })
            .collect()
    }

    fn key(group: u64) -> [u8; 8] {
        group.to_be_bytes()
    }

    #[test]
    fn groups_round_trip_runs_or_not() {
        let mut g = run(0x500, 200, 1400);
        // Not back to back: another segment, a gap, an overlap, an end past 4 GiB.
        g.insert(0x5c8, p(2, 0, 10));
        g.insert(0x5c9, p(2, 23, 10));
        g.insert(0x5ca, p(2, 30, 0));
        g.insert(0x5cb, p(2, u32::MAX - 5, MAX_VALUE));
        g.insert(0x5cc, p(2, 0, 0));
        g.insert(0x5ff, p(u32::MAX, u32::MAX, MAX_VALUE));
        let value = encode(&g);
        assert_eq!(value[0], FORMAT);
        assert_eq!(decode(&key(5), &value), Ok((5, g)));
        // The worst case: every record a run of its own, every number at its largest.
        let scattered: Group = (0..256)
            .map(|low| (0x500 + low, p(u32::MAX, u32::MAX - low as u32, MAX_VALUE)))
            .collect();
        let value = encode(&scattered);
        // Per record: its run's count, segment and offset (5 bytes each but the count), its
        // low byte, its length (4 bytes: the largest value is below 2^28).
        assert_eq!(value.len(), 3 + 256 * (1 + 5 + 5 + 1 + 4));
        assert!(value.len() < 4608, "{}", value.len());
        assert_eq!(decode(&key(5), &value), Ok((5, scattered)));
        // The last group there is.
        let last: Group = [(u64::MAX, p(1, 0, 1))].into();
        let max = u64::MAX >> GROUP_BITS;
        assert_eq!(decode(&key(max), &encode(&last)), Ok((max, last)));
    }

    /// `group`'s value, and its size in format 1, both printed per record.
    fn both_formats(what: &str, group: &Group) -> (Vec<u8>, usize) {
        let value = encode(group);
        let old = format_one(group).len();
        let n = group.len() as f64;
        println!(
            "{what}: {} bytes ({:.2} a record), {old} in format 1 ({:.2})",
            value.len(),
            value.len() as f64 / n,
            old as f64 / n
        );
        (value, old)
    }

    /// Appends of records of about 1,300 bytes whose lengths change by 31 or less take a
    /// byte a record: 265 bytes for 256 of them, 775 in 0.3.0's format.
    #[test]
    fn appends_take_a_byte_a_record() {
        let mut offset = 0;
        let appended: Group = (0x500..0x600)
            .map(|seq| {
                let at = p(1, offset, 1280 + (seq as u32 * 13) % 31);
                offset = at.end().unwrap();
                (seq, at)
            })
            .collect();
        let (value, old) = both_formats("256 appends", &appended);
        // Format, group count, run count (two bytes each), segment, offset, first low byte,
        // first length (two bytes), then a byte per further record.
        assert_eq!(value.len(), 1 + 2 + 2 + 1 + 1 + 1 + 2 + 255);
        assert_eq!(old, 1 + 2 + 2 + 1 + 1 + 256 * 3);
        assert_eq!(decode(&key(5), &value), Ok((5, appended)));
    }

    /// A run ends at another segment and where an entry does not start at the end of the
    /// one before; gaps in the numbers and changes of length of any size stay in it.
    #[test]
    fn runs_break_at_segments_and_jumps_only() {
        // Back to back with gaps: the smallest (#0 to #2), none (to #3, 3 bytes longer),
        // the largest (to #255, 3 bytes shorter).
        let gap: Group = [
            (0x500, p(1, 0, 10)),
            (0x502, p(1, 22, 10)),
            (0x503, p(1, 44, 13)),
            (0x5ff, p(1, 69, 10)),
        ]
        .into();
        let value = encode(&gap);
        // [format, total 4, run of 4, segment 1, offset 0, first 0, 10, then per record
        // zigzag change << 1 | gapped, and the gap: (0, gapped) 0, (+3) 12, (-3, gapped) 250]
        assert_eq!(value, [2, 4, 4, 1, 0, 0, 10, 1, 0, 12, 11, 250]);
        assert_eq!(decode(&key(5), &value), Ok((5, gap.clone())));
        // Consecutive but in another segment, or not back to back: runs of their own.
        let apart: Group = [(0x500, p(1, 0, 10)), (0x501, p(2, 22, 10))].into();
        assert_eq!(encode(&apart), [2, 2, 1, 1, 0, 0, 10, 1, 2, 22, 1, 10]);
        let jump: Group = [(0x500, p(1, 0, 10)), (0x501, p(1, 23, 10))].into();
        assert_eq!(encode(&jump), [2, 2, 1, 1, 0, 0, 10, 1, 1, 23, 1, 10]);
        // Changes of length in one run: -32 and +31 take a byte (126, 124), +32 two (128),
        // +900 two (3600), the largest either way four or five.
        let mut offset = 0;
        let lens = [100, 68, 99, 131, 1031, MAX_VALUE, 0, MAX_VALUE, 5];
        let changing: Group = lens
            .iter()
            .zip(0x510..)
            .map(|(len, seq)| {
                let at = p(3, offset, *len);
                offset = at.end().unwrap();
                (seq, at)
            })
            .collect();
        let value = encode(&changing);
        let mut want = vec![2, 9, 9, 3, 0, 0x10, 100, 126, 124, 0x80, 0x01, 0x90, 0x1c];
        put_varint(&mut want, 4 * (MAX_VALUE - 1031));
        put_varint(&mut want, 4 * MAX_VALUE - 2);
        put_varint(&mut want, 4 * MAX_VALUE);
        put_varint(&mut want, 4 * (MAX_VALUE - 5) - 2);
        assert_eq!(value, want);
        assert_eq!(decode(&key(5), &value), Ok((5, changing.clone())));
        // All of it in one group, with appends that go on in another segment.
        let mut all = run(0x520, 100, 1300);
        all.extend(
            run(0x584, 50, 1290)
                .into_iter()
                .map(|(s, at)| (s, p(4, at.offset, at.len))),
        );
        all.extend(gap);
        all.extend(apart.into_iter().map(|(s, at)| (s + 0xd0, at)));
        all.extend(changing);
        all.insert(0x5ff, p(9, 0, 0));
        let value = encode(&all);
        assert_eq!(decode(&key(5), &value), Ok((5, all)));
    }

    /// Records of every other number back to back (one recType's, parked while the others
    /// were delivered, spilled together) take two bytes a record: 266 bytes for 128 of about
    /// 1,300 bytes, 393 in 0.3.0's format.
    #[test]
    fn interleaved_records_take_two_bytes_a_record() {
        let mut offset = 700_000;
        let interleaved: Group = (0..128)
            .map(|i| {
                let at = p(40, offset, 1280 + (i * 13) % 31);
                offset = at.end().unwrap();
                (0x500 + 2 * u64::from(i), at)
            })
            .collect();
        let (value, old) = both_formats("128 interleaved", &interleaved);
        // Format, group count, run count (two bytes each), segment, offset (three), first
        // low byte, first length (two bytes), then two bytes per further record.
        assert_eq!(value.len(), 1 + 2 + 2 + 1 + 3 + 1 + 2 + 127 * 2);
        assert_eq!(old, 1 + 2 + 2 + 1 + 3 + 128 * 3);
        assert_eq!(decode(&key(5), &value), Ok((5, interleaved)));
    }

    /// Groups 0.3.0 wrote (format 1) decode as they did: a database of layout 2 needs no
    /// move.
    #[test]
    fn format_one_groups_still_decode() {
        // [format 1, total 3, run of 3, segment 1, offset 0, (0, 1400), (1, 1400), (2, 1400)]
        let three = [1, 3, 3, 1, 0, 0, 248, 10, 1, 248, 10, 2, 248, 10];
        assert_eq!(decode(&key(5), &three), Ok((5, run(0x500, 3, 1400))));
        assert_eq!(format_one(&run(0x500, 3, 1400)), three);
        // A run with a gap in its numbers, then a run of one.
        let gapped = [1, 3, 2, 1, 0, 0, 10, 2, 10, 1, 7, 5, 0xff, 0x80, 0x01];
        let want: Group = [
            (0x500, p(1, 0, 10)),
            (0x502, p(1, 22, 10)),
            (0x5ff, p(7, 5, 128)),
        ]
        .into();
        assert_eq!(decode(&key(5), &gapped), Ok((5, want.clone())));
        assert_eq!(format_one(&want), gapped);
        let value = encode(&want);
        assert_eq!(value[0], FORMAT);
        assert_eq!(decode(&key(5), &value), Ok((5, want)));
    }

    #[test]
    fn damaged_groups_are_errors() {
        let value = encode(&run(0x500, 3, 1400));
        // [FORMAT, total 3, run of 3, segment 1, offset 0, first 0, 1400, changes 0, 0]
        assert_eq!(value, [2, 3, 3, 1, 0, 0, 248, 10, 0, 0]);
        let old = format_one(&run(0x500, 3, 1400));
        let gapped = encode(&[(0x500, p(1, 0, 10)), (0x502, p(1, 22, 10))].into());
        assert_eq!(gapped, [2, 2, 2, 1, 0, 0, 10, 1, 0]);
        for value in [&value, &old, &gapped] {
            for cut in 0..value.len() {
                let e = decode(&key(5), &value[..cut]).unwrap_err();
                assert!(e.contains("cut short"), "{cut}: {e}");
            }
            let e = decode(&key(5), &[&value[..], &[0]].concat()).unwrap_err();
            assert!(e.contains("1 bytes past"), "{e}");
        }
        let damaged = |value: &[u8]| decode(&key(5), value).unwrap_err();
        assert!(damaged(&[0, 1, 1, 1, 0, 0, 0]).contains("encoding 0"));
        assert!(damaged(&[3, 1, 1, 1, 0, 0, 0]).contains("encoding 3"));
        for f in [FORMAT_ONE, FORMAT] {
            assert!(damaged(&[f, 0]).contains("a group of 0"));
            assert!(damaged(&[f, 0x81, 0x02]).contains("a group of 257"));
            assert!(damaged(&[f, 0xff, 0xff, 0xff, 0xff, 0x0f]).contains("a group of"));
            assert!(damaged(&[f, 2, 3, 1, 0, 0, 0, 0]).contains("a run of 3"));
            assert!(damaged(&[f, 1, 0, 1, 0, 0, 0]).contains("a run of 0"));
            // Overlong numbers: a sixth byte, or bits past 32 in the fifth.
            let e = damaged(&[f, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0, 0, 0]);
            assert!(e.contains("past 32 bits"), "{e}");
            let e = damaged(&[f, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0, 0]);
            assert!(e.contains("past 32 bits"), "{e}");
            // Sequence numbers that do not increase across runs.
            let e = damaged(&[f, 2, 1, 1, 0, 5, 0, 1, 2, 0, 5, 0]);
            assert!(e.contains("record 5 after record 5"), "{e}");
            let e = damaged(&[f, 2, 1, 1, 0, 5, 0, 1, 2, 0, 4, 0]);
            assert!(e.contains("record 4 after record 5"), "{e}");
            // A first length over the largest value.
            let mut v = vec![f, 1, 1, 1, 0, 0];
            put_varint(&mut v, MAX_VALUE + 1);
            assert!(damaged(&v).contains("a length of"));
        }
        // Format 1: numbers that do not increase within a run; offsets past 4 GiB.
        assert!(damaged(&[1, 2, 2, 1, 0, 5, 0, 5, 0]).contains("record 5 after record 5"));
        let mut v = vec![1, 2, 2, 1];
        put_varint(&mut v, u32::MAX - 11);
        v.extend([0, 0, 1, 0]);
        assert!(damaged(&v).contains("past 4 GiB"));
        // Format 2: a run past the group's last record, the shortest and the longest, and
        // gaps past it (the largest gap that fits is from #0 to #255).
        let e = damaged(&[2, 2, 2, 1, 0, 255, 0, 0]);
        assert!(e.contains("a record 1 after record 255, past 255"), "{e}");
        let mut v = vec![2, 0x80, 0x02, 0x80, 0x02, 1, 0, 1, 0];
        v.extend([0; 255]);
        assert!(damaged(&v).contains("a record 1 after record 255, past 255"));
        let e = damaged(&[2, 2, 2, 1, 0, 0, 5, 1, 254]);
        assert!(e.contains("a record 256 after record 0, past 255"), "{e}");
        let e = damaged(&[2, 2, 2, 1, 0, 1, 5, 1, 253]);
        assert!(e.contains("a record 255 after record 1, past 255"), "{e}");
        let widest: Group = [(0x500, p(1, 0, 5)), (0x5ff, p(1, 17, 5))].into();
        assert_eq!(
            decode(&key(5), &[2, 2, 2, 1, 0, 0, 5, 1, 253]),
            Ok((5, widest))
        );
        // Changes of length below 0 (5 - 6) or past the largest value; down to 0 is one.
        assert!(damaged(&[2, 2, 2, 1, 0, 0, 5, 22]).contains("a length change of -6 from 5"));
        let to_zero: Group = [(0x500, p(1, 0, 5)), (0x501, p(1, 17, 0))].into();
        assert_eq!(
            decode(&key(5), &[2, 2, 2, 1, 0, 0, 5, 18]),
            Ok((5, to_zero))
        );
        let mut v = vec![2, 2, 2, 1, 0, 0];
        put_varint(&mut v, MAX_VALUE);
        v.push(4);
        assert!(damaged(&v).contains(&format!("a length of {} bytes", MAX_VALUE + 1)));
        // The largest changes a varint holds, either way, without and with a gap.
        let e = damaged(&[2, 2, 2, 1, 0, 0, 5, 0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert!(e.contains("a length change of -1073741824"), "{e}");
        let e = damaged(&[2, 2, 2, 1, 0, 0, 5, 0xfc, 0xff, 0xff, 0xff, 0x0f]);
        assert!(e.contains("a length of 1073741828"), "{e}");
        let e = damaged(&[2, 2, 2, 1, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x0f, 0]);
        assert!(e.contains("a length change of -1073741824"), "{e}");
        // A run whose offsets pass 4 GiB.
        let mut v = vec![2, 2, 2, 1];
        put_varint(&mut v, u32::MAX - 11);
        v.extend([0, 0, 0]);
        assert!(damaged(&v).contains("past 4 GiB"));
        // Keys: not 8 bytes, or a group past the last sequence number.
        assert!(decode(&[0; 7], &value).unwrap_err().contains("7 bytes"));
        let past = (u64::MAX >> GROUP_BITS) + 1;
        assert!(decode(&key(past), &value)
            .unwrap_err()
            .contains("past the last"));
    }

    /// Groups with gaps of every size in their runs round-trip within the worst case's size
    /// (a run per record). Their values in either format changed at random (bytes set,
    /// often to 0, 0x7f, 0x80 or 0xff; bytes cut, inserted, dropped) decode to an error or
    /// to a group the encoder takes: records of the group's key, lengths within the largest
    /// value, and a value that decodes to the same group again. Never a panic.
    #[test]
    fn changed_values_decode_to_errors_or_groups() {
        let mut rng = Rng(99);
        let (mut errors, mut groups) = (0, 0);
        for round in 0..10000 {
            let mut before = p(1, 0, 1300);
            let n = 1 + rng.below(if round % 4 == 0 { 256 } else { 12 });
            let mut seq = 0x500 + rng.below(4);
            let mut group = Group::new();
            while group.len() < n as usize && seq < 0x600 {
                group.insert(seq, next_pointer(&mut rng, &mut before));
                seq += match rng.below(12) {
                    0 => 1 + rng.below(255),
                    1..=3 => 2 + rng.below(3),
                    _ => 1,
                };
            }
            let value = encode(&group);
            assert!(value.len() <= 3 + 16 * group.len(), "{group:?}");
            assert_eq!(decode(&key(5), &value), Ok((5, group.clone())));
            let mut value = if round % 2 == 0 {
                value
            } else {
                format_one(&group)
            };
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(value.len() as u64 + 1) as usize;
                let byte = match rng.below(8) {
                    0 => 0,
                    1 => 0x7f,
                    2 => 0x80,
                    3 => 0xff,
                    _ => rng.below(256) as u8,
                };
                match rng.below(6) {
                    0 => value.truncate(at),
                    1 => value.insert(at, byte),
                    2 if at < value.len() => {
                        value.remove(at);
                    }
                    _ if at < value.len() => value[at] = byte,
                    _ => value.push(byte),
                }
            }
            match decode(&key(5), &value) {
                Err(_) => errors += 1,
                Ok((k, g)) => {
                    groups += 1;
                    assert_eq!(k, 5);
                    assert!(!g.is_empty() && g.len() <= 256);
                    assert!(g.keys().all(|s| group_of(*s) == 5), "{value:?}");
                    assert!(g.values().all(|p| p.len <= MAX_VALUE), "{value:?}");
                    assert_eq!(decode(&key(5), &encode(&g)), Ok((5, g)), "{value:?}");
                }
            }
        }
        // Both outcomes come often: the changes reach the decoder's checks and past them.
        assert!(
            errors > 5000 && groups > 1000,
            "{errors} errors, {groups} groups"
        );
    }

    /// A pointer for the next record: mostly right after the one before (a run), sometimes
    /// elsewhere, sometimes where the run's offsets would pass 4 GiB; its length mostly
    /// within 64 of the one before, sometimes any.
    fn next_pointer(rng: &mut Rng, before: &mut Pointer) -> Pointer {
        let len = match rng.below(3) {
            0 => rng.below(3000) as u32,
            _ => (before.len + rng.below(128) as u32).saturating_sub(64),
        };
        let p = match rng.below(10) {
            0 => p(rng.below(5) as u32, rng.below(1 << 20) as u32, len),
            1 => p(7, u32::MAX - rng.below(64) as u32, len),
            _ => match before.end() {
                Some(offset) => p(before.segment, offset, len),
                None => p(before.segment + 1, 0, len),
            },
        };
        *before = p;
        p
    }

    /// The index against a map: inserts (mostly in order, forming runs, some anywhere),
    /// removals, swaps, and every read, with writes into sled, flushes and reopens; after a
    /// write and a reopen it holds what the map does.
    #[test]
    fn the_index_is_a_map() {
        for seed in [1u64, 7, 1234, 0xdead_beef] {
            let dir = tempfile::tempdir().unwrap();
            let mut db = super::super::sled_store::open_db(dir.path()).unwrap();
            let mut index = Index::open(&db).unwrap();
            let mut model = BTreeMap::<u64, Pointer>::new();
            let mut rng = Rng(seed);
            let mut next = 0u64;
            let mut before = p(1, 0, 0);
            for op in 0..6000 {
                let any = |rng: &mut Rng, next: u64| match rng.below(20) {
                    0 => u64::MAX - rng.below(600),
                    _ => rng.below(next + 300),
                };
                match rng.below(100) {
                    0..=39 => {
                        let at = next_pointer(&mut rng, &mut before);
                        assert_eq!(index.insert(next, at).unwrap(), model.insert(next, at));
                        next += 1 + u64::from(rng.below(8) == 0) * rng.below(600);
                    }
                    40..=47 => {
                        let seq = any(&mut rng, next);
                        let at = next_pointer(&mut rng, &mut before);
                        assert_eq!(index.insert(seq, at).unwrap(), model.insert(seq, at));
                    }
                    48..=69 => {
                        let seq = match model.range(rng.below(next + 1)..).next() {
                            Some((s, _)) if rng.below(4) > 0 => *s,
                            _ => any(&mut rng, next),
                        };
                        assert_eq!(index.remove(seq).unwrap(), model.remove(&seq));
                    }
                    70..=74 => {
                        let seq = any(&mut rng, next);
                        let from = match model.get(&seq) {
                            Some(from) if rng.below(2) == 0 => *from,
                            _ => p(9, 9, 9),
                        };
                        let to = next_pointer(&mut rng, &mut before);
                        let named = model.get(&seq) == Some(&from);
                        assert_eq!(index.swap(seq, from, to).unwrap(), named);
                        if named {
                            model.insert(seq, to);
                        }
                    }
                    75..=84 => {
                        let after = match rng.below(4) {
                            0 => None,
                            _ => Some(any(&mut rng, next)),
                        };
                        let limit = rng.below(700) as usize;
                        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
                        let want: Vec<(u64, Pointer)> = model
                            .range((lower, Bound::Unbounded))
                            .take(limit)
                            .map(|(s, p)| (*s, *p))
                            .collect();
                        assert_eq!(index.scan(after, limit).unwrap(), want, "op {op}");
                    }
                    85..=88 => {
                        let limit = rng.below(700) as usize;
                        let want: Vec<u64> = model.keys().rev().take(limit).copied().collect();
                        assert_eq!(index.back(limit).unwrap(), want, "op {op}");
                    }
                    89..=92 => {
                        let seq = any(&mut rng, next);
                        assert_eq!(index.get(seq).unwrap(), model.get(&seq).copied());
                        assert_eq!(index.contains(seq).unwrap(), model.contains_key(&seq));
                    }
                    93..=95 => index.write().unwrap(),
                    96..=97 => {
                        index.write().unwrap();
                        db.flush().unwrap();
                    }
                    _ => {
                        index.write().unwrap();
                        drop(index);
                        db.flush().unwrap();
                        drop(db);
                        db = super::super::sled_store::open_db(dir.path()).unwrap();
                        index = Index::open(&db).unwrap();
                        let all = index.scan(None, usize::MAX).unwrap();
                        let want: Vec<_> = model.iter().map(|(s, p)| (*s, *p)).collect();
                        assert_eq!(all, want, "seed {seed}, op {op}: reopened");
                    }
                }
                assert!(index.changed.len() <= HELD_GROUPS, "held groups bounded");
                assert_eq!(index.first().unwrap(), model.keys().next().copied());
                assert_eq!(index.last().unwrap(), model.keys().next_back().copied());
            }
            // Every group in sled decodes, and none is empty.
            index.write().unwrap();
            for item in index.tree.iter() {
                let (k, v) = item.unwrap();
                let (_, g) = decode(&k, &v).unwrap();
                assert!(!g.is_empty());
            }
            let all = index.scan(None, usize::MAX).unwrap();
            assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        }
    }

    /// Changes to more than [`HELD_GROUPS`] groups without a write are written into sled as
    /// they come, so memory stays bounded, and none is lost: reads see every record at each
    /// step, and sled alone holds them all once the index is written and opened again.
    #[test]
    fn many_groups_changed_without_a_write_are_written_as_they_come() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut index = Index::open(&db).unwrap();
        let groups = 3 * HELD_GROUPS as u64;
        // Two records a group, then the first of each goes: scattered over every group.
        let seq = |g: u64, i: u64| (g << GROUP_BITS) | i;
        for g in 0..groups {
            for i in 0..2 {
                index
                    .insert(seq(g, i), p(1, (g * 2 + i) as u32 * 20, 8))
                    .unwrap();
                assert!(index.changed.len() <= HELD_GROUPS + 1, "group {g}");
            }
        }
        assert!(index.tree.len() as u64 >= groups - HELD_GROUPS as u64 - 1);
        for g in 0..groups {
            assert_eq!(
                index.remove(seq(g, 0)).unwrap(),
                Some(p(1, g as u32 * 40, 8))
            );
            assert!(index.changed.len() <= HELD_GROUPS + 1, "group {g}");
        }
        let want: Vec<u64> = (0..groups).map(|g| seq(g, 1)).collect();
        let seqs = |index: &Index| {
            let all = index.scan(None, usize::MAX).unwrap();
            all.into_iter().map(|(s, _)| s).collect::<Vec<_>>()
        };
        assert_eq!(seqs(&index), want);
        index.write().unwrap();
        drop(index);
        let index = Index::open(&db).unwrap();
        assert_eq!(seqs(&index), want);
        for g in 0..groups {
            assert_eq!(
                index.get(seq(g, 1)).unwrap(),
                Some(p(1, (g * 2 + 1) as u32 * 20, 8))
            );
        }
    }

    /// The log names a damaged group's records, and no range for a key that is no group's.
    #[test]
    fn damage_names_the_records_of_a_group_only() {
        assert_eq!(
            damage(&key(2), "cut short"),
            "the index entry of records #512..=#767 is damaged (cut short): those records \
             cannot be found"
        );
        for k in [&[0u8; 3][..], &key(u64::MAX)] {
            let line = damage(k, "no group");
            assert!(
                line.starts_with("the index holds an entry that is no group's"),
                "{line}"
            );
            assert!(!line.contains('#'), "{line}");
        }
    }

    /// Point lookups in a group not held decode it once, not per lookup, and a change to
    /// it takes the decoded group: the next lookup after it is written decodes it again.
    #[test]
    fn lookups_decode_a_group_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut index = Index::open(&db).unwrap();
        let group = run(0, 256, 100);
        for (seq, at) in &group {
            index.insert(*seq, *at).unwrap();
        }
        index.write().unwrap();
        let decodes = |index: &Index| index.decodes.load(std::sync::atomic::Ordering::Relaxed);
        let before = decodes(&index);
        for (seq, at) in &group {
            assert_eq!(index.get(*seq).unwrap(), Some(*at));
            assert!(index.contains(*seq).unwrap());
        }
        assert_eq!(decodes(&index), before + 1);
        assert_eq!(index.remove(5).unwrap(), Some(group[&5]));
        assert_eq!(decodes(&index), before + 1);
        index.write().unwrap();
        assert_eq!(index.get(5).unwrap(), None);
        assert_eq!(index.get(6).unwrap(), Some(group[&6]));
        assert_eq!(decodes(&index), before + 2);
    }

    /// A pointer whose value the decoder would refuse (a length over [`MAX_VALUE`]) is an
    /// error at insert, and its group stays as it was: the encoder never writes what the
    /// decoder refuses.
    #[test]
    fn a_length_the_decoder_refuses_is_refused_at_insert() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut index = Index::open(&db).unwrap();
        index.insert(1, p(1, 0, MAX_VALUE)).unwrap();
        assert!(index.insert(2, p(1, 0, MAX_VALUE + 1)).is_err());
        assert!(index.insert(1, p(1, 0, u32::MAX)).is_err());
        index.write().unwrap();
        let value = index.tree.get(key(0)).unwrap().unwrap();
        let want: Group = [(1, p(1, 0, MAX_VALUE))].into();
        assert_eq!(decode(&key(0), &value), Ok((0, want)));
        assert!(!index.damaged());
    }

    /// A damaged group holds nothing for the reads, which go on past it; the groups around
    /// it are read whole.
    #[test]
    fn a_damaged_group_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut index = Index::open(&db).unwrap();
        for seq in 0..768 {
            index.insert(seq, p(1, seq as u32 * 20, 8)).unwrap();
        }
        index.write().unwrap();
        index.tree.insert(key(1), &[1, 9, 9][..]).unwrap();
        index.tree.insert([0u8; 3], &[0][..]).unwrap();
        let seqs = |v: Vec<(u64, Pointer)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        let want: Vec<u64> = (0..256).chain(512..768).collect();
        assert_eq!(seqs(index.scan(None, 1000).unwrap()), want);
        assert_eq!(seqs(index.scan(Some(255), 3).unwrap()), vec![512, 513, 514]);
        let back: Vec<u64> = want.iter().rev().copied().collect();
        assert_eq!(index.back(1000).unwrap(), back);
        assert_eq!(index.get(300).unwrap(), None);
        assert_eq!(index.remove(300).unwrap(), None);
        assert_eq!(index.first().unwrap(), Some(0));
        assert_eq!(index.last().unwrap(), Some(767));
        assert!(index.damaged());
    }
}
