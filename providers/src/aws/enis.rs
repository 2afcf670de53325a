//! ENIs and their secondary IPs: create, attach, detach, delete, describe,
//! assign, unassign, with the limit and subnet-space checks made before any
//! mutating call.

use super::api::{self, Api};
use super::errors::{malformed, refused};
use super::{cluster_tag, wire, AwsCloud, CREATED_AT_TAG};
use crate::error::{CloudError, CloudResult, ErrorKind, LimitKind};
use crate::model::{CreateEniRequest, Eni, EniFilter, EniStatus};
use crate::wait::{wait_eni_status, PollPolicy};
use aws_sdk_ec2::types::{
    Filter, NetworkInterface, NetworkInterfaceAttachmentChanges, ResourceType, Tag,
    TagSpecification,
};
use ipam::ids::{EniId, IdempotencyToken, InstanceId};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Most secondary IPs one AssignPrivateIpAddresses call carries. EC2
/// documents no per-call cap; its per-ENI cap is at most 50 IPv4 addresses
/// (the largest instance types), so one call can always fill an ENI.
pub const MAX_IPS_PER_ASSIGN: u32 = 50;

/// How long `create_eni` waits for a `pending` ENI to become available.
const CREATE_SETTLE: PollPolicy = PollPolicy {
    interval: Duration::from_secs(1),
    timeout: Duration::from_secs(60),
};

/// Most values one EC2 filter takes.
const MAX_FILTER_VALUES: usize = 200;

fn filter(name: &str, values: impl IntoIterator<Item = String>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().collect()))
        .build()
}

impl AwsCloud {
    /// The raw EC2 view of one ENI (`None` if it does not exist): attachment
    /// id and delete-on-termination are not part of the model.
    async fn network_interface(&self, eni: &EniId) -> CloudResult<Option<NetworkInterface>> {
        const API: Api = api::DESCRIBE_NETWORK_INTERFACES;
        // A filter, not `NetworkInterfaceIds`: an unknown id is an empty
        // answer instead of an error.
        let f = filter("network-interface-id", [eni.to_string()]);
        let out = self
            .send(API, None, |c, _| {
                c.describe_network_interfaces().filters(f.clone()).send()
            })
            .await?;
        Ok(out
            .network_interfaces()
            .iter()
            .find(|n| n.network_interface_id() == Some(eni.as_str()))
            .cloned())
    }

    fn is_ours(&self, ni: &NetworkInterface) -> bool {
        let (key, value) = cluster_tag(&self.cluster_id);
        ni.tag_set()
            .iter()
            .any(|t| t.key() == Some(key.as_str()) && t.value() == Some(value.as_str()))
    }

