//! The controller's configuration file: its YAML shape, defaults, and the
//! validation that runs before any cloud or kube call. Every error names the
//! field's path and what is allowed.

use ipam::ids::{ClusterId, RouteTableId, SecurityGroupId, SubnetId, ZoneId};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The whole config file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Marks what the controller owns in the cloud (tags, route entry names).
    pub cluster_id: String,
    /// Not needed (absent) with `routes.backend: bgp` and ENI mode off.
    #[serde(default = "ProviderConfig::absent")]
    pub provider: ProviderConfig,
    #[serde(default)]
    pub routes: RoutesConfig,
    #[serde(default)]
    pub eni: EniConfig,
    #[serde(default)]
    pub shared_eni: SharedEniConfig,
    #[serde(default)]
    pub controller: ControllerSettings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Alibaba,
    Aws,
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::Alibaba => "alibaba",
            ProviderKind::Aws => "aws",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Required for alibaba; optional for aws (else from the environment / IMDS).
    #[serde(default)]
    pub region: Option<String>,
    /// Override of the API endpoint (mocks, moto, private endpoints).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Calls per minute per API name, e.g. `{CreateRouteEntry: 300}`.
    #[serde(default)]
    pub rate_limits: BTreeMap<String, u32>,
    /// Where credentials come from when not from the environment or the
    /// instance role (alibaba): files mounted from a Secret.
    #[serde(default)]
    pub credentials: Option<CredentialFiles>,
    /// The file has no `provider` block (nothing may call a cloud).
    #[serde(skip)]
    pub absent: bool,
}

impl ProviderConfig {
    /// What a file without `provider` reads as.
    pub fn absent() -> Self {
        Self {
            kind: ProviderKind::Alibaba,
            region: None,
            endpoint: None,
            rate_limits: BTreeMap::new(),
            credentials: None,
            absent: true,
        }
    }
}

/// Credentials read from files (a mounted Secret), never inlined in config.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialFiles {
    pub access_key_id_file: String,
    pub access_key_secret_file: String,
    #[serde(default)]
    pub security_token_file: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutesConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Tables to write into; empty: the VPC's single/main table (alibaba) or
    /// the one tagged for the cluster (aws).
    #[serde(default)]
    pub route_table_ids: Vec<RouteTableId>,
    /// Only entries inside this CIDR can be ours.
    #[serde(default)]
    pub cluster_cidr: Option<Ipv4Net>,
    /// Give nodes without `spec.podCIDR` a block of `nodeCidrMaskSize`.
    #[serde(default)]
    pub allocate_pod_cidrs: bool,
    #[serde(default = "default_node_mask")]
    pub node_cidr_mask_size: u8,
    /// How long node changes are gathered before one batch of route calls.
    #[serde(default = "default_aggregate_ms")]
    pub aggregate_window_ms: u64,
    /// Full resync against the cloud's listing.
    #[serde(default = "default_resync_seconds")]
    pub resync_seconds: u64,
    /// Pause after each batch of changes to a route table that accepts one
    /// change at a time (Alibaba), before the next batch.
    #[serde(default = "default_batch_pause_ms")]
    pub batch_pause_ms: u64,
    /// `cloud` (VPC route tables) or `bgp` (announcements to routers).
    #[serde(default)]
    pub backend: crate::routes_bgp::config::RouteBackend,
    /// The BGP backend's settings (`backend: bgp`).
    #[serde(default)]
    pub bgp: Option<crate::routes_bgp::config::BgpConfig>,
}

fn default_batch_pause_ms() -> u64 {
    1000
}

fn default_node_mask() -> u8 {
    24
}
fn default_aggregate_ms() -> u64 {
    1000
}
fn default_resync_seconds() -> u64 {
    300
}

impl Default for RoutesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            route_table_ids: Vec::new(),
            cluster_cidr: None,
            allocate_pod_cidrs: false,
            node_cidr_mask_size: default_node_mask(),
            aggregate_window_ms: default_aggregate_ms(),
            resync_seconds: default_resync_seconds(),
            batch_pause_ms: default_batch_pause_ms(),
            backend: Default::default(),
            bgp: None,
        }
    }
}

