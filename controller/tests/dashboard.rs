//! The Grafana dashboard in `manifests/dashboards/` queries only what the
//! controller exports: every metric name in every query (panels and
//! template variables) is a series name the controller's `/metrics` text
//! has, taken from a real render with every metric touched, not from a
//! hand-written list. And every family the controller exports is on the
//! dashboard, so a new metric cannot be forgotten there.

use controller::metrics::Metrics;
use providers::call::{CallPolicy, Caller};
use providers::{CloudError, ErrorKind};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/dashboards/vpc-eni-controller.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Every series name in the controller's exposition, with every metric
/// touched once: a cloud client that made calls (one failed), each
/// reconciler's pass, a pod error, the gauges.
async fn exported() -> BTreeSet<String> {
    let caller = Caller::new(CallPolicy::default());
    let ok = caller
        .call("CreateNetworkInterface", None, |_| async { Ok(()) })
        .await;
    assert_eq!(ok, Ok(()));
    let failed = caller
        .call("DescribeNetworkInterfaces", None, |_| async {
            Err::<(), _>(CloudError::new(
                ErrorKind::NotFound,
                "DescribeNetworkInterfaces",
                "InvalidEniId.NotFound",
                "gone",
            ))
        })
        .await;
    assert!(failed.is_err());
    let m = Metrics::new();
    m.set_cloud("alibaba", caller.stats());
    for reconciler in ["routes", "eni_pod", "eni_capacity"] {
        m.reconciled(reconciler, true, Duration::from_millis(30));
    }
    m.eni_pod_error("AllocIPFailed", "cloud_subnet_exhausted");
    m.set_leader(true);
    m.set_routes_owned(10);
    m.set_nodes_without_route(0);
    m.set_eni_gc(3, 0);
    m.set_subnet("vsw-1", "zone-a", 100, Some(Duration::from_secs(3600)));
    m.set_subnets_held(&[("vsw-1".to_owned(), 2)].into());
    m.set_node_enis("n1", 1, 2);
    m.set_route_table("vtb-1", 10, 200);
    m.set_bgp_peer("192.0.2.1:179", "Established", 10);
    let pool = controller::shared::metrics::IpCounts {
        free: 2,
        used: 3,
        cooling: 1,
    };
    m.shared.set_pools(
        &[("n1".to_owned(), (pool, 1))].into(),
        &[("vsw-1".to_owned(), pool)].into(),
    );
    m.shared.assigned(10);
    m.shared.unassigned(2);
    m.shared.allocated("n1", Duration::from_millis(3));
    m.add_bgp_peer_counts("192.0.2.1:179", 1, 3, 200);
    m.render()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// Families (the `# TYPE` names) of the exposition.
fn families(exported: &BTreeSet<String>) -> BTreeSet<String> {
    exported
        .iter()
        .map(|n| {
            ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_owned()
        })
        .collect()
}

/// PromQL words that are not metric names when not followed by `(`.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
/// Words whose parenthesised list holds label names, not metrics.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression (or a Grafana `label_values(...)`
/// query) selects: identifiers that are not functions, keywords, label
/// names in grouping lists or label matchers, strings, numbers, durations
/// or Grafana `$variables`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skip from an opening bracket to its match.
    let skip_group = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        while i < chars.len() {
            if chars[i] == open {
                depth += 1;
            } else if chars[i] == close {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            } else if matches!(chars[i], '"' | '\'' | '`') {
                let q = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != q {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        panic!("unbalanced {open} in {expr:?}");
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_group(i, '{', '}');
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if matches!(c, '"' | '\'' | '`') {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            // A variable, a number or a duration, with what follows it.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.{}".contains(chars[i]))
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let rest: String = chars[next..].iter().collect();
            // `sum by (..) (..)`: an aggregation with its grouping first.
            let grouped = ["by", "without"].iter().any(|g| {
                rest.strip_prefix(g).is_some_and(|after| {
                    after
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_whitespace() || c == '(')
                })
            });
            let call = chars.get(next) == Some(&'(') || grouped;
            if LABEL_LISTS.contains(&word.as_str()) {
                if call {
                    i = skip_group(next, '(', ')');
                }
            } else if word == "label_values" && call {
                // label_values(metric, label): only the first argument.
                let end = skip_group(next, '(', ')');
                let inner: String = chars[next + 1..end - 1].iter().collect();
                let metric = inner.split(',').next().unwrap_or_default();
                names.extend(metric_names(metric));
                i = end;
            } else if !call && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every query of the dashboard: (where, PromQL).
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                out.push((format!("panel {title:?} {}", t["refId"]), expr.to_owned()));
            }
            walk(
                p["panels"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                out,
            );
        }
    }
    walk(d["panels"].as_array().expect("panels"), &mut out);
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = match &v["query"] {
                Value::String(s) => s.clone(),
                q => q["query"].as_str().unwrap_or_default().to_owned(),
            };
            out.push((format!("variable {}", v["name"]), q));
        }
    }
    out
}

#[test]
fn the_query_parser_finds_metrics_and_nothing_else() {
    let expr = r#"histogram_quantile(0.99, sum by (api, le) (rate(a_bucket{job=~"$job",x="y{z}"}[$__rate_interval]))) / on (api) group_left b_total offset 5m + vector($q) * 1e3 > bool c"#;
    let want: BTreeSet<String> = ["a_bucket", "b_total", "c"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(metric_names(expr), want);
    assert_eq!(
        metric_names("label_values(vpc_eni_leader, job)"),
        BTreeSet::from(["vpc_eni_leader".to_owned()])
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_one_the_controller_exports() {
    let exported = exported().await;
    let d = dashboard();
    let queries = queries(&d);
    assert!(queries.len() > 10, "{queries:?}");
    let mut problems = Vec::new();
    for (at, expr) in &queries {
        let names = metric_names(expr);
        if names.is_empty() && !expr.starts_with("vector(") {
            problems.push(format!("{at}: queries no metric: {expr}"));
        }
        for name in names {
            if !exported.contains(&name) {
                problems.push(format!("{at}: {name} is not exported"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nexported: {exported:?}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn every_exported_family_is_on_the_dashboard() {
    let exported = exported().await;
    let queried: BTreeSet<String> = queries(&dashboard())
        .iter()
        .flat_map(|(_, e)| metric_names(e))
        .collect();
    let missing: Vec<String> = families(&exported)
        .difference(&families(&queried))
        .cloned()
        .collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
}

#[test]
fn panels_have_unique_ids_a_place_and_the_datasource_variable() {
    let d = dashboard();
    assert_eq!(d["uid"], "vpc-eni-controller");
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "untitled panel {p}");
        assert!(ids.insert(p["id"].as_i64().unwrap()), "id twice: {title}");
        for key in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][key].is_i64(), "{title}: gridPos.{key}");
        }
        let x = p["gridPos"]["x"].as_i64().unwrap();
        let w = p["gridPos"]["w"].as_i64().unwrap();
        assert!(x + w <= 24, "{title} is wider than the dashboard");
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().unwrap_or_default();
            if expr.contains("vpc_eni_") {
                assert!(expr.contains(r#"job=~"$job""#), "{title}: {expr}");
            }
        }
    }
}
