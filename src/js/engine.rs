//! The QuickJS sandbox (rquickjs): one runtime per codec with its limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use rquickjs::{Context, Function, Runtime};

use serde_json::Value as Json;

use super::{JsError, Output, MEMORY_LIMIT, OUTPUT_LIMIT, STACK_LIMIT, TIME_LIMIT};

/// Runs the codec's function with the uplink and hands back its result as JSON text, so that
/// whatever the script returns is turned into plain data inside the sandbox.
const GLUE: &str = r#"
(function (g) {
  var call = function (bytes, fPort, recvTime) {
    if (typeof g.decodeUplink === "function") {
      var out = g.decodeUplink({ bytes: bytes, fPort: fPort, recvTime: new Date(recvTime), variables: {} });
      if (out && typeof out === "object" && typeof g.normalizeUplink === "function" &&
          out.data && !(out.errors && out.errors.length)) {
        out.normalized = g.normalizeUplink({ data: out.data });
      }
      return out;
    }
    if (typeof g.Decode === "function") {
      return { data: g.Decode(fPort, bytes, {}) };
    }
    return { data: g.Decoder(bytes, fPort) };
  };
  Object.defineProperty(g, "__hubgate_decode", {
    value: function (bytes, fPort, recvTime) { return JSON.stringify(call(bytes, fPort, recvTime)); }
  });
})(globalThis);
"#;

/// One loaded codec with its own sandboxed runtime.
pub struct JsCodec {
    ctx: Context,
    /// Keeps the runtime (and its limits) alive as long as the context.
    runtime: Runtime,
    /// The calling thread's CPU time (ns) at which the current call must stop; `u64::MAX`
    /// between calls.
    deadline: Arc<AtomicU64>,
}

impl JsCodec {
    /// Load `source` (a codec file's text) into a fresh runtime. `name` appears in the
    /// script's error stacks.
    pub fn load(name: &str, source: &str) -> Result<JsCodec, JsError> {
        let runtime = Runtime::new().map_err(|e| JsError::Engine(e.to_string()))?;
        runtime.set_memory_limit(MEMORY_LIMIT);
        runtime.set_max_stack_size(STACK_LIMIT);
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let seen = deadline.clone();
        // QuickJS calls this on the thread running the script, every few thousand steps.
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let limit = seen.load(Ordering::Relaxed);
            limit != u64::MAX && thread_cpu_ns() >= limit
        })));
        let ctx = Context::full(&runtime).map_err(|e| JsError::Engine(e.to_string()))?;
        let codec = JsCodec {
            ctx,
            runtime,
            deadline,
        };
        codec.limited(|| {
            codec.ctx.with(|ctx| {
                let mut options = rquickjs::context::EvalOptions::default();
                options.filename = Some(name.to_string());
                options.strict = false;
                caught(&ctx, ctx.eval_with_options::<(), _>(source, options))?;
                let g = ctx.globals();
                let defines = |f: &str| g.get::<_, Function>(f).is_ok();
                if !["decodeUplink", "Decode", "Decoder"]
                    .into_iter()
                    .any(defines)
                {
                    return Err(JsError::NoEntryPoint);
                }
                caught(&ctx, ctx.eval::<(), _>(GLUE))
            })
        })?;
        Ok(codec)
    }

    /// Decode one payload. `time` is the uplink's receive time (`input.recvTime`).
    pub fn decode(
        &self,
        fport: Option<u8>,
        bytes: &[u8],
        time: SystemTime,
    ) -> Result<Output, JsError> {
        let ms = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_millis() as f64);
        let text = self.limited(|| {
            self.ctx.with(|ctx| {
                let f: Function = ctx
                    .globals()
                    .get("__hubgate_decode")
                    .map_err(|e| JsError::Engine(e.to_string()))?;
                let port = fport.map(i32::from);
                caught(
                    &ctx,
                    f.call::<_, Option<String>>((bytes.to_vec(), port, ms)),
                )
            })
        })?;
        let text = text.ok_or_else(|| JsError::Junk("nothing JSON can hold".into()))?;
        if text.len() > OUTPUT_LIMIT {
            return Err(JsError::Junk(format!("{} bytes of JSON", text.len())));
        }
        output(&text)
    }

    /// Bytes the runtime has allocated (its heap, the codec's code and data included).
    pub fn memory_used(&self) -> u64 {
        self.runtime.memory_usage().malloc_size.max(0) as u64
    }

    /// Run `f` with the time limit armed; an out-of-memory or interrupted script is told
    /// apart from one that threw. The limit is the thread's CPU time, not the clock: a busy
    /// gateway that preempts the forwarder must not fail a codec that did little.
    fn limited<T>(&self, f: impl FnOnce() -> Result<T, JsError>) -> Result<T, JsError> {
        let deadline = thread_cpu_ns().saturating_add(TIME_LIMIT.as_nanos() as u64);
        self.deadline.store(deadline, Ordering::Relaxed);
        let result = f();
        let over = thread_cpu_ns() >= deadline;
        self.deadline.store(u64::MAX, Ordering::Relaxed);
        // Free what a failed call left behind before the next one.
        if result.is_err() {
            self.runtime.run_gc();
        }
        match result {
            Err(JsError::Threw(m)) if over && m.contains("interrupted") => Err(JsError::TimedOut),
            Err(JsError::Threw(m)) if m.contains("out of memory") => Err(JsError::OutOfMemory),
            other => other,
        }
    }
}