impl RoutesConfig {
    pub fn aggregate_window(&self) -> Duration {
        Duration::from_millis(self.aggregate_window_ms)
    }
    pub fn resync_interval(&self) -> Duration {
        Duration::from_secs(self.resync_seconds)
    }
    pub fn batch_pause(&self) -> Duration {
        Duration::from_millis(self.batch_pause_ms)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EniConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The extended resource pods request; default depends on the provider
    /// (`aliyun/eni` on alibaba, `vpc.amazonaws.com/eni` on aws).
    #[serde(default)]
    pub resource_name: Option<String>,
    /// Subnet (vSwitch) ids per zone.
    #[serde(default)]
    pub subnets: BTreeMap<ZoneId, Vec<SubnetId>>,
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupId>,
    /// Extra tags on every ENI we create.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// How often every owned ENI is listed to release orphans and re-make
    /// allocations whose ENI vanished (also once at start).
    #[serde(default = "default_gc_interval")]
    pub gc_interval_seconds: u32,
    /// An orphaned ENI younger than this is left alone (its pod may not be
    /// visible yet).
    #[serde(default = "default_gc_grace")]
    pub gc_grace_seconds: u32,
    /// How often each node's capacity is recomputed from the cloud, so ENIs
    /// attached by someone else are noticed.
    #[serde(default = "default_capacity_resync")]
    pub capacity_resync_seconds: u32,
    /// How often ENIs waiting to become InUse / Available are polled (one
    /// batched describe call for all of them).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u32,
    /// How long to wait for an ENI to be attached or detached before the
    /// attempt fails and is retried.
    #[serde(default = "default_attach_timeout")]
    pub attach_timeout_seconds: u32,
    /// ENI attaches (and detaches) the controller keeps in flight at once on
    /// one instance. The clouds refuse more ENI operations on a busy
    /// instance (Alibaba `InvalidOperation.InvalidEcsState`, EC2
    /// `IncorrectInstanceState`); Terway's control plane runs up to 5 at
    /// once per instance. A refusal is retried with backoff.
    #[serde(default = "default_attach_concurrency")]
    pub attach_concurrency: u32,
    /// A pod whose node has failed it for this long without a break, for
    /// reasons the node cannot get past (no ENI slot or subnet address
    /// left), is evicted when a controller owns it, so a new one is
    /// scheduled elsewhere; 0 = never evict.
    #[serde(default = "default_evict_after_seconds")]
    pub evict_after_seconds: u32,
}

fn default_gc_interval() -> u32 {
    600
}
fn default_gc_grace() -> u32 {
    600
}
fn default_capacity_resync() -> u32 {
    60
}
fn default_poll_interval_ms() -> u32 {
    500
}
fn default_evict_after_seconds() -> u32 {
    300
}
fn default_attach_timeout() -> u32 {
    120
}
/// What `eni.attachConcurrency` is when unset.
pub const DEFAULT_ATTACH_CONCURRENCY: u32 = 5;
/// The most `eni.attachConcurrency` may be: more ENIs than any instance type
/// takes cannot be in flight on one instance anyway.
pub const MAX_ATTACH_CONCURRENCY: u32 = 16;
fn default_attach_concurrency() -> u32 {
    DEFAULT_ATTACH_CONCURRENCY
}

impl Default for EniConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            resource_name: None,
            subnets: BTreeMap::new(),
            security_groups: Vec::new(),
            tags: BTreeMap::new(),
            gc_interval_seconds: default_gc_interval(),
            gc_grace_seconds: default_gc_grace(),
            capacity_resync_seconds: default_capacity_resync(),
            poll_interval_ms: default_poll_interval_ms(),
            attach_timeout_seconds: default_attach_timeout(),
            attach_concurrency: default_attach_concurrency(),
            evict_after_seconds: default_evict_after_seconds(),
        }
    }
}

/// Shared-ENI mode: pods get secondary IPs of shared ENIs from a warm pool
/// per node. Key names follow Terway's `eni_conf` in camelCase.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharedEniConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Labels a node must carry to be in shared mode; empty = every node.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Subnet ids per zone for shared ENIs; empty = `eni.subnets`.
    #[serde(default)]
    pub subnets: BTreeMap<ZoneId, Vec<SubnetId>>,
    /// Security groups of shared ENIs; empty = `eni.securityGroups`.
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupId>,
    /// Secondary ENI slots per node the pool may use; the exclusive
    /// resource advertises only the rest.
    #[serde(default = "default_shared_max_enis")]
    pub max_enis: u32,
    /// Free IPs kept per node, at least.
    #[serde(default)]
    pub min_pool_size: u32,
    /// Free IPs per node, at most; the excess is released.
    #[serde(default = "default_max_pool_size")]
    pub max_pool_size: u32,
    /// IPs assigned when a node joins.
    #[serde(default)]
    pub warm_up_size: u32,
    /// A released pod IP is not handed out again before this.
    #[serde(default = "default_ip_cooldown")]
    pub ip_cooldown_seconds: u32,
    /// Free IPs above maxPoolSize (and ENIs no pod uses) are released only
    /// after the pool has had them this long.
    #[serde(default = "default_excess_release_delay")]
    pub excess_release_delay_seconds: u32,
    /// How often every shared ENI of the cluster is listed (one listing for
    /// all nodes) to notice changes made outside the controller.
    #[serde(default = "default_pool_sync")]
    pub pool_sync_seconds: u32,
}

