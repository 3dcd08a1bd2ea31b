//! Serial frame codecs ("deframers"): bytes from a serial port in, whole frames out.
//!
//! Each deframer is a small state machine over fixed-capacity [`heapless`] buffers: nothing
//! is allocated on the read path, a frame can never grow past the configured maximum, and
//! after garbage, an over-long frame or a broken one it resynchronises at the next delimiter.
//! Problems are values ([`FrameError`]), for the caller to count; they are never fatal.
//!
//! Framings (config `framing = …`):
//! * `lines-hex` ([`LinesHex`]): one frame per line, the payload in hex, after an optional
//!   configured prefix (`radio_rx  0011…` of RN2483-class modules, `+RCV=…`, `at+recv=…:…`).
//!   CR, LF and CRLF all end a line. No checksum (the radio module checked the LoRa CRC).
//! * `slip` ([`Slip`], RFC 1055): frames end in END (0xC0); ESC (0xDB) escapes END and ESC.
//! * `cobs` ([`Cobs`]): Consistent Overhead Byte Stuffing, each frame ended by 0x00.
//!
//! `slip` and `cobs` frames end in a CRC-16/CCITT-FALSE of the content (poly 0x1021, init
//! 0xFFFF, no reflection, no final xor; "123456789" gives 0x29B1), big-endian, inside the
//! escaping/encoding: sender side, `encode(content ++ crc16(content).to_be_bytes())`.
//! See [`crc`].
//!
//! Usage: feed what a read returned, as often as [`Deframer::push`] asks:
//! ```
//! use hubgate::framing::{Deframer, Framing};
//! let mut d = Deframer::new(Framing::LinesHex, 64, Some("radio_rx")).unwrap();
//! let mut input: &[u8] = b"ok\r\nradio_rx  0102\r\n";
//! let mut frames = Vec::new();
//! while !input.is_empty() {
//!     let (used, event) = d.push(input);
//!     input = &input[used..];
//!     if let Some(Ok(frame)) = event {
//!         frames.push(frame.to_vec());
//!     }
//! }
//! assert_eq!(frames, [vec![1, 2]]);
//! ```

pub mod cobs;
pub mod crc;
pub mod lines_hex;
pub mod slip;

pub use cobs::Cobs;
pub use lines_hex::LinesHex;
pub use slip::Slip;

/// Compile-time ceiling of a frame's content (config `max_frame` may not exceed it).
pub const MAX_FRAME: usize = 2048;
/// Room for the content plus its CRC-16 trailer.
const BUF: usize = MAX_FRAME + 2;

/// Which framing a serial device speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    LinesHex,
    Slip,
    Cobs,
}

/// Why bytes did not become a frame. The deframer has already resynchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Longer than `max_frame`; the rest up to the next delimiter is skipped.
    #[error("frame longer than max_frame")]
    Overlong,
    /// The CRC-16 trailer does not match the content.
    #[error("CRC-16 mismatch")]
    Crc,
    /// A `lines-hex` payload that is not an even number of hex digits.
    #[error("bad hex payload")]
    BadHex,
    /// Broken framing: a bad SLIP escape, a truncated COBS block, a frame shorter than its CRC.
    #[error("malformed frame")]
    Malformed,
    /// A `lines-hex` line without the configured prefix (module chatter such as `ok`).
    #[error("line without the configured prefix")]
    NoPrefix,
}

impl FrameError {
    /// Stable label for counters and log-once.
    pub fn kind(self) -> &'static str {
        match self {
            FrameError::Overlong => "serial_overlong",
            FrameError::Crc => "serial_crc",
            FrameError::BadHex => "serial_bad_hex",
            FrameError::Malformed => "serial_malformed",
            FrameError::NoPrefix => "serial_other_line",
        }
    }
}

/// `max_frame` out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("max_frame must be between 1 and {MAX_FRAME}, not {0}")]
pub struct MaxFrameError(pub usize);

/// One step of a deframer: a complete frame (borrowed until the next push) or a problem.
pub type Event<'a> = Option<Result<&'a [u8], FrameError>>;

/// What a state machine says after one byte (no borrow, so the byte loop stays simple).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    More,
    Frame,
    Error(FrameError),
}

/// Any of the framings, chosen at run time from the config.
// One per serial source, for its whole life: the variants' different sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Deframer {
    LinesHex(LinesHex),
    Slip(Slip),
    Cobs(Cobs),
}

impl Deframer {
    /// `max_frame`: the longest frame content accepted (CRC trailer not counted).
    /// `prefix`: `lines-hex` only (ignored by the others).
    pub fn new(
        framing: Framing,
        max_frame: usize,
        prefix: Option<&str>,
    ) -> Result<Self, MaxFrameError> {
        Ok(match framing {
            Framing::LinesHex => Deframer::LinesHex(LinesHex::new(max_frame, prefix)?),
            Framing::Slip => Deframer::Slip(Slip::new(max_frame)?),
            Framing::Cobs => Deframer::Cobs(Cobs::new(max_frame)?),
        })
    }

