//! `import-terway`: read Terway's `eni-config` ConfigMap (the YAML that
//! `kubectl -n kube-system get configmap eni-config -o yaml` prints, whose
//! `eni_conf` holds Terway's JSON settings) and write this controller's
//! config as YAML, with a comment for every setting it cannot carry and why.
//!
//! Pure functions: text in, text out. Secrets never reach the output: the
//! values of Terway's credential keys are not read, and a key this importer
//! does not know is named without its value.

use crate::config::{known_apis, Config, ProviderKind};
use ipnet::Ipv4Net;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What the user gives besides the ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Where the ConfigMap came from, for the header comment.
    pub source: String,
    /// `provider.region`; else Terway's `region_id`.
    pub region: Option<String>,
    /// `clusterId`; else Terway's `cluster_id`, else its `ack.aliyun.com`
    /// ENI tag (the ACK cluster id).
    pub cluster_id: Option<String>,
    /// The pod CIDR: routes (VPC) mode is turned on with it.
    pub cluster_cidr: Option<Ipv4Net>,
}

/// The imported config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// This controller's config file, comments included.
    pub yaml: String,
    /// Values the user must still supply (each names the key and how).
    pub unresolved: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("not YAML: {0}")]
    NotYaml(String),
    #[error("no eni_conf: expected Terway's eni-config ConfigMap (data.eni_conf) or the eni_conf JSON itself")]
    NoEniConf,
    #[error("data.eni_conf is not a JSON (or YAML) object: {0}")]
    BadEniConf(String),
}

/// The ENI tag ACK puts the cluster id in.
const ACK_CLUSTER_TAG: &str = "ack.aliyun.com";
const PLACEHOLDER: &str = "CHANGE-ME";

/// `eni_conf` of a ConfigMap text (or the text itself when it is the
/// `eni_conf` object), and the names of the ConfigMap's other data keys.
pub fn eni_conf(text: &str) -> Result<(Map<String, Value>, Vec<String>), ImportError> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| ImportError::NotYaml(e.to_string()))?;
    let doc = serde_json::to_value(&doc).map_err(|e| ImportError::NotYaml(e.to_string()))?;
    let Value::Object(top) = doc else {
        return Err(ImportError::NoEniConf);
    };
    let data = match top.get("data") {
        Some(Value::Object(data)) => data,
        _ if top.get("kind").and_then(Value::as_str) == Some("ConfigMap") => {
            return Err(ImportError::NoEniConf)
        }
        // Not a ConfigMap: the eni_conf object itself, if it looks like one.
        _ if top.contains_key("vswitches") || top.contains_key("version") => {
            return Ok((top, Vec::new()))
        }
        _ => return Err(ImportError::NoEniConf),
    };
    let Some(conf) = data.get("eni_conf") else {
        return Err(ImportError::NoEniConf);
    };
    let conf = match conf {
        Value::String(s) => parse_object(s)?,
        Value::Object(m) => m.clone(),
        other => return Err(ImportError::BadEniConf(kind_of(other).into())),
    };
    let others = data.keys().filter(|k| *k != "eni_conf").cloned().collect();
    Ok((conf, others))
}

