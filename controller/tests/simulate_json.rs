//! `vpc-eni-controller simulate --json` as a benchmark or CI job runs it:
//! the built binary on a small two-act scenario; stdout must be exactly one
//! JSON document with the documented keys, and its figures must describe
//! what happened (routes written in the join phase with a bound, none on
//! restart, ENI pods with their latency beside the bound).

use serde_json::Value;
use std::process::Command;

const SCENARIO: &str = r#"
name: json routes
region: cn-hangzhou
zones:
  - {zone: cn-hangzhou-h, vswitchCidr: 192.168.0.0/20}
nodeGroups:
  - {prefix: jr, count: 3, type: ecs.g6.large, zone: cn-hangzhou-h}
faults: {routeDelayMs: 200}
steps:
  - {action: restartController}
timeoutSeconds: 120
---
name: json eni
region: cn-hangzhou
zones:
  - {zone: cn-hangzhou-h, vswitchCidr: 192.168.0.0/20}
nodeGroups:
  - {prefix: je, count: 1, type: ecs.c6.xlarge, zone: cn-hangzhou-h}
routes: {enabled: false}
eni: {resourceName: aliyun/eni}
faults: {attachDelayMs: 300}
steps:
  - {action: createEniDeployment, name: json-eni, replicas: 2}
timeoutSeconds: 120
"#;

/// Removes the scenario file also when the test fails.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn has_millis(v: &Value) {
    for k in ["p50", "p99", "max"] {
        assert!(v[k].is_u64(), "{k} in {v}");
    }
}

#[test]
fn simulate_json_prints_one_document_with_the_figures() {
    let file = TempFile(
        std::env::temp_dir().join(format!("simulate-json-test-{}.yaml", std::process::id())),
    );
    std::fs::write(&file.0, SCENARIO).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vpc-eni-controller"))
        .args(["simulate", "--json", "--scenario"])
        .arg(&file.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {stderr}\nstdout: {stdout}");
    // Exactly one document and nothing else.
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout}"));
    // The story is on stderr.
    assert!(stderr.contains("json routes"), "{stderr}");

    let acts = doc["acts"].as_array().unwrap();
    assert_eq!(acts.len(), 2);
    for act in acts {
        assert_eq!(act["converged"], true, "{act}");
        let c = &act["controller"];
        for k in ["peakRssBytes", "throttled", "retries", "heldBack"] {
            assert!(c[k].is_u64(), "controller.{k} in {c}");
        }
        assert!(c["peakRssBytes"].as_u64().unwrap() > 0);
        for p in act["phases"].as_array().unwrap() {
            assert!(p["name"].is_string() && p["converged"] == true, "{p}");
            assert!(p["seconds"].as_f64().unwrap() > 0.0, "{p}");
            assert!(p["mutatingCalls"].is_u64(), "{p}");
            assert!(p["callsByAction"].is_object(), "{p}");
            assert!(p["lowerBoundSeconds"].as_f64().unwrap() >= 0.0, "{p}");
        }
    }

    // Routes: three routes in one batch, settling in 0.2 s, is the bound of
    // the join phase; the restart needs (and makes) no mutating call.
    let routes = acts[0]["phases"].as_array().unwrap();
    assert_eq!(routes.len(), 2, "{routes:?}");
    let join = &routes[0];
    assert!(
        join["callsByAction"]["CreateRouteEntries"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(join["mutatingCalls"].as_u64().unwrap() >= 1);
    let b = join["lowerBoundSeconds"].as_f64().unwrap();
    assert!((b - 0.2).abs() < 1e-6, "bound {b}");
    assert!(join["seconds"].as_f64().unwrap() >= b);
    assert!(join.get("pods").is_none(), "no ENI pods in routes mode");
    let restart = &routes[1];
    assert_eq!(restart["mutatingCalls"], 0, "{restart}");
    assert_eq!(restart["lowerBoundSeconds"], 0.0, "{restart}");
    assert_eq!(acts[0]["controller"]["replicas"], 2);

    // ENI: the two pods of the Deployment got their allocation; their
    // latency is at least the attach latency, as is their bound.
    let eni = acts[1]["phases"].as_array().unwrap();
    let pods_phase = eni
        .iter()
        .find(|p| p.get("pods").is_some())
        .unwrap_or_else(|| panic!("a phase with pods: {eni:?}"));
    let pods = &pods_phase["pods"];
    assert_eq!(pods["count"], 2, "{pods}");
    assert_eq!(pods["pending"], 0, "{pods}");
    has_millis(&pods["bindToAllocationMs"]);
    has_millis(&pods["lowerBoundMs"]);
    assert!(
        pods["lowerBoundMs"]["max"].as_u64().unwrap() >= 300,
        "{pods}"
    );
    assert!(
        pods["bindToAllocationMs"]["max"].as_u64().unwrap()
            >= pods["lowerBoundMs"]["max"].as_u64().unwrap(),
        "{pods}"
    );
    assert!(pods["cloudCallsPerPod"].as_f64().unwrap() >= 2.0, "{pods}");
    // The bound lets a node run as many attaches at once as the controller
    // (eni.attachConcurrency, default 5) and the fake cloud (5) allow.
    assert_eq!(pods["attachesInFlightPerNode"], 5, "{pods}");
    assert!(pods_phase["lowerBoundSeconds"].as_f64().unwrap() >= 0.3);
    assert!(
        pods_phase["callsByAction"]["AttachNetworkInterface"]
            .as_u64()
            .unwrap()
            >= 2
    );
}
