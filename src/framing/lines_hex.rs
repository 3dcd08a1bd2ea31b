//! `lines-hex`: one frame per text line, the payload as hex digits.
//!
//! A line ends at CR or LF (so CRLF, LF and bare CR all work; the empty lines between count
//! for nothing). Leading and trailing blanks are ignored. With a configured prefix (matched
//! without regard to ASCII case), only lines that start with it carry frames; after it any
//! blanks, `=` and `:` are skipped, and if what is left still holds a `:`, the payload is
//! what follows the last one (`at+recv=2,-70,8,4:0a0b0c0d`). So, with the right prefix:
//!
//! ```text
//! radio_rx  48656C6C6F          prefix = "radio_rx"   (RN2483 / RN2903)
//! +RCV=48656C6C6F                prefix = "+RCV"
//! at+recv=2,-70,8,5:48656c6c6f   prefix = "at+recv"    (RAK811-style AT firmware)
//! ```
//!
//! Other lines (`ok`, `radio_err`, a banner however long) are reported as
//! [`FrameError::NoPrefix`]. A line longer than the longest possible frame line is reported
//! once ([`FrameError::Overlong`], or `NoPrefix` if it lacks the prefix) and skipped up to the
//! next line end; one with an odd number of digits or a non-hex character is
//! [`FrameError::BadHex`].

use super::{check_max, run, Event, FrameError, MaxFrameError, Step, MAX_FRAME};

/// Longest line held: the hex of a [`MAX_FRAME`] frame plus room for prefix and metadata.
const LINE: usize = 2 * MAX_FRAME + 160;
/// Room on a line besides the payload's hex digits (blanks, `at+recv` metadata).
const SLACK: usize = 64;

pub struct LinesHex {
    line: heapless::Vec<u8, LINE>,
    frame: heapless::Vec<u8, MAX_FRAME>,
    max_frame: usize,
    line_limit: usize,
    prefix: Option<Box<[u8]>>,
    /// Skipping to the next line end after an over-long line.
    discarding: bool,
    /// `line` holds the line returned last time.
    done: bool,
}

impl LinesHex {
    /// `prefix`: e.g. `"radio_rx"`; separators after it need not be given. At most 64 bytes.
    pub fn new(max_frame: usize, prefix: Option<&str>) -> Result<Self, MaxFrameError> {
        let max_frame = check_max(max_frame)?;
        let prefix: Option<Box<[u8]>> = prefix
            .map(|p| p.trim().as_bytes())
            .filter(|p| !p.is_empty())
            .map(|p| p[..p.len().min(SLACK)].into());
        let prefix_len = prefix.as_deref().map_or(0, <[u8]>::len);
        Ok(LinesHex {
            line: heapless::Vec::new(),
            frame: heapless::Vec::new(),
            max_frame,
            line_limit: (2 * max_frame + prefix_len + SLACK).min(LINE),
            prefix,
            discarding: false,
            done: false,
        })
    }

    pub fn reset(&mut self) -> bool {
        // A line that lacks only its line end is cut too; blanks alone are no line, and with
        // a prefix only a line that has it, or was cut inside it, could have been a frame (not
        // a module's prompt).
        let text = self.line.trim_ascii();
        let cut = !self.done && !self.discarding && !text.is_empty() && self.may_be_frame(text);
        self.line.clear();
        self.discarding = false;
        self.done = false;
        cut
    }

    /// See [`super::Deframer::push`].
    pub fn push(&mut self, mut input: &[u8]) -> (usize, Event<'_>) {
        let mut total = 0;
        loop {
            if self.done {
                self.line.clear();
                self.done = false;
            }
            let (used, step) = run(input, |b| self.step(b));
            total += used;
            input = &input[used..];
            match step {
                Step::More => return (total, None),
                Step::Error(e) => return (total, Some(Err(e))),
                Step::Frame => {
                    self.done = true;
                    match self.decode() {
                        Ok(true) => return (total, Some(Ok(&self.frame))),
                        Ok(false) => {} // a blank line: keep going
                        Err(e) => return (total, Some(Err(e))),
                    }
                }
            }
        }
    }

