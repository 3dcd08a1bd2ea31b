//! What the agent and its codec worker say over their socket: frames of a 4-byte little-endian
//! length and a body. One request, then its answer; never two requests in flight.
//!
//! - load: `L` (its first load: its top level is timed) or `R` (loaded again into a new
//!   worker: not timed), codec id (u32), name length (u16), name, source
//! - decode: `D`, codec id (u32), fPort present (u8), fPort (u8), receive time in ms (f64),
//!   payload
//! - answer: status (0: the glue's JSON text follows, 1: the [`JsError`] as JSON follows),
//!   retire (1: the worker exits after this answer), text (the agent reads the worker's CPU
//!   time from the kernel, not from it)

use std::io::{self, Read};

use super::{dir, one_line, JsError, OUTPUT_LIMIT, PAYLOAD_LIMIT};

/// Largest request: a codec file and its name.
pub const MAX_REQUEST: usize = dir::FILE_CAP as usize + 1024;
// A decode of the longest payload a codec is given, with its 15 bytes of header, is a request
// the worker reads.
const _: () = assert!(PAYLOAD_LIMIT + 15 <= MAX_REQUEST);
/// Largest answer: the longest JSON a call may return, or an error.
pub const MAX_ANSWER: usize = OUTPUT_LIMIT + 1024;

#[derive(Debug, PartialEq)]
pub enum Request<'a> {
    Load {
        id: u32,
        name: &'a str,
        source: &'a str,
        /// Loaded again into a new worker, after its first load passed.
        again: bool,
    },
    Decode {
        id: u32,
        fport: Option<u8>,
        time_ms: f64,
        bytes: &'a [u8],
    },
}

impl<'a> Request<'a> {
    /// Append the request as one frame.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        frame(out, |out| match *self {
            Request::Load {
                id,
                name,
                source,
                again,
            } => {
                out.push(if again { b'R' } else { b'L' });
                out.extend_from_slice(&id.to_le_bytes());
                let name = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
                out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                out.extend_from_slice(name);
                out.extend_from_slice(source.as_bytes());
            }
            Request::Decode {
                id,
                fport,
                time_ms,
                bytes,
            } => {
                out.push(b'D');
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&[u8::from(fport.is_some()), fport.unwrap_or(0)]);
                out.extend_from_slice(&time_ms.to_le_bytes());
                out.extend_from_slice(bytes);
            }
        })
    }

    /// A frame's body as a request; `None` for anything else.
    pub fn parse(body: &'a [u8]) -> Option<Request<'a>> {
        let (&tag, rest) = body.split_first()?;
        let (id, rest) = rest.split_first_chunk::<4>()?;
        let id = u32::from_le_bytes(*id);
        match tag {
            b'L' | b'R' => {
                let (len, rest) = rest.split_first_chunk::<2>()?;
                let (name, source) =
                    rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))?;
                Some(Request::Load {
                    id,
                    name: std::str::from_utf8(name).ok()?,
                    source: std::str::from_utf8(source).ok()?,
                    again: tag == b'R',
                })
            }
            b'D' => {
                let (&[has_port, port], rest) = rest.split_first_chunk::<2>()?;
                let (time, bytes) = rest.split_first_chunk::<8>()?;
                Some(Request::Decode {
                    id,
                    fport: (has_port == 1).then_some(port),
                    time_ms: f64::from_le_bytes(*time),
                    bytes,
                })
            }
            _ => None,
        }
    }
}

/// The worker's answer to one request.
#[derive(Debug, PartialEq)]
pub struct Answer {
    /// The glue's JSON text (empty for a load).
    pub result: Result<String, JsError>,
    /// The worker exits after this answer: the agent starts a new one for the next call.
    pub retire: bool,
}

impl Answer {
    /// Append the answer as one frame.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        frame(out, |out| {
            let text = match &self.result {
                Ok(text) => {
                    out.push(0);
                    text.clone()
                }
                Err(e) => {
                    out.push(1);
                    serde_json::to_string(e).unwrap_or_default()
                }
            };
            out.push(u8::from(self.retire));
            out.extend_from_slice(text.as_bytes());
        })
    }

    /// A frame's body as an answer, its error as the agent takes it ([`from_worker`]); `None`
    /// for anything else.
    pub fn parse(body: &[u8]) -> Option<Answer> {
        let (&[status, retire], text) = body.split_first_chunk::<2>()?;
        let text = std::str::from_utf8(text).ok()?;
        let result = match status {
            0 => Ok(text.to_string()),
            1 => Err(from_worker(serde_json::from_str(text).ok()?)),
            _ => return None,
        };
        Some(Answer {
            result,
            retire: retire == 1,
        })
    }
}