    pub(super) async fn do_create_eni(&self, request: &CreateEniRequest) -> CloudResult<Eni> {
        const API: Api = api::CREATE_NETWORK_INTERFACE;
        let needed = request.secondary_ip_count.saturating_add(1);
        let free = self.subnet_free_ips(API.name(), &request.subnet_id).await?;
        if free < needed {
            return Err(refused(
                ErrorKind::SubnetExhausted,
                API.name(),
                "InsufficientFreeAddressesInSubnet",
                format!(
                    "subnet {} has {free} free addresses, the ENI needs {needed} (checked before creating)",
                    request.subnet_id
                ),
            ));
        }
        let secondary = i32::try_from(request.secondary_ip_count).map_err(|_| {
            refused(
                ErrorKind::InvalidRequest,
                API.name(),
                "InvalidParameterValue",
                "secondary IP count out of range",
            )
        })?;
        let mut tags = request.tags.clone();
        let (key, value) = cluster_tag(&self.cluster_id);
        tags.insert(key, value);
        tags.entry(CREATED_AT_TAG.to_owned()).or_insert_with(|| {
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
        let spec = TagSpecification::builder()
            .resource_type(ResourceType::NetworkInterface)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build();
        let token = &request.idempotency_token;
        let out = self
            .send(API, Some(token), |c, attempt| {
                let mut call = c
                    .create_network_interface()
                    .subnet_id(request.subnet_id.as_str())
                    .set_groups(Some(
                        request
                            .security_groups
                            .iter()
                            .map(|g| g.to_string())
                            .collect(),
                    ))
                    .description(request.description.clone())
                    .tag_specifications(spec.clone())
                    // EC2 returns the first ENI again for a repeated token.
                    .client_token(attempt.token.as_str());
                if secondary > 0 {
                    call = call.secondary_private_ip_address_count(secondary);
                }
                call.send()
            })
            .await?;
        let ni = out
            .network_interface()
            .ok_or_else(|| malformed(API.name(), "no NetworkInterface in the answer"))?;
        let eni = wire::eni(API.name(), ni)?;
        tracing::info!(eni = %eni.id, subnet = %eni.subnet_id, secondary = request.secondary_ip_count, "created ENI");
        if eni.status == EniStatus::Creating {
            return wait_eni_status(self, &eni.id, EniStatus::Available, CREATE_SETTLE).await;
        }
        Ok(eni)
    }

    pub(super) async fn do_attach_eni(
        &self,
        eni: &EniId,
        instance: &InstanceId,
    ) -> CloudResult<()> {
        const API: Api = api::ATTACH_NETWORK_INTERFACE;
        let mut stale_reads = 0;
        let slot = loop {
            // Read the instance's interfaces and pick a free index against
            // what was read: an attach that finished while we read may not
            // be in the answer, so such a read is done again.
            let read = self.begin_index_read(instance);
            let current = self.do_describe_instance(instance).await?;
            if current.enis.iter().any(|e| &e.eni_id == eni) {
                // Attached by an earlier try that did not see its answer:
                // finish the job (delete-on-termination) instead of failing.
                if let Some(ni) = self.network_interface(eni).await? {
                    if let Some(att) = ni.attachment() {
                        if att.delete_on_termination() != Some(true) {
                            if let Some(id) = att.attachment_id() {
                                self.delete_on_termination(eni, id).await?;
                            }
                        }
                    }
                }
                return Ok(());
            }
            let limits = self.do_instance_type_limits(&current.instance_type).await?;
            let used: HashSet<u32> = current.enis.iter().map(|e| e.device_index).collect();
            match read.reserve(&used, limits.max_enis) {
                Reservation::Slot(slot) => break slot,
                Reservation::Full => {
                    let attached = u32::try_from(current.enis.len()).unwrap_or(u32::MAX);
                    return Err(refused(
                        ErrorKind::LimitExceeded {
                            what: LimitKind::EnisPerInstance,
                        },
                        API.name(),
                        "AttachmentLimitExceeded",
                        format!(
                            "{instance} ({}) already has {attached} of {} network interfaces, the rest being attached (checked before attaching)",
                            current.instance_type, limits.max_enis
                        ),
                    ));
                }
                Reservation::Stale if stale_reads < MAX_STALE_READS => stale_reads += 1,
                Reservation::Stale => {
                    return Err(refused(
                        ErrorKind::Conflict,
                        API.name(),
                        "DeviceIndexBusy",
                        format!(
                            "{instance}: other attaches kept finishing while its interfaces were read ({} reads); try again",
                            MAX_STALE_READS + 1
                        ),
                    ))
                }
            }
        };
        let index = slot.index;
        let device_index = i32::try_from(index)
            .map_err(|_| malformed(API.name(), format!("device index {index} out of range")))?;
        let out = self
            .send(API, None, |c, _| {
                c.attach_network_interface()
                    .network_interface_id(eni.as_str())
                    .instance_id(instance.as_str())
                    .device_index(device_index)
                    .send()
            })
            .await?;
        drop(slot);
        let attachment_id = out
            .attachment_id()
            .ok_or_else(|| malformed(API.name(), "no AttachmentId in the answer"))?;
        tracing::info!(eni = %eni, instance = %instance, device_index, "attached ENI");
        // Without this an ENI outlives its terminated instance and leaks.
        self.delete_on_termination(eni, attachment_id).await
    }

    /// Start reading `instance`'s interfaces for an attach: what the read
    /// returns is checked against the attaches that finished meanwhile.
    fn begin_index_read(&self, instance: &InstanceId) -> IndexRead<'_> {
        let mut attaching = self.attaching.lock();
        let state = attaching.entry(instance.clone()).or_default();
        state.readers += 1;
        IndexRead {
            cloud: self,
            instance: instance.clone(),
            finished_at_start: state.finished,
            done: false,
        }
    }

    async fn delete_on_termination(&self, eni: &EniId, attachment_id: &str) -> CloudResult<()> {
        let changes = NetworkInterfaceAttachmentChanges::builder()
            .attachment_id(attachment_id)
            .delete_on_termination(true)
            .build();
        self.send(api::MODIFY_NETWORK_INTERFACE_ATTRIBUTE, None, |c, _| {
            c.modify_network_interface_attribute()
                .network_interface_id(eni.as_str())
                .attachment(changes.clone())
                .send()
        })
        .await?;
        Ok(())
    }

    pub(super) async fn do_detach_eni(
        &self,
        eni: &EniId,
        instance: &InstanceId,
    ) -> CloudResult<()> {
        const API: Api = api::DETACH_NETWORK_INTERFACE;
        let Some(ni) = self.network_interface(eni).await? else {
            return Ok(());
        };
        let Some(att) = ni.attachment().filter(|a| a.instance_id().is_some()) else {
            return Ok(());
        };
        if att.instance_id() != Some(instance.as_str()) {
            return Err(refused(
                ErrorKind::InvalidRequest,
                API.name(),
                "AttachedElsewhere",
                format!(
                    "{eni} is attached to {}, not {instance}",
                    att.instance_id().unwrap_or_default()
                ),
            ));
        }
        if att.device_index() == Some(0) {
            return Err(refused(
                ErrorKind::InvalidRequest,
                API.name(),
                "OperationNotPermitted",
                format!("{eni} is the primary interface of {instance}"),
            ));
        }
        let attachment_id = att
            .attachment_id()
            .ok_or_else(|| malformed(API.name(), format!("{eni} attachment has no id")))?
            .to_owned();
        let result = self
            .send(API, None, |c, _| {
                c.detach_network_interface()
                    .attachment_id(attachment_id.clone())
                    .send()
            })
            .await;
        match result {
            Ok(_) => {
                tracing::info!(eni = %eni, instance = %instance, "detaching ENI");
                Ok(())
            }
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn do_delete_eni(&self, eni: &EniId) -> CloudResult<()> {
        const API: Api = api::DELETE_NETWORK_INTERFACE;
        let Some(ni) = self.network_interface(eni).await? else {
            return Ok(());
        };
        if !self.is_ours(&ni) {
            return Err(refused(
                ErrorKind::InvalidRequest,
                API.name(),
                "NotOwned",
                format!(
                    "{eni} lacks the tag {}{}={}: not deleting an ENI this cluster does not own",
                    super::CLUSTER_TAG_PREFIX,
                    self.cluster_id,
                    super::CLUSTER_TAG_VALUE
                ),
            ));
        }
        // Real EC2 refuses to delete an attached ENI; emulators do not, and
        // deleting one under a running pod would cut its network.
        if let Some(instance) = ni.attachment().and_then(|a| a.instance_id()) {
            return Err(refused(
                ErrorKind::Conflict,
                API.name(),
                "InvalidNetworkInterface.InUse",
                format!("{eni} is still attached to {instance}"),
            ));
        }
        let result = self
            .send(API, None, |c, _| {
                c.delete_network_interface()
                    .network_interface_id(eni.as_str())
                    .send()
            })
            .await;
        match result {
            Ok(_) => {
                tracing::info!(eni = %eni, "deleted ENI");
                Ok(())
            }
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn do_describe_enis(&self, f: &EniFilter) -> CloudResult<Vec<Eni>> {
        if f.eni_ids.len() > MAX_FILTER_VALUES {
            // EC2 refuses a filter with more values (FilterLimitExceeded).
            let mut enis = Vec::new();
            for ids in f.eni_ids.chunks(MAX_FILTER_VALUES) {
                let part = EniFilter {
                    eni_ids: ids.to_vec(),
                    ..f.clone()
                };
                enis.extend(Box::pin(self.do_describe_enis(&part)).await?);
            }
            return Ok(enis);
        }
        const API: Api = api::DESCRIBE_NETWORK_INTERFACES;
        let mut filters = Vec::new();
        if !f.eni_ids.is_empty() {
            filters.push(filter(
                "network-interface-id",
                f.eni_ids.iter().map(|i| i.to_string()),
            ));
        }
        for (key, value) in &f.tags {
            filters.push(filter(&format!("tag:{key}"), [value.clone()]));
        }
        if let Some(instance) = &f.instance_id {
            filters.push(filter("attachment.instance-id", [instance.to_string()]));
        }
        if let Some(status) = f.status {
            match wire::eni_status_filter(status) {
                Some(value) => filters.push(filter("status", [value.to_owned()])),
                // EC2 has no such state: nothing can match.
                None => return Ok(Vec::new()),
            }
        }
        if let Some(vpc) = &f.vpc_id {
            filters.push(filter("vpc-id", [vpc.to_string()]));
        }
        let filters = (!filters.is_empty()).then_some(filters);
        let mut enis = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .send(API, None, |c, _| {
                    c.describe_network_interfaces()
                        .set_filters(filters.clone())
                        .max_results(1000)
                        .set_next_token(next.clone())
                        .send()
                })
                .await?;
            for ni in out.network_interfaces() {
                let eni = wire::eni(API.name(), ni)?;
                // The attachment filter also matches interfaces mid-transition;
                // the model status is finer than EC2's, so re-check it here.
                if f.status.is_none_or(|s| s == eni.status) {
                    enis.push(eni);
                }
            }
            next = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
        Ok(enis)
    }

    pub(super) async fn do_assign_private_ips(
        &self,
        eni: &EniId,
        count: u32,
        token: &IdempotencyToken,
    ) -> CloudResult<Vec<Ipv4Addr>> {
        const API: Api = api::ASSIGN_PRIVATE_IP_ADDRESSES;
        if count == 0 {
            return Ok(Vec::new());
        }
        if count > MAX_IPS_PER_ASSIGN {
            return Err(refused(
                ErrorKind::LimitExceeded {
                    what: LimitKind::IpsPerCall,
                },
                API.name(),
                "InvalidParameterValue",
                format!("{count} IPs in one call, at most {MAX_IPS_PER_ASSIGN}"),
            ));
        }
        let Some(ni) = self.network_interface(eni).await? else {
            return Err(CloudError::new(
                ErrorKind::NotFound,
                API,
                "InvalidNetworkInterfaceID.NotFound",
                format!("ENI {eni} not found"),
            ));
        };
        let before = wire::eni(API.name(), &ni)?;
        let held = u32::try_from(before.secondary_ips.len() + 1).unwrap_or(u32::MAX);
        // The per-ENI limit belongs to the instance type, so it is only known
        // once the ENI is attached; EC2 checks an unattached ENI at attach.
        if let Some(instance) = &before.instance_id {
            let instance = self.do_describe_instance(instance).await?;
            let limits = self
                .do_instance_type_limits(&instance.instance_type)
                .await?;
            if held.saturating_add(count) > limits.ipv4_per_eni {
                return Err(refused(
                    ErrorKind::LimitExceeded {
                        what: LimitKind::IpsPerEni,
                    },
                    API.name(),
                    "PrivateIpAddressLimitExceeded",
                    format!(
                        "{eni} holds {held} of {} addresses allowed on {}; {count} more do not fit (checked before assigning)",
                        limits.ipv4_per_eni, instance.instance_type
                    ),
                ));
            }
        }
        let free = self.subnet_free_ips(API.name(), &before.subnet_id).await?;
        if free < count {
            return Err(refused(
                ErrorKind::SubnetExhausted,
                API.name(),
                "InsufficientFreeAddressesInSubnet",
                format!(
                    "subnet {} has {free} free addresses, {count} asked (checked before assigning)",
                    before.subnet_id
                ),
            ));
        }
        let requested = i32::try_from(count).unwrap_or(i32::MAX);
        let out = self
            .send(API, Some(token), |c, _| {
                c.assign_private_ip_addresses()
                    .network_interface_id(eni.as_str())
                    .secondary_private_ip_address_count(requested)
                    .send()
            })
            .await?;
        // EC2 answers with the new addresses; emulators answer with all of
        // them, primary included. The difference is right for both.
        let mut known: HashSet<Ipv4Addr> = before.secondary_ips.iter().copied().collect();
        known.insert(before.primary_ip);
        let mut added = Vec::new();
        for a in out.assigned_private_ip_addresses() {
            let Some(raw) = a.private_ip_address() else {
                continue;
            };
            let ip: Ipv4Addr = raw
                .parse()
                .map_err(|_| malformed(API.name(), format!("assigned address {raw:?}")))?;
            if known.insert(ip) {
                added.push(ip);
            }
        }
        tracing::info!(eni = %eni, asked = count, assigned = added.len(), "assigned private IPs");
        Ok(added)
    }

    pub(super) async fn do_unassign_private_ips(
        &self,
        eni: &EniId,
        ips: &[Ipv4Addr],
    ) -> CloudResult<()> {
        const API: Api = api::UNASSIGN_PRIVATE_IP_ADDRESSES;
        if ips.is_empty() {
            return Ok(());
        }
        let Some(ni) = self.network_interface(eni).await? else {
            return Ok(());
        };
        let current = wire::eni(API.name(), &ni)?;
        if ips.contains(&current.primary_ip) {
            return Err(refused(
                ErrorKind::InvalidRequest,
                API.name(),
                "InvalidParameterValue",
                format!("{} is the primary address of {eni}", current.primary_ip),
            ));
        }
        let held: HashSet<Ipv4Addr> = current.secondary_ips.iter().copied().collect();
        let still: Vec<String> = ips
            .iter()
            .filter(|ip| held.contains(ip))
            .map(|ip| ip.to_string())
            .collect();
        if still.is_empty() {
            return Ok(());
        }
        self.send(API, None, |c, _| {
            c.unassign_private_ip_addresses()
                .network_interface_id(eni.as_str())
                .set_private_ip_addresses(Some(still.clone()))
                .send()
        })
        .await?;
        tracing::info!(eni = %eni, count = still.len(), "unassigned private IPs");
        Ok(())
    }
}

/// Reads of an instance's interfaces answered this many times with
/// attaches finishing meanwhile end in a `Conflict` (retried later).
const MAX_STALE_READS: u32 = 4;

/// What one instance has going on for device-index picks: the indexes of
/// attaches in flight, how many attaches finished (so a read can tell it
/// may have missed one), and how many reads are open. The entry goes when
/// nothing is in flight and no read is open.
#[derive(Debug, Default)]
pub(super) struct InstanceAttaches {
    flying: HashSet<u32>,
    finished: u64,
    readers: usize,
}

impl InstanceAttaches {
    fn idle(&self) -> bool {
        self.flying.is_empty() && self.readers == 0
    }
}

/// An open read of an instance's interfaces (see
/// [`AwsCloud::begin_index_read`]).
struct IndexRead<'a> {
    cloud: &'a AwsCloud,
    instance: InstanceId,
    finished_at_start: u64,
    done: bool,
}

enum Reservation<'a> {
    Slot(IndexSlot<'a>),
    /// Attached and in-flight interfaces already fill the type's limit.
    Full,
    /// An attach finished during the read: read again.
    Stale,
}

impl<'a> IndexRead<'a> {
    /// The lowest device index neither attached (`used`, as read) nor taken
    /// by another attach in flight, held until the returned slot drops.
    fn reserve(mut self, used: &HashSet<u32>, max_enis: u32) -> Reservation<'a> {
        let mut attaching = self.cloud.attaching.lock();
        let state = attaching.entry(self.instance.clone()).or_default();
        state.readers = state.readers.saturating_sub(1);
        self.done = true;
        if state.finished != self.finished_at_start {
            if state.idle() {
                attaching.remove(&self.instance);
            }
            return Reservation::Stale;
        }
        let taken = used.len() + state.flying.iter().filter(|i| !used.contains(i)).count();
        let index = (1..).find(|i| !used.contains(i) && !state.flying.contains(i));
        let (true, Some(index)) = (u32::try_from(taken).unwrap_or(u32::MAX) < max_enis, index)
        else {
            if state.idle() {
                attaching.remove(&self.instance);
            }
            return Reservation::Full;
        };
        state.flying.insert(index);
        Reservation::Slot(IndexSlot {
            cloud: self.cloud,
            instance: self.instance.clone(),
            index,
        })
    }
}

impl Drop for IndexRead<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut attaching = self.cloud.attaching.lock();
        if let Some(state) = attaching.get_mut(&self.instance) {
            state.readers = state.readers.saturating_sub(1);
            if state.idle() {
                attaching.remove(&self.instance);
            }
        }
    }
}

/// A device index reserved for one attach in flight; freed on drop.
struct IndexSlot<'a> {
    cloud: &'a AwsCloud,
    instance: InstanceId,
    index: u32,
}