    /// Consume bytes from `input` up to the end of the next frame or problem; returns how many
    /// bytes were used and what, if anything, completed. Call again with the rest.
    pub fn push<'a>(&'a mut self, input: &[u8]) -> (usize, Event<'a>) {
        match self {
            Deframer::LinesHex(d) => d.push(input),
            Deframer::Slip(d) => d.push(input),
            Deframer::Cobs(d) => d.push(input),
        }
    }

    /// Forget any partial frame (the device went away); returns whether there was one: bytes
    /// after the last delimiter that were not skipped as part of a reported problem.
    pub fn reset(&mut self) -> bool {
        match self {
            Deframer::LinesHex(d) => d.reset(),
            Deframer::Slip(d) => d.reset(),
            Deframer::Cobs(d) => d.reset(),
        }
    }
}

/// `max_frame` if it is within 1..=[`MAX_FRAME`] (the config checks it with this too).
pub fn check_max(max_frame: usize) -> Result<usize, MaxFrameError> {
    if (1..=MAX_FRAME).contains(&max_frame) {
        Ok(max_frame)
    } else {
        Err(MaxFrameError(max_frame))
    }
}

/// The byte loop shared by the deframers: feed `step` until something completes.
fn run(input: &[u8], mut step: impl FnMut(u8) -> Step) -> (usize, Step) {
    for (i, &b) in input.iter().enumerate() {
        match step(b) {
            Step::More => {}
            s => return (i + 1, s),
        }
    }
    (input.len(), Step::More)
}

/// The CRC framings: check and strip the trailer of a complete frame.
fn crc_event(buf: &[u8], step: Step) -> Event<'_> {
    match step {
        Step::More => None,
        Step::Error(e) => Some(Err(e)),
        Step::Frame => Some(crc::check(buf).map(|n| &buf[..n])),
    }
}

