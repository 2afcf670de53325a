//! ECS actions (Version 2014-05-26): instances, instance types, ENIs and
//! their private IPs, answered in ECS's JSON shapes.
//!
//! Each HTTP call makes exactly one call on the world (so the world's call
//! counts, rate limits and injected faults match what a client sent); reads
//! that need more than one lookup take the rest from the world's inspection
//! methods, which count nothing.

use super::actions::{alibaba_time, page, token_page, ActionResult};
use super::error::ApiError;
use super::params::Params;
use crate::cloud::instance_types::{self, TypeCloud};
use crate::cloud::{Flavor, World};
use ipam::ids::{
    EniId, IdempotencyToken, InstanceId, InstanceType, SecurityGroupId, SubnetId, VpcId,
};
use providers::model::{CreateEniRequest, Eni, EniFilter, EniStatus, Instance, Tags};
use providers::{Cloud, ErrorKind};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

fn status_name(s: EniStatus) -> &'static str {
    match s {
        EniStatus::Creating => "Creating",
        EniStatus::Available => "Available",
        EniStatus::Attaching => "Attaching",
        EniStatus::InUse => "InUse",
        EniStatus::Detaching => "Detaching",
        EniStatus::Deleting => "Deleting",
    }
}

fn parse_status(raw: &str) -> Result<EniStatus, ApiError> {
    Ok(match raw {
        "Creating" => EniStatus::Creating,
        "Available" => EniStatus::Available,
        "Attaching" => EniStatus::Attaching,
        "InUse" => EniStatus::InUse,
        "Detaching" => EniStatus::Detaching,
        "Deleting" => EniStatus::Deleting,
        _ => {
            return Err(ApiError::invalid(
                "Status",
                "unknown network interface status",
            ))
        }
    })
}

fn private_ip_sets(e: &Eni) -> Value {
    let mut set = vec![json!({"PrivateIpAddress": e.primary_ip.to_string(), "Primary": true})];
    set.extend(
        e.secondary_ips
            .iter()
            .map(|ip| json!({"PrivateIpAddress": ip.to_string(), "Primary": false})),
    );
    json!({ "PrivateIpSet": set })
}

fn tag_list(tags: &Tags) -> Value {
    let tags: Vec<Value> = tags
        .iter()
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect();
    json!({ "Tag": tags })
}

/// One `NetworkInterfaceSet` item (also the body of CreateNetworkInterface).
fn eni_json(e: &Eni, primary: bool) -> Value {
    let mut v = json!({
        "NetworkInterfaceId": e.id,
        "NetworkInterfaceName": "",
        "Status": status_name(e.status),
        "Type": if primary { "Primary" } else { "Secondary" },
        "VpcId": e.vpc_id,
        "VSwitchId": e.subnet_id,
        "ZoneId": e.zone,
        "PrivateIpAddress": e.primary_ip.to_string(),
        "MacAddress": e.mac,
        "Description": e.description,
        "InstanceId": e.instance_id.as_ref().map(|i| i.to_string()).unwrap_or_default(),
        "CreationTime": e.created_at.as_ref().map(alibaba_time).unwrap_or_default(),
        "ResourceGroupId": "",
        "ServiceManaged": false,
        "SecurityGroupIds": {"SecurityGroupId": e.security_groups},
        "PrivateIpSets": private_ip_sets(e),
        "Ipv6Sets": {"Ipv6Set": []},
        "Tags": tag_list(&e.tags),
    });
    if let (Some(instance), Some(obj)) = (&e.instance_id, v.as_object_mut()) {
        obj.insert(
            "Attachment".into(),
            json!({
                "InstanceId": instance,
                "DeviceIndex": e.device_index.unwrap_or(0),
                "TrunkNetworkInterfaceId": "",
            }),
        );
    }
    v
}

fn eni_exists(world: &World, id: &EniId) -> bool {
    world.has_eni(id)
}

fn eni_not_found(id: &EniId) -> ApiError {
    ApiError::new(
        404,
        "InvalidEniId.NotFound",
        format!("The specified NetworkInterfaceId {id} does not exist."),
    )
}

fn token_or_new(p: &Params) -> IdempotencyToken {
    // Without a ClientToken the call is simply not idempotent, as at Alibaba.
    IdempotencyToken::new(
        p.get("ClientToken")
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
    )
}