fn default_shared_max_enis() -> u32 {
    2
}
fn default_max_pool_size() -> u32 {
    10
}
fn default_ip_cooldown() -> u32 {
    30
}
fn default_excess_release_delay() -> u32 {
    180
}
fn default_pool_sync() -> u32 {
    60
}

impl Default for SharedEniConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            node_selector: BTreeMap::new(),
            subnets: BTreeMap::new(),
            security_groups: Vec::new(),
            max_enis: default_shared_max_enis(),
            min_pool_size: 0,
            max_pool_size: default_max_pool_size(),
            warm_up_size: 0,
            ip_cooldown_seconds: default_ip_cooldown(),
            excess_release_delay_seconds: default_excess_release_delay(),
            pool_sync_seconds: default_pool_sync(),
        }
    }
}

impl SharedEniConfig {
    /// Whether a node with these labels is in shared mode.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.enabled
            && self
                .node_selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }

    pub fn ip_cooldown(&self) -> Duration {
        Duration::from_secs(self.ip_cooldown_seconds.into())
    }

    pub fn excess_release_delay(&self) -> Duration {
        Duration::from_secs(self.excess_release_delay_seconds.into())
    }
}

/// Process-level settings: leader election, probes and metrics, logs.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerSettings {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub leader_election: LeaderElectionConfig,
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: LogFormat,
}

/// The placeholder in `controller.listen` that stands for the pod's IP
/// (env `POD_IP`, from the downward API), or 127.0.0.1 where it is not set.
pub const POD_IP_PLACEHOLDER: &str = "${POD_IP}";

fn default_listen() -> String {
    format!("{POD_IP_PLACEHOLDER}:9090")
}

impl ControllerSettings {
    /// Where `/healthz`, `/readyz` and `/metrics` listen: `listen` with
    /// `${POD_IP}` replaced. Never 0.0.0.0 by default: with hostNetwork that
    /// would offer the metrics on every address of the node, to the whole VPC.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, String> {
        let ip = std::env::var("POD_IP")
            .ok()
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into());
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        let resolved = self.listen.replace(POD_IP_PLACEHOLDER, &host);
        resolved
            .parse()
            .map_err(|_| format!("{resolved:?} is not an address:port"))
    }
}
fn default_log_format() -> LogFormat {
    LogFormat::Text
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            leader_election: LeaderElectionConfig::default(),
            log_format: default_log_format(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElectionConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_lease_name")]
    pub lease_name: String,
    /// Namespace of the Lease; default: the pod's namespace (`POD_NAMESPACE`)
    /// or `kube-system`.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default = "default_lease_seconds")]
    pub lease_duration_seconds: u32,
    #[serde(default = "default_renew_seconds")]
    pub renew_interval_seconds: u32,
}

fn default_true() -> bool {
    true
}
fn default_lease_name() -> String {
    "vpc-eni-controller".into()
}
fn default_lease_seconds() -> u32 {
    15
}
fn default_renew_seconds() -> u32 {
    5
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lease_name: default_lease_name(),
            namespace: None,
            lease_duration_seconds: default_lease_seconds(),
            renew_interval_seconds: default_renew_seconds(),
        }
    }
}

/// A config problem: which field, what is wrong, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config is not valid YAML for this controller: {0}")]
    Parse(String),
    #[error("{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldProblem>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub path: String,
    pub problem: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// Names of the APIs whose rate limit may be set, per provider: the APIs its
