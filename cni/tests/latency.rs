//! ADD and DEL latency of the built `vpc-eni-cni`, run as a runtime runs
//! it, in the namespace lab: an exclusive-ENI pod and a shared-ENI pod
//! whose allocations are already there, and a pod delegated to `ptp` +
//! `host-local`. Prints
//! p50/p99 over `VPC_ENI_CNI_BENCH_RUNS` rounds (default 50). A bench, not a
//! timed test: it asserts nothing about time and is ignored unless asked
//! for. Needs root; says why otherwise. Run it against a release binary:
//!
//! ```sh
//! VPC_ENI_CNI_BENCH_BIN=/path/to/release/vpc-eni-cni \
//!   cargo test -p cni --test latency -- --ignored --nocapture
//! ```

mod support;

use std::time::{Duration, Instant};
use support::Lab;

const CID: &str = "bench0123456789abcdef";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label:<28} n={:<3} p50={:>8.2} ms  p99={:>8.2} ms",
        samples.len(),
        percentile(&samples, 50.0).as_secs_f64() * 1e3,
        percentile(&samples, 99.0).as_secs_f64() * 1e3,
    );
}

async fn cycle(lab: &mut Lab, pod: &str, runs: usize) -> (Vec<Duration>, Vec<Duration>) {
    let pod_ns = lab.pod_ns(pod);
    let conf = lab.config(5.0);
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let add = lab.cni("ADD", CID, Some(&pod_ns), pod, None, &conf).await;
        adds.push(t.elapsed());
        assert!(add.ok, "{add:?}");
        let t = Instant::now();
        let del = lab.cni("DEL", CID, Some(&pod_ns), pod, None, &conf).await;
        dels.push(t.elapsed());
        assert!(del.ok, "{del:?}");
    }
    (adds, dels)
}

#[test]
#[ignore = "a bench: run with --ignored --nocapture"]
fn add_and_del_latency() {
    println!("plugin: {}", support::plugin_binary());
    if let Some(why) = support::skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let runs: usize = std::env::var("VPC_ENI_CNI_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("skipped: no runtime: {e}");
            return;
        }
    };
    rt.block_on(async {
        let mut lab = Lab::new().await;
        lab.create_node(Some(support::POD_CIDR)).await;
        let alloc = lab.allocation();
        lab.create_pod("bench-eni", true, Some(&alloc)).await;
        lab.create_pod("bench-plain", false, None).await;
        let mut shared = alloc.clone();
        shared["mode"] = serde_json::json!("shared");
        shared["ip"] = serde_json::json!("10.0.0.21");
        lab.create_pod("bench-shared", false, Some(&shared)).await;

        let (adds, dels) = cycle(&mut lab, "bench-eni", runs).await;
        report("exclusive ENI  ADD", adds);
        report("exclusive ENI  DEL", dels);
        let (adds, dels) = cycle(&mut lab, "bench-shared", runs).await;
        report("shared ENI     ADD", adds);
        report("shared ENI     DEL", dels);
        if support::has_reference_plugins() {
            let (adds, dels) = cycle(&mut lab, "bench-plain", runs).await;
            report("delegate ptp   ADD", adds);
            report("delegate ptp   DEL", dels);
        } else {
            println!(
                "delegate path skipped: ptp/host-local not in {}",
                support::CNI_DIR
            );
        }
    });
}