/// CPU time the calling thread has used, in ns.
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `t` is; the thread CPU clock always
    // exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// The exception of a failed call as one line: `TypeError: x is undefined`.
fn caught<'js, T>(ctx: &rquickjs::Ctx<'js>, r: rquickjs::Result<T>) -> Result<T, JsError> {
    match r {
        Ok(v) => Ok(v),
        Err(rquickjs::Error::Exception) => {
            let v = ctx.catch();
            let text = match v.as_exception() {
                Some(e) => {
                    let name: Option<String> = e.get("name").ok();
                    match (name, e.message()) {
                        (Some(n), Some(m)) => format!("{n}: {m}"),
                        (_, Some(m)) => m,
                        (n, None) => n.unwrap_or_else(|| "an error".into()),
                    }
                }
                None => match v.as_string().and_then(|s| s.to_string().ok()) {
                    Some(s) => format!("{s:?}"),
                    None => format!("a {}", v.type_name()),
                },
            };
            Err(JsError::Threw(one_line(&text)))
        }
        Err(e) => Err(JsError::Engine(one_line(&e.to_string()))),
    }
}

/// At most 200 characters on one line (a script's message is the outside world's text).
fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    flat
}

/// The glue's JSON: `{data, warnings, errors, normalized}`.
fn output(text: &str) -> Result<Output, JsError> {
    let v: Json = serde_json::from_str(text).map_err(|e| JsError::Junk(e.to_string()))?;
    let mut top = match v {
        Json::Object(top) => top,
        other => return Err(JsError::Junk(format!("{}, not {{data}}", kind(&other)))),
    };
    if let Some(errors) = messages(top.get("errors")).filter(|e| !e.is_empty()) {
        return Err(JsError::Reported(one_line(&errors.join("; "))));
    }
    let data = match top.remove("data") {
        Some(Json::Object(m)) => m,
        Some(other) => {
            return Err(JsError::Junk(format!(
                "data that is not an object: {}",
                kind(&other)
            )))
        }
        None => return Err(JsError::Junk("no data".into())),
    };
    let mut warnings = messages(top.get("warnings")).unwrap_or_default();
    let normalized = match top.remove("normalized") {
        Some(Json::Object(mut n)) => {
            let errors = messages(n.get("errors")).unwrap_or_default();
            if errors.is_empty() {
                warnings.extend(messages(n.get("warnings")).unwrap_or_default());
                match n.remove("data") {
                    Some(Json::Object(m)) => vec![m],
                    Some(Json::Array(items)) => items
                        .into_iter()
                        .filter_map(|i| match i {
                            Json::Object(m) => Some(m),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                }
            } else {
                warnings.push(format!("normalizeUplink: {}", errors.join("; ")));
                Vec::new()
            }
        }
        _ => Vec::new(),
    };
    Ok(Output {
        data,
        normalized,
        warnings,
    })
}

fn messages(v: Option<&Json>) -> Option<Vec<String>> {
    match v? {
        Json::Array(items) => Some(
            items
                .iter()
                .map(|i| match i {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        ),
        Json::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}