/// backend calls, as the backend lists them (the AWS list is there in builds
/// without the `aws` feature too).
pub fn known_apis(kind: ProviderKind) -> &'static [&'static str] {
    match kind {
        ProviderKind::Alibaba => providers::alibaba::API_NAMES,
        ProviderKind::Aws => providers::aws::API_NAMES,
    }
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Parse and validate config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    pub fn cluster(&self) -> ClusterId {
        ClusterId::new(self.cluster_id.clone())
    }

    /// The extended resource name pods request for an exclusive ENI.
    pub fn eni_resource_name(&self) -> String {
        self.eni.resource_name.clone().unwrap_or_else(|| {
            match self.provider.kind {
                ProviderKind::Alibaba => "aliyun/eni",
                ProviderKind::Aws => "vpc.amazonaws.com/eni",
            }
            .to_owned()
        })
    }

    /// Subnets of shared ENIs: their own, else the exclusive mode's.
    pub fn shared_subnets(&self) -> &BTreeMap<ZoneId, Vec<SubnetId>> {
        if self.shared_eni.subnets.is_empty() {
            &self.eni.subnets
        } else {
            &self.shared_eni.subnets
        }
    }

    /// Security groups of shared ENIs: their own, else the exclusive mode's.
    pub fn shared_security_groups(&self) -> &[SecurityGroupId] {
        if self.shared_eni.security_groups.is_empty() {
            &self.eni.security_groups
        } else {
            &self.shared_eni.security_groups
        }
    }

    /// Secondary ENI slots a node's exclusive resource must leave to its
    /// pool: `sharedEni.maxEnis` on nodes in shared mode, else none.
    pub fn shared_reserved_slots(&self, labels: &BTreeMap<String, String>) -> u32 {
        if self.shared_eni.selects(labels) {
            self.shared_eni.max_enis
        } else {
            0
        }
    }

    /// Setups that are valid but likely not what the operator wants; shown
    /// by `check-config` and logged at start.
    pub fn warnings(&self) -> Vec<FieldProblem> {
        let mut out = Problems::default();
        if self.routes.enabled
            && self.provider.kind == ProviderKind::Aws
            && self.routes.route_table_ids.is_empty()
        {
            out.bad(
                "routes.routeTableIds",
                format!(
                    "is empty: EC2 routes carry no name, so after a restart the controller recognises its own routes only in a table tagged kubernetes.io/cluster/{}=owned (a `shared` tag is not enough; its routes would be reported as RouteConflict and stale ones never removed); list the table here to make it the cluster's",
                    self.cluster_id
                ),
            );
        }
        out.0
    }

    /// Every semantic problem, each with its field path.
    pub fn problems(&self) -> Vec<FieldProblem> {
        let mut out = Problems::default();
        self.cluster_problems(&mut out);
        if self.provider.absent {
            crate::routes_bgp::provider_problems(self, &mut |p, m| out.bad(p, m));
        } else {
            self.provider_problems(&mut out);
        }
        if !self.routes.enabled && !self.eni.enabled && !self.shared_eni.enabled {
            out.bad(
                "routes.enabled",
                "nothing to do: enable routes (routes.enabled: true), eni (eni.enabled: true) or sharedEni (sharedEni.enabled: true)"
                    .into(),
            );
        }
        if self.routes.enabled {
            self.routes_problems(&mut out);
        }
        if self.eni.enabled {
            self.eni_problems(&mut out);
        }
        if self.shared_eni.enabled {
            self.shared_eni_problems(&mut out);
        }
        self.controller_problems(&mut out);
        out.0
    }

    fn cluster_problems(&self, out: &mut Problems) {
        let id_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        };
        if !id_ok(&self.cluster_id) {
            out.bad(
                "clusterId",
                format!(
                    "{:?} is not allowed: use 1-63 characters of letters, digits, '-', '_' or '.'",
                    self.cluster_id
                ),
            );
        }
    }

    fn provider_problems(&self, out: &mut Problems) {
        match (self.provider.kind, &self.provider.region) {
            (ProviderKind::Alibaba, None) => out.bad(
                "provider.region",
                "is required for provider kind alibaba, e.g. cn-hangzhou".into(),
            ),
            (_, Some(r)) if r.is_empty() || r.contains(char::is_whitespace) => out.bad(
                "provider.region",
                format!("{r:?} is not a region id, e.g. cn-hangzhou or us-east-1"),
            ),
            _ => {}
        }
        if let Some(endpoint) = &self.provider.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                out.bad(
                    "provider.endpoint",
                    format!("{endpoint:?} must be a URL starting with http:// or https://"),
                );
            }
        }
        let known = known_apis(self.provider.kind);
        for (api, per_minute) in &self.provider.rate_limits {
            let path = format!("provider.rateLimits.{api}");
            if !known.contains(&api.as_str()) {
                out.bad(
                    &path,
                    format!(
                        "unknown API for provider {}; known: {}",
                        self.provider.kind,
                        known.join(", ")
                    ),
                );
            }
            if *per_minute == 0 {
                out.bad(&path, "must be at least 1 call per minute".into());
            }
        }
        if self.provider.credentials.is_some() && self.provider.kind == ProviderKind::Aws {
            out.bad(
                "provider.credentials",
                "is for alibaba only; aws uses the standard AWS credential chain (env, profile, IRSA, instance role)".into(),
            );
        }
    }

    fn routes_problems(&self, out: &mut Problems) {
        match self.routes.cluster_cidr {
            None => out.bad(
                "routes.clusterCidr",
                "is required when routes.enabled is true, e.g. 10.244.0.0/16".into(),
            ),
            Some(cidr) => {
                if cidr.network() != cidr.addr() {
                    out.bad(
                        "routes.clusterCidr",
                        format!("{cidr} has host bits set; did you mean {}?", cidr.trunc()),
                    );
                }
                let mask = self.routes.node_cidr_mask_size;
                if mask < cidr.prefix_len() || mask > 30 {
                    out.bad(
                        "routes.nodeCidrMaskSize",
                        format!(
                            "{mask} must be between the clusterCidr prefix ({}) and 30",
                            cidr.prefix_len()
                        ),
                    );
                }
            }
        }
        for (i, table) in self.routes.route_table_ids.iter().enumerate() {
            if table.as_str().trim().is_empty() {
                out.bad(
                    &format!("routes.routeTableIds[{i}]"),
                    "must not be empty".into(),
                );
            }
        }
        if self.routes.aggregate_window_ms > 60_000 {
            out.bad(
                "routes.aggregateWindowMs",
                "must be at most 60000 (one minute)".into(),
            );
        }
        if self.routes.batch_pause_ms > 60_000 {
            out.bad(
                "routes.batchPauseMs",
                "must be at most 60000 (one minute)".into(),
            );
        }
        if self.routes.resync_seconds == 0 {
            out.bad("routes.resyncSeconds", "must be at least 1".into());
        }
        crate::routes_bgp::routes_problems(&self.routes, &mut |p, m| out.bad(p, m));
    }

    fn eni_problems(&self, out: &mut Problems) {
        if self.eni.subnets.is_empty() {
            out.bad(
                "eni.subnets",
                "needs at least one zone with subnet ids, e.g. {cn-hangzhou-h: [vsw-1]}".into(),
            );
        }
        for (zone, ids) in &self.eni.subnets {
            if ids.is_empty() {
                out.bad(
                    &format!("eni.subnets.{zone}"),
                    "lists no subnet; remove the zone or add a subnet id".into(),
                );
            }
        }
        if self.eni.security_groups.is_empty() {
            out.bad(
                "eni.securityGroups",
                "needs at least one security group id for new ENIs".into(),
            );
        }
        let name = self.eni_resource_name();
        if !valid_extended_resource_name(&name) {
            out.bad(
                "eni.resourceName",
                format!("{name:?} is not an extended resource name: use <domain>/<name>, e.g. aliyun/eni"),
            );
        }
        for (field, value) in [
            ("eni.gcIntervalSeconds", self.eni.gc_interval_seconds),
            (
                "eni.capacityResyncSeconds",
                self.eni.capacity_resync_seconds,
            ),
            ("eni.pollIntervalMs", self.eni.poll_interval_ms),
            ("eni.attachTimeoutSeconds", self.eni.attach_timeout_seconds),
        ] {
            if value == 0 {
                out.bad(field, "must be at least 1".into());
            }
        }
        let n = self.eni.attach_concurrency;
        if !(1..=MAX_ATTACH_CONCURRENCY).contains(&n) {
            out.bad(
                "eni.attachConcurrency",
                format!(
                    "{n} is outside 1..={MAX_ATTACH_CONCURRENCY}: set how many ENI attaches may run at once on one instance, e.g. {DEFAULT_ATTACH_CONCURRENCY} (the default; 1 attaches one ENI at a time)"
                ),
            );
        }
        for key in self.eni.tags.keys() {
            if key.starts_with("vpc-eni.io/") || key.starts_with("kubernetes.io/cluster/") {
                out.bad(
                    &format!("eni.tags.{key}"),
                    "is reserved for ownership tags the controller sets itself".into(),
                );
            }
        }
    }

    fn shared_eni_problems(&self, out: &mut Problems) {
        let c = &self.shared_eni;
        if self.shared_subnets().is_empty() {
            out.bad(
                "sharedEni.subnets",
                "needs at least one zone with subnet ids (here or in eni.subnets), e.g. {cn-hangzhou-h: [vsw-1]}".into(),
            );
        }
        for (zone, ids) in &c.subnets {
            if ids.is_empty() {
                out.bad(
                    &format!("sharedEni.subnets.{zone}"),
                    "lists no subnet; remove the zone or add a subnet id".into(),
                );
            }
        }
        if self.shared_security_groups().is_empty() {
            out.bad(
                "sharedEni.securityGroups",
                "needs at least one security group id for shared ENIs (here or in eni.securityGroups)".into(),
            );
        }
        if c.max_enis == 0 {
            out.bad(
                "sharedEni.maxEnis",
                "must be at least 1: the pool needs an ENI slot for its IPs".into(),
            );
        }
        if c.min_pool_size > c.max_pool_size {
            out.bad(
                "sharedEni.minPoolSize",
                format!(
                    "{} is above maxPoolSize ({}): the pool would grow and shrink forever; lower it or raise maxPoolSize",
                    c.min_pool_size, c.max_pool_size
                ),
            );
        }
        if c.warm_up_size > c.max_pool_size {
            out.bad(
                "sharedEni.warmUpSize",
                format!(
                    "{} is above maxPoolSize ({}): the warmed-up IPs would be released again; lower it or raise maxPoolSize",
                    c.warm_up_size, c.max_pool_size
                ),
            );
        }
        if c.pool_sync_seconds == 0 {
            out.bad("sharedEni.poolSyncSeconds", "must be at least 1".into());
        }
        for (k, v) in &c.node_selector {
            if k.is_empty() || k.len() > 317 || v.len() > 63 {
                out.bad(
                    &format!("sharedEni.nodeSelector.{k}"),
                    "is not a label: keys are [prefix/]name (name up to 63 characters), values up to 63 characters".into(),
                );
            }
        }
    }

    fn controller_problems(&self, out: &mut Problems) {
        let le = &self.controller.leader_election;
        if le.enabled && le.renew_interval_seconds == 0 {
            out.bad(
                "controller.leaderElection.renewIntervalSeconds",
                "must be at least 1 (0 would renew the Lease in a busy loop)".into(),
            );
        } else if le.enabled && le.renew_interval_seconds >= le.lease_duration_seconds {
            out.bad(
                "controller.leaderElection.renewIntervalSeconds",
                format!(
                    "{} must be shorter than leaseDurationSeconds ({})",
                    le.renew_interval_seconds, le.lease_duration_seconds
                ),
            );
        }
        if let Err(e) = self.controller.listen_addr() {
            out.bad(
                "controller.listen",
                format!("{e}: use an address:port, e.g. \"${{POD_IP}}:9090\" (the pod's IP, the default) or 127.0.0.1:9090"),
            );
        }
    }
}