/// Terway writes JSON; old installs wrote YAML, which JSON also is mostly.
fn parse_object(text: &str) -> Result<Map<String, Value>, ImportError> {
    let value = match serde_json::from_str::<Value>(text) {
        Ok(v) => v,
        Err(json_error) => serde_yaml::from_str::<serde_yaml::Value>(text)
            .ok()
            .and_then(|y| serde_json::to_value(y).ok())
            .ok_or_else(|| ImportError::BadEniConf(json_error.to_string()))?,
    };
    match value {
        Value::Object(m) => Ok(m),
        other => Err(ImportError::BadEniConf(format!(
            "it is {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Read a ConfigMap text and write this controller's config.
pub fn import(text: &str, options: &ImportOptions) -> Result<Imported, ImportError> {
    let (conf, other_data) = eni_conf(text)?;
    Ok(Importer::new(&conf, options).run(&other_data))
}

/// Check an imported config as `check-config` would, plus its unresolved
/// placeholders: every problem, each on one line; empty when it is ready.
pub fn check(imported: &Imported) -> Vec<String> {
    let mut problems: Vec<String> = imported
        .unresolved
        .iter()
        .map(|u| format!("unresolved: {u}"))
        .collect();
    match Config::parse(&imported.yaml) {
        Ok(_) => {}
        Err(crate::config::ConfigError::Invalid(list)) => {
            problems.extend(list.iter().map(ToString::to_string))
        }
        Err(e) => problems.push(e.to_string()),
    }
    problems
}

/// One pass over `eni_conf`: the keys it maps are taken out of `rest`, and
/// whatever is left is named as unknown at the end.
struct Importer<'a> {
    conf: &'a Map<String, Value>,
    options: &'a ImportOptions,
    out: String,
    unresolved: Vec<String>,
}

impl<'a> Importer<'a> {
    fn new(conf: &'a Map<String, Value>, options: &'a ImportOptions) -> Self {
        Self {
            conf,
            options,
            out: String::new(),
            unresolved: Vec::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.conf.get(key).filter(|v| !v.is_null())
    }

    fn line(&mut self, indent: usize, text: &str) {
        let _ = writeln!(self.out, "{:indent$}{text}", "");
    }

    /// A comment line; parts of `text` may come from the input (cut short
    /// with [`one_line`]), so it is kept to one line here too.
    fn comment(&mut self, indent: usize, text: &str) {
        let _ = writeln!(self.out, "{:indent$}# {}", "", printable(text));
    }

    fn run(mut self, other_data: &[String]) -> Imported {
        let source = one_line(&self.options.source);
        self.comment(0, &format!("vpc-eni-controller config imported from Terway's eni-config ({source}) by `vpc-eni-controller import-terway`."));
        self.comment(0, "Read every comment, then check it: vpc-eni-controller check-config --config <this file>");
        self.comment(0, "ENIs Terway made (tagged creator=terway) are never touched by this controller: it changes only what carries its own tags.");
        self.comment(0, "Do not run its ENI mode beside Terway: both would advertise aliyun/eni on the same nodes.");
        self.cluster_id();
        self.provider();
        self.routes();
        self.eni();
        self.shared_eni();
        self.not_carried(other_data);
        Imported {
            yaml: self.out,
            unresolved: self.unresolved,
        }
    }

    fn cluster_id(&mut self) {
        let from_tag = self
            .get("eni_tags")
            .and_then(|t| t.get(ACK_CLUSTER_TAG))
            .and_then(Value::as_str);
        let (id, whence) = if let Some(id) = &self.options.cluster_id {
            (id.clone(), "from --cluster-id".to_owned())
        } else if let Some(id) = self.get("cluster_id").and_then(Value::as_str) {
            (id.to_owned(), "from Terway's cluster_id".to_owned())
        } else if let Some(id) = from_tag {
            (
                id.to_owned(),
                format!("from Terway's ENI tag {ACK_CLUSTER_TAG} (the ACK cluster id)"),
            )
        } else {
            self.unresolved.push(
                "clusterId: give --cluster-id (unique per cluster; it marks the routes and ENIs this controller owns)".into(),
            );
            (PLACEHOLDER.into(), "CHANGE-ME: unique per cluster; marks the routes and ENIs this controller owns (--cluster-id)".into())
        };
        self.line(
            0,
            &format!("clusterId: {} # {}", scalar(&id), one_line(&whence)),
        );
    }

    fn provider(&mut self) {
        self.line(0, "provider:");
        self.line(2, "kind: alibaba");
        let terway_region = self.get("region_id").and_then(Value::as_str);
        match (&self.options.region, terway_region) {
            (Some(r), Some(t)) if r != t => {
                let r = scalar(r);
                self.line(
                    2,
                    &format!(
                        "region: {r} # from --region; Terway's region_id says {}",
                        one_line(t)
                    ),
                );
            }
            (Some(r), _) => {
                let r = scalar(r);
                self.line(2, &format!("region: {r} # from --region"));
            }
            (None, Some(t)) => {
                let t = scalar(t);
                self.line(2, &format!("region: {t} # from Terway's region_id"));
            }
            (None, None) => {
                self.comment(2, "region: CHANGE-ME (required; Terway's eni-config does not name it: give --region, e.g. cn-hangzhou)");
                self.unresolved
                    .push("provider.region: give --region, e.g. cn-hangzhou".into());
            }
        }
        self.rate_limits();
        self.credentials();
    }

    fn rate_limits(&mut self) {
        let Some(limits) = self.get("rate_limit") else {
            return;
        };
        let Some(limits) = limits.as_object() else {
            self.comment(
                2,
                "Terway's rate_limit is not a map of API name to calls per minute: not carried",
            );
            return;
        };
        let known = known_apis(ProviderKind::Alibaba);
        let mut carried = BTreeMap::new();
        let mut skipped = Vec::new();
        for (api, value) in limits {
            match (known.contains(&api.as_str()), as_count(value)) {
                (true, Some(n)) if n > 0 => {
                    carried.insert(api.clone(), n);
                }
                (true, _) => skipped.push(format!("{} (not a positive number)", one_line(api))),
                (false, _) => skipped.push(one_line(api)),
            }
        }
        if !carried.is_empty() {
            self.comment(
                2,
                "From Terway's rate_limit: calls per minute per OpenAPI action, as there.",
            );
            self.line(2, "rateLimits:");
            for (api, n) in &carried {
                self.line(4, &format!("{api}: {n}"));
            }
        }
        if !skipped.is_empty() {
            self.comment(
                2,
                &format!(
                    "Terway's rate_limit for {} not carried: this controller does not call those actions (it limits: {}).",
                    skipped.join(", "),
                    known.join(", ")
                ),
            );
        }
    }

    fn credentials(&mut self) {
        let given: Vec<&str> = ["access_key", "access_secret", "credential_path"]
            .into_iter()
            .filter(|k| self.conf.contains_key(*k))
            .collect();
        if given.is_empty() {
            return;
        }
        // Only the key names: their values are never read.
        self.comment(
            2,
            &format!(
                "Terway's {} not copied: credentials never go into this config.",
                given.join(", ")
            ),
        );
        self.comment(2, "Give the nodes' RAM role the policy in manifests/alibaba/ram-policy.example.json (no secret needed),");
        self.comment(2, "or put a RAM user's keys in the Secret vpc-eni-controller-cloud-credentials as ALIBABA_CLOUD_ACCESS_KEY_ID /");
        self.comment(2, "ALIBABA_CLOUD_ACCESS_KEY_SECRET (manifests/alibaba/secret.example.yaml), or mount them as files:");
        self.comment(2, "credentials: {accessKeyIdFile: /var/run/secrets/alibaba/id, accessKeySecretFile: /var/run/secrets/alibaba/secret}");
    }

    fn routes(&mut self) {
        self.line(0, "routes:");
        match self.options.cluster_cidr {
            Some(cidr) => {
                self.comment(2, "VPC mode (Terway's VPC mode): every node's podCIDR a VPC route to its instance.");
                self.line(2, "enabled: true");
                self.line(2, &format!("clusterCidr: {cidr} # from --cluster-cidr"));
            }
            None => {
                self.comment(2, "VPC mode (Terway's VPC mode) needs the pod CIDR, which eni-config does not hold: to turn it on,");
                self.comment(2, "set enabled: true and clusterCidr (kube-controller-manager --cluster-cidr), or import with --cluster-cidr.");
                self.line(2, "enabled: false");
                self.comment(2, "clusterCidr: CHANGE-ME");
            }
        }
        if let Some(cidr) = self.get("service_cidr").and_then(Value::as_str) {
            self.comment(2, &format!("Terway's service_cidr ({}) not carried: the Service CIDR is not the pod CIDR, and this controller does not need it.", one_line(cidr)));
        }
    }

    fn eni(&mut self) {
        let subnets = self.subnets();
        let groups = self.security_groups();
        let usable = !subnets.is_empty() && !groups.is_empty();
        self.line(0, "eni:");
        self.comment(2, "Exclusive ENI mode: a pod with resources.limits {aliyun/eni: 1} gets a whole secondary ENI, as with Terway.");
        if usable {
            self.line(2, "enabled: true");
        } else {
            self.comment(2, "Off: Terway's eni-config names no vSwitch or no security group, and ENI mode needs both.");
            self.line(2, "enabled: false");
        }
        self.line(2, "resourceName: aliyun/eni");
        if subnets.is_empty() {
            self.comment(
                2,
                "subnets: {ZONE: [vSwitch ids]} (Terway's vswitches is empty or missing)",
            );
        } else {
            self.comment(
                2,
                "From Terway's vswitches: the vSwitches new ENIs come from, per zone.",
            );
            self.line(2, "subnets:");
            for (zone, ids) in &subnets {
                self.line(4, &format!("{}: {}", scalar(zone), flow_list(ids)));
            }
        }
        self.selection_policy();
        if groups.is_empty() {
            self.comment(
                2,
                "securityGroups: [sg-...] (Terway's security_group(s) is empty or missing)",
            );
        } else {
            self.comment(
                2,
                "From Terway's security_group / security_groups: given to every new ENI.",
            );
            self.line(2, &format!("securityGroups: {}", flow_list(&groups)));
        }
        self.tags();
    }

    /// `vswitches`: zone -> [ids] (or zone -> id in old configs).
    fn subnets(&mut self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        let Some(v) = self.get("vswitches") else {
            return out;
        };
        let Some(zones) = v.as_object() else {
            self.comment(
                0,
                &format!(
                    "Terway's vswitches is {}, not a map of zone to vSwitch ids: not carried.",
                    kind_of(v)
                ),
            );
            return out;
        };
        for (zone, ids) in zones {
            let ids: Vec<String> = match ids {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            };
            let mut unique = Vec::new();
            for id in ids.into_iter().map(|s| s.trim().to_owned()) {
                if !id.is_empty() && !unique.contains(&id) {
                    unique.push(id);
                }
            }
            if !unique.is_empty() {
                out.insert(zone.clone(), unique);
            }
        }
        out
    }

    /// `security_group` (one id) and `security_groups` (a list), in order,
    /// each once.
    fn security_groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let one = self.get("security_group").and_then(Value::as_str);
        let many = self
            .get("security_groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        for id in one.into_iter().chain(many).map(str::trim) {
            if !id.is_empty() && !out.iter().any(|o| o == id) {
                out.push(id.to_owned());
            }
        }
        out
    }

    fn selection_policy(&mut self) {
        let Some(policy) = self.get("vswitch_selection_policy") else {
            return;
        };
        let policy = policy.as_str().unwrap_or_default().to_owned();
        let why = match policy.as_str() {
            "ordered" => "this controller also takes the zone's vSwitch with the most free IPs first (what Terway now does for ordered; older Terway took the list's order)",
            "random" => "there is no random choice here: the zone's vSwitch with the most free IPs is taken, which spreads ENIs as free IPs even out",
            _ => "unknown policy; this controller takes the zone's vSwitch with the most free IPs",
        };
        self.comment(
            2,
            &format!(
                "Terway's vswitch_selection_policy: {} not carried: {why}.",
                one_line(&policy)
            ),
        );
    }

    fn tags(&mut self) {
        let Some(tags) = self.get("eni_tags").and_then(Value::as_object) else {
            return;
        };
        let mut carried = Vec::new();
        let mut reserved = Vec::new();
        for (key, value) in tags {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if key.starts_with("vpc-eni.io/") || key.starts_with("kubernetes.io/cluster/") {
                reserved.push((
                    key.clone(),
                    value,
                    "reserved for the ownership tags this controller sets itself",
                ));
            } else if key == ipam::eni::tag::CREATOR {
                reserved.push((key.clone(), value, "this controller tags its ENIs creator=vpc-eni-controller, which would override it"));
            } else {
                carried.push((key.clone(), value));
            }
        }
        if carried.is_empty() && reserved.is_empty() {
            return;
        }
        self.comment(2, "From Terway's eni_tags: extra tags on every new ENI.");
        if carried.is_empty() {
            self.line(2, "tags: {}");
        } else {
            self.line(2, "tags:");
        }
        for (key, value) in carried {
            self.line(4, &format!("{}: {}", scalar(&key), scalar(&value)));
        }
        for (key, value, why) in reserved {
            self.comment(
                4,
                &format!("{}: {} (not carried: {why})", scalar(&key), scalar(&value)),
            );
        }
    }

    /// Terway's warm pool settings as the `sharedEni` block: its ENI
    /// multi-IP mode is this controller's shared-ENI mode. Subnets and
    /// security groups default to the `eni` block's, which has Terway's.
    fn shared_eni(&mut self) {
        let counts: Vec<(&str, &str, Option<&Value>)> = [
            ("min_pool_size", "minPoolSize"),
            ("max_pool_size", "maxPoolSize"),
            ("ip_warm_up_size", "warmUpSize"),
        ]
        .into_iter()
        .map(|(terway, ours)| (terway, ours, self.get(terway)))
        .collect();
        let durations: Vec<(&str, &str, Option<&Value>)> = [
            ("idle_ip_reclaim_after", "excessReleaseDelaySeconds"),
            ("ip_pool_sync_period", "poolSyncSeconds"),
        ]
        .into_iter()
        .map(|(terway, ours)| (terway, ours, self.get(terway)))
        .collect();
        if counts.iter().chain(&durations).all(|(_, _, v)| v.is_none()) {
            return;
        }
        self.comment(
            0,
            "From Terway's warm pool settings: Terway's ENI multi-IP mode is shared-ENI mode here.",
        );
        self.comment(0, "Subnets and security groups are the eni block's (sharedEni.subnets / securityGroups override them).");
        self.comment(0, "Set the kubelet's --max-pods from `vpc-eni-controller max-pods` for your instance types.");
        let vswitches = self
            .get("vswitches")
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty());
        self.line(0, "sharedEni:");
        if vswitches {
            self.line(2, "enabled: true");
        } else {
            self.comment(2, "Off: Terway's eni-config names no vSwitch for shared ENIs; add eni.subnets, then turn it on.");
            self.line(2, "enabled: false");
        }
        for (terway, ours, value) in counts.into_iter().chain(durations.iter().copied()) {
            let Some(v) = value else { continue };
            let parsed = if terway.starts_with("idle_") || terway.starts_with("ip_pool_") {
                as_seconds(v)
            } else {
                as_count(v)
            };
            match parsed {
                Some(n) => self.line(2, &format!("{ours}: {n} # Terway's {terway}")),
                None => self.comment(
                    2,
                    &format!(
                        "{ours}: Terway's {terway} is {}, not a count or duration: not carried",
                        one_line(&v.to_string())
                    ),
                ),
            }
        }
    }

    /// Every other key of eni_conf and of the ConfigMap: named, with why it
    /// is not carried, never with its value.
    fn not_carried(&mut self, other_data: &[String]) {
        let mut lines: Vec<String> = Vec::new();
        for key in self.conf.keys() {
            if let Some(why) = reason(key, self.conf.get(key)) {
                lines.push(format!("{}: {why}", one_line(key)));
            }
        }
        for key in other_data {
            let why = match key.as_str() {
                "10-terway.conf" | "10-terway.conflist" => "the CNI config of Terway's node half; vpc-eni-cni, this project's node half, writes its own",
                "disable_network_policy" => "this project enforces no NetworkPolicy; keep a policy engine of your own",
                "in_cluster_loadbalance" | "host_stack_cidrs" => "a Terway datapath option with no counterpart here",
                _ => "unknown to this importer",
            };
            lines.push(format!("ConfigMap data key {}: {why}", one_line(key)));
        }
        if lines.is_empty() {
            return;
        }
        self.comment(0, "Not carried from Terway's eni-config:");
        for l in lines {
            self.comment(0, &format!("- {l}"));
        }
    }
}

/// Why an eni_conf key is not carried; `None` for the keys mapped above (or
/// commented where they are used).
fn reason(key: &str, value: Option<&Value>) -> Option<String> {
    let flag = value.and_then(Value::as_bool).unwrap_or(false);
    let text = value.and_then(Value::as_str).unwrap_or_default();
    let why: &str = match key {
        "region_id" | "cluster_id" | "vswitches" | "security_group" | "security_groups"
        | "eni_tags" | "rate_limit" | "service_cidr" | "vswitch_selection_policy"
        | "access_key" | "access_secret" | "credential_path" | "max_pool_size"
        | "min_pool_size" | "ip_warm_up_size" | "idle_ip_reclaim_after"
        | "ip_pool_sync_period" => return None,
        "version" => "the format version of eni_conf; nothing to carry",
        "ip_stack" => match text {
            "" | "ipv4" => "ipv4, the only stack this controller supports; nothing to carry",
            _ => "only IPv4 is supported: pods get an IPv4 address only (IPv6 and dual stack are not built)",
        },
        "enable_eni_trunking" if flag => "trunk ENIs (aliyun/member-eni) are not supported: pods asking for aliyun/member-eni stay Pending",
        "enable_eni_trunking" => "off in Terway too; trunk ENIs are not supported here",
        "enable_erdma" if flag => "eRDMA ENIs are not supported",
        "enable_erdma" => "off in Terway too; eRDMA is not supported here",
        "eni_selection_policy" => "this controller hands out IPs of the fullest shared ENI first, so emptier ENIs can be released whole",
        "idle_ip_reclaim_batch_size" | "idle_ip_reclaim_interval"
        | "idle_ip_reclaim_jitter_factor" => "the pool's excess is released after sharedEni.excessReleaseDelaySeconds, at most 10 IPs per call, checked every second",
        "ipam_type" => "Terway's centralized IPAM switch; this controller is always central (one leader decides for every node)",
        "min_eni" | "max_eni" | "eni_cap_ratio" | "eni_cap_shift" => "this controller advertises each node's ENI limit from its instance type, minus ENIs attached that are not its own",
        "prefix" => "a node interface name prefix; the node half finds an ENI's link by its MAC",
        "custom_stateful_workload_kinds" => "fixed IPs for stateful workloads are not supported: a pod's ENI goes with the pod",
        "backoff_override" => "retries and backoff are built in per error kind; per-API limits are provider.rateLimits",
        "extra_routes" => "extra routes in the pod are not supported",
        "disable_device_plugin" => "this controller writes the ENI count into node status itself; there is no device plugin",
        "eni_tag_filter" => "this controller manages only ENIs carrying its own tags, whatever else they carry",
        "kube_client_qps" | "kube_client_burst" => "the kube client here is not rate limited by config",
        "resource_group_id" => "not supported: new ENIs go to the account's default resource group",
        "enable_patch_pod_ips" => "the pod's IP is in the allocation annotation vpc-eni.io/allocation; the kubelet sets status.podIPs from the CNI result",
        "enable_ip_prefix" | "ipv4_prefix_count" | "ipv6_prefix_count" => "IP prefixes are not supported",
        _ => "unknown to this importer; check it by hand",
    };
    Some(why.to_owned())
}

/// Seconds from a number of seconds or a Go duration string such as
/// `"120s"`, `"30m"` or `"1h30m"` (what Terway's duration keys take).
fn as_seconds(v: &Value) -> Option<u32> {
    let text = match v {
        Value::Number(_) => return as_count(v),
        Value::String(s) => s.trim(),
        _ => return None,
    };
    if let Ok(n) = text.parse::<u32>() {
        return Some(n);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => return None,
            ('h', _) => 3600,
            ('m', _) => 60,
            ('s', _) => 1,
            _ => return None,
        };
        let n: u64 = number.parse().ok()?;
        number.clear();
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !number.is_empty() || text.is_empty() {
        return None;
    }
    u32::try_from(total).ok()
}

/// A non-negative count from a number or a numeric string.
fn as_count(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Control characters (newlines included) made spaces.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Text from the input made safe for a one-line comment: printable, and cut
/// at 120 characters.
fn one_line(text: &str) -> String {
    let cleaned = printable(text);
    let mut out: String = cleaned.chars().take(120).collect();
    if cleaned.chars().count() > 120 {
        out.push_str("...");
    }
    out
}

/// A YAML scalar for `s`: plain when that cannot be misread, else a JSON
/// string (which YAML reads as a double-quoted scalar).
fn scalar(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
    }
}

fn flow_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| scalar(s)).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like the eni-config of a current ACK cluster: eni_conf JSON
    /// with both zones' vSwitches, one security group, the cluster tag, the
    /// addon credential path, trunking on; plus the CNI config and datapath
    /// switches beside it.
    const ACK: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: eni-config
  namespace: kube-system
data:
  10-terway.conf: |
    {"cniVersion": "0.4.0", "name": "terway", "type": "terway", "eniip_virtual_type": "datapathv2"}
  disable_network_policy: "false"
  in_cluster_loadbalance: "true"
  eni_conf: |
    {
      "version": "1",
      "max_pool_size": 5,
      "min_pool_size": 0,
      "credential_path": "/var/addon/token-config",
      "enable_eni_trunking": true,
      "vswitches": {"cn-shanghai-b": ["vsw-b1", "vsw-b2"], "cn-shanghai-e": ["vsw-e1"]},
      "eni_tags": {"ack.aliyun.com": "c0ffee1234", "vpc-eni.io/cluster": "x", "creator": "terway", "team": "pay"},
      "service_cidr": "172.21.0.0/20",
      "security_group": "sg-one",
      "ip_stack": "ipv4",
      "vswitch_selection_policy": "ordered"
    }
"#;

    /// Shaped like the Helm chart's template rendered for a self-managed
    /// cluster: keys in the ConfigMap, security_groups as a list, the
    /// region, rate limits, IPv6 asked for.
    const SELF_MANAGED: &str = r#"
kind: ConfigMap
apiVersion: v1
metadata: {name: eni-config, namespace: kube-system}
data:
  eni_conf: |
    {
      "version": "1",
      "region_id": "cn-beijing",
      "access_key": "LTAI-not-a-real-id",
      "access_secret": "s3cr3t-value-never-printed",
      "vswitches": {"cn-beijing-h": ["vsw-h1"]},
      "security_groups": ["sg-a", "sg-b", "sg-a"],
      "ip_stack": "dual",
      "max_pool_size": 10,
      "min_pool_size": 2,
      "ip_warm_up_size": 4,
      "vswitch_selection_policy": "random",
      "rate_limit": {"CreateNetworkInterface": 300, "AssignIpv6Addresses": 100},
      "otel_token": "another-secret-value",
      "ipam_type": "crd"
    }
"#;

    fn options() -> ImportOptions {
        ImportOptions {
            source: "eni-config.yaml".into(),
            ..ImportOptions::default()
        }
    }

    fn with_region(region: &str) -> ImportOptions {
        ImportOptions {
            region: Some(region.into()),
            ..options()
        }
    }

    #[test]
    fn ack_config_maps_vswitches_groups_tags_and_cluster_id() {
        let imported = import(ACK, &with_region("cn-shanghai")).unwrap();
        assert_eq!(check(&imported), Vec::<String>::new(), "{}", imported.yaml);
        let c = Config::parse(&imported.yaml).unwrap();
        assert_eq!(c.cluster_id, "c0ffee1234");
        assert_eq!(c.provider.kind, ProviderKind::Alibaba);
        assert_eq!(c.provider.region.as_deref(), Some("cn-shanghai"));
        assert!(c.eni.enabled);
        assert!(!c.routes.enabled);
        assert_eq!(c.eni_resource_name(), "aliyun/eni");
        let subnets: BTreeMap<String, Vec<String>> = c
            .eni
            .subnets
            .iter()
            .map(|(z, ids)| (z.to_string(), ids.iter().map(ToString::to_string).collect()))
            .collect();
        assert_eq!(
            subnets,
            BTreeMap::from([
                (
                    "cn-shanghai-b".into(),
                    vec!["vsw-b1".into(), "vsw-b2".into()]
                ),
                ("cn-shanghai-e".into(), vec!["vsw-e1".into()]),
            ])
        );
        let groups: Vec<String> = c
            .eni
            .security_groups
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(groups, ["sg-one"]);
        // Reserved and creator tags stay comments.
        assert_eq!(
            c.eni.tags,
            BTreeMap::from([
                ("ack.aliyun.com".into(), "c0ffee1234".into()),
                ("team".into(), "pay".into()),
            ])
        );
        let y = &imported.yaml;
        assert!(
            y.contains("# vpc-eni.io/cluster: x (not carried: reserved"),
            "{y}"
        );
        assert!(y.contains("# creator: terway (not carried: this controller tags its ENIs creator=vpc-eni-controller"), "{y}");
    }

    #[test]
    fn ack_config_comments_what_it_cannot_carry() {
        let y = import(ACK, &with_region("cn-shanghai")).unwrap().yaml;
        for want in [
            "clusterId: c0ffee1234 # from Terway's ENI tag ack.aliyun.com",
            "# Terway's credential_path not copied: credentials never go into this config.",
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
            "# - enable_eni_trunking: trunk ENIs (aliyun/member-eni) are not supported",
            "# Terway's vswitch_selection_policy: ordered not carried: this controller also takes the zone's vSwitch with the most free IPs first",
            "# Terway's service_cidr (172.21.0.0/20) not carried",
            "# - version: the format version",
            "# - ip_stack: ipv4, the only stack",
            "# - ConfigMap data key 10-terway.conf: the CNI config of Terway's node half",
            "# - ConfigMap data key disable_network_policy:",
            "# - ConfigMap data key in_cluster_loadbalance:",
            "sharedEni:\n  enabled: true\n  minPoolSize: 0 # Terway's min_pool_size\n  maxPoolSize: 5 # Terway's max_pool_size\n",
            "# clusterCidr: CHANGE-ME",
        ] {
            assert!(y.contains(want), "missing {want:?} in\n{y}");
        }
        // The credential path itself is not repeated either.
        assert!(!y.contains("/var/addon/token-config"), "{y}");
    }

    #[test]
    fn terway_durations_become_seconds() {
        for (v, want) in [
            (serde_json::json!("120s"), Some(120)),
            (serde_json::json!("30m"), Some(1800)),
            (serde_json::json!("1h30m"), Some(5400)),
            (serde_json::json!(45), Some(45)),
            (serde_json::json!("90"), Some(90)),
            (serde_json::json!("500ms"), None),
            (serde_json::json!("soon"), None),
            (serde_json::json!("5"), Some(5)),
            (serde_json::json!("m"), None),
        ] {
            assert_eq!(as_seconds(&v), want, "{v}");
        }
    }

    #[test]
    fn secrets_and_unknown_values_never_reach_the_output() {
        let imported = import(SELF_MANAGED, &options()).unwrap();
        let y = &imported.yaml;
        for secret in [
            "LTAI-not-a-real-id",
            "s3cr3t-value-never-printed",
            "another-secret-value",
        ] {
            assert!(!y.contains(secret), "{secret} leaked into\n{y}");
        }
        assert!(
            y.contains("# Terway's access_key, access_secret not copied"),
            "{y}"
        );
        assert!(
            y.contains("# - otel_token: unknown to this importer; check it by hand"),
            "{y}"
        );
    }

    #[test]
    fn self_managed_config_takes_region_groups_limits_and_pool_sizes() {
        let imported = import(SELF_MANAGED, &options()).unwrap();
        let y = &imported.yaml;
        let c = Config::parse(y).unwrap_or_else(|e| panic!("{e}\n{y}"));
        assert_eq!(c.provider.region.as_deref(), Some("cn-beijing"));
        let groups: Vec<String> = c
            .eni
            .security_groups
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(groups, ["sg-a", "sg-b"]);
        assert!(c.shared_eni.enabled);
        assert_eq!(
            (
                c.shared_eni.min_pool_size,
                c.shared_eni.max_pool_size,
                c.shared_eni.warm_up_size
            ),
            (2, 10, 4)
        );
        assert_eq!(c.shared_subnets(), &c.eni.subnets);
        assert_eq!(
            c.provider.rate_limits,
            BTreeMap::from([("CreateNetworkInterface".to_owned(), 300)])
        );
        for want in [
            "# Terway's rate_limit for AssignIpv6Addresses not carried",
            "# - ip_stack: only IPv4 is supported",
            "# Terway's vswitch_selection_policy: random not carried: there is no random choice here",
            "  minPoolSize: 2 # Terway's min_pool_size",
            "  maxPoolSize: 10 # Terway's max_pool_size",
            "  warmUpSize: 4 # Terway's ip_warm_up_size",
            "# - ipam_type: Terway's centralized IPAM switch",
        ] {
            assert!(y.contains(want), "missing {want:?} in\n{y}");
        }
        // No cluster id anywhere: a placeholder, and check says so.
        assert!(y.contains("clusterId: CHANGE-ME"), "{y}");
        let problems = check(&imported);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("clusterId: give --cluster-id"),
            "{problems:?}"
        );
    }

    #[test]
    fn flags_win_and_a_cluster_cidr_turns_routes_on() {
        let options = ImportOptions {
            region: Some("cn-beijing".into()),
            cluster_id: Some("prod-1".into()),
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            ..options()
        };
        let imported = import(SELF_MANAGED, &options).unwrap();
        assert_eq!(check(&imported), Vec::<String>::new(), "{}", imported.yaml);
        let c = Config::parse(&imported.yaml).unwrap();
        assert_eq!(c.cluster_id, "prod-1");
        assert!(c.routes.enabled);
        assert_eq!(c.routes.cluster_cidr.unwrap().to_string(), "10.244.0.0/16");
    }

    #[test]
    fn a_missing_region_is_reported_by_check_as_check_config_would() {
        let imported = import(ACK, &options()).unwrap();
        let problems = check(&imported);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("unresolved: provider.region: give --region")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("provider.region: is required")),
            "{problems:?}"
        );
    }

    #[test]
    fn old_single_vswitch_per_zone_and_bare_eni_conf_are_read() {
        let bare = r#"{"version": "1", "vswitches": {"cn-hangzhou-h": "vsw-old"}, "security_group": "sg-old", "region_id": "cn-hangzhou", "cluster_id": "old"}"#;
        let imported = import(bare, &options()).unwrap();
        let c = Config::parse(&imported.yaml).unwrap_or_else(|e| panic!("{e}\n{}", imported.yaml));
        assert_eq!(c.cluster_id, "old");
        let subnets: Vec<String> = c
            .eni
            .subnets
            .values()
            .flatten()
            .map(ToString::to_string)
            .collect();
        assert_eq!(subnets, ["vsw-old"]);
    }

    #[test]
    fn without_vswitches_eni_mode_stays_off_and_says_why() {
        let cm = ACK.replace(
            r#""vswitches": {"cn-shanghai-b": ["vsw-b1", "vsw-b2"], "cn-shanghai-e": ["vsw-e1"]},"#,
            "",
        );
        let imported = import(&cm, &with_region("cn-shanghai")).unwrap();
        let y = &imported.yaml;
        assert!(
            y.contains("# Off: Terway's eni-config names no vSwitch"),
            "{y}"
        );
        let c: Config = serde_yaml::from_str(y).unwrap();
        assert!(!c.eni.enabled);
        assert!(!c.shared_eni.enabled);
        // Nothing is on then: check says so.
        assert!(check(&imported).iter().any(|p| p.contains("nothing to do")));
    }

    #[test]
    fn hostile_keys_and_values_cannot_break_out_of_comments_or_scalars() {
        let cm = r#"{"version": "1", "region_id": "cn-hangzhou", "cluster_id": "c1",
            "vswitches": {"cn-hangzhou-h": ["vsw-1"]}, "security_group": "sg-1",
            "eni_tags": {"owner": "a: b\nclusterId: evil", "yes": "no"},
            "bad\nclusterId: evil": 1, "vswitch_selection_policy": "x\nrouted: true"}"#;
        let imported = import(cm, &options()).unwrap();
        let y = &imported.yaml;
        let c = Config::parse(y).unwrap_or_else(|e| panic!("{e}\n{y}"));
        assert_eq!(c.cluster_id, "c1");
        assert_eq!(c.eni.tags["owner"], "a: b\nclusterId: evil");
        assert_eq!(c.eni.tags["yes"], "no");
        assert_eq!(
            y.lines().filter(|l| l.starts_with("clusterId:")).count(),
            1,
            "{y}"
        );
    }

    #[test]
    fn what_is_not_an_eni_config_is_refused() {
        assert_eq!(
            import("kind: ConfigMap\ndata: {other: x}\n", &options()),
            Err(ImportError::NoEniConf)
        );
        assert_eq!(import("[1, 2]", &options()), Err(ImportError::NoEniConf));
        assert!(matches!(
            import("data:\n  eni_conf: '[1'\n", &options()),
            Err(ImportError::BadEniConf(_))
        ));
        assert!(matches!(
            import("data: {eni_conf: [1", &options()),
            Err(ImportError::NotYaml(_))
        ));
    }
}
