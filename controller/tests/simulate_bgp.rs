//! `simulate` on the shipped BGP scenario (`scenarios/bgp-racks.yaml`: one
//! router per rack, in-process on 127.0.0.1, no FRR): the built binary
//! converges, the text report has one line per peer, and `--json` carries
//! the same per peer with what each router accepted.

use serde_json::Value;
use std::process::Command;

const SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/bgp-racks.yaml");

fn simulate(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vpc-eni-controller"))
        .args(["simulate", "--scenario", SCENARIO])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stderr: {stderr}\nstdout: {stdout}");
    (stdout, stderr)
}

#[test]
fn the_report_has_a_line_per_peer_with_state_and_prefixes() {
    let (stdout, _) = simulate(&["--quiet"]);
    let start = stdout
        .find("BGP peers")
        .unwrap_or_else(|| panic!("no BGP peers table: {stdout}"));
    let lines: Vec<&str> = stdout[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(lines[0].starts_with("PEER"), "{lines:?}");
    let peers: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(peers.len(), 2, "{lines:?}");
    // Rack h (iBGP): 4 nodes, one deleted. Rack i (eBGP as 65001): 3 + 1,
    // less rack-i-3, which its selector leaves out by hostname (a label the
    // node cache keeps only because the selector reads it).
    for (cells, asn, ours, prefixes) in [
        (&peers[0], "64512", "64512", "3"),
        (&peers[1], "65002", "65001", "3"),
    ] {
        assert!(cells[0].starts_with("127.0.0.1:"), "{cells:?}");
        assert_eq!(
            &cells[1..6],
            [asn, ours, "Established", prefixes, prefixes],
            "{cells:?}"
        );
    }
    // The peers table replaces the VPC route table of the cloud backend.
    assert!(!stdout.contains("VPC route table"), "{stdout}");
}

#[test]
fn simulate_json_carries_the_peers() {
    let (stdout, stderr) = simulate(&["--json"]);
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout}\n{stderr}"));
    let act = &doc["acts"][0];
    assert_eq!(act["converged"], true, "{act}");
    let peers = act["bgpPeers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{act}");
    for (p, asn, local, prefixes) in [(&peers[0], 64512, 64512, 3), (&peers[1], 65002, 65001, 3)] {
        assert_eq!(p["asn"], asn, "{p}");
        assert_eq!(p["localAsn"], local, "{p}");
        assert_eq!(p["state"], "Established", "{p}");
        assert_eq!(p["announced"], prefixes, "{p}");
        assert_eq!(p["accepted"], prefixes, "{p}");
        assert_eq!(p["flaps"], 0, "{p}");
        // The restart step: a second replica's session reached the router.
        assert_eq!(p["routerSessions"], 2, "{p}");
        assert!(p["updatesSent"].as_u64().unwrap() >= 2, "{p}");
        assert!(
            p["updateBytesSent"].as_u64().unwrap() > p["updatesSent"].as_u64().unwrap() * 23,
            "{p}"
        );
    }
    // The node no peer learns is not counted as routed, yet the act
    // converged: its NetworkUnavailable says so (NoBGPPeer).
    // No cloud calls at all with the BGP backend.
    for phase in act["phases"].as_array().unwrap() {
        assert_eq!(phase["mutatingCalls"], 0, "{phase}");
    }
}
