//! SLIP (RFC 1055) frames with a CRC-16 trailer.
//!
//! END (0xC0) ends a frame; inside a frame END is sent as ESC ESC_END (0xDB 0xDC) and ESC as
//! ESC ESC_ESC (0xDB 0xDD). Senders may (RFC 1055 recommends it) also send END before each
//! frame to flush line noise: empty frames are skipped. An ESC followed by anything else is a
//! protocol violation: the frame is dropped as [`FrameError::Malformed`]. Bytes before the
//! first END after opening a port are a frame like any other (and usually fail their CRC).

use super::{check_max, crc_event, run, Event, FrameError, MaxFrameError, Step, BUF};

pub const END: u8 = 0xC0;
pub const ESC: u8 = 0xDB;
pub const ESC_END: u8 = 0xDC;
pub const ESC_ESC: u8 = 0xDD;

pub struct Slip {
    buf: heapless::Vec<u8, BUF>,
    /// Content plus CRC trailer.
    limit: usize,
    esc: bool,
    /// Skipping to the next END after a reported problem.
    discarding: bool,
    /// `buf` holds the frame returned last time.
    done: bool,
}

impl Slip {
    pub fn new(max_frame: usize) -> Result<Self, MaxFrameError> {
        Ok(Slip {
            buf: heapless::Vec::new(),
            limit: check_max(max_frame)? + 2,
            esc: false,
            discarding: false,
            done: false,
        })
    }

    pub fn reset(&mut self) -> bool {
        let cut = !self.done && !self.discarding && (self.esc || !self.buf.is_empty());
        self.buf.clear();
        self.esc = false;
        self.discarding = false;
        self.done = false;
        cut
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
        if b == END {
            let was_esc = std::mem::replace(&mut self.esc, false);
            if std::mem::replace(&mut self.discarding, false) {
                self.buf.clear();
                return Step::More;
            }
            if was_esc {
                self.buf.clear();
                return Step::Error(FrameError::Malformed);
            }
            return if self.buf.is_empty() {
                Step::More
            } else {
                Step::Frame
            };
        }
        if self.discarding {
            return Step::More;
        }
        let byte = if std::mem::replace(&mut self.esc, false) {
            match b {
                ESC_END => END,
                ESC_ESC => ESC,
                _ => return self.fail(FrameError::Malformed),
            }
        } else if b == ESC {
            self.esc = true;
            return Step::More;
        } else {
            b
        };
        if self.buf.len() >= self.limit || self.buf.push(byte).is_err() {
            return self.fail(FrameError::Overlong);
        }
        Step::More
    }

    fn fail(&mut self, e: FrameError) -> Step {
        self.buf.clear();
        self.esc = false;
        self.discarding = true;
        Step::Error(e)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::testutil::{cut_at, feed_chunks, split_everywhere, stuffing, with_crc};
    use super::super::{Deframer, FrameError};
    use super::*;
    use proptest::prelude::*;

    /// SLIP(content ++ CRC) END, with a leading END when `lead`.
    pub fn encode(content: &[u8], lead: bool) -> Vec<u8> {
        let framed = stuffing::slip(&with_crc(content));
        let skip = usize::from(!lead);
        framed[skip..].to_vec()
    }

    fn slip(max: usize) -> Deframer {
        Deframer::Slip(Slip::new(max).unwrap())
    }

    #[test]
    fn frames_with_escapes_split_everywhere() {
        let a = [0x01, END, 0x02, ESC, 0x03];
        let b = [ESC, ESC, END, END];
        let mut s = encode(&a, true);
        s.extend(encode(&b, false));
        s.extend(encode(b"plain", true));
        split_everywhere(
            || slip(16),
            &s,
            &[Ok(a.to_vec()), Ok(b.to_vec()), Ok(b"plain".to_vec())],
        );
    }

    #[test]
    fn empty_frames_and_an_empty_content() {
        // END END END: nothing. An empty content with its CRC: an empty frame.
        let mut s = vec![END, END, END];
        s.extend(encode(b"", false));
        split_everywhere(|| slip(16), &s, &[Ok(vec![])]);
    }

    #[test]
    fn garbage_before_and_between_is_one_error_each() {
        let mut s = b"noise".to_vec();
        s.extend(encode(b"one", true));
        s.extend_from_slice(&[0x55, 0xAA, 0x13]);
        s.extend(encode(b"two", true));
        split_everywhere(
            || slip(16),
            &s,
            &[
                Err(FrameError::Crc),
                Ok(b"one".to_vec()),
                Err(FrameError::Crc),
                Ok(b"two".to_vec()),
            ],
        );
        // Short garbage: not even room for a CRC.
        let mut s = vec![0x55, END];
        s.extend(encode(b"x", false));
        split_everywhere(
            || slip(16),
            &s,
            &[Err(FrameError::Malformed), Ok(b"x".to_vec())],
        );
    }

    #[test]
    fn crc_error_then_resync() {
        let mut bad = encode(b"hello", true);
        bad[2] ^= 0x01;
        bad.extend(encode(b"world", true));
        split_everywhere(
            || slip(16),
            &bad,
            &[Err(FrameError::Crc), Ok(b"world".to_vec())],
        );
    }

    #[test]
    fn overlong_is_reported_once_and_skipped() {
        let long = [0x42u8; 40];
        let mut s = encode(&long, true);
        s.extend(encode(&[0x42; 8], true));
        // Exactly max_frame is fine.
        s.extend(encode(&[0x43; 10], true));
        split_everywhere(
            || slip(10),
            &s,
            &[
                Err(FrameError::Overlong),
                Ok(vec![0x42; 8]),
                Ok(vec![0x43; 10]),
            ],
        );
    }

    #[test]
    fn bad_escape_is_malformed() {
        let mut s = vec![END, 0x01, ESC, 0x07, 0x02, END];
        s.extend(encode(b"ok", false));
        // ESC END: also a violation.
        s.extend_from_slice(&[0x01, ESC, END]);
        s.extend(encode(b"ok2", false));
        split_everywhere(
            || slip(16),
            &s,
            &[
                Err(FrameError::Malformed),
                Ok(b"ok".to_vec()),
                Err(FrameError::Malformed),
                Ok(b"ok2".to_vec()),
            ],
        );
    }

    #[test]
    fn reset_forgets_a_partial_frame() {
        let mut d = slip(16);
        let s = encode(b"abc", false);
        feed_chunks(&mut d, &[&s[..2]]);
        d.reset();
        assert_eq!(feed_chunks(&mut d, &[&s]), [Ok(b"abc".to_vec())]);
    }

    proptest! {
        // A failure is reported with its case, not written to a file in the source tree.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), max in 1usize..64) {
            let mut d = slip(max);
            for f in feed_chunks(&mut d, &[&bytes]).into_iter().flatten() {
                prop_assert!(f.len() <= max);
            }
        }

        #[test]
        fn round_trips_split_anywhere(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..5),
            lead in any::<bool>(),
        ) {
            let stream: Vec<u8> = frames.iter().flat_map(|f| encode(f, lead)).collect();
            let chunks = cut_at(&stream, &cuts);
            let got = feed_chunks(&mut slip(40), &chunks);
            let want: Vec<_> = frames.iter().map(|f| Ok(f.clone())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
