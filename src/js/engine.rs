//! The QuickJS sandbox (rquickjs), run inside the worker process: one runtime per codec with
//! its limits, kept across calls, and a fresh context for every call.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rquickjs::allocator::Allocator;
use rquickjs::context::intrinsic;
use rquickjs::{qjs, Context, Ctx, Function, Runtime};

use super::{
    one_line, JsError, LOAD_LIMIT, MEMORY_LIMIT, OUTPUT_LIMIT, STACK_LIMIT, TIME_LIMIT,
    TOP_LEVEL_LIMIT,
};

/// Runs the codec's function with the uplink and hands back its result as JSON text, so that
/// whatever the script returns is turned into plain data inside the sandbox. A
/// `normalizeUplink` that throws, returns what `JSON.stringify` turns into nothing (undefined,
/// a function, a Symbol, a `toJSON` giving undefined: it would drop it silently) or returns
/// what JSON cannot hold costs a warning, not the good `decodeUplink` result; what is kept is
/// the text checked, so a `toJSON` or getter that answers otherwise the second time cannot
/// undo the check. An InternalError is caught as any other throw (a string past QuickJS's
/// length limit is one): the time limit's interrupt skips every `catch` (a `using`
/// disposal can wrap it in a catchable SuppressedError, but a call that returns past its
/// deadline is timed out all the same), and running out of memory is told by the
/// allocator's refusal, not by the error ([`Live::limited`]).
/// `normalizeUplink` gets a copy of the data, as The Things Stack's does: one that
/// changes its input does not change the decoded data sent.
const GLUE: &str = r#"
(function (g) {
  var normalize = function (data) {
    try {
      var n = g.normalizeUplink({ data: JSON.parse(JSON.stringify(data)) });
      var text = JSON.stringify(n);
      if (text === undefined) {
        return { errors: ["returned nothing JSON can hold (" + typeof n + "), not {data}"] };
      }
      return JSON.parse(text);
    } catch (e) {
      var m;
      try { m = String(e); } catch (_) { m = "an error"; }
      return { errors: ["threw " + m] };
    }
  };
  var call = function (bytes, fPort, recvTime) {
    if (typeof g.decodeUplink === "function") {
      var out = g.decodeUplink({ bytes: bytes, fPort: fPort, recvTime: new Date(recvTime), variables: {} });
      if (out && typeof out === "object" && typeof g.normalizeUplink === "function" &&
          out.data && !(out.errors && out.errors.length)) {
        out.normalized = normalize(out.data);
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

/// What a codec's context offers besides the base objects (`queueMicrotask`, whose jobs run
/// before the call answers, is one of them, and BigInt since QuickJS-ng 0.16): no Promise (a
/// decode's result is what its function returns, so an async codec's would come too late; an
/// `async` function throws without it), no WeakRef, no Proxy, no `performance`.
type Intrinsics = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
);

/// One loaded codec: a runtime of its own and the codec compiled once, run afresh for every
/// call in a context of its own (as ChirpStack v4, v3 and TTN do): what a call leaves in the
/// codec's globals (one device's readings, a replaced builtin) never reaches another call. A
/// call that fails in a way that leaves the runtime in doubt ([`JsError::retires`]) is the
/// runtime's last: the worker answers, then exits without freeing it, and the agent loads the
/// codec into a new worker.
pub struct Sandbox {
    live: Live,
}

impl Sandbox {
    /// Compile `source` (a codec file's text) in a fresh runtime and run it once, as a call
    /// does, to see that it defines an entry point. `name` appears in the script's error
    /// stacks.
    pub fn load(name: &str, source: &str) -> Result<Sandbox, JsError> {
        Ok(Sandbox {
            live: Live::new(name, source, true)?,
        })
    }

    /// Load a codec that passed [`load`](Sandbox::load) once, into a new worker: its top
    /// level is not held to [`TOP_LEVEL_LIMIT`] again (only to the load limit, and to the
    /// call's limit at every call). Timed again, a codec near the limit could pass its first
    /// load and fail here: then every call loaded it again, and failed, until a reload.
    pub fn load_again(name: &str, source: &str) -> Result<Sandbox, JsError> {
        Ok(Sandbox {
            live: Live::new(name, source, false)?,
        })
    }

    /// Decode one payload into the glue's JSON text. `time_ms` is the uplink's receive time
    /// (`input.recvTime`), in ms since 1970.
    pub fn decode(&self, fport: Option<u8>, bytes: &[u8], time_ms: f64) -> Result<String, JsError> {
        self.live.decode(fport, bytes, time_ms)
    }

    /// Its allocator refused memory during a call that did not fail for it (the script
    /// caught the error, or QuickJS went on without): the call's result stands, but the
    /// runtime is used no more, as after [`JsError::OutOfMemory`].
    pub fn in_doubt(&self) -> bool {
        self.live.refused.load(Ordering::Relaxed)
    }
}

/// A runtime with the codec's bytecode.
struct Live {
    /// Keeps the runtime (and its limits) alive as long as the codec.
    runtime: Runtime,
    /// The codec's script and the glue, compiled at load, as QuickJS writes bytecode: each
    /// call reads them into its own context. Not one compiled function run in every context:
    /// a function runs in the realm (globals) of the context that read or compiled it.
    script: Vec<u8>,
    glue: Vec<u8>,
    /// The calling thread's CPU time (ns) at which the current call must stop; `u64::MAX`
    /// between calls.
    deadline: Arc<AtomicU64>,
    /// Set by the runtime's allocator when it refuses an allocation; never cleared, as the
    /// runtime is not used again.
    refused: Arc<AtomicBool>,
    /// Set with `refused` when the refusal was the C library's, not the runtime's limit: the
    /// worker's memory (RLIMIT_DATA), which all codecs share, was full.
    full: Arc<AtomicBool>,
}

impl Live {
    /// `timed`: its top level is refused past [`TOP_LEVEL_LIMIT`].
    fn new(name: &str, source: &str, timed: bool) -> Result<Live, JsError> {
        let refused = Arc::new(AtomicBool::new(false));
        let full = Arc::new(AtomicBool::new(false));
        let heap = Capped {
            used: 0,
            refused: refused.clone(),
            full: full.clone(),
        };
        let runtime = Runtime::new_with_alloc(heap).map_err(|e| JsError::Engine(e.to_string()))?;
        runtime.set_max_stack_size(STACK_LIMIT);
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let seen = deadline.clone();
        // QuickJS calls this on the thread running the script, every few thousand steps.
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let limit = seen.load(Ordering::Relaxed);
            limit != u64::MAX && thread_cpu_ns() >= limit
        })));
        let mut live = Live {
            runtime,
            script: Vec::new(),
            glue: Vec::new(),
            deadline,
            refused,
            full,
        };
        let mut held = None;
        let loaded = live.limited(LOAD_LIMIT, || {
            let context = held.insert(live.context()?);
            let (script, glue) = context.with(|ctx| {
                let script = caught(&ctx, compile(&ctx, source, name))?;
                let glue = caught(&ctx, compile(&ctx, GLUE, "glue"))?;
                Ok((script, glue))
            })?;
            // The top level as every call runs it (reading the bytecode, running it, then its
            // jobs), timed as a call is: by this thread's CPU time.
            let start = thread_cpu_ns();
            context.with(|ctx| caught(&ctx, run(&ctx, &script)))?;
            live.run_jobs(LOAD_LIMIT)?;
            let top_level = Duration::from_nanos(thread_cpu_ns().saturating_sub(start));
            context.with(|ctx| {
                let g = ctx.globals();
                let defines = |f: &str| g.get::<_, Function>(f).is_ok();
                if !["decodeUplink", "Decode", "Decoder"]
                    .into_iter()
                    .any(defines)
                {
                    return Err(JsError::NoEntryPoint);
                }
                Ok(())
            })?;
            // Every call runs it again within its own limit: one that cannot fit a call would
            // load, then time out on every call, a strike each.
            if timed && top_level > TOP_LEVEL_LIMIT {
                return Err(JsError::SlowTopLevel(top_level.as_micros() as u64));
            }
            Ok((script, glue))
        });
        live.leave(held, loaded.as_ref().err());
        // Its top level caught running out of memory: a runtime in doubt before its first call.
        let loaded = loaded.and_then(|code| {
            if live.full.load(Ordering::Relaxed) {
                Err(JsError::WorkerFull)
            } else if live.refused.load(Ordering::Relaxed) {
                Err(JsError::OutOfMemory)
            } else {
                Ok(code)
            }
        });
        match loaded {
            Ok((script, glue)) => {
                live.script = script;
                live.glue = glue;
                Ok(live)
            }
            Err(e) => {
                if e.retires() {
                    // Never freed: see `Sandbox`.
                    std::mem::forget(live);
                }
                Err(e)
            }
        }
    }

    /// Be done with a call's context: freed, and collected with what it held (its objects and
    /// it refer to each other, so only a collection frees them), before the next call rather
    /// than once the heap has grown; but never freed when the runtime is in doubt.
    fn leave(&self, context: Option<Context>, error: Option<&JsError>) {
        if self.refused.load(Ordering::Relaxed) || error.is_some_and(JsError::retires) {
            std::mem::forget(context);
        } else {
            drop(context);
            self.runtime.run_gc();
        }
    }

    /// A context of the codec's runtime with nothing run in it.
    fn context(&self) -> Result<Context, JsError> {
        Context::custom::<Intrinsics>(&self.runtime).map_err(|e| JsError::Engine(e.to_string()))
    }

    /// Run the codec's top level in a fresh context, then the jobs it queued, then the glue,
    /// then the call: all of it within the call's limit.
    fn decode(&self, fport: Option<u8>, bytes: &[u8], time_ms: f64) -> Result<String, JsError> {
        let mut held = None;
        let text = self.limited(TIME_LIMIT, || {
            let context = held.insert(self.context()?);
            context.with(|ctx| caught(&ctx, run(&ctx, &self.script)))?;
            self.run_jobs(TIME_LIMIT)?;
            context.with(|ctx| {
                caught(&ctx, run(&ctx, &self.glue))?;
                let f: Function = ctx
                    .globals()
                    .get("__hubgate_decode")
                    .map_err(|e| JsError::Engine(e.to_string()))?;
                let port = fport.map(i32::from);
                caught(
                    &ctx,
                    f.call::<_, Option<String>>((bytes.to_vec(), port, time_ms)),
                )
            })
        });
        self.leave(held, text.as_ref().err());
        // `JSON.stringify` of the call's result gives nothing only when the codec's function
        // returned undefined (a vendor decoder ending without a `return` for a frame it does
        // not know), a function or a symbol.
        let text =
            text?.ok_or_else(|| JsError::Junk("undefined (or a function), not {data}".into()))?;
        if text.len() > OUTPUT_LIMIT {
            return Err(JsError::Junk(format!("{} bytes of JSON", text.len())));
        }
        Ok(text)
    }

    /// Run `f`, then the jobs it queued ([`Live::run_jobs`]), with `limit` armed; a script
    /// that ran out of memory or was interrupted is told apart from one that threw: by the
    /// allocator's refusal and the clock, not by the message, which a script can throw too. A
    /// call that failed after a refusal ran out of memory, and one that ended past its
    /// deadline timed out, whatever error the script made of it or whatever it returned; one
    /// that succeeded within it keeps its result (see [`Sandbox::in_doubt`]). The limit is the thread's CPU time, not the clock:
    /// a busy gateway that preempts the worker must not fail a codec that did little.
    fn limited<T>(
        &self,
        limit: Duration,
        f: impl FnOnce() -> Result<T, JsError>,
    ) -> Result<T, JsError> {
        let deadline = thread_cpu_ns().saturating_add(limit.as_nanos() as u64);
        self.deadline.store(deadline, Ordering::Relaxed);
        let result = f();
        let jobs = self.run_jobs(limit);
        let over = thread_cpu_ns() >= deadline;
        self.deadline.store(u64::MAX, Ordering::Relaxed);
        // Jobs left queued time the call out whatever it returned: its runtime retires with them.
        let result = match jobs {
            Err(timed_out @ JsError::TimedOut(_)) => Err(timed_out),
            jobs => result.and_then(|value| jobs.map(|()| value)),
        };
        match result {
            // Not the codec's doing, whatever it made of it: the agent tries once more in a new
            // worker.
            _ if self.full.load(Ordering::Relaxed) => Err(JsError::WorkerFull),
            Err(_) if self.refused.load(Ordering::Relaxed) => Err(JsError::OutOfMemory),
            // Whatever its error became: the interrupt may have stopped a getter of the script's
            // own error (its `name`, read by `caught`), which leaves a plain throw.
            Err(_) if over => Err(JsError::TimedOut(limit.as_millis() as u64)),
            // Returned past its limit all the same: QuickJS asks the interrupt handler only
            // every 10,000 polls (calls, jumps back), which a few dozen costly builtins (sorts
            // of a large typed array) never reach. Only the agent's deadline, 5 times the
            // limit, stopped such a call, and it struck nothing: a codec could take 450 ms a
            // call for good.
            Ok(_) if over => Err(JsError::TimedOut(limit.as_millis() as u64)),
            result => result,
        }
    }

    /// Run the jobs the script queued (`queueMicrotask`, and those its jobs queue) until none
    /// is left, as a host runs a script's jobs once it returned, before the armed deadline:
    /// none waits into the next call, holding what it captured. A job that throws is the
    /// call's error (the first one's), and the jobs after it still run. Jobs still queued at
    /// the deadline time the call out (`limit` is the deadline's, for the error), so that its
    /// runtime retires with them.
    fn run_jobs(&self, limit: Duration) -> Result<(), JsError> {
        let deadline = self.deadline.load(Ordering::Relaxed);
        let mut first = Ok(());
        while self.runtime.is_job_pending() {
            if thread_cpu_ns() >= deadline {
                return Err(JsError::TimedOut(limit.as_millis() as u64));
            }
            if let Err(job) = self.runtime.execute_pending_job() {
                // Its context holds the exception.
                let threw = job
                    .0
                    .with(|ctx| caught(&ctx, Err::<(), _>(rquickjs::Error::Exception)));
                first = first.and(threw);
            }
        }
        first
    }
}

