//! The running agent's allocator settings (`src/malloc.rs`), on 64-bit glibc, where an
//! extra arena reserves address space.
#![cfg(all(target_env = "gnu", target_pointer_width = "64"))]

mod support;

use support::agent::{Agent, WAIT};
use support::free_udp_port;

/// Each extra glibc arena reserves 64 MiB of address space (on 64-bit), the part not in use
/// mapped without access; an agent with one arena has no such reservation, though its
/// threads (tokio's, the forwarder) have all allocated once a frame went through it.
#[test]
fn the_agent_allocates_from_one_arena() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let agent = Agent::start(
        dir.path(),
        &format!(
            "[buffer]\npath = \"{}\"\n[[source]]\ntype = \"udp\"\nlisten = \"127.0.0.1:{port}\"\n[sink]\ntype = \"stdout\"\n",
            dir.path().join("buffer").display()
        ),
    );
    // It serves metrics before the sources and the forwarder start: a frame the forwarder
    // counted shows that every thread has run.
    agent.wait_log("packet forwarder source on", 1, WAIT);
    let datagram = support::gwmp::datagram(1, 0, r#"{"rxpk":[{"stat":1,"data":"QNobASY="}]}"#);
    let sock = support::udp_socket();
    sock.send_to(&datagram, ("127.0.0.1", port)).unwrap();
    agent.wait_metric("hubgate_received_total", WAIT, |v| v == 1);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", agent.pid())).unwrap();
    let reserved: Vec<&str> = maps
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (start, end) = f[0].split_once('-').unwrap();
            let size =
                u64::from_str_radix(end, 16).unwrap() - u64::from_str_radix(start, 16).unwrap();
            f[1] == "---p" && f.len() == 5 && size >= 1 << 20
        })
        .collect();
    assert!(reserved.is_empty(), "arena reservations: {reserved:#?}");
}