/// A worker's error as the agent takes it: a QuickJS escape controls the worker, so what it
/// says is the codec's word, no more. Its text is put on one line and cut as the worker does a
/// script's message ([`one_line`]): a packed record's `error` carries no more than a codec's
/// own throw could put there. An error only the agent makes (the worker hung or died, a payload
/// not sent, the codec's reported errors, read from its result) or its guard (a quarantine, the
/// round's budget) is none a worker can claim: it is an error of the codec (`js_error`, no
/// strike, no retry), whose kind the agent did not derive.
fn from_worker(e: JsError) -> JsError {
    let agents = match e {
        JsError::Threw(text) => return JsError::Threw(one_line(&text)),
        JsError::Junk(text) => return JsError::Junk(one_line(&text)),
        JsError::Engine(text) => return JsError::Engine(one_line(&text)),
        JsError::NoEntryPoint
        | JsError::TimedOut(_)
        | JsError::SlowTopLevel(_)
        | JsError::OutOfMemory
        | JsError::WorkerFull
        | JsError::NotBuilt => return e,
        JsError::Reported(_) => "reported errors",
        JsError::TooLong(_) => "a payload too long",
        JsError::Hung(_) => "did not answer",
        JsError::Crashed(_) => "its worker died",
        JsError::Quarantined(_) | JsError::DeviceQuarantined(_) => "quarantined",
        JsError::OverBudget(_) => "over the round's budget",
    };
    JsError::Junk(format!("an error only the agent tells ({agents})"))
}

fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    body(out);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// Read one frame's body into `buf`: `Ok(false)` at the end of the stream before a frame;
/// a frame longer than `max` or cut short is an error.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    let mut len = [0; 4];
    let mut got = 0;
    while got < len.len() {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes"),
        ));
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        assert!(read_frame(&mut &frame[..], &mut buf, MAX_REQUEST).unwrap());
        buf
    }

    #[test]
    fn requests_and_answers_come_back_as_sent() {
        let requests = [
            Request::Load {
                id: 7,
                name: "th.js",
                source: "function decodeUplink(i) {}",
                again: false,
            },
            Request::Load {
                id: 8,
                name: "th.js",
                source: "function decodeUplink(i) {}",
                again: true,
            },
            Request::Decode {
                id: 1 << 20,
                fport: Some(0),
                time_ms: 1.7e12,
                bytes: &[0, 255, 3],
            },
            Request::Decode {
                id: 0,
                fport: None,
                time_ms: 0.0,
                bytes: &[],
            },
        ];
        for r in requests {
            let mut frame = Vec::new();
            r.write_to(&mut frame);
            assert_eq!(Request::parse(&body(&frame)), Some(r));
        }
        for a in [
            Answer {
                result: Ok("{\"data\":{}}".into()),
                retire: false,
            },
            Answer {
                result: Err(JsError::Threw("TypeError: x".into())),
                retire: true,
            },
        ] {
            let mut frame = Vec::new();
            a.write_to(&mut frame);
            assert_eq!(Answer::parse(&body(&frame)), Some(a));
        }
    }

    /// The kinds a worker makes itself come as it sent them, the texts among them on one line
    /// and cut as a codec's message; a kind only the agent or its guard makes is the codec's
    /// error (every one of them: `a_workers_errors_are_its_codecs_word` in
    /// `tests/js_isolation.rs`).
    #[test]
    fn a_workers_own_kinds_come_through_and_the_agents_do_not() {
        use JsError::*;
        let through = |e: JsError| {
            let mut frame = Vec::new();
            Answer {
                result: Err(e),
                retire: false,
            }
            .write_to(&mut frame);
            Answer::parse(&body(&frame)).unwrap().result.unwrap_err()
        };
        let own = [
            NoEntryPoint,
            TimedOut(100),
            SlowTopLevel(312),
            OutOfMemory,
            WorkerFull,
            NotBuilt,
        ];
        for e in own {
            assert_eq!(through(e.clone()), e);
        }
        let long = format!("a\nb{}", "c".repeat(300));
        let cut = format!("a b{}", "c".repeat(197));
        for text in [Threw, Engine, Junk] {
            assert_eq!(through(text(long.clone())), text(cut.clone()));
        }
        let agents = "an error only the agent tells (did not answer)";
        assert_eq!(through(Hung(500)), Junk(agents.into()));
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(Request::parse(b""), None);
        assert_eq!(Request::parse(b"X\0\0\0\0"), None);
        assert_eq!(Request::parse(b"L\0\0\0\0\x09\0abc"), None);
        assert_eq!(Answer::parse(b"\x02\0{}"), None);
        assert_eq!(Answer::parse(b"\x01\0not json"), None);
        assert_eq!(Answer::parse(b"\0\0\xff"), None);
        assert_eq!(Answer::parse(b"\0"), None);
        let mut buf = Vec::new();
        assert!(!read_frame(&mut &b""[..], &mut buf, 10).unwrap());
        assert!(read_frame(&mut &b"\x05\0"[..], &mut buf, 10).is_err());
        assert!(read_frame(&mut &b"\x0b\0\0\0"[..], &mut buf, 10).is_err());
        assert!(read_frame(&mut &b"\x03\0\0\0ab"[..], &mut buf, 10).is_err());
    }
}