/// Compile `source` as a script (not a module: a codec's `var`s and functions are globals)
/// into QuickJS's bytecode, without running it.
fn compile(ctx: &Ctx<'_>, source: &str, name: &str) -> rquickjs::Result<Vec<u8>> {
    let name = CString::new(name)?;
    let text = CString::new(source)?;
    let ctx = ctx.as_raw().as_ptr();
    // SAFETY: `text` and `name` are NUL-terminated and live through the calls; the compiled
    // function is freed once written, and the buffer QuickJS wrote once copied.
    unsafe {
        let function = qjs::JS_Eval(
            ctx,
            text.as_ptr(),
            source.len() as _,
            name.as_ptr(),
            (qjs::JS_EVAL_TYPE_GLOBAL | qjs::JS_EVAL_FLAG_COMPILE_ONLY) as i32,
        );
        if qjs::JS_IsException(function) {
            return Err(rquickjs::Error::Exception);
        }
        let mut len = 0;
        let buf = qjs::JS_WriteObject(ctx, &mut len, function, qjs::JS_WRITE_OBJ_BYTECODE as i32);
        qjs::JS_FreeValue(ctx, function);
        if buf.is_null() {
            return Err(rquickjs::Error::Exception);
        }
        let bytes = std::slice::from_raw_parts(buf, len as usize).to_vec();
        qjs::js_free(ctx, buf.cast());
        Ok(bytes)
    }
}

