//! COBS (Consistent Overhead Byte Stuffing) frames, each ended by a 0x00 delimiter, with a
//! CRC-16 trailer inside the encoding.
//!
//! The encoded frame is a series of blocks: a code byte `n` (1..=255) followed by `n - 1`
//! non-zero data bytes; every block with `n < 255` stands for its data plus one 0x00, except
//! the last block of the frame. Decoding happens byte by byte as data arrives. A 0x00 inside
//! a block (the frame was cut short) is [`FrameError::Malformed`]; consecutive delimiters
//! (empty frames) are skipped.

use super::{check_max, crc_event, run, Event, FrameError, MaxFrameError, Step, BUF};

pub struct Cobs {
    buf: heapless::Vec<u8, BUF>,
    /// Content plus CRC trailer.
    limit: usize,
    /// Data bytes still due in the current block.
    remaining: u8,
    /// The current block stands for a 0x00 after its data (unless it is the frame's last).
    zero_due: bool,
    /// A code byte has been read in this frame.
    started: bool,
    /// Skipping to the next delimiter after a reported problem.
    discarding: bool,
    /// `buf` holds the frame returned last time.
    done: bool,
}

impl Cobs {
    pub fn new(max_frame: usize) -> Result<Self, MaxFrameError> {
        Ok(Cobs {
            buf: heapless::Vec::new(),
            limit: check_max(max_frame)? + 2,
            remaining: 0,
            zero_due: false,
            started: false,
            discarding: false,
            done: false,
        })
    }

    pub fn reset(&mut self) -> bool {
        let cut = !self.done && !self.discarding && self.started;
        self.buf.clear();
        self.new_frame();
        self.discarding = false;
        self.done = false;
        cut
    }

    fn new_frame(&mut self) {
        self.remaining = 0;
        self.zero_due = false;
        self.started = false;
    }

    /// See [`super::Deframer::push`].
    pub fn push(&mut self, input: &[u8]) -> (usize, Event<'_>) {
        if self.done {
            self.buf.clear();
            self.done = false;
        }
        let (used, step) = run(input, |b| self.step(b));
        self.done = step == Step::Frame;
        (used, crc_event(&self.buf, step))
    }

    fn step(&mut self, b: u8) -> Step {
        if b == 0 {
            let (started, remaining) = (self.started, self.remaining);
            self.new_frame();
            if std::mem::replace(&mut self.discarding, false) {
                self.buf.clear();
                return Step::More;
            }
            if remaining > 0 {
                self.buf.clear();
                return Step::Error(FrameError::Malformed);
            }
            return if started { Step::Frame } else { Step::More };
        }
        if self.discarding {
            return Step::More;
        }
        if self.remaining == 0 {
            // A code byte: the previous block's implied zero is now known not to be the last.
            if self.zero_due {
                if let Some(fail) = self.put(0) {
                    return fail;
                }
            }
            self.zero_due = b < 0xFF;
            self.remaining = b - 1;
            self.started = true;
            return Step::More;
        }
        self.remaining -= 1;
        self.put(b).unwrap_or(Step::More)
    }