fn type_cloud(flavor: Flavor) -> TypeCloud {
    match flavor {
        Flavor::Alibaba => TypeCloud::Alibaba,
        Flavor::Aws => TypeCloud::Aws,
    }
}

/// `ecs.g6.xlarge` -> `ecs.g6`.
fn type_family(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(family, _)| family.to_owned())
        .unwrap_or_else(|| name.to_owned())
}

/// Run the one counted world call of a read; a `NotFound` from it only means
/// the probed object is absent, which the listing shows anyway.
fn probe_ok<T>(result: Result<T, providers::CloudError>) -> Result<(), ApiError> {
    match result {
        Ok(_) => Ok(()),
        Err(err) if err.kind == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err.into()),
    }
}

pub async fn describe_instances(world: &World, p: &Params) -> ActionResult {
    let ids: Vec<InstanceId> = match p.json_list("InstanceIds")? {
        Some(ids) if ids.len() > 100 => {
            return Err(ApiError::invalid("InstanceIds", "at most 100 ids"));
        }
        Some(ids) => ids.into_iter().map(InstanceId::new).collect(),
        None => world.instance_ids(),
    };
    let probe = ids.first().cloned().unwrap_or_else(|| InstanceId::new(""));
    probe_ok(world.describe_instance(&probe).await)?;

    // Only the asked instances and their ENIs are read, not the world.
    let (mut found, attached) = world.instances_with_enis(&ids);
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found.dedup_by(|a, b| a.id == b.id);
    let vpc = p.get("VpcId");
    let vswitch = p.get("VSwitchId");
    let zone = p.get("ZoneId");
    let instances: Vec<&Instance> = found
        .iter()
        .filter(|i| vpc.is_none_or(|v| i.vpc_id.as_str() == v))
        .filter(|i| vswitch.is_none_or(|v| i.subnet_id.as_str() == v))
        .filter(|i| zone.is_none_or(|z| i.zone.as_str() == z))
        .collect();
    let enis: HashMap<&EniId, &Eni> = attached.iter().map(|e| (&e.id, e)).collect();
    let region = world.region();
    let render = |i: &Instance| instance_json(i, &enis, region.as_str());

    if p.get("NextToken").is_some() || p.get("MaxResults").is_some() {
        let limit = p.u32("MaxResults")?.unwrap_or(10).clamp(1, 100) as usize;
        let total = instances.len();
        let (items, next) = token_page(instances, |i| i.id.to_string(), p.get("NextToken"), limit);
        let items: Vec<Value> = items.into_iter().map(render).collect();
        return Ok(json!({
            "Instances": {"Instance": items},
            "TotalCount": total,
            "NextToken": next,
        }));
    }
    let (items, number, size, total) = page(instances, p, 10, 100)?;
    let items: Vec<Value> = items.into_iter().map(render).collect();
    Ok(json!({
        "Instances": {"Instance": items},
        "TotalCount": total,
        "PageNumber": number,
        "PageSize": size,
        "NextToken": "",
    }))
}

fn instance_json(i: &Instance, enis: &HashMap<&EniId, &Eni>, region: &str) -> Value {
    let info = instance_types::lookup(i.instance_type.as_str());
    let nics: Vec<Value> = i
        .enis
        .iter()
        .map(|a| {
            let eni = enis.get(&a.eni_id);
            json!({
                "NetworkInterfaceId": a.eni_id,
                "Type": if a.primary { "Primary" } else { "Secondary" },
                "MacAddress": eni.map(|e| e.mac.clone()).unwrap_or_default(),
                "PrimaryIpAddress": eni.map(|e| e.primary_ip.to_string()).unwrap_or_default(),
                "PrivateIpSets": eni.map(|e| private_ip_sets(e)).unwrap_or_else(|| json!({"PrivateIpSet": []})),
            })
        })
        .collect();
    let security_groups: Vec<SecurityGroupId> = i
        .enis
        .iter()
        .find(|a| a.primary)
        .and_then(|a| enis.get(&a.eni_id))
        .map(|e| e.security_groups.clone())
        .unwrap_or_default();
    json!({
        "InstanceId": i.id,
        "InstanceName": i.id,
        "HostName": i.id,
        "InstanceType": i.instance_type,
        "InstanceTypeFamily": type_family(i.instance_type.as_str()),
        "RegionId": region,
        "ZoneId": i.zone,
        "Status": "Running",
        "InstanceNetworkType": "vpc",
        "Cpu": info.map(|t| t.vcpus).unwrap_or_default(),
        "Memory": info.map(|t| t.memory_mib).unwrap_or_default(),
        "VpcAttributes": {
            "VpcId": i.vpc_id,
            "VSwitchId": i.subnet_id,
            "PrivateIpAddress": {"IpAddress": [i.primary_ip.to_string()]},
            "NatIpAddress": "",
        },
        "NetworkInterfaces": {"NetworkInterface": nics},
        "SecurityGroupIds": {"SecurityGroupId": security_groups},
        "Tags": {"Tag": []},
    })
}