/// Read bytecode written by [`compile`] into `ctx` and run it there.
fn run(ctx: &Ctx<'_>, bytecode: &[u8]) -> rquickjs::Result<()> {
    let ctx = ctx.as_raw().as_ptr();
    // SAFETY: `bytecode` is what `compile` wrote with this very engine; JS_EvalFunction takes
    // the function read (freeing it) and its result is freed here.
    unsafe {
        qjs::JS_UpdateStackTop(qjs::JS_GetRuntime(ctx));
        let function = qjs::JS_ReadObject(
            ctx,
            bytecode.as_ptr(),
            bytecode.len() as _,
            qjs::JS_READ_OBJ_BYTECODE as i32,
        );
        if qjs::JS_IsException(function) {
            return Err(rquickjs::Error::Exception);
        }
        let result = qjs::JS_EvalFunction(ctx, function);
        if qjs::JS_IsException(result) {
            return Err(rquickjs::Error::Exception);
        }
        qjs::JS_FreeValue(ctx, result);
    }
    Ok(())
}

/// A runtime's heap: the C library's malloc, capped at [`MEMORY_LIMIT`] here rather than by
/// QuickJS's own limit, so that a refused allocation is seen (QuickJS only throws an
/// `InternalError: out of memory`, which a script can throw as well). The count is of usable
/// sizes, as QuickJS counts.
struct Capped {
    used: usize,
    refused: Arc<AtomicBool>,
    full: Arc<AtomicBool>,
}

