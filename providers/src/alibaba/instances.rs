//! Instances (with their ENIs' device indexes), instance-type limits
//! (cached) and subnets (vSwitches): the ECS `DescribeInstances` and
//! `DescribeInstanceTypes` calls and the VPC `DescribeVSwitches` call.

use super::api::{self, Api};
use super::client::{param, Product, MAX_PAGES};
use super::wire::{self, DescribeInstanceTypesResponse, DescribeInstancesResponse};
use super::AlibabaCloud;
use crate::error::{CloudError, CloudResult, ErrorKind};
use crate::model::{AttachedEni, EniFilter, Instance, InstanceTypeLimits, Subnet};
use ipam::ids::{EniId, InstanceId, InstanceType, SubnetId, VpcId, ZoneId};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// `InstanceIds` takes at most 100 ids per call (and a page holds 100).
const MAX_INSTANCE_IDS_PER_CALL: usize = 100;

/// A type the cloud did not know is asked for again at most this often.
const UNKNOWN_TYPE_RETRY: Duration = Duration::from_secs(60);

/// Instance-type limits seen so far, and when each unknown type was last
/// looked up.
#[derive(Default)]
pub(super) struct TypeCache {
    known: HashMap<InstanceType, InstanceTypeLimits>,
    missed_at: HashMap<InstanceType, Instant>,
}

fn not_found(api: &str, code: &str, message: String) -> CloudError {
    CloudError::new(ErrorKind::NotFound, api, code, message)
}

impl AlibabaCloud {
    pub(super) async fn describe_instance_impl(&self, id: &InstanceId) -> CloudResult<Instance> {
        const API: Api = api::DESCRIBE_INSTANCES;
        // `InstanceIds` is a JSON array in a string.
        let ids = serde_json::to_string(&[id.as_str()]).unwrap_or_default();
        let answer: DescribeInstancesResponse = self
            .client
            .call(Product::Ecs, API, vec![param("InstanceIds", ids)], None)
            .await?;
        let found = answer
            .instances
            .instance
            .into_iter()
            .find(|i| i.instance_id == id.as_str())
            .ok_or_else(|| {
                not_found(
                    API.name(),
                    "InvalidInstanceId.NotFound",
                    format!("instance {id} does not exist"),
                )
            })?;

        // DescribeInstances has no device indexes; the instance's ENIs do.
        let enis = self
            .describe_enis_impl(&EniFilter {
                instance_id: Some(id.clone()),
                ..EniFilter::default()
            })
            .await?;
        let attached = if enis.is_empty() {
            found
                .network_interfaces
                .network_interface
                .iter()
                .map(|n| {
                    (
                        EniId::new(n.network_interface_id.clone()),
                        n.kind.eq_ignore_ascii_case("Primary"),
                        None,
                        None,
                    )
                })
                .collect()
        } else {
            enis.iter()
                .map(|e| {
                    let primary = e.device_index == Some(0);
                    (e.id.clone(), primary, e.device_index, e.created_at)
                })
                .collect()
        };
        instance(API, found, attached)
    }

    /// Up to 100 instances per `DescribeInstances`; the ENIs each answer
    /// lists (id and type) are their attached ENIs, with no second call.
    pub(super) async fn describe_instances_impl(
        &self,
        ids: &[InstanceId],
    ) -> CloudResult<Vec<Instance>> {
        const API: Api = api::DESCRIBE_INSTANCES;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_INSTANCE_IDS_PER_CALL) {
            let list: Vec<&str> = chunk.iter().map(|i| i.as_str()).collect();
            let answer: DescribeInstancesResponse = self
                .client
                .call(
                    Product::Ecs,
                    API,
                    vec![
                        param(
                            "InstanceIds",
                            serde_json::to_string(&list).unwrap_or_default(),
                        ),
                        param("PageSize", MAX_INSTANCE_IDS_PER_CALL),
                    ],
                    None,
                )
                .await?;
            for found in answer.instances.instance {
                if !chunk.iter().any(|i| i.as_str() == found.instance_id) {
                    continue;
                }
                let attached = found
                    .network_interfaces
                    .network_interface
                    .iter()
                    .map(|n| {
                        (
                            EniId::new(n.network_interface_id.clone()),
                            n.kind.eq_ignore_ascii_case("Primary"),
                            None,
                            None,
                        )
                    })
                    .collect();
                out.push(instance(API, found, attached)?);
            }
        }
        Ok(out)
    }

    pub(super) async fn instance_type_limits_impl(
        &self,
        instance_type: &InstanceType,
    ) -> CloudResult<InstanceTypeLimits> {
        const API: Api = api::DESCRIBE_INSTANCE_TYPES;
        // Held across the lookup so concurrent callers for a new type wait
        // for one call instead of each sending their own.
        let mut cache = self.types.lock().await;
        if let Some(limits) = cache.known.get(instance_type) {
            return Ok(limits.clone());
        }
        if let Some(at) = cache.missed_at.get(instance_type) {
            if at.elapsed() < UNKNOWN_TYPE_RETRY {
                return Err(not_found(
                    API.name(),
                    "InvalidInstanceType.NotFound",
                    format!(
                        "instance type {instance_type} is unknown (asked less than a minute ago)"
                    ),
                ));
            }
        }
        let mut next_token = String::new();
        for _ in 0..MAX_PAGES {
            let mut params = vec![param("InstanceTypes.1", instance_type)];
            if !next_token.is_empty() {
                params.push(param("NextToken", &next_token));
            }
            let answer: DescribeInstanceTypesResponse =
                self.client.call(Product::Ecs, API, params, None).await?;
            for t in answer.instance_types.instance_type {
                let (Some(max_enis), Some(ipv4_per_eni)) =
                    (t.eni_quantity, t.eni_private_ip_address_quantity)
                else {
                    tracing::warn!(instance_type = %t.instance_type_id, "instance type without ENI limits ignored");
                    continue;
                };
                let id = InstanceType::new(t.instance_type_id);
                cache.known.insert(
                    id.clone(),
                    InstanceTypeLimits {
                        instance_type: id,
                        max_enis,
                        ipv4_per_eni,
                    },
                );
            }
            if answer.next_token.is_empty() || answer.next_token == next_token {
                break;
            }
            next_token = answer.next_token;
        }
        match cache.known.get(instance_type).cloned() {
            Some(limits) => {
                cache.missed_at.remove(instance_type);
                Ok(limits)
            }
            None => {
                cache
                    .missed_at
                    .insert(instance_type.clone(), Instant::now());
                Err(not_found(
                    API.name(),
                    "InvalidInstanceType.NotFound",
                    format!("instance type {instance_type} is unknown"),
                ))
            }
        }
    }

    pub(super) async fn describe_subnets_impl(&self, ids: &[SubnetId]) -> CloudResult<Vec<Subnet>> {
        const API: Api = api::DESCRIBE_VSWITCHES;
        let mut subnets = Vec::with_capacity(ids.len());
        // `VSwitchId` filters on one vSwitch per call.
        for id in ids {
            let answer: Result<wire::DescribeVSwitchesResponse, _> = self
                .client
                .call(Product::Vpc, API, vec![param("VSwitchId", id)], None)
                .await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for v in answer.v_switches.v_switch {
                if v.v_switch_id == id.as_str() {
                    subnets.push(v.to_subnet(API.name())?);
                }
            }
        }
        Ok(subnets)
    }
}

