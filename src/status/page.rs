//! The pages, rendered on the server: plain HTML, inline CSS, inline SVG plots and a few
//! lines of script that refetch the page every few seconds and swap its `<main>`. No
//! external asset, so the page works on a LAN without Internet; every value from outside
//! (names, reasons, log lines) is escaped.

use std::fmt::Write;
use std::sync::OnceLock;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::history::Minute;
use super::query::{percent_encode, DEVICES_PER_PAGE};
use super::Snapshot;
use crate::metrics::devices::{DeviceView, Devices, Selection, Sort};

/// Seconds between refreshes.
const REFRESH_S: u32 = 5;

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:0;color:#222}\
header{background:#234;color:#fff;padding:.5em 1em;display:flex;gap:1.5em;align-items:baseline;flex-wrap:wrap}\
header a{color:#cde}header b{font-size:1.2em}main{padding:0 1em 1em}\
section{margin:1em 0}h2{font-size:1.1em;margin:.2em 0}\
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.2em .6em;text-align:left;vertical-align:top}\
.ok{color:#070}.bad{color:#b00;font-weight:bold}.warn{color:#a60}.muted{color:#777}\
tr.silent{background:#fde8e8}tr.parked{background:#fde8e8}.fix{font-weight:bold}\
.grid{display:flex;flex-wrap:wrap;gap:2em}svg{background:#fafafa;border:1px solid #ddd}\
form{margin:.5em 0}";

/// Refetch the page and swap `<main>`, keeping the scroll position; stop quietly while the
/// agent is unreachable and go on when it answers again. Not while something in `<main>`
/// has the focus (the devices filter being typed: the swap would take the text and, on a
/// phone, the keyboard) or text is selected (a DevEUI being copied); `updated` then shows
/// how old the page is.
const SCRIPT: &str =
    "setInterval(async()=>{try{const r=await fetch(location.href,{cache:'no-store'});\
if(!r.ok)return;const d=new DOMParser().parseFromString(await r.text(),'text/html');\
if(document.querySelector('main :focus')||String(getSelection()))return;\
const m=d.querySelector('main');if(m){document.querySelector('main').replaceWith(m);\
document.getElementById('updated').textContent=d.getElementById('updated').textContent;\
const b=document.body.dataset;b.refreshes=(+b.refreshes||0)+1}}catch(e){}},";

pub fn overview(s: &Snapshot) -> String {
    let mut b = String::with_capacity(16 * 1024);
    head(&mut b, s, "Overview");
    upstream(&mut b, s);
    sources(&mut b, s);
    buffer(&mut b, s);
    plots(&mut b, &s.minutes);
    last_hour(&mut b, s);
    foot(&mut b);
    b
}

pub fn problems(s: &Snapshot) -> String {
    let mut b = String::with_capacity(16 * 1024);
    head(&mut b, s, "Problems");
    last_hour(&mut b, s);
    b.push_str("<section><h2>Recent problems</h2>");
    if s.recent_problems.is_empty() {
        b.push_str("<p class=ok id=no-problems>None since the start.</p>");
    } else {
        b.push_str("<table id=problems><tr><th>time (UTC)<th>kind<th>what happened</tr>");
        for p in &s.recent_problems {
            let _ = write!(
                b,
                "<tr><td>{}<td>{}<td>{}</tr>",
                esc(&p.time),
                esc(p.kind),
                esc(&p.line)
            );
        }
        b.push_str("</table><p class=muted>As logged: the first of each kind at once, then at most one a minute with a count.</p>");
    }
    b.push_str("</section>");
    foot(&mut b);
    b
}

/// What each order is called on the page.
fn sort_label(sort: Sort) -> &'static str {
    match sort {
        Sort::LastSeen => "last seen",
        Sort::Silent => "silent first",
        Sort::Eui => "DevEUI",
        Sort::Name => "name",
        Sort::Rssi => "weakest signal",
        Sort::Missed => "most frames missed",
    }
}

/// One page of devices, selected by the table ([`crate::metrics::devices::DeviceTable::select`]).
pub fn devices(s: &Snapshot, d: &Devices, sel: &Selection) -> String {
    let mut b = String::with_capacity(64 * 1024);
    head(&mut b, s, "Devices");
    let _ = write!(
        b,
        "<form method=get action=/devices><input name=q placeholder=\"filter: DevEUI, name, tag, codec\" value=\"{}\" size=32> <select name=sort>",
        esc(&sel.filter)
    );
    for sort in Sort::ALL {
        let selected = if sort == sel.sort { " selected" } else { "" };
        let _ = write!(
            b,
            "<option value=\"{}\"{selected}>{}</option>",
            sort.key(),
            sort_label(sort)
        );
    }
    b.push_str("</select> <button>show</button></form>");
    // The rows below, and which of the matches they are when not all fit on the page.
    let rows = d.devices.len();
    let shown = if rows == d.matched {
        format!("{rows} shown")
    } else if rows == 0 {
        format!("{} match, none on this page", d.matched)
    } else {
        format!(
            "{} match, {}–{} shown",
            d.matched,
            sel.offset + 1,
            sel.offset + rows
        )
    };
    let _ = write!(
        b,
        "<p id=device-count>{} device(s) heard, {shown}{}{}.</p>",
        d.heard,
        if d.silent > 0 {
            format!(", <span class=bad>{} silent</span>", d.silent)
        } else {
            String::new()
        },
        if d.evicted > 0 {
            format!(
                ", {} forgotten (the table keeps the {} heard most recently)",
                d.evicted, d.cap
            )
        } else {
            String::new()
        }
    );
    b.push_str("<table id=devices><tr><th>DevEUI<th>name, tags<th>codec<th>last seen<th>RSSI / SNR / SF<th>FCnt (missed)<th>last readings</tr>");
    for device in &d.devices {
        device_row(&mut b, device);
    }
    b.push_str("</table>");
    let pages = d.matched.div_ceil(DEVICES_PER_PAGE).max(1);
    let page = sel.offset / DEVICES_PER_PAGE;
    if pages > 1 {
        let _ = write!(b, "<p>page {} of {pages}: ", page + 1);
        for p in 0..pages {
            if p == page {
                let _ = write!(b, "<b>{}</b> ", p + 1);
            } else {
                let _ = write!(
                    b,
                    "<a href=\"/devices?q={}&amp;sort={}&amp;page={p}\">{}</a> ",
                    esc(&percent_encode(&sel.filter)),
                    sel.sort.key(),
                    p + 1
                );
            }
        }
        b.push_str("</p>");
    }
    b.push_str("<p class=muted>Silent: no uplink for three of its usual intervals, and at least 15 minutes.</p>");
    foot(&mut b);
    b
}

fn device_row(b: &mut String, d: &DeviceView) {
    let _ = write!(
        b,
        "<tr data-eui=\"{}\"{}><td><code>{}</code>{}<td>{}<br><span class=muted>{}</span><td>",
        esc(&d.dev_eui),
        if d.silent { " class=silent" } else { "" },
        esc(&d.dev_eui),
        if d.silent {
            " <span class=bad>silent</span>"
        } else {
            ""
        },
        esc(d.name.as_deref().unwrap_or("")),
        esc(&d.tags.join(" / ")),
    );
    match (d.codec, &d.packed_reason) {
        (Some(c), _) => {
            let _ = write!(b, "{}", esc(c));
        }
        (None, reason) => {
            let _ = write!(
                b,
                "packed<br><span class=warn>{}</span>",
                esc(reason.as_deref().unwrap_or(""))
            );
        }
    }
    let _ = write!(
        b,
        "<td>{} ago<br><span class=muted>{} uplink(s){}</span>",
        age(d.age_s),
        d.uplinks,
        d.interval_s
            .map(|i| format!(", every {}", age(i)))
            .unwrap_or_default()
    );
    let opt = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    let _ = write!(
        b,
        "<td>{} dBm / {} dB / {}<td>{}{}<td>",
        opt(d.rssi.map(|v| v.to_string())),
        opt(d.snr.map(|v| format!("{v:.1}"))),
        opt(d.sf.map(|v| format!("SF{v}"))),
        opt(d.fcnt.map(|v| v.to_string())),
        if d.fcnt_missed > 0 {
            format!(" <span class=warn>({} missed)</span>", d.fcnt_missed)
        } else {
            String::new()
        }
    );
    for (i, r) in d.readings.iter().enumerate() {
        let _ = write!(
            b,
            "{}<span class=reading>{}{} {}{}</span>",
            if i > 0 { ", " } else { "" },
            esc(&r.field),
            r.channel
                .map(|c| format!("[{c}]"))
                .or_else(|| r.context_id.as_ref().map(|c| format!("[{}]", esc(c))))
                .unwrap_or_default(),
            esc(&r.value.to_string()),
            r.unit
                .as_deref()
                .map(|u| format!(" {}", esc(u)))
                .unwrap_or_default()
        );
    }
    b.push_str("</tr>");
}

fn head(b: &mut String, s: &Snapshot, title: &str) {
    let _ = write!(
        b,
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\">\
<title>{title} · hubgate {}</title><style>{STYLE}</style></head><body><header><b>hubgate · {}</b>\
<a href=/>Overview</a><a href=/devices>Devices</a><a href=/problems>Problems</a>\
<span class=muted>updated <span id=updated>{}</span></span></header><main><h1 style=\"font-size:1.3em\">{title}</h1>",
        esc(&s.gateway_id),
        esc(&s.gateway_id),
        esc(&s.now),
    );
}

fn foot(b: &mut String) {
    let _ = write!(
        b,
        "</main><script>{}</script></body></html>",
        refresh_script()
    );
}

/// The refresh script as the pages carry it.
fn refresh_script() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| format!("{SCRIPT}{REFRESH_S}000)"))
}

/// What a browser may do with a page (`Content-Security-Policy`): run the refresh script
/// alone, named by its hash, apply the inline style, fetch from the agent itself and submit
/// the filter's form to it; nothing loaded from elsewhere, no frame around it. Every value
/// from outside is escaped already; this is the wall behind that, should an escape ever be
/// missed: an injected script would not run.
pub fn policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        let hash = base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(refresh_script().as_bytes()));
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    })
}

