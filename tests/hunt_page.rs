//! s34 hunt (status page and its HTTP server): red proofs of what the page, its JSON and its
//! listener get wrong. Each test fails on the code as it is and passes once its finding is
//! fixed (/work/notes/reviews/s34-hunt-page.md).

mod support;

use std::path::Path;

use serde_json::Value;
use support::agent::{Agent, WAIT};
use support::free_udp_port;

/// A UDP source (keeps the agent running), a stdout sink, the buffer in `dir`, and `more`.
fn quiet_config(dir: &Path, more: &str) -> String {
    format!(
        "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{}\"\n{more}\n[sink]\ntype = \"stdout\"\n",
        dir.join("buffer").display(),
        free_udp_port()
    )
}

fn json(agent: &Agent, path: &str) -> Value {
    let (code, head, body) = agent
        .request(&format!("GET {path} HTTP/1.0\r\n\r\n"))
        .unwrap_or_else(|| panic!("no answer for {path}:\n{}", agent.logs()));
    assert_eq!(code, 200, "{head}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Two sources of one kind (two replay files here; two MQTT brokers or two UDP listeners
/// alike) each have a row on the overview and in `/api/status`, but the frame counts are
/// kept by kind (`received` is labelled `mqtt`, `udp`, ...): every row of that kind shows the
/// sum of all of them. Here one file holds the demo's 21 uplinks and the other none; both
/// rows say 21.
#[test]
fn hunt_two_sources_of_one_kind_each_count_their_own_frames() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let replays = format!(
        "[[source]]\ntype = \"replay\"\npath = \"{root}/config/demo-uplinks.jsonl\"\n\
         [[source]]\ntype = \"replay\"\npath = \"{}\"\n",
        empty.display()
    );
    let agent = Agent::start_with_stdout(dir.path(), &quiet_config(dir.path(), &replays));
    agent.wait_metric("hubgate_received_total{source=\"replay\"}", WAIT, |v| {
        v == 21
    });
    let status = json(&agent, "/api/status");
    let rows: Vec<(String, String, u64)> = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["at"].as_str().unwrap().to_string(),
                s["frames_total"].as_u64().unwrap(),
            )
        })
        .collect();
    let demo = rows
        .iter()
        .find(|r| r.1.ends_with("demo-uplinks.jsonl"))
        .unwrap_or_else(|| panic!("{rows:?}"));
    let idle = rows
        .iter()
        .find(|r| r.1.ends_with("empty.jsonl"))
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(demo.2, 21, "{rows:?}");
    assert_eq!(
        idle.2, 0,
        "the empty file's row counts the other file's frames: {rows:?}"
    );
}