impl Drop for IndexSlot<'_> {
    fn drop(&mut self) {
        let mut attaching = self.cloud.attaching.lock();
        if let Some(state) = attaching.get_mut(&self.instance) {
            state.flying.remove(&self.index);
            // Whether or not it was attached: a read open now may be missing it.
            state.finished += 1;
            if state.idle() {
                attaching.remove(&self.instance);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsConfig;
    use aws_smithy_mocks::{mock_client, RuleMode};
    use ipam::ids::ClusterId;

    fn cloud() -> AwsCloud {
        let client: aws_sdk_ec2::Client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, &[]);
        AwsCloud::from_sdk_client(client, AwsConfig::new(ClusterId::from("c")))
    }

    fn slot_index(r: Reservation<'_>) -> u32 {
        match r {
            Reservation::Slot(s) => s.index,
            Reservation::Full => panic!("full"),
            Reservation::Stale => panic!("stale"),
        }
    }

    #[test]
    fn a_read_that_an_attach_finished_during_is_read_again_not_given_that_index() {
        let cloud = cloud();
        let i = InstanceId::from("i-1");
        let primary_only = HashSet::from([0]);
        // B starts reading; A reads, picks 1, attaches and finishes while
        // B's read is still open, so B's answer may lack A's interface.
        let b = cloud.begin_index_read(&i);
        let a = cloud.begin_index_read(&i).reserve(&primary_only, 4);
        assert_eq!(slot_index(a), 1);
        assert!(matches!(b.reserve(&primary_only, 4), Reservation::Stale));
        // B's next read sees A's interface and picks the next index.
        let again = cloud.begin_index_read(&i);
        assert_eq!(slot_index(again.reserve(&HashSet::from([0, 1]), 4)), 2);
        assert!(cloud.attaching.lock().is_empty(), "nothing left behind");
    }

    #[test]
    fn attaches_in_flight_take_distinct_indexes_and_count_against_the_limit() {
        let cloud = cloud();
        let i = InstanceId::from("i-1");
        let used = HashSet::from([0, 2]);
        let first = cloud.begin_index_read(&i).reserve(&used, 4);
        let Reservation::Slot(first) = first else {
            panic!("first attach refused")
        };
        assert_eq!(first.index, 1);
        let second = cloud.begin_index_read(&i).reserve(&used, 4);
        assert_eq!(slot_index(second), 3);
        // 0 and 2 attached, 1 in flight (3 was dropped): one left of 4.
        let third = cloud.begin_index_read(&i).reserve(&used, 4);
        let Reservation::Slot(third) = third else {
            panic!("third attach refused")
        };
        assert_eq!(third.index, 3);
        assert!(matches!(
            cloud.begin_index_read(&i).reserve(&used, 4),
            Reservation::Full
        ));
        drop((first, third));
        assert!(cloud.attaching.lock().is_empty(), "nothing left behind");
    }

    #[test]
    fn an_abandoned_read_leaves_nothing_behind() {
        let cloud = cloud();
        let i = InstanceId::from("i-1");
        drop(cloud.begin_index_read(&i));
        assert!(cloud.attaching.lock().is_empty());
    }
}