    fn step(&mut self, b: u8) -> Step {
        if b == b'\n' || b == b'\r' {
            if std::mem::replace(&mut self.discarding, false) {
                self.line.clear();
                return Step::More;
            }
            return if self.line.is_empty() {
                Step::More
            } else {
                Step::Frame
            };
        }
        if self.discarding {
            return Step::More;
        }
        if self.line.len() >= self.line_limit || self.line.push(b).is_err() {
            // Chatter past the limit (a banner) is told as chatter, not as a frame too long.
            let e = if self.may_be_frame(self.line.trim_ascii_start()) {
                FrameError::Overlong
            } else {
                FrameError::NoPrefix
            };
            self.line.clear();
            self.discarding = true;
            return Step::Error(e);
        }
        Step::More
    }

    /// Whether a line starting with `text` (no leading blanks) may carry a frame: it has the
    /// prefix, or is cut before its end (always, without a prefix).
    fn may_be_frame(&self, text: &[u8]) -> bool {
        match self.prefix.as_deref() {
            Some(p) => {
                let n = p.len().min(text.len());
                text[..n].eq_ignore_ascii_case(&p[..n])
            }
            None => true,
        }
    }

    /// `text` after the configured prefix (all of it without one); `None`: it lacks the prefix.
    fn after_prefix<'a>(&self, text: &'a [u8]) -> Option<&'a [u8]> {
        match self.prefix.as_deref() {
            Some(p) if text.len() < p.len() || !text[..p.len()].eq_ignore_ascii_case(p) => None,
            Some(p) => Some(&text[p.len()..]),
            None => Some(text),
        }
    }

    /// Decode the line into `frame`. `Ok(false)`: a blank line.
    fn decode(&mut self) -> Result<bool, FrameError> {
        let mut text = self.line.trim_ascii();
        if text.is_empty() {
            return Ok(false);
        }
        text = self.after_prefix(text).ok_or(FrameError::NoPrefix)?;
        if self.prefix.is_some() {
            while let [b' ' | b'\t' | b'=' | b':', rest @ ..] = text {
                text = rest;
            }
            if let Some(colon) = text.iter().rposition(|&b| b == b':') {
                text = &text[colon + 1..];
            }
            text = text.trim_ascii();
        }
        if text.is_empty() || !text.len().is_multiple_of(2) {
            return Err(FrameError::BadHex);
        }
        if text.len() / 2 > self.max_frame {
            return Err(FrameError::Overlong);
        }
        self.frame.clear();
        for pair in text.chunks_exact(2) {
            let byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
            // Cannot fail: max_frame <= MAX_FRAME was checked above.
            self.frame.push(byte).map_err(|_| FrameError::Overlong)?;
        }
        Ok(true)
    }
}