/// The senders' byte stuffing, one copy shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/support/stuffing.rs"]
pub(crate) mod stuffing;

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers shared by the deframer tests.
    pub(crate) use super::stuffing;
    use super::Deframer;

    /// `content` followed by its CRC-16 trailer, as senders frame it.
    pub fn with_crc(content: &[u8]) -> Vec<u8> {
        let mut v = content.to_vec();
        v.extend_from_slice(&super::crc::crc16(content).to_be_bytes());
        v
    }

    /// `stream` cut at the given points (any order), as chunks in stream order.
    pub fn cut_at<'a>(stream: &'a [u8], cuts: &[proptest::sample::Index]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&stream[last..p]);
            last = p;
        }
        chunks.push(&stream[last..]);
        chunks
    }

    /// Feed `chunks` one after the other; collect frames and errors in order.
    pub fn feed_chunks(
        d: &mut Deframer,
        chunks: &[&[u8]],
    ) -> Vec<Result<Vec<u8>, super::FrameError>> {
        let mut out = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            loop {
                let (used, ev) = d.push(input);
                assert!(used <= input.len());
                let done = used == input.len();
                input = &input[used..];
                if let Some(ev) = ev {
                    out.push(ev.map(<[u8]>::to_vec));
                } else {
                    assert!(done, "no event but input left");
                }
                if input.is_empty() {
                    break;
                }
            }
        }
        out
    }

    /// Feed `stream` split at every single position (two chunks), and byte by byte, and
    /// check every way gives `expected`.
    pub fn split_everywhere(
        make: impl Fn() -> Deframer,
        stream: &[u8],
        expected: &[Result<Vec<u8>, super::FrameError>],
    ) {
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(
                feed_chunks(&mut make(), &[a, b]),
                expected,
                "split at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed_chunks(&mut make(), &bytes), expected, "byte by byte");
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{cut_at, feed_chunks, stuffing, with_crc};
    use super::{Deframer, FrameError, Framing};
    use proptest::prelude::*;

    /// `reset` tells whether it threw away a frame cut short (the serial source counts it as
    /// `serial_cut`): not after a whole frame, nor while skipping a reported bad one.
    #[test]
    fn reset_tells_whether_a_frame_was_cut() {
        let content = b"reading";
        let cases: [(Framing, Vec<u8>); 3] = [
            (Framing::Slip, stuffing::slip(&with_crc(content))),
            (Framing::Cobs, stuffing::cobs(&with_crc(content))),
            (
                Framing::LinesHex,
                format!("rx {}\r\n", hex::encode(content)).into_bytes(),
            ),
        ];
        for (framing, frame) in cases {
            let mut d = Deframer::new(framing, 16, Some("rx")).unwrap();
            assert!(!d.reset(), "{framing:?}: fresh");
            assert_eq!(feed_chunks(&mut d, &[&frame]), [Ok(content.to_vec())]);
            assert!(!d.reset(), "{framing:?}: after a whole frame");
            // All but the delimiter (lines-hex: a line lacking only its line end).
            let end = if framing == Framing::LinesHex { 2 } else { 1 };
            assert!(feed_chunks(&mut d, &[&frame[..frame.len() - end]]).is_empty());
            assert!(d.reset(), "{framing:?}: cut");
            assert!(!d.reset(), "{framing:?}: already forgotten");
            // Skipping the rest of an over-long frame, already counted.
            assert_eq!(feed_chunks(&mut d, &[&[0x41; 300]]).len(), 1);
            assert!(!d.reset(), "{framing:?}: while discarding");
            assert_eq!(feed_chunks(&mut d, &[&frame]), [Ok(content.to_vec())]);
        }
        // A module's prompt or status text without the prefix could not have been a frame.
        let mut d = Deframer::new(Framing::LinesHex, 16, Some("rx")).unwrap();
        assert!(feed_chunks(&mut d, &[b"AT+OK> "]).is_empty());
        assert!(!d.reset(), "a prompt is no cut frame");
        let mut d = Deframer::new(Framing::LinesHex, 16, None).unwrap();
        assert!(feed_chunks(&mut d, &[b"0a0b"]).is_empty());
        assert!(d.reset(), "without a prefix any text may be a frame");
        // A line cut inside the prefix may have been a frame's.
        let mut d = Deframer::new(Framing::LinesHex, 16, Some("radio_rx")).unwrap();
        assert!(feed_chunks(&mut d, &[b"  RADIO_"]).is_empty());
        assert!(d.reset(), "cut inside the prefix");
    }

    /// Hostile bytes: any, with the framings' delimiters and escapes, line ends, hex digits,
    /// blanks and COBS codes common.
    fn hostile() -> impl Strategy<Value = Vec<u8>> {
        let special = prop::sample::select(
            &[
                0x00, 0x01, 0xFF, 0xC0, 0xDB, 0xDC, 0xDD, b'\n', b'\r', b' ', b':', b'a', b'0',
            ][..],
        );
        prop::collection::vec(prop_oneof![any::<u8>(), special], 0..400)
    }

    fn any_framing() -> impl Strategy<Value = Framing> {
        prop::sample::select(&[Framing::Slip, Framing::Cobs, Framing::LinesHex][..])
    }

    proptest! {
        // A failure is reported with its case, not written to a file in the source tree.
        #![proptest_config(ProptestConfig {
            cases: 1024,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever the bytes, where the reads cut them changes nothing: the same frames and
        /// errors in the same order, and the same partial frame left at the end.
        #[test]
        fn hostile_bytes_decode_alike_however_cut(
            framing in any_framing(),
            bytes in hostile(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            max in 1usize..20,
            prefix in prop::option::of("[a-z ]{0,3}"),
        ) {
            let make = || Deframer::new(framing, max, prefix.as_deref()).unwrap();
            let mut whole = make();
            let want = feed_chunks(&mut whole, &[&bytes]);
            let mut cut = make();
            prop_assert_eq!(&feed_chunks(&mut cut, &cut_at(&bytes, &cuts)), &want);
            let left = whole.reset();
            prop_assert_eq!(cut.reset(), left);
            let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
            let mut by_byte = make();
            prop_assert_eq!(feed_chunks(&mut by_byte, &bytewise), want);
            prop_assert_eq!(by_byte.reset(), left);
        }

        /// After any garbage and one delimiter, the frames that follow each come out as sent
        /// (or as too long): no bad input costs a later good frame.
        #[test]
        fn any_garbage_is_forgotten_at_the_next_delimiter(
            framing in any_framing(),
            garbage in hostile(),
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 1..4),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            max in 1usize..20,
        ) {
            let mut stream = garbage;
            stream.push(match framing {
                Framing::Slip => super::slip::END,
                Framing::Cobs => 0,
                Framing::LinesHex => b'\n',
            });
            for f in &frames {
                stream.extend(match framing {
                    Framing::Slip => stuffing::slip(&with_crc(f)),
                    Framing::Cobs => stuffing::cobs(&with_crc(f)),
                    Framing::LinesHex => format!("rx {}\r\n", hex::encode(f)).into_bytes(),
                });
            }
            let want: Vec<_> = frames
                .iter()
                .map(|f| if f.len() <= max { Ok(f.clone()) } else { Err(FrameError::Overlong) })
                .collect();
            let mut d = Deframer::new(framing, max, Some("rx")).unwrap();
            let got = feed_chunks(&mut d, &cut_at(&stream, &cuts));
            prop_assert!(got.ends_with(&want), "{:?}", got);
        }
    }
}