    fn put(&mut self, b: u8) -> Option<Step> {
        if self.buf.len() >= self.limit || self.buf.push(b).is_err() {
            self.buf.clear();
            self.new_frame();
            self.discarding = true;
            return Some(Step::Error(FrameError::Overlong));
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::testutil::{cut_at, feed_chunks, split_everywhere, stuffing, with_crc};
    use super::super::{Deframer, FrameError};
    use super::*;
    use proptest::prelude::*;

    /// COBS(content ++ CRC) 0x00.
    pub fn encode(content: &[u8]) -> Vec<u8> {
        stuffing::cobs(&with_crc(content))
    }

    fn cobs(max: usize) -> Deframer {
        Deframer::Cobs(Cobs::new(max).unwrap())
    }

    #[test]
    fn encoder_matches_the_paper() {
        // Vectors from Cheshire & Baker's COBS paper / the Wikipedia table.
        assert_eq!(stuffing::cobs(&[0x00]), [0x01, 0x01, 0x00]);
        assert_eq!(
            stuffing::cobs(&[0x11, 0x22, 0x00, 0x33]),
            [0x03, 0x11, 0x22, 0x02, 0x33, 0x00]
        );
        let d254: Vec<u8> = (1..=254).collect();
        let e = stuffing::cobs(&d254);
        assert_eq!((e[0], e.len(), e[255], e[256]), (0xFF, 257, 0x01, 0x00));
    }

    #[test]
    fn frames_with_zeros_split_everywhere() {
        let a = vec![0x00, 0x01, 0x00, 0x00, 0x02];
        let b = vec![0x00];
        let c = b"no zeros".to_vec();
        let s: Vec<u8> = [encode(&a), encode(&b), encode(&c)].concat();
        split_everywhere(|| cobs(32), &s, &[Ok(a), Ok(b), Ok(c)]);
    }

    #[test]
    fn long_blocks_of_254_and_more() {
        let d254: Vec<u8> = (1..=254).collect();
        let mut d300: Vec<u8> = (1..=255).cycle().filter(|&b| b != 0).take(300).collect();
        d300[280] = 0;
        let mut d253z: Vec<u8> = (1..=253).collect();
        d253z.push(0);
        let s: Vec<u8> = [encode(&d254), encode(&d300), encode(&d253z)].concat();
        let got = feed_chunks(&mut cobs(400), &[&s]);
        assert_eq!(got, [Ok(d254), Ok(d300), Ok(d253z)]);
    }

    #[test]
    fn empty_frames_and_an_empty_content() {
        let mut s = vec![0, 0, 0];
        s.extend(encode(b""));
        split_everywhere(|| cobs(8), &s, &[Ok(vec![])]);
    }

    #[test]
    fn garbage_crc_errors_and_truncation_resync() {
        let mut s = vec![0x07, 0x01, 0x02]; // a block cut short by the delimiter
        s.push(0);
        s.extend(encode(b"one"));
        s.extend_from_slice(&[0x01, 0x01, 0x01, 0x01, 0]); // decodes to 3 zeros: bad CRC
        let mut bad = encode(b"two");
        bad[2] ^= 0x40;
        s.extend(bad);
        s.extend(encode(b"three"));
        split_everywhere(
            || cobs(16),
            &s,
            &[
                Err(FrameError::Malformed),
                Ok(b"one".to_vec()),
                Err(FrameError::Crc),
                Err(FrameError::Crc),
                Ok(b"three".to_vec()),
            ],
        );
    }

    #[test]
    fn overlong_is_reported_once_and_skipped() {
        let s: Vec<u8> = [
            encode(&[0x11; 30]),
            encode(&[0x00; 30]),
            encode(&[0x22; 12]),
            encode(&[0x00; 12]),
        ]
        .concat();
        split_everywhere(
            || cobs(12),
            &s,
            &[
                Err(FrameError::Overlong),
                Err(FrameError::Overlong),
                Ok(vec![0x22; 12]),
                Ok(vec![0x00; 12]),
            ],
        );
    }

    proptest! {
        // A failure is reported with its case, not written to a file in the source tree.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), max in 1usize..64) {
            let mut d = cobs(max);
            for f in feed_chunks(&mut d, &[&bytes]).into_iter().flatten() {
                prop_assert!(f.len() <= max);
            }
        }

        #[test]
        fn round_trips_split_anywhere(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..5),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..5),
        ) {
            let stream: Vec<u8> = frames.iter().flat_map(|f| encode(f)).collect();
            let chunks = cut_at(&stream, &cuts);
            let got = feed_chunks(&mut cobs(600), &chunks);
            let want: Vec<_> = frames.iter().map(|f| Ok(f.clone())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