/// An instance's ENI before numbering: id, primary, reported index, creation.
type Unnumbered = (
    EniId,
    bool,
    Option<u32>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// Device indexes for an instance's ENIs. The primary is 0; an index the
/// cloud reported is kept; ENIs without one (older answers have no
/// `Attachment`) get the lowest free indexes in order of creation.
/// The model of one `DescribeInstances` entry with its attached ENIs.
fn instance(
    api: Api,
    found: wire::EcsInstance,
    attached: Vec<Unnumbered>,
) -> CloudResult<Instance> {
    let id = InstanceId::new(found.instance_id.clone());
    let primary_ip = match found.vpc_attributes.private_ip_address.ip_address.first() {
        Some(ip) => wire::parse_ip(api.name(), "VpcAttributes.PrivateIpAddress", ip)?,
        None => {
            let primary = found
                .network_interfaces
                .network_interface
                .iter()
                .find(|n| n.kind.eq_ignore_ascii_case("Primary"))
                .ok_or_else(|| {
                    CloudError::new(
                        ErrorKind::InvalidRequest,
                        api,
                        "UnparsableResponse",
                        format!("instance {id} has no primary address"),
                    )
                })?;
            wire::parse_ip(api.name(), "PrimaryIpAddress", &primary.primary_ip_address)?
        }
    };
    Ok(Instance {
        id,
        instance_type: InstanceType::new(found.instance_type),
        zone: ZoneId::new(found.zone_id),
        vpc_id: VpcId::new(found.vpc_attributes.vpc_id),
        subnet_id: SubnetId::new(found.vpc_attributes.v_switch_id),
        primary_ip,
        enis: number_devices(attached),
    })
}

fn number_devices(enis: Vec<Unnumbered>) -> Vec<AttachedEni> {
    let mut used: Vec<u32> = enis
        .iter()
        .filter_map(|(_, primary, index, _)| if *primary { Some(0) } else { *index })
        .collect();
    let mut unnumbered: Vec<_> = enis
        .iter()
        .filter(|(_, primary, index, _)| !*primary && index.is_none())
        .collect();
    unnumbered.sort_by(|a, b| (a.3, &a.0).cmp(&(b.3, &b.0)));
    let mut assigned: HashMap<EniId, u32> = HashMap::new();
    for (id, ..) in unnumbered {
        let next = (1..).find(|i| !used.contains(i)).unwrap_or(u32::MAX);
        used.push(next);
        assigned.insert(id.clone(), next);
    }
    let mut out: Vec<AttachedEni> = enis
        .iter()
        .map(|(id, primary, index, _)| AttachedEni {
            eni_id: id.clone(),
            device_index: if *primary {
                0
            } else {
                index
                    .or_else(|| assigned.get(id).copied())
                    .unwrap_or(u32::MAX)
            },
            primary: *primary,
        })
        .collect();
    out.sort_by_key(|a| a.device_index);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbering_keeps_known_and_fills_gaps() {
        let t = |s: &str| Some(s.parse::<chrono::DateTime<chrono::Utc>>().unwrap());
        let enis = vec![
            (
                EniId::new("eni-late"),
                false,
                None,
                t("2026-01-02T00:00:00Z"),
            ),
            (EniId::new("eni-p"), true, None, None),
            (EniId::new("eni-two"), false, Some(2), None),
            (
                EniId::new("eni-early"),
                false,
                None,
                t("2026-01-01T00:00:00Z"),
            ),
        ];
        let numbered: Vec<(String, u32, bool)> = number_devices(enis)
            .into_iter()
            .map(|a| (a.eni_id.to_string(), a.device_index, a.primary))
            .collect();
        assert_eq!(
            numbered,
            vec![
                ("eni-p".into(), 0, true),
                ("eni-early".into(), 1, false),
                ("eni-two".into(), 2, false),
                ("eni-late".into(), 3, false),
            ]
        );
    }
}