/// The problems found so far, each with its field path.
#[derive(Default)]
struct Problems(Vec<FieldProblem>);

impl Problems {
    fn bad(&mut self, path: &str, problem: String) {
        self.0.push(FieldProblem {
            path: path.to_owned(),
            problem,
        });
    }
}

/// `<domain>/<name>`: both non-empty, DNS-ish characters, not in the
/// `kubernetes.io` namespace that the kubelet reserves.
fn valid_extended_resource_name(name: &str) -> bool {
    let Some((domain, rest)) = name.split_once('/') else {
        return false;
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    };
    ok(domain) && ok(rest) && !domain.ends_with("kubernetes.io")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
clusterId: demo
provider:
  kind: alibaba
  region: cn-hangzhou
  endpoint: http://127.0.0.1:8080
  rateLimits: {CreateRouteEntries: 300}
routes:
  enabled: true
  routeTableIds: [vtb-1]
  clusterCidr: 10.244.0.0/16
  allocatePodCidrs: false
  nodeCidrMaskSize: 24
eni:
  enabled: true
  resourceName: aliyun/eni
  subnets: {cn-hangzhou-h: [vsw-h1, vsw-h2]}
  securityGroups: [sg-1]
  tags: {team: net}
"#;

    fn problems_of(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn documented_example_parses() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.cluster_id, "demo");
        assert_eq!(c.routes.cluster_cidr.unwrap().to_string(), "10.244.0.0/16");
        assert_eq!(c.eni_resource_name(), "aliyun/eni");
        assert_eq!(c.provider.rate_limits["CreateRouteEntries"], 300);
    }

    #[test]
    fn unknown_key_is_named() {
        let text = GOOD.replace("allocatePodCidrs", "allocatePodCidr");
        let msg = problems_of(&text);
        assert!(msg.contains("unknown field `allocatePodCidr`"), "{msg}");
        assert!(msg.contains("routes"), "{msg}");
    }

    #[test]
    fn bad_values_name_field_and_fix() {
        let text = GOOD
            .replace("10.244.0.0/16", "10.244.1.0/16")
            .replace("CreateRouteEntries: 300", "CreateRoute: 0")
            .replace("securityGroups: [sg-1]", "securityGroups: []");
        let msg = problems_of(&text);
        assert!(
            msg.contains(
                "routes.clusterCidr: 10.244.1.0/16 has host bits set; did you mean 10.244.0.0/16?"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("provider.rateLimits.CreateRoute: unknown API"),
            "{msg}"
        );
        assert!(msg.contains("must be at least 1 call per minute"), "{msg}");
        assert!(msg.contains("eni.securityGroups"), "{msg}");
    }

    #[test]
    fn attach_concurrency_defaults_to_five_and_is_bounded() {
        assert_eq!(Config::parse(GOOD).unwrap().eni.attach_concurrency, 5);
        let set = GOOD.replace(
            "  tags: {team: net}\n",
            "  tags: {team: net}\n  attachConcurrency: 3\n",
        );
        assert_eq!(Config::parse(&set).unwrap().eni.attach_concurrency, 3);
        for bad in ["0", "17"] {
            let msg = problems_of(
                &set.replace("attachConcurrency: 3", &format!("attachConcurrency: {bad}")),
            );
            assert!(
                msg.contains(&format!("eni.attachConcurrency: {bad} is outside 1..=16")),
                "{msg}"
            );
            assert!(msg.contains("e.g. 5"), "{msg}");
        }
    }

    #[test]
    fn cidr_that_is_not_a_cidr_is_rejected_with_its_path() {
        let msg = problems_of(&GOOD.replace("10.244.0.0/16", "10.244.0.0/33"));
        assert!(msg.contains("routes.clusterCidr"), "{msg}");
    }

    #[test]
    fn mask_outside_range_is_rejected() {
        let msg = problems_of(&GOOD.replace("nodeCidrMaskSize: 24", "nodeCidrMaskSize: 8"));
        assert!(
            msg.contains(
                "routes.nodeCidrMaskSize: 8 must be between the clusterCidr prefix (16) and 30"
            ),
            "{msg}"
        );
    }

    #[test]
    fn alibaba_needs_region_and_aws_has_its_own_default_resource() {
        let msg = problems_of(&GOOD.replace("  region: cn-hangzhou\n", ""));
        assert!(msg.contains("provider.region: is required"), "{msg}");
        let aws = GOOD
            .replace("kind: alibaba", "kind: aws")
            .replace("region: cn-hangzhou", "region: us-east-1")
            .replace("{CreateRouteEntries: 300}", "{CreateRoute: 300}")
            .replace("  resourceName: aliyun/eni\n", "");
        let c = Config::parse(&aws).unwrap();
        assert_eq!(c.eni_resource_name(), "vpc.amazonaws.com/eni");
    }

    #[test]
    fn reserved_tags_and_bad_resource_names_are_refused() {
        let text = GOOD
            .replace("{team: net}", "{vpc-eni.io/cluster: other}")
            .replace("resourceName: aliyun/eni", "resourceName: eni");
        let msg = problems_of(&text);
        assert!(
            msg.contains("eni.tags.vpc-eni.io/cluster: is reserved"),
            "{msg}"
        );
        assert!(msg.contains("eni.resourceName"), "{msg}");
    }

    #[test]
    fn shared_eni_defaults_to_the_eni_subnets_and_names_bad_fields() {
        let c = Config::parse(&format!(
            "{GOOD}sharedEni:\n  enabled: true\n  nodeSelector: {{pool: shared}}\n"
        ))
        .unwrap();
        assert_eq!(c.shared_eni.max_enis, 2);
        assert_eq!(c.shared_eni.max_pool_size, 10);
        assert_eq!(c.shared_eni.ip_cooldown_seconds, 30);
        assert_eq!(c.shared_eni.excess_release_delay_seconds, 180);
        assert_eq!(c.shared_subnets(), &c.eni.subnets);
        assert_eq!(c.shared_security_groups(), c.eni.security_groups.as_slice());
        let labels = |v: &str| BTreeMap::from([("pool".to_owned(), v.to_owned())]);
        assert!(c.shared_eni.selects(&labels("shared")));
        assert!(!c.shared_eni.selects(&labels("other")));
        assert_eq!(c.shared_reserved_slots(&labels("shared")), 2);
        assert_eq!(c.shared_reserved_slots(&labels("other")), 0);

        let alone = "clusterId: demo\nprovider: {kind: aws}\nsharedEni:\n  enabled: true\n  minPoolSize: 12\n  warmUpSize: 11\n  maxEnis: 0\n";
        let msg = problems_of(alone);
        for needle in [
            "sharedEni.subnets",
            "sharedEni.securityGroups",
            "sharedEni.maxEnis",
            "sharedEni.minPoolSize: 12 is above maxPoolSize (10)",
            "sharedEni.warmUpSize: 11 is above maxPoolSize (10)",
        ] {
            assert!(msg.contains(needle), "{needle} missing in: {msg}");
        }
        assert!(!msg.contains("nothing to do"), "{msg}");
        let msg = problems_of(&format!(
            "{GOOD}sharedEni:\n  enabled: true\n  maxPoolSize: -1\n"
        ));
        assert!(msg.contains("maxPoolSize"), "{msg}");
        let msg = problems_of(&format!(
            "{GOOD}sharedEni:\n  enabled: true\n  max_pool_size: 3\n"
        ));
        assert!(msg.contains("unknown field `max_pool_size`"), "{msg}");
    }

    #[test]
    fn nothing_enabled_is_an_error() {
        let text = "clusterId: demo\nprovider: {kind: aws}\n";
        assert!(problems_of(text).contains("nothing to do"));
    }

    #[test]
    fn an_aws_route_setup_without_configured_tables_is_warned_about() {
        let base = "clusterId: demo\nprovider: {kind: aws, region: us-east-1}\nroutes: {enabled: true, clusterCidr: 10.244.0.0/16";
        let bare = Config::parse(&format!("{base}}}\n")).unwrap();
        let w = bare.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].path, "routes.routeTableIds");
        assert!(
            w[0].problem.contains("kubernetes.io/cluster/demo=owned"),
            "{}",
            w[0]
        );
        assert!(crate::explain::explain(&bare).contains("warning: routes.routeTableIds"));
        let listed = Config::parse(&format!("{base}, routeTableIds: [rtb-1]}}\n")).unwrap();
        assert!(listed.warnings().is_empty());
    }

    #[test]
    fn a_zero_renew_interval_is_refused_naming_the_field() {
        let c = Config::parse(
            "clusterId: demo\nprovider: {kind: alibaba, region: cn-hangzhou}\nroutes: {enabled: true, clusterCidr: 10.244.0.0/16}\ncontroller: {leaderElection: {renewIntervalSeconds: 0}}\n",
        );
        let err = c.unwrap_err().to_string();
        assert!(
            err.contains("controller.leaderElection.renewIntervalSeconds: must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn the_default_listener_is_the_pod_ip_never_every_address() {
        let c = ControllerSettings::default();
        assert_eq!(c.listen, "${POD_IP}:9090");
        let addr = c.listen_addr().unwrap();
        assert!(!addr.ip().is_unspecified(), "{addr}");
        assert_eq!(addr.port(), 9090);
        let explicit = ControllerSettings {
            listen: "10.0.0.5:9100".into(),
            ..ControllerSettings::default()
        };
        assert_eq!(explicit.listen_addr().unwrap().to_string(), "10.0.0.5:9100");
        let bad = ControllerSettings {
            listen: "nowhere".into(),
            ..ControllerSettings::default()
        };
        assert!(bad.listen_addr().is_err());
    }

    mod arbitrary_input {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// The config loader never panics, whatever the file holds: it
            /// loads or says what is wrong.
            #[test]
            fn any_text_loads_or_is_refused_with_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                let text = String::from_utf8_lossy(&bytes);
                if let Err(e) = Config::parse(&text) {
                    prop_assert!(!e.to_string().is_empty());
                }
            }

            #[test]
            fn yaml_shaped_input_loads_or_is_refused(
                cluster in "\\PC{0,12}", region in "\\PC{0,12}", cidr in "\\PC{0,20}",
                mask in any::<i64>(), listen in "\\PC{0,20}", renew in any::<i64>(),
            ) {
                let text = format!(
                    "clusterId: {cluster:?}\nprovider: {{kind: alibaba, region: {region:?}}}\nroutes: {{enabled: true, clusterCidr: {cidr:?}, nodeCidrMaskSize: {mask}}}\ncontroller: {{listen: {listen:?}, leaderElection: {{renewIntervalSeconds: {renew}}}}}\n"
                );
                let _ = Config::parse(&text);
            }
        }
    }
}