pub async fn describe_instance_types(world: &World, p: &Params) -> ActionResult {
    let wanted = p.list("InstanceTypes");
    if wanted.len() > 10 {
        return Err(ApiError::invalid("InstanceTypes.N", "at most 10 types"));
    }
    let cloud = type_cloud(world.flavor());
    let catalogue: Vec<&instance_types::TypeInfo> =
        instance_types::all().filter(|t| t.cloud == cloud).collect();
    let probe = wanted
        .first()
        .cloned()
        .or_else(|| catalogue.first().map(|t| t.name.to_owned()))
        .unwrap_or_default();
    probe_ok(world.instance_type_limits(&InstanceType::new(probe)).await)?;

    let family = p.get("InstanceTypeFamily");
    let types: Vec<&instance_types::TypeInfo> = catalogue
        .into_iter()
        .filter(|t| wanted.is_empty() || wanted.iter().any(|w| w == t.name))
        .filter(|t| family.is_none_or(|f| type_family(t.name) == f))
        .collect();
    let limit = p.u32("MaxResults")?.unwrap_or(1600).clamp(1, 1600) as usize;
    let (types, next) = token_page(types, |t| t.name.to_owned(), p.get("NextToken"), limit);
    let items: Vec<Value> = types
        .into_iter()
        .map(|t| {
            json!({
                "InstanceTypeId": t.name,
                "InstanceTypeFamily": type_family(t.name),
                "CpuCoreCount": t.vcpus,
                "MemorySize": t.memory_mib as f64 / 1024.0,
                "EniQuantity": t.max_enis,
                "EniPrivateIpAddressQuantity": t.ipv4_per_eni,
                "EniTotalQuantity": t.max_enis,
                "EniTrunkSupported": false,
                "EniIpv6AddressQuantity": 0,
            })
        })
        .collect();
    Ok(json!({
        "InstanceTypes": {"InstanceType": items},
        "NextToken": next,
    }))
}