fn nibble(c: u8) -> Result<u8, FrameError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(FrameError::BadHex),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{cut_at, feed_chunks, split_everywhere};
    use super::super::{Deframer, FrameError};
    use super::*;
    use proptest::prelude::*;

    fn lines(max: usize, prefix: Option<&str>) -> Deframer {
        Deframer::LinesHex(LinesHex::new(max, prefix).unwrap())
    }

    #[test]
    fn rn2483_lines_split_everywhere() {
        let s =
            b"ok\r\nradio_rx  48656C6C6F\r\nRADIO_RX 0a0B\nradio_err\r\n\r\n\n  radio_rx=00ff  \r";
        split_everywhere(
            || lines(16, Some("radio_rx")),
            s,
            &[
                Err(FrameError::NoPrefix),
                Ok(b"Hello".to_vec()),
                Ok(vec![0x0a, 0x0b]),
                Err(FrameError::NoPrefix),
                Ok(vec![0x00, 0xff]),
            ],
        );
    }

    #[test]
    fn at_style_prefixes() {
        let s = b"+RCV=0102\r\n+rcv: 0304\r\nat+recv=2,-70,8,2:0506\r\nAT+RECV=7,-1,1,1:07\r\n";
        let got = feed_chunks(&mut lines(16, Some("+RCV")), &[s]);
        assert_eq!(&got[..2], &[Ok(vec![1, 2]), Ok(vec![3, 4])]);
        let got = feed_chunks(&mut lines(16, Some("at+recv=")), &[s]);
        assert_eq!(&got[2..], &[Ok(vec![5, 6]), Ok(vec![7])]);
    }

    #[test]
    fn without_a_prefix_the_whole_line_is_hex() {
        split_everywhere(
            || lines(8, None),
            b"0102\n zz \n010\n\t0A0b0C\r\n",
            &[
                Ok(vec![1, 2]),
                Err(FrameError::BadHex),
                Err(FrameError::BadHex),
                Ok(vec![0x0a, 0x0b, 0x0c]),
            ],
        );
    }

    #[test]
    fn bad_hex_and_empty_payloads() {
        let got = feed_chunks(
            &mut lines(8, Some("radio_rx")),
            &[b"radio_rx 12G4\nradio_rx\nradio_rx 1 2\nradio_rx 0102\n"],
        );
        assert_eq!(
            got,
            [
                Err(FrameError::BadHex),
                Err(FrameError::BadHex),
                Err(FrameError::BadHex),
                Ok(vec![1, 2])
            ]
        );
    }

    #[test]
    fn overlong_lines_are_skipped_to_the_next_line_end() {
        // max 4 bytes: 8 digits ok, 10 digits too many (the line still fits the buffer),
        // and a frame's line far past the line limit is one error.
        let mut s = b"radio_rx 0102030405\r\nradio_rx ".to_vec();
        s.extend(std::iter::repeat_n(b'7', 500));
        s.extend_from_slice(b"\r\nradio_rx 01020304\r\n");
        split_everywhere(
            || lines(4, Some("radio_rx")),
            &s,
            &[
                Err(FrameError::Overlong),
                Err(FrameError::Overlong),
                Ok(vec![1, 2, 3, 4]),
            ],
        );
    }

    /// A module's long chatter line (a banner, a help text) lacks the prefix: it is told as
    /// such, not as a frame over `max_frame`, which would send the operator to raise it.
    #[test]
    fn an_overlong_line_without_the_prefix_is_chatter() {
        let mut s = b"RN2483 1.0.5 ".to_vec();
        s.extend(std::iter::repeat_n(b'x', 500));
        s.extend_from_slice(b"\r\nradio_rx 0102\r\n");
        split_everywhere(
            || lines(4, Some("radio_rx")),
            &s,
            &[Err(FrameError::NoPrefix), Ok(vec![1, 2])],
        );
    }

    #[test]
    fn binary_garbage_between_lines() {
        let s = b"\x00\xff\xc0garbage\nradio_rx 01\n\x13\x37radio_rx 02\nradio_rx 03\n";
        let got = feed_chunks(&mut lines(4, Some("radio_rx")), &[s]);
        assert_eq!(
            got,
            [
                Err(FrameError::NoPrefix),
                Ok(vec![1]),
                Err(FrameError::NoPrefix),
                Ok(vec![3])
            ]
        );
    }

    #[test]
    fn the_largest_frame_fits() {
        let hex = "ab".repeat(MAX_FRAME);
        let line = format!("radio_rx {hex}\r\n");
        let got = feed_chunks(&mut lines(MAX_FRAME, Some("radio_rx")), &[line.as_bytes()]);
        assert_eq!(got, [Ok(vec![0xab; MAX_FRAME])]);
        assert!(LinesHex::new(MAX_FRAME + 1, None).is_err());
        assert!(LinesHex::new(0, None).is_err());
    }

    proptest! {
        // A failure is reported with its case, not written to a file in the source tree.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), max in 1usize..64,
                        prefix in proptest::option::of("[a-z_+=:]{0,10}")) {
            let mut d = lines(max, prefix.as_deref());
            for f in feed_chunks(&mut d, &[&bytes]).into_iter().flatten() {
                prop_assert!(f.len() <= max);
            }
        }

        #[test]
        fn round_trips_split_anywhere(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..5),
            crlf in any::<bool>(),
            upper in any::<bool>(),
        ) {
            let end = if crlf { "\r\n" } else { "\n" };
            let stream: String = frames
                .iter()
                .map(|f| {
                    let h = hex::encode(f);
                    let h = if upper { h.to_uppercase() } else { h };
                    format!("radio_rx  {h}{end}")
                })
                .collect();
            let stream = stream.as_bytes();
            let chunks = cut_at(stream, &cuts);
            let got = feed_chunks(&mut lines(40, Some("radio_rx")), &chunks);
            let want: Vec<_> = frames.iter().map(|f| Ok(f.clone())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