impl Capped {
    fn admits(&self, more: usize) -> bool {
        self.used
            .checked_add(more)
            .is_some_and(|n| n <= MEMORY_LIMIT)
    }

    /// Count a block the C library handed out, or its refusal (the worker is full).
    fn took(&mut self, ptr: *mut libc::c_void) -> *mut u8 {
        if ptr.is_null() {
            self.full.store(true, Ordering::Relaxed);
            self.refused.store(true, Ordering::Relaxed);
        } else {
            // SAFETY: `ptr` is a live block of the C library's malloc.
            self.used += unsafe { libc::malloc_usable_size(ptr) };
        }
        ptr.cast()
    }

    fn refuse(&self) -> *mut u8 {
        self.refused.store(true, Ordering::Relaxed);
        std::ptr::null_mut()
    }
}

// SAFETY: every block comes from the C library's malloc, calloc or realloc, which align to
// at least 8 bytes (16 on 64-bit), rquickjs's requirement being `usize`'s alignment, and
// `usable_size` is that library's answer for it.
unsafe impl Allocator for Capped {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        if !self.admits(size) {
            return self.refuse();
        }
        // SAFETY: malloc takes any size.
        self.took(unsafe { libc::malloc(size) })
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        if !count.checked_mul(size).is_some_and(|n| self.admits(n)) {
            return self.refuse();
        }
        // SAFETY: calloc takes any count and size.
        self.took(unsafe { libc::calloc(count, size) })
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        self.used -= Self::usable_size(ptr);
        libc::free(ptr.cast());
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        let old = Self::usable_size(ptr);
        if new_size == 0 {
            self.dealloc(ptr);
            return std::ptr::null_mut();
        }
        if !self.admits(new_size.saturating_sub(old)) {
            return self.refuse();
        }
        let moved = libc::realloc(ptr.cast(), new_size);
        if moved.is_null() {
            return self.took(moved);
        }
        self.used -= old;
        self.took(moved)
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        libc::malloc_usable_size(ptr.cast())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A codec loaded again into a new worker (it passed its first load) is not refused by
    /// its top level's time: only its first load is held to [`TOP_LEVEL_LIMIT`].
    #[test]
    fn only_a_first_load_times_the_top_level() {
        // A counted loop: over 50 ms of CPU whatever the clock does (~300 ms in a test build).
        const SLOW: &str = "var n = 0; for (var i = 0; i < 5e6; i++) { n += i; }
            function decodeUplink(i) { return {data: {n: n}}; }";
        let first = Sandbox::load("slow.js", SLOW).map(|_| ());
        assert!(matches!(first, Err(JsError::SlowTopLevel(_))), "{first:?}");
        assert!(Sandbox::load_again("slow.js", SLOW).is_ok());
    }

    /// A call that returns, but past its CPU time limit, times out (a strike) rather than
    /// succeed: the limit bounds what a call that does not strike costs.
    #[test]
    fn a_call_that_returns_past_its_cpu_time_limit_times_out() {
        let live = Live::new(
            "t.js",
            "function decodeUplink(i) { return {data: {}}; }",
            true,
        )
        .unwrap();
        let limit = Duration::from_millis(20);
        // A builtin that never reaches the interrupt handler: it spins on this thread's own
        // CPU clock, so the time it uses does not depend on the machine's load.
        let busy = || {
            let end = thread_cpu_ns() + 2 * limit.as_nanos() as u64;
            while thread_cpu_ns() < end {
                std::hint::spin_loop();
            }
            Ok(1)
        };
        assert_eq!(live.limited(limit, busy), Err(JsError::TimedOut(20)));
        assert_eq!(live.limited(Duration::from_secs(60), busy), Ok(1));
    }
}