/// The clock's state; unknown said as such (adjtimex refused and no systemd-timesyncd).
fn clock(synchronized: Option<bool>) -> String {
    match synchronized {
        None => "<span class=muted>unknown (nothing can tell)</span>".into(),
        known => yes_no(
            known,
            "synchronised",
            "NOT synchronised (records carry wrong times)",
        ),
    }
}

fn yes_no(v: Option<bool>, yes: &str, no: &str) -> String {
    match v {
        Some(true) => format!("<span class=ok>{yes}</span>"),
        Some(false) => format!("<span class=bad>{no}</span>"),
        None => "<span class=muted>–</span>".into(),
    }
}

fn upstream(b: &mut String, s: &Snapshot) {
    let u = &s.upstream;
    let _ = write!(
        b,
        "<section id=upstream><h2>Upstream</h2><p>sink <b>{}</b>: {} · last delivery {} · {} delivered, {} in flight</p>",
        u.sink,
        match u.connected {
            None => "<span class=muted>no connection needed</span>".to_string(),
            c => yes_no(c, "connected", "not connected"),
        },
        u.last_delivery_age_s
            .map(|a| format!("{} ago", age(a)))
            .unwrap_or_else(|| "none yet".into()),
        u.delivered,
        u.in_flight
    );
    if !u.hubs.is_empty() {
        b.push_str("<table id=hubs><tr><th>recType<th>hub<th>state<th>reason and fix</tr>");
        for h in &u.hubs {
            let parked = h.state == "parked";
            let _ = write!(
                b,
                "<tr{}><td>{}<td>{}<td>{}<td>{}{}{}</tr>",
                if parked { " class=parked" } else { "" },
                esc(&h.rec_type),
                esc(&h.hub),
                if parked {
                    "<span class=bad>parked</span>"
                } else {
                    "<span class=ok>delivering</span>"
                },
                esc(h.reason.as_deref().unwrap_or("")),
                h.fix
                    .as_deref()
                    .map(|f| format!("<br><span class=fix>Fix: {}</span>", esc(f)))
                    .unwrap_or_default(),
                h.broker
                    .as_deref()
                    .map(|w| format!("<br><span class=muted>broker: {}</span>", esc(w)))
                    .unwrap_or_default()
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");
}

fn sources(b: &mut String, s: &Snapshot) {
    b.push_str("<section><h2>Sources</h2><table id=sources><tr><th>source<th>where<th>state<th>frames/min<th>last hour<th>total</tr>");
    for src in &s.sources {
        let _ = write!(
            b,
            "<tr><td>{}<td>{}<td>{}<td>{}<td>{}<td>{}</tr>",
            src.kind,
            esc(&src.at),
            match src.kind {
                "serial" => yes_no(src.connected, "open", "not open"),
                _ => yes_no(src.connected, "connected", "not connected"),
            },
            src.frames_last_minute,
            src.frames_last_hour,
            src.frames_total
        );
    }
    let _ = write!(
        b,
        "</table><p>{} received, {} records built, {} duplicates dropped · clock {} · hubgate {} · up {}</p></section>",
        s.received,
        s.decoded,
        s.duplicates,
        clock(s.clock_synchronized),
        s.version,
        age(s.uptime_s)
    );
}

fn buffer(b: &mut String, s: &Snapshot) {
    let x = &s.buffer;
    let fill = x.bytes as f64 * 100.0 / x.max_bytes.max(1) as f64;
    let _ = write!(
        b,
        "<section id=buffer><h2>Buffer</h2><p><b id=buffer-records>{}</b> record(s) waiting{}, {} of {} ({fill:.1} %) · disk free {} · {} dead letter(s)</p></section>",
        x.records,
        if x.records > 0 {
            format!(", the oldest for <b id=buffer-oldest>{}</b>", age(x.oldest_age_s))
        } else {
            String::new()
        },
        bytes(x.bytes),
        bytes(x.max_bytes),
        x.disk_free.map(bytes).unwrap_or_else(|| "unknown".into()),
        x.dead_lettered
    );
}

fn last_hour(b: &mut String, s: &Snapshot) {
    let h = &s.last_hour;
    let _ = write!(
        b,
        "<section id=last-hour><h2>Last {} minute(s)</h2><p>{} dropped",
        h.minutes.min(60),
        if h.dropped > 0 {
            format!("<span class=bad>{}</span>", h.dropped)
        } else {
            "0".into()
        }
    );
    if h.problems.is_empty() {
        b.push_str(" · no problems</p>");
    } else {
        b.push_str(" · problems by kind:</p><table id=problem-kinds><tr><th>kind<th>count</tr>");
        for (kind, n) in &h.problems {
            let _ = write!(b, "<tr><td>{}<td>{n}</tr>", esc(kind));
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");
}

/// Two plots of the last hour: records in and out per minute, and the buffer's fill.
fn plots(b: &mut String, minutes: &[Minute]) {
    b.push_str("<section id=plots><h2>Last hour</h2><div class=grid>");
    let series =
        |f: fn(&Minute) -> u64| minutes.iter().map(|m| (m.start, f(m))).collect::<Vec<_>>();
    plot(
        b,
        "records per minute: <span style=\"color:#27c\">in</span>, <span style=\"color:#c72\">out</span>",
        &[
            ("#27c", series(|m| m.received)),
            ("#c72", series(|m| m.delivered)),
        ],
        minutes.last().map_or(0, |m| m.start),
    );
    plot(
        b,
        "records in the buffer",
        &[("#555", series(|m| m.buffer_records))],
        minutes.last().map_or(0, |m| m.start),
    );
    b.push_str("</div></section>");
}

/// A bar chart of the last 60 minutes, the series of each minute side by side.
fn plot(b: &mut String, title: &str, series: &[(&str, Vec<(u64, u64)>)], end: u64) {
    const W: u64 = 360;
    const H: u64 = 120;
    /// Width of one minute, in tenths of a pixel.
    const SLOT: u64 = (W - 24) * 10 / 60;
    let top = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .max()
        .unwrap_or(0)
        .max(1);
    let start = end.saturating_sub(59 * 60);
    let _ = write!(
        b,
        "<figure style=\"margin:0\"><figcaption>{title}</figcaption><svg width={W} height={} viewBox=\"0 0 {W} {}\" role=img>\
<text x=2 y=10 font-size=10>{top}</text><text x=2 y={} font-size=10>0</text><text x={} y={} font-size=10 text-anchor=end>now</text><text x=24 y={} font-size=10>-60 min</text>",
        H + 14,
        H + 14,
        H,
        W - 2,
        H + 12,
        H + 12
    );
    let width = SLOT / series.len().max(1) as u64;
    for (i, (colour, pts)) in series.iter().enumerate() {
        let _ = write!(b, "<g fill=\"{colour}\">");
        for &(t, v) in pts.iter().filter(|p| p.1 > 0) {
            let x = 200 + t.saturating_sub(start) / 60 * SLOT + i as u64 * width;
            let h = (v * (H - 14) / top).max(1);
            let _ = write!(
                b,
                "<rect x=\"{}.{}\" y=\"{}\" width=\"{}.{}\" height=\"{h}\"/>",
                x / 10,
                x % 10,
                H - h,
                width / 10,
                width % 10
            );
        }
        b.push_str("</g>");
    }
    b.push_str("</svg></figure>");
}

fn age(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..=9_999 => format!("{n} B"),
        10_000..=9_999_999 => format!("{} KB", n / 1000),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// HTML-escape text and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_is_escaped() {
        assert_eq!(
            esc("<script>\"a\" & 'b'"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;"
        );
    }

    /// A reading's channel follows its field: a built-in codec's number, a built-in codec's
    /// name (a Smilio Action's button) or a mapping table's `context_id` (escaped, as the
    /// record's text).
    #[test]
    fn a_readings_channel_follows_its_field() {
        use crate::metrics::devices::ReadingView;
        use std::borrow::Cow;
        let reading = |field, value: i32, channel, context_id| ReadingView {
            field: Cow::Borrowed(field),
            value: value.into(),
            unit: None,
            channel,
            context_id,
        };
        let d = DeviceView {
            readings: vec![
                reading("count", 1, None, None),
                reading("presence", 2, Some(3), None),
                reading("temperature", 3, None, Some("<1>".into())),
                reading(
                    "pushes_since_reset",
                    4,
                    None,
                    Some("Button #1, Upper Left".into()),
                ),
            ],
            ..DeviceView::default()
        };
        let mut b = String::new();
        device_row(&mut b, &d);
        assert!(
            b.contains(
                "<span class=reading>count 1</span>, <span class=reading>presence[3] 2</span>, \
                 <span class=reading>temperature[&lt;1&gt;] 3</span>, \
                 <span class=reading>pushes_since_reset[Button #1, Upper Left] 4</span></tr>"
            ),
            "{b}"
        );
    }
}
