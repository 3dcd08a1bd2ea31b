//! The pages, rendered on the server: plain HTML, inline CSS, inline SVG plots and a few
//! lines of script that refetch the page every few seconds and swap its `<main>`. No
//! external asset, so the page works on a LAN without Internet; every value from outside
//! (names, reasons, log lines) is escaped.

use std::fmt::Write;

use super::history::Minute;
use super::Snapshot;
use crate::metrics::devices::{DeviceView, Devices};

/// Devices shown per page: keeps a page under 100 KB with 10,000 devices heard.
pub const DEVICES_PER_PAGE: usize = 100;
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
/// agent is unreachable and go on when it answers again.
const SCRIPT: &str =
    "setInterval(async()=>{try{const r=await fetch(location.href,{cache:'no-store'});\
if(!r.ok)return;const d=new DOMParser().parseFromString(await r.text(),'text/html');\
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

/// How the devices page is asked for: `?q=` filter, `?sort=`, `?page=`.
#[derive(Default)]
pub struct DeviceQuery {
    pub filter: String,
    pub sort: String,
    pub page: usize,
}

impl DeviceQuery {
    pub fn parse(query: Option<&str>) -> DeviceQuery {
        let mut q = DeviceQuery::default();
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "q" => q.filter = v,
                "sort" => q.sort = v,
                "page" => q.page = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        q
    }
}

/// Sort orders offered: (key, label).
const SORTS: [(&str, &str); 6] = [
    ("", "last seen"),
    ("silent", "silent first"),
    ("eui", "DevEUI"),
    ("name", "name"),
    ("rssi", "weakest signal"),
    ("missed", "most frames missed"),
];

pub fn devices(s: &Snapshot, all: &Devices, q: &DeviceQuery) -> String {
    let mut b = String::with_capacity(64 * 1024);
    head(&mut b, s, "Devices");
    let filter = q.filter.to_lowercase();
    let mut shown: Vec<&DeviceView> = all
        .devices
        .iter()
        .filter(|d| filter.is_empty() || matches_filter(d, &filter))
        .collect();
    match q.sort.as_str() {
        "silent" => shown.sort_by_key(|d| (!d.silent, d.age_s)),
        "eui" => shown.sort_by(|a, b| a.dev_eui.cmp(&b.dev_eui)),
        "name" => shown.sort_by(|a, b| a.name.cmp(&b.name).then(a.dev_eui.cmp(&b.dev_eui))),
        "rssi" => shown.sort_by_key(|d| d.rssi.unwrap_or(i32::MAX)),
        "missed" => shown.sort_by_key(|d| std::cmp::Reverse(d.fcnt_missed)),
        _ => {}
    }
    let silent = all.devices.iter().filter(|d| d.silent).count();
    let _ = write!(
        b,
        "<form method=get action=/devices><input name=q placeholder=\"filter: DevEUI, name, tag, codec\" value=\"{}\" size=32> <select name=sort>",
        esc(&q.filter)
    );
    for (key, label) in SORTS {
        let sel = if key == q.sort { " selected" } else { "" };
        let _ = write!(b, "<option value=\"{key}\"{sel}>{label}</option>");
    }
    b.push_str("</select> <button>show</button></form>");
    let _ = write!(
        b,
        "<p id=device-count>{} device(s) heard, {} shown{}{}.</p>",
        all.devices.len(),
        shown.len(),
        if silent > 0 {
            format!(", <span class=bad>{silent} silent</span>")
        } else {
            String::new()
        },
        if all.evicted > 0 {
            format!(
                ", {} forgotten (the table keeps the {} heard most recently)",
                all.evicted, all.cap
            )
        } else {
            String::new()
        }
    );
    let pages = shown.len().div_ceil(DEVICES_PER_PAGE).max(1);
    let page = q.page.min(pages - 1);
    b.push_str("<table id=devices><tr><th>DevEUI<th>name, tags<th>codec<th>last seen<th>RSSI / SNR / SF<th>FCnt (missed)<th>last readings</tr>");
    for d in shown
        .iter()
        .skip(page * DEVICES_PER_PAGE)
        .take(DEVICES_PER_PAGE)
    {
        device_row(&mut b, d);
    }
    b.push_str("</table>");
    if pages > 1 {
        let _ = write!(b, "<p>page {} of {pages}: ", page + 1);
        for p in 0..pages {
            if p == page {
                let _ = write!(b, "<b>{}</b> ", p + 1);
            } else {
                let _ = write!(
                    b,
                    "<a href=\"/devices?q={}&amp;sort={}&amp;page={p}\">{}</a> ",
                    esc(&percent_encode(&q.filter)),
                    esc(&percent_encode(&q.sort)),
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

fn matches_filter(d: &DeviceView, filter: &str) -> bool {
    let has = |s: &str| s.to_lowercase().contains(filter);
    has(&d.dev_eui)
        || d.name.as_deref().is_some_and(has)
        || d.tags.iter().any(|t| has(t))
        || d.codec.is_some_and(has)
        || (filter == "packed" && d.codec.is_none())
        || (filter == "silent" && d.silent)
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
            esc(r.field),
            r.channel.map(|c| format!("[{c}]")).unwrap_or_default(),
            esc(&r.value.to_string()),
            r.unit.map(|u| format!(" {}", esc(u))).unwrap_or_default()
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
        "</main><script>{SCRIPT}{}000)</script></body></html>",
        REFRESH_S
    );
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
                "<tr{}><td>{}<td>{}<td>{}<td>{}{}</tr>",
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
                    .unwrap_or_default()
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");
}

fn sources(b: &mut String, s: &Snapshot) {
    b.push_str("<section id=sources><h2>Sources</h2><table><tr><th>source<th>where<th>state<th>frames this minute<th>last hour<th>total</tr>");
    for src in &s.sources {
        let _ = write!(
            b,
            "<tr><td>{}<td>{}<td>{}<td>{}<td>{}<td>{}</tr>",
            src.kind,
            esc(&src.at),
            yes_no(src.connected, "connected", "not connected"),
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
        yes_no(s.clock_synchronized, "synchronised", "NOT synchronised (records carry wrong times)"),
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
        b.push_str(" · problems by kind:</p><table id=problem-kinds>");
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
fn esc(s: &str) -> String {
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

/// `application/x-www-form-urlencoded` value decoding (a bad escape stays as it is).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16);
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|&c| hex(c)),
                bytes.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
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

    #[test]
    fn query_values_are_decoded_and_encoded_back() {
        let q = DeviceQuery::parse(Some("q=North+door%2F%C3%A9&sort=rssi&page=2&x"));
        assert_eq!(
            (q.filter.as_str(), q.sort.as_str(), q.page),
            ("North door/é", "rssi", 2)
        );
        assert_eq!(percent_decode("%zz%4%é"), "%zz%4%é");
        assert_eq!(percent_decode(&percent_encode("a b/é&")), "a b/é&");
    }
}
