//! The world's state and every operation on it, synchronous and given the
//! current (tokio) instant: ENIs with lifecycle and device indexes, subnets
//! with free-IP accounting, instances, route tables with async entries
//! (their operations live in `routes`). Asynchronous transitions settle
//! lazily: every operation first applies the transitions whose deadline has
//! passed, so paused tokio time drives them.

use super::faults::Delays;
use super::flavor::{Fail, Flavor};
use super::instance_types;
use super::spec::{AccessKey, InstanceSpec, WorldSpec};
use super::subnet::Pool;
use chrono::{DateTime, Utc};
use ipam::ids::{
    EniId, IdempotencyToken, InstanceId, InstanceType, RegionId, RouteTableId, SecurityGroupId,
    SubnetId, VpcId, ZoneId,
};
use ipnet::Ipv4Net;
use providers::model::{
    AttachedEni, CreateEniRequest, Eni, EniFilter, EniStatus, Instance, NextHop, RouteEntry,
    RouteEntryStatus, Subnet,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use tokio::time::Instant;

pub(crate) type OpResult<T> = Result<T, (Fail, String)>;

pub(crate) fn fail<T>(f: Fail, msg: impl Into<String>) -> OpResult<T> {
    Err((f, msg.into()))
}

pub(crate) struct SubnetState {
    pub vpc: VpcId,
    pub zone: ZoneId,
    pub pool: Pool,
}

pub(crate) struct InstanceState {
    pub instance_type: InstanceType,
    pub zone: ZoneId,
    pub vpc: VpcId,
    pub subnet: SubnetId,
    pub primary_ip: Ipv4Addr,
}

pub(crate) struct EniState {
    pub eni: Eni,
    /// When it was created (for listings that lag behind creates).
    pub created: Instant,
    pub primary: bool,
    /// Pending transition: at this instant the ENI reaches this status.
    pub settle: Option<(Instant, EniStatus)>,
}

pub(crate) struct EntryState {
    pub entry: RouteEntry,
    /// Pending -> Available, or Deleting -> removed, at this instant.
    pub settle_at: Option<Instant>,
}

pub(crate) struct TableState {
    pub vpc: VpcId,
    pub main: bool,
    pub tags: providers::model::Tags,
    pub quota: u32,
    pub entries: BTreeMap<Ipv4Net, EntryState>,
}

pub(crate) struct State {
    pub flavor: Flavor,
    pub region: RegionId,
    pub spec: WorldSpec,
    pub access_keys: Vec<AccessKey>,
    pub vpc_cidrs: BTreeMap<VpcId, Ipv4Net>,
    pub subnets: BTreeMap<SubnetId, SubnetState>,
    pub security_groups: BTreeMap<SecurityGroupId, VpcId>,
    pub instances: BTreeMap<InstanceId, InstanceState>,
    pub enis: BTreeMap<EniId, EniState>,
    pub tables: BTreeMap<RouteTableId, TableState>,
    create_tokens: HashMap<IdempotencyToken, (CreateEniRequest, Eni)>,
    assign_tokens: HashMap<IdempotencyToken, (EniId, u32, Vec<Ipv4Addr>)>,
    pub delays: Delays,
    /// The most ENI operations seen in flight at once, per instance.
    pub max_eni_ops_in_flight: BTreeMap<InstanceId, u32>,
    /// Attaches and detaches refused because the instance was busy.
    pub eni_ops_refused_busy: u64,
    next_id: u64,
    started: Instant,
    started_wall: DateTime<Utc>,
}

impl State {
    /// Build from a validated spec.
    pub fn new(spec: &WorldSpec, now: Instant) -> Result<Self, super::spec::SpecError> {
        let flavor = spec.flavor;
        let mut state = State {
            flavor,
            region: spec.region.clone(),
            spec: spec.clone(),
            access_keys: spec.access_keys.clone(),
            vpc_cidrs: spec.vpcs.iter().map(|v| (v.id.clone(), v.cidr)).collect(),
            subnets: spec
                .vswitches
                .iter()
                .map(|v| {
                    let st = SubnetState {
                        vpc: v.vpc.clone(),
                        zone: v.zone.clone(),
                        pool: Pool::new(v.cidr, flavor),
                    };
                    (v.id.clone(), st)
                })
                .collect(),
            security_groups: spec
                .security_groups
                .iter()
                .map(|s| (s.id.clone(), s.vpc.clone()))
                .collect(),
            instances: BTreeMap::new(),
            enis: BTreeMap::new(),
            tables: BTreeMap::new(),
            create_tokens: HashMap::new(),
            assign_tokens: HashMap::new(),
            delays: Delays::from_spec(&spec.faults),
            max_eni_ops_in_flight: BTreeMap::new(),
            eni_ops_refused_busy: 0,
            next_id: 0,
            started: now,
            started_wall: Utc::now(),
        };
        for vpc in &spec.vpcs {
            let has_main = vpc.route_tables.iter().any(|t| t.main);
            for (i, t) in vpc.route_tables.iter().enumerate() {
                let default_quota = match flavor {
                    Flavor::Alibaba => 200,
                    Flavor::Aws => 50,
                };
                state.tables.insert(
                    t.id.clone(),
                    TableState {
                        vpc: vpc.id.clone(),
                        main: t.main || (!has_main && i == 0),
                        tags: t.tags.clone(),
                        quota: t.quota.unwrap_or(default_quota),
                        entries: BTreeMap::new(),
                    },
                );
            }
        }
        for (i, inst) in spec.instances.iter().enumerate() {
            state.add_instance(inst, now).map_err(|(_, msg)| {
                super::spec::SpecError::invalid(
                    format!("instances[{i}] ({})", inst.id),
                    msg,
                    "fix the instance entry",
                )
            })?;
        }
        Ok(state)
    }

    fn wall(&self, now: Instant) -> DateTime<Utc> {
        let elapsed = now.saturating_duration_since(self.started);
        self.started_wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }

    fn next_eni_id(&mut self) -> (EniId, String) {
        self.next_id += 1;
        let n = self.next_id;
        let b = n.to_be_bytes();
        let mac = format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[4], b[5], b[6], b[7]);
        (EniId::new(format!("eni-{n:017x}")), mac)
    }

    /// Apply every transition whose deadline has passed.
    pub fn settle(&mut self, now: Instant) {
        for st in self.enis.values_mut() {
            if let Some((at, status)) = st.settle {
                if at <= now {
                    st.eni.status = status;
                    st.settle = None;
                    if status == EniStatus::Available {
                        st.eni.instance_id = None;
                        st.eni.device_index = None;
                    }
                }
            }
        }
        for table in self.tables.values_mut() {
            table.entries.retain(|_, e| {
                let due = e.settle_at.is_some_and(|at| at <= now);
                !(due && e.entry.status == RouteEntryStatus::Deleting)
            });
            for e in table.entries.values_mut() {
                if e.settle_at.is_some_and(|at| at <= now)
                    && e.entry.status == RouteEntryStatus::Pending
                {
                    e.entry.status = RouteEntryStatus::Available;
                    e.settle_at = None;
                }
            }
        }
    }

    // ---- instances -------------------------------------------------------

    pub fn add_instance(&mut self, inst: &InstanceSpec, now: Instant) -> OpResult<()> {
        if self.instances.contains_key(&inst.id) {
            return fail(
                Fail::InvalidRequest,
                format!("instance {} exists already", inst.id),
            );
        }
        if let Err(e) = self
            .spec
            .validate_instance(&format!("instance {}", inst.id), inst)
        {
            return fail(Fail::InvalidRequest, e.to_string());
        }
        let Some(subnet) = self.subnets.get_mut(&inst.vswitch) else {
            return fail(
                Fail::SubnetNotFound,
                format!("vSwitch {} does not exist", inst.vswitch),
            );
        };
        if !subnet.pool.take(inst.private_ip) {
            return fail(
                Fail::InvalidRequest,
                format!(
                    "private IP {} is taken in {}",
                    inst.private_ip, inst.vswitch
                ),
            );
        }
        let vpc = subnet.vpc.clone();
        let groups = if inst.security_groups.is_empty() {
            self.security_groups
                .iter()
                .filter(|(_, v)| **v == vpc)
                .map(|(id, _)| id.clone())
                .collect()
        } else {
            inst.security_groups.clone()
        };
        let (eni_id, mac) = self.next_eni_id();
        let eni = Eni {
            id: eni_id.clone(),
            mac,
            status: EniStatus::InUse,
            subnet_id: inst.vswitch.clone(),
            vpc_id: vpc.clone(),
            zone: inst.zone.clone(),
            primary_ip: inst.private_ip,
            secondary_ips: Vec::new(),
            instance_id: Some(inst.id.clone()),
            device_index: Some(0),
            security_groups: groups,
            tags: Default::default(),
            description: format!("primary ENI of {}", inst.id),
            created_at: Some(self.wall(now)),
        };
        self.enis.insert(
            eni_id,
            EniState {
                eni,
                created: now,
                primary: true,
                settle: None,
            },
        );
        self.instances.insert(
            inst.id.clone(),
            InstanceState {
                instance_type: inst.instance_type.clone(),
                zone: inst.zone.clone(),
                vpc,
                subnet: inst.vswitch.clone(),
                primary_ip: inst.private_ip,
            },
        );
        Ok(())
    }

    /// Release an instance: its primary ENI is deleted (addresses returned),
    /// secondary ENIs are detached at once; AWS routes to it turn blackhole.
    pub fn remove_instance(&mut self, id: &InstanceId) -> OpResult<()> {
        if self.instances.remove(id).is_none() {
            return fail(
                Fail::InstanceNotFound,
                format!("instance {id} does not exist"),
            );
        }
        let attached: Vec<EniId> = self
            .enis
            .values()
            .filter(|s| s.eni.instance_id.as_ref() == Some(id))
            .map(|s| s.eni.id.clone())
            .collect();
        for eni_id in attached {
            let primary = self.enis.get(&eni_id).is_some_and(|s| s.primary);
            if primary {
                self.drop_eni(&eni_id);
            } else if let Some(st) = self.enis.get_mut(&eni_id) {
                st.eni.status = EniStatus::Available;
                st.eni.instance_id = None;
                st.eni.device_index = None;
                st.settle = None;
            }
        }
        if self.flavor == Flavor::Aws {
            for table in self.tables.values_mut() {
                for e in table.entries.values_mut() {
                    if e.entry.next_hop == NextHop::Instance(id.clone()) {
                        e.entry.status = RouteEntryStatus::Blackhole;
                    }
                }
            }
        }
        Ok(())
    }

    fn drop_eni(&mut self, id: &EniId) {
        if let Some(st) = self.enis.remove(id) {
            if let Some(subnet) = self.subnets.get_mut(&st.eni.subnet_id) {
                subnet.pool.release(st.eni.primary_ip);
                for ip in &st.eni.secondary_ips {
                    subnet.pool.release(*ip);
                }
            }
        }
    }

    /// The instances among `ids` that exist (one `DescribeInstances`).
    /// One pass over the ENIs whatever the number of ids.
    pub fn describe_instances(&self, ids: &[InstanceId]) -> OpResult<Vec<Instance>> {
        let wanted: HashSet<&InstanceId> = ids.iter().collect();
        let mut attached = self.attachments(|i| wanted.contains(i));
        Ok(ids
            .iter()
            .filter_map(|id| {
                let enis = attached.remove(id).unwrap_or_default();
                self.instance_with(id, enis).ok()
            })
            .collect())
    }

    /// Every instance, in id order, with its attached ENIs (one pass over
    /// the ENIs).
    pub fn all_instances(&self) -> Vec<Instance> {
        let mut attached = self.attachments(|_| true);
        self.instances
            .keys()
            .filter_map(|id| {
                let enis = attached.remove(id).unwrap_or_default();
                self.instance_with(id, enis).ok()
            })
            .collect()
    }

    /// The ENIs attached to the instances `want` accepts, by instance, in
    /// device order.
    fn attachments(
        &self,
        want: impl Fn(&InstanceId) -> bool,
    ) -> HashMap<InstanceId, Vec<AttachedEni>> {
        let mut out: HashMap<InstanceId, Vec<AttachedEni>> = HashMap::new();
        for s in self.enis.values() {
            let Some(instance) = s.eni.instance_id.as_ref().filter(|i| want(i)) else {
                continue;
            };
            out.entry(instance.clone()).or_default().push(AttachedEni {
                eni_id: s.eni.id.clone(),
                device_index: s.eni.device_index.unwrap_or(0),
                primary: s.primary,
            });
        }
        for enis in out.values_mut() {
            enis.sort_by_key(|a| a.device_index);
        }
        out
    }

    pub fn describe_instance(&self, id: &InstanceId) -> OpResult<Instance> {
        let mut attached = self.attachments(|i| i == id);
        self.instance_with(id, attached.remove(id).unwrap_or_default())
    }

    /// Whether an ENI exists.
    pub fn has_eni(&self, id: &EniId) -> bool {
        self.enis.contains_key(id)
    }

    /// The primary ENIs among `ids`.
    pub fn primaries_among<'a>(&self, ids: impl IntoIterator<Item = &'a EniId>) -> HashSet<EniId> {
        ids.into_iter()
            .filter(|id| self.enis.get(*id).is_some_and(|s| s.primary))
            .cloned()
            .collect()
    }

    fn instance_with(&self, id: &InstanceId, enis: Vec<AttachedEni>) -> OpResult<Instance> {
        let Some(inst) = self.instances.get(id) else {
            return fail(
                Fail::InstanceNotFound,
                format!("instance {id} does not exist"),
            );
        };
        Ok(Instance {
            id: id.clone(),
            instance_type: inst.instance_type.clone(),
            zone: inst.zone.clone(),
            vpc_id: inst.vpc.clone(),
            subnet_id: inst.subnet.clone(),
            primary_ip: inst.primary_ip,
            enis,
        })
    }

    pub fn instance_type_limits(
        &self,
        t: &InstanceType,
    ) -> OpResult<providers::model::InstanceTypeLimits> {
        match self.type_info(t) {
            Some(info) => Ok(instance_types::limits(info)),
            None => fail(
                Fail::InstanceTypeNotFound,
                format!("instance type {t} is not offered"),
            ),
        }
    }

    fn type_info(&self, t: &InstanceType) -> Option<&'static instance_types::TypeInfo> {
        let want = match self.flavor {
            Flavor::Alibaba => instance_types::TypeCloud::Alibaba,
            Flavor::Aws => instance_types::TypeCloud::Aws,
        };
        instance_types::lookup(t.as_str()).filter(|i| i.cloud == want)
    }

    // ---- subnets ---------------------------------------------------------

    /// The given subnets (every subnet when `ids` is empty, as both clouds'
    /// describe calls do without a filter); unknown ids are left out.
    pub fn describe_subnets(&self, ids: &[SubnetId]) -> Vec<Subnet> {
        self.subnets
            .iter()
            .filter(|(id, _)| ids.is_empty() || ids.contains(id))
            .map(|(id, s)| Subnet {
                id: id.clone(),
                vpc_id: s.vpc.clone(),
                zone: s.zone.clone(),
                cidr: s.pool.cidr,
                free_ips: s.pool.free(),
                gateway: self.flavor.gateway(&s.pool.cidr),
            })
            .collect()
    }

    // ---- ENIs ------------------------------------------------------------

    pub fn create_eni(&mut self, req: &CreateEniRequest, now: Instant) -> OpResult<Eni> {
        if let Some((first, eni)) = self.create_tokens.get(&req.idempotency_token) {
            if first != req {
                return fail(
                    Fail::IdempotentMismatch,
                    format!(
                        "token {} was used with different parameters",
                        req.idempotency_token
                    ),
                );
            }
            // Same token, same request: the ENI it made, as it is now.
            return Ok(self
                .enis
                .get(&eni.id)
                .map(|s| s.eni.clone())
                .unwrap_or_else(|| eni.clone()));
        }
        let Some(subnet) = self.subnets.get(&req.subnet_id) else {
            return fail(
                Fail::SubnetNotFound,
                format!("vSwitch {} does not exist", req.subnet_id),
            );
        };
        let (vpc, zone) = (subnet.vpc.clone(), subnet.zone.clone());
        if self.flavor == Flavor::Alibaba && req.security_groups.is_empty() {
            return fail(
                Fail::MissingSecurityGroup,
                "SecurityGroupId is mandatory for this request",
            );
        }
        for sg in &req.security_groups {
            match self.security_groups.get(sg) {
                None => {
                    return fail(
                        Fail::SecurityGroupNotFound,
                        format!("security group {sg} does not exist"),
                    )
                }
                Some(v) if *v != vpc => {
                    return fail(
                        Fail::Mismatch,
                        format!("security group {sg} is not in VPC {vpc}"),
                    )
                }
                Some(_) => {}
            }
        }
        let Some(subnet) = self.subnets.get_mut(&req.subnet_id) else {
            return fail(
                Fail::SubnetNotFound,
                format!("vSwitch {} does not exist", req.subnet_id),
            );
        };
        let Some(mut ips) = subnet.pool.allocate(1 + req.secondary_ip_count) else {
            return fail(
                Fail::SubnetExhausted,
                format!(
                    "vSwitch {} has {} free addresses, {} needed",
                    req.subnet_id,
                    subnet.pool.free(),
                    1 + req.secondary_ip_count
                ),
            );
        };
        let primary_ip = ips.remove(0);
        let (id, mac) = self.next_eni_id();
        let eni = Eni {
            id: id.clone(),
            mac,
            status: EniStatus::Available,
            subnet_id: req.subnet_id.clone(),
            vpc_id: vpc,
            zone,
            primary_ip,
            secondary_ips: ips,
            instance_id: None,
            device_index: None,
            security_groups: req.security_groups.clone(),
            tags: req.tags.clone(),
            description: req.description.clone(),
            created_at: Some(self.wall(now)),
        };
        self.enis.insert(
            id,
            EniState {
                eni: eni.clone(),
                created: now,
                primary: false,
                settle: None,
            },
        );
        self.create_tokens
            .insert(req.idempotency_token.clone(), (req.clone(), eni.clone()));
        Ok(eni)
    }

    /// ENIs of `instance` in `Attaching` or `Detaching` (settled first by
    /// every operation).
    pub fn eni_ops_in_flight(&self, instance: &InstanceId) -> u32 {
        self.enis
            .values()
            .filter(|s| s.eni.instance_id.as_ref() == Some(instance))
            .filter(|s| matches!(s.eni.status, EniStatus::Attaching | EniStatus::Detaching))
            .count() as u32
    }

    /// Refuse one more ENI operation on a busy instance, before any effect.
    fn admit_eni_op(&mut self, instance: &InstanceId, op: &str) -> OpResult<()> {
        let limit = self.delays.eni_ops_per_instance;
        let in_flight = self.eni_ops_in_flight(instance);
        if limit > 0 && in_flight >= limit {
            self.eni_ops_refused_busy += 1;
            return fail(
                Fail::InstanceBusy,
                format!(
                    "instance {instance} has {in_flight} ENI operations in progress, at most {limit}: {op} refused, retry later"
                ),
            );
        }
        Ok(())
    }

    /// Note the operations in flight on `instance` after one more started.
    fn note_eni_ops(&mut self, instance: &InstanceId) {
        let now = self.eni_ops_in_flight(instance);
        let max = self
            .max_eni_ops_in_flight
            .entry(instance.clone())
            .or_default();
        *max = (*max).max(now);
    }

    pub fn attach_eni(
        &mut self,
        eni_id: &EniId,
        instance: &InstanceId,
        now: Instant,
    ) -> OpResult<()> {
        let Some(inst) = self.instances.get(instance) else {
            return fail(
                Fail::InstanceNotFound,
                format!("instance {instance} does not exist"),
            );
        };
        let Some(info) = self.type_info(&inst.instance_type) else {
            return fail(
                Fail::InstanceTypeNotFound,
                format!("instance type {} unknown", inst.instance_type),
            );
        };
        let Some(st) = self.enis.get(eni_id) else {
            return fail(Fail::EniNotFound, format!("ENI {eni_id} does not exist"));
        };
        if st.eni.status != EniStatus::Available {
            return fail(
                Fail::EniNotAvailable,
                format!(
                    "ENI {eni_id} is {:?}, attach needs Available",
                    st.eni.status
                ),
            );
        }
        if st.eni.zone != inst.zone || st.eni.vpc_id != inst.vpc {
            return fail(
                Fail::Mismatch,
                format!(
                    "ENI {eni_id} ({}, {}) and instance {instance} ({}, {}) differ in zone or VPC",
                    st.eni.zone, st.eni.vpc_id, inst.zone, inst.vpc
                ),
            );
        }
        if st.eni.secondary_ips.len() as u32 + 1 > info.ipv4_per_eni {
            return fail(
                Fail::IpsPerEni,
                format!(
                    "ENI {eni_id} carries {} addresses, {} allows {} per ENI",
                    st.eni.secondary_ips.len() + 1,
                    info.name,
                    info.ipv4_per_eni
                ),
            );
        }
        let used: Vec<u32> = self
            .enis
            .values()
            .filter(|s| s.eni.instance_id.as_ref() == Some(instance))
            .filter_map(|s| s.eni.device_index)
            .collect();
        if used.len() as u32 >= info.max_enis {
            return fail(
                Fail::EnisPerInstance,
                format!(
                    "instance {instance} ({}) has {} of {} ENIs",
                    info.name,
                    used.len(),
                    info.max_enis
                ),
            );
        }
        self.admit_eni_op(instance, "attach")?;
        let index = (1..).find(|i| !used.contains(i)).unwrap_or(1);
        let delay = self.delays.attach;
        if let Some(st) = self.enis.get_mut(eni_id) {
            st.eni.instance_id = Some(instance.clone());
            st.eni.device_index = Some(index);
            if delay.is_zero() {
                st.eni.status = EniStatus::InUse;
            } else {
                st.eni.status = EniStatus::Attaching;
                st.settle = Some((now + delay, EniStatus::InUse));
            }
        }
        self.note_eni_ops(instance);
        Ok(())
    }

    pub fn detach_eni(
        &mut self,
        eni_id: &EniId,
        instance: &InstanceId,
        now: Instant,
    ) -> OpResult<()> {
        let delay = self.delays.detach;
        let Some(st) = self.enis.get_mut(eni_id) else {
            return Ok(()); // gone counts as done
        };
        if st.primary {
            return fail(
                Fail::PrimaryEni,
                format!("ENI {eni_id} is the primary ENI of its instance"),
            );
        }
        if st.eni.status == EniStatus::Available {
            return Ok(()); // already detached
        }
        if st.eni.instance_id.as_ref() != Some(instance) {
            return fail(
                Fail::EniNotAttachedHere,
                format!("ENI {eni_id} is not attached to instance {instance}"),
            );
        }
        if st.eni.status != EniStatus::InUse {
            return fail(
                Fail::EniBusy,
                format!("ENI {eni_id} is {:?}, detach needs InUse", st.eni.status),
            );
        }
        self.admit_eni_op(instance, "detach")?;
        let Some(st) = self.enis.get_mut(eni_id) else {
            return Ok(());
        };
        if delay.is_zero() {
            st.eni.status = EniStatus::Available;
            st.eni.instance_id = None;
            st.eni.device_index = None;
        } else {
            st.eni.status = EniStatus::Detaching;
            st.settle = Some((now + delay, EniStatus::Available));
        }
        self.note_eni_ops(instance);
        Ok(())
    }

    pub fn delete_eni(&mut self, eni_id: &EniId) -> OpResult<()> {
        let Some(st) = self.enis.get(eni_id) else {
            return Ok(());
        };
        if st.primary {
            return fail(
                Fail::PrimaryEni,
                format!("ENI {eni_id} is the primary ENI of its instance"),
            );
        }
        if st.eni.status != EniStatus::Available {
            return fail(
                Fail::EniNotAvailable,
                format!(
                    "ENI {eni_id} is {:?}, delete needs Available",
                    st.eni.status
                ),
            );
        }
        self.drop_eni(eni_id);
        Ok(())
    }

    pub fn describe_enis(&self, filter: &EniFilter) -> Vec<Eni> {
        self.enis
            .values()
            .map(|s| &s.eni)
            .filter(|e| Self::matches(e, filter))
            .cloned()
            .collect()
    }

    /// What a caller of the API sees at `now`: a listing by tag (no ids
    /// given) leaves out ENIs created less than `tag_listing_lag` ago, as
    /// EC2's eventually consistent listings do; a lookup by id sees them.
    pub fn describe_enis_at(&self, filter: &EniFilter, now: Instant) -> Vec<Eni> {
        let lag = self.delays.tag_listing_lag;
        let by_tag = filter.eni_ids.is_empty() && !filter.tags.is_empty();
        // By id: look the ENIs up instead of walking them all.
        let by_id: Box<dyn Iterator<Item = &EniState>> = if filter.eni_ids.is_empty() {
            Box::new(self.enis.values())
        } else {
            let ids: BTreeSet<&EniId> = filter.eni_ids.iter().collect();
            Box::new(ids.into_iter().filter_map(|id| self.enis.get(id)))
        };
        by_id
            .filter(|s| !by_tag || lag.is_zero() || now.saturating_duration_since(s.created) >= lag)
            .map(|s| &s.eni)
            .filter(|e| Self::matches(e, filter))
            .cloned()
            .collect()
    }

    fn matches(e: &Eni, filter: &EniFilter) -> bool {
        (filter.eni_ids.is_empty() || filter.eni_ids.contains(&e.id))
            && filter.tags.iter().all(|(k, v)| e.tags.get(k) == Some(v))
            && (filter.instance_id.is_none() || e.instance_id == filter.instance_id)
            && filter.status.is_none_or(|s| e.status == s)
            && filter.vpc_id.as_ref().is_none_or(|v| &e.vpc_id == v)
    }

    pub fn assign_private_ips(
        &mut self,
        eni_id: &EniId,
        count: u32,
        token: &IdempotencyToken,
    ) -> OpResult<Vec<Ipv4Addr>> {
        if self.flavor == Flavor::Alibaba {
            if let Some((e, c, ips)) = self.assign_tokens.get(token) {
                if e == eni_id && *c == count {
                    return Ok(ips.clone());
                }
                return fail(
                    Fail::IdempotentMismatch,
                    format!("token {token} was used with different parameters"),
                );
            }
        }
        if count == 0 {
            return fail(
                Fail::InvalidRequest,
                "SecondaryPrivateIpAddressCount must be at least 1",
            );
        }
        let per_call = self.flavor.capabilities().max_ips_per_assign;
        if count > per_call {
            return fail(
                Fail::IpsPerCall,
                format!("{count} addresses in one call, at most {per_call}"),
            );
        }
        let Some(st) = self.enis.get(eni_id) else {
            return fail(Fail::EniNotFound, format!("ENI {eni_id} does not exist"));
        };
        if !matches!(st.eni.status, EniStatus::Available | EniStatus::InUse) {
            return fail(
                Fail::EniBusy,
                format!("ENI {eni_id} is {:?}", st.eni.status),
            );
        }
        // The per-ENI limit comes from the type of the instance it is on; an
        // unattached ENI is checked when it is attached.
        let limit = st
            .eni
            .instance_id
            .as_ref()
            .and_then(|i| self.instances.get(i))
            .and_then(|i| self.type_info(&i.instance_type));
        let have = st.eni.secondary_ips.len() as u32;
        if let Some(info) = limit {
            let max_secondary = info.ipv4_per_eni.saturating_sub(1);
            if have + count > max_secondary {
                return fail(
                    Fail::IpsPerEni,
                    format!(
                        "ENI {eni_id} has {have} secondary addresses, {} allows {max_secondary}",
                        info.name
                    ),
                );
            }
        }
        let subnet_id = st.eni.subnet_id.clone();
        let Some(subnet) = self.subnets.get_mut(&subnet_id) else {
            return fail(
                Fail::SubnetNotFound,
                format!("vSwitch {subnet_id} does not exist"),
            );
        };
        let Some(ips) = subnet.pool.allocate(count) else {
            return fail(
                Fail::SubnetExhausted,
                format!(
                    "vSwitch {subnet_id} has {} free addresses, {count} needed",
                    subnet.pool.free()
                ),
            );
        };
        if let Some(st) = self.enis.get_mut(eni_id) {
            st.eni.secondary_ips.extend(ips.iter().copied());
        }
        if self.flavor == Flavor::Alibaba {
            self.assign_tokens
                .insert(token.clone(), (eni_id.clone(), count, ips.clone()));
        }
        Ok(ips)
    }

    pub fn unassign_private_ips(&mut self, eni_id: &EniId, ips: &[Ipv4Addr]) -> OpResult<()> {
        let Some(st) = self.enis.get_mut(eni_id) else {
            return Ok(());
        };
        if ips.contains(&st.eni.primary_ip) {
            return fail(
                Fail::PrimaryIp,
                format!("{} is the primary address of {eni_id}", st.eni.primary_ip),
            );
        }
        if !matches!(st.eni.status, EniStatus::Available | EniStatus::InUse) {
            return fail(
                Fail::EniBusy,
                format!("ENI {eni_id} is {:?}", st.eni.status),
            );
        }
        let mut released = Vec::new();
        st.eni.secondary_ips.retain(|ip| {
            let drop = ips.contains(ip);
            if drop {
                released.push(*ip);
            }
            !drop
        });
        let subnet_id = st.eni.subnet_id.clone();
        if let Some(subnet) = self.subnets.get_mut(&subnet_id) {
            for ip in released {
                subnet.pool.release(ip);
            }
        }
        Ok(())
    }
}