pub async fn create_network_interface(world: &World, p: &Params) -> ActionResult {
    let subnet = SubnetId::new(p.required("VSwitchId")?);
    let mut groups: Vec<String> = p
        .get("SecurityGroupId")
        .map(str::to_owned)
        .into_iter()
        .collect();
    for g in p.list("SecurityGroupIds") {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let tags: Tags = p
        .tags()?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    let request = CreateEniRequest {
        subnet_id: subnet,
        security_groups: groups.into_iter().map(SecurityGroupId::new).collect(),
        secondary_ip_count: p.u32("SecondaryPrivateIpAddressCount")?.unwrap_or(0),
        tags,
        description: p.get("Description").unwrap_or_default().to_owned(),
        idempotency_token: token_or_new(p),
    };
    let eni = world.create_eni(&request).await?;
    Ok(eni_json(&eni, false))
}

pub async fn attach_network_interface(world: &World, p: &Params) -> ActionResult {
    let eni = EniId::new(p.required("NetworkInterfaceId")?);
    let instance = InstanceId::new(p.required("InstanceId")?);
    world.attach_eni(&eni, &instance).await?;
    Ok(json!({}))
}

pub async fn detach_network_interface(world: &World, p: &Params) -> ActionResult {
    let eni = EniId::new(p.required("NetworkInterfaceId")?);
    let instance = InstanceId::new(p.required("InstanceId")?);
    // The model treats an unknown ENI as already detached; Alibaba names it.
    let existed = eni_exists(world, &eni);
    world.detach_eni(&eni, &instance).await?;
    if !existed {
        return Err(eni_not_found(&eni));
    }
    Ok(json!({}))
}

pub async fn delete_network_interface(world: &World, p: &Params) -> ActionResult {
    let eni = EniId::new(p.required("NetworkInterfaceId")?);
    let existed = eni_exists(world, &eni);
    world.delete_eni(&eni).await?;
    if !existed {
        return Err(eni_not_found(&eni));
    }
    Ok(json!({}))
}

pub async fn describe_network_interfaces(world: &World, p: &Params) -> ActionResult {
    let ids: Vec<EniId> = p
        .list("NetworkInterfaceId")
        .into_iter()
        .map(EniId::new)
        .collect();
    if ids.len() > 100 {
        return Err(ApiError::invalid("NetworkInterfaceId.N", "at most 100 ids"));
    }
    let filter = EniFilter {
        eni_ids: ids,
        tags: BTreeMap::new(),
        instance_id: p.get("InstanceId").map(InstanceId::new),
        status: p.get("Status").map(parse_status).transpose()?,
        vpc_id: p.get("VpcId").map(VpcId::new),
    };
    let tags = p.tags()?;
    let enis = world.describe_enis(&filter).await?;

    let primaries = world.primaries_among(enis.iter().map(|e| &e.id));
    let vswitch = p.get("VSwitchId");
    let kind = p.get("Type");
    let primary_ip = p.get("PrimaryIpAddress");
    let enis: Vec<Eni> = enis
        .into_iter()
        // A tag key without a value matches any value of that key.
        .filter(|e| {
            tags.iter().all(|(k, v)| match v {
                Some(v) => e.tags.get(k) == Some(v),
                None => e.tags.contains_key(k),
            })
        })
        .filter(|e| vswitch.is_none_or(|v| e.subnet_id.as_str() == v))
        .filter(|e| kind.is_none_or(|k| (k == "Primary") == primaries.contains(&e.id)))
        .filter(|e| primary_ip.is_none_or(|ip| e.primary_ip.to_string() == ip))
        .collect();
    let render = |e: &Eni| eni_json(e, primaries.contains(&e.id));

    if p.get("NextToken").is_some() || p.get("MaxResults").is_some() {
        // Alibaba raises values below 10 to 10 and caps at 500.
        let limit = p.u32("MaxResults")?.unwrap_or(10).clamp(10, 500) as usize;
        let total = enis.len();
        let (items, next) = token_page(enis, |e| e.id.to_string(), p.get("NextToken"), limit);
        let items: Vec<Value> = items.iter().map(render).collect();
        return Ok(json!({
            "NetworkInterfaceSets": {"NetworkInterfaceSet": items},
            "TotalCount": total,
            "NextToken": next,
        }));
    }
    let mut enis = enis;
    enis.sort_by(|a, b| a.id.cmp(&b.id));
    let (items, number, size, total) = page(enis, p, 10, 100)?;
    let items: Vec<Value> = items.iter().map(render).collect();
    Ok(json!({
        "NetworkInterfaceSets": {"NetworkInterfaceSet": items},
        "TotalCount": total,
        "PageNumber": number,
        "PageSize": size,
        "NextToken": "",
    }))
}

pub async fn assign_private_ip_addresses(world: &World, p: &Params) -> ActionResult {
    let eni = EniId::new(p.required("NetworkInterfaceId")?);
    if !p.list("PrivateIpAddress").is_empty() {
        return Err(ApiError::invalid(
            "PrivateIpAddress.N",
            "this fake assigns by SecondaryPrivateIpAddressCount only",
        ));
    }
    let count = p
        .u32("SecondaryPrivateIpAddressCount")?
        .ok_or_else(|| ApiError::missing("SecondaryPrivateIpAddressCount"))?;
    let ips = world
        .assign_private_ips(&eni, count, &token_or_new(p))
        .await?;
    let ips: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
    Ok(json!({
        "AssignedPrivateIpAddressesSet": {
            "NetworkInterfaceId": eni,
            "PrivateIpSet": {"PrivateIpAddress": ips},
        }
    }))
}

pub async fn unassign_private_ip_addresses(world: &World, p: &Params) -> ActionResult {
    let eni = EniId::new(p.required("NetworkInterfaceId")?);
    let ips = p
        .list("PrivateIpAddress")
        .iter()
        .map(|raw| {
            raw.parse::<Ipv4Addr>()
                .map_err(|_| ApiError::invalid("PrivateIpAddress.N", "expected IPv4 addresses"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ips.is_empty() {
        return Err(ApiError::missing("PrivateIpAddress.1"));
    }
    let existed = eni_exists(world, &eni);
    world.unassign_private_ips(&eni, &ips).await?;
    if !existed {
        return Err(eni_not_found(&eni));
    }
    Ok(json!({}))
}
