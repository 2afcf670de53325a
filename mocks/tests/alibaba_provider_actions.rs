//! The Alibaba provider over HTTP against `fake-alibaba`: every action, the
//! error codes a user meets mapped to their kinds, a throttling burst retried
//! to success, and the full ENI cycle with its cost in calls and time.

use mocks::alibaba::{FakeAlibaba, FakeAlibabaHandle};
use mocks::cloud::{ApiFault, FaultKind, World};
use providers::alibaba::{AlibabaCloud, AlibabaConfig, CredentialSource};
use providers::call::CallPolicy;
use providers::ids::{
    EniId, IdempotencyToken, InstanceId, InstanceType, RouteTableId, SecurityGroupId, SubnetId,
    VpcId,
};
use providers::model::{
    CreateEniRequest, EniFilter, EniStatus, NewRouteEntry, NextHop, RouteEntryStatus,
};
use providers::wait::{wait_eni_status, PollPolicy};
use providers::{Cloud, ErrorKind, LimitKind};
use std::net::Ipv4Addr;
use std::time::Duration;

const WORLD: &str = r#"
region: cn-hangzhou
accessKeys: [{id: testid, secret: testsecret}]
vpcs: [{id: vpc-1, cidr: 192.168.0.0/16, routeTables: [{id: vtb-1, quota: 4}]}]
vswitches:
  - {id: vsw-h, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.1.0/24}
  - {id: vsw-small, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.2.0/29}
securityGroups: [{id: sg-1, vpc: vpc-1}]
instances:
  - {id: i-1, type: ecs.g6.large, zone: cn-hangzhou-h, vswitch: vsw-h, privateIp: 192.168.1.10}
  - {id: i-2, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-h, privateIp: 192.168.1.11}
faults: {attachDelayMs: 100, detachDelayMs: 100, routeDelayMs: 100}
"#;

fn fast_policy() -> CallPolicy {
    CallPolicy {
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..AlibabaConfig::default_call_policy()
    }
}

fn config(fake: &FakeAlibabaHandle) -> AlibabaConfig {
    let mut config = AlibabaConfig::new("cn-hangzhou");
    config.endpoint = Some(fake.url().to_owned());
    config.credentials = CredentialSource::explicit("testid", "testsecret", None);
    config.call_policy = fast_policy();
    config.poll = PollPolicy {
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(30),
    };
    config
}

async fn start(yaml: &str) -> (FakeAlibabaHandle, AlibabaCloud) {
    let world = World::from_yaml(yaml).unwrap();
    let fake = FakeAlibaba::start(world, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let cloud = AlibabaCloud::new(config(&fake)).unwrap();
    (fake, cloud)
}

fn eni_request(subnet: &str, ips: u32, token: &str) -> CreateEniRequest {
    CreateEniRequest {
        subnet_id: SubnetId::new(subnet),
        security_groups: vec![SecurityGroupId::new("sg-1")],
        secondary_ip_count: ips,
        tags: [
            ("vpc-eni-controller/cluster".to_owned(), "c1".to_owned()),
            ("purpose".to_owned(), "pod eni*~/+=".to_owned()),
        ]
        .into(),
        description: "pods of i-1 (漢字)".into(),
        idempotency_token: IdempotencyToken::new(token),
    }
}

fn calls(fake: &FakeAlibabaHandle, api: &str) -> u64 {
    fake.world().calls().get(api).copied().unwrap_or(0)
}

#[tokio::test]
async fn instances_types_and_vswitches_are_described() {
    let (fake, cloud) = start(WORLD).await;
    let i1 = cloud
        .describe_instance(&InstanceId::new("i-1"))
        .await
        .unwrap();
    assert_eq!(i1.instance_type.as_str(), "ecs.g6.large");
    assert_eq!(i1.zone.as_str(), "cn-hangzhou-h");
    assert_eq!(i1.vpc_id.as_str(), "vpc-1");
    assert_eq!(i1.subnet_id.as_str(), "vsw-h");
    assert_eq!(i1.primary_ip, Ipv4Addr::new(192, 168, 1, 10));
    assert_eq!(i1.enis.len(), 1);
    assert!(i1.enis[0].primary && i1.enis[0].device_index == 0);

    let missing = cloud
        .describe_instance(&InstanceId::new("i-nope"))
        .await
        .unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);

    let limits = cloud
        .instance_type_limits(&InstanceType::new("ecs.g6.xlarge"))
        .await
        .unwrap();
    assert_eq!((limits.max_enis, limits.ipv4_per_eni), (3, 10));
    let before = calls(&fake, "DescribeInstanceTypes");
    cloud
        .instance_type_limits(&InstanceType::new("ecs.g6.xlarge"))
        .await
        .unwrap();
    assert_eq!(calls(&fake, "DescribeInstanceTypes"), before, "cached");

    let unknown = InstanceType::new("ecs.nothing.large");
    let err = cloud.instance_type_limits(&unknown).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    let before = calls(&fake, "DescribeInstanceTypes");
    let err = cloud.instance_type_limits(&unknown).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(
        calls(&fake, "DescribeInstanceTypes"),
        before,
        "an unknown type is not asked for again within a minute"
    );

    let subnets = cloud
        .describe_subnets(&[SubnetId::new("vsw-h"), SubnetId::new("vsw-gone")])
        .await
        .unwrap();
    assert_eq!(subnets.len(), 1, "unknown vSwitches are left out");
    let h = &subnets[0];
    assert_eq!(h.cidr.to_string(), "192.168.1.0/24");
    assert_eq!(h.zone.as_str(), "cn-hangzhou-h");
    assert_eq!(h.gateway, Ipv4Addr::new(192, 168, 1, 253));
    // 256 minus Alibaba's 4 reserved minus the two instances' primaries.
    assert_eq!(h.free_ips, 250);
}

#[tokio::test]
async fn many_instances_are_described_in_one_call_with_their_enis() {
    let (fake, cloud) = start(WORLD).await;
    let eni = cloud
        .create_eni(&eni_request("vsw-h", 0, "batch-1"))
        .await
        .unwrap();
    cloud
        .attach_eni(&eni.id, &InstanceId::new("i-2"))
        .await
        .unwrap();
    let before = calls(&fake, "DescribeInstances");
    let before_enis = calls(&fake, "DescribeNetworkInterfaces");
    let ids = ["i-1", "i-missing", "i-2"].map(InstanceId::new);
    let mut found = cloud.describe_instances(&ids).await.unwrap();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        found.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["i-1", "i-2"],
        "a missing instance is left out"
    );
    assert_eq!(found[1].instance_type, InstanceType::new("ecs.g6.xlarge"));
    assert_eq!(found[1].primary_ip, Ipv4Addr::new(192, 168, 1, 11));
    let secondary: Vec<&EniId> = found[1]
        .enis
        .iter()
        .filter(|e| !e.primary)
        .map(|e| &e.eni_id)
        .collect();
    assert_eq!(
        secondary,
        [&eni.id],
        "the attached ENI comes with the instance"
    );
    assert_eq!(found[0].enis.iter().filter(|e| e.primary).count(), 1);
    assert_eq!(calls(&fake, "DescribeInstances") - before, 1);
    assert_eq!(
        calls(&fake, "DescribeNetworkInterfaces"),
        before_enis,
        "no ENI listing: DescribeInstances carries the ENIs"
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn eni_lifecycle_over_http() {
    let (fake, cloud) = start(WORLD).await;
    let free_before = cloud
        .describe_subnets(&[SubnetId::new("vsw-h")])
        .await
        .unwrap()[0]
        .free_ips;

    let request = eni_request("vsw-h", 5, "token-eni-1");
    let eni = cloud.create_eni(&request).await.unwrap();
    assert_eq!(eni.status, EniStatus::Available);
    assert_eq!(eni.secondary_ips.len(), 5);
    assert_eq!(eni.tags, request.tags);
    assert_eq!(eni.subnet_id.as_str(), "vsw-h");
    let free_after = cloud
        .describe_subnets(&[SubnetId::new("vsw-h")])
        .await
        .unwrap()[0]
        .free_ips;
    assert_eq!(free_before - free_after, 6);

    // The same token again is the same ENI, not a second one.
    let again = cloud.create_eni(&request).await.unwrap();
    assert_eq!(again.id, eni.id);

    let by_tag = cloud
        .describe_enis(&EniFilter {
            tags: [("vpc-eni-controller/cluster".to_owned(), "c1".to_owned())].into(),
            ..EniFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_tag.iter().map(|e| &e.id).collect::<Vec<_>>(),
        vec![&eni.id]
    );
    assert_eq!(by_tag[0].description, request.description);

    let i1 = InstanceId::new("i-2");
    cloud.attach_eni(&eni.id, &i1).await.unwrap();
    // Repeating the attach (a retry after a lost answer) is not an error.
    cloud.attach_eni(&eni.id, &i1).await.unwrap();
    let in_use = wait_eni_status(
        &cloud,
        &eni.id,
        EniStatus::InUse,
        PollPolicy {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(30),
        },
    )
    .await
    .unwrap();
    assert_eq!(in_use.instance_id.as_ref(), Some(&i1));
    let node = cloud.describe_instance(&i1).await.unwrap();
    assert_eq!(node.enis.len(), 2);
    assert_eq!(node.enis[1].eni_id, eni.id);
    assert_eq!(node.enis[1].device_index, 1);
    assert!(!node.enis[1].primary);
    let on_node = cloud
        .describe_enis(&EniFilter {
            instance_id: Some(i1.clone()),
            status: Some(EniStatus::InUse),
            ..EniFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(on_node.len(), 2);

    // Assign, with the token making a retried assign not double up.
    let token = IdempotencyToken::new("assign-1");
    let new_ips = cloud.assign_private_ips(&eni.id, 3, &token).await.unwrap();
    assert_eq!(new_ips.len(), 3);
    let repeated = cloud.assign_private_ips(&eni.id, 3, &token).await.unwrap();
    assert_eq!(repeated, new_ips);
    let current = &cloud
        .describe_enis(&EniFilter {
            eni_ids: vec![eni.id.clone()],
            ..EniFilter::default()
        })
        .await
        .unwrap()[0];
    assert_eq!(current.secondary_ips.len(), 8);

    // Unassign two; unassigning them again (or with one already gone) is done.
    let gone = vec![new_ips[0], new_ips[1]];
    cloud.unassign_private_ips(&eni.id, &gone).await.unwrap();
    cloud.unassign_private_ips(&eni.id, &gone).await.unwrap();
    cloud
        .unassign_private_ips(&eni.id, &[new_ips[1], new_ips[2]])
        .await
        .unwrap();
    let current = &cloud
        .describe_enis(&EniFilter {
            eni_ids: vec![eni.id.clone()],
            ..EniFilter::default()
        })
        .await
        .unwrap()[0];
    assert_eq!(current.secondary_ips.len(), 5);
    assert!(!current.secondary_ips.contains(&new_ips[2]));

    cloud.detach_eni(&eni.id, &i1).await.unwrap();
    wait_eni_status(
        &cloud,
        &eni.id,
        EniStatus::Available,
        PollPolicy {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(30),
        },
    )
    .await
    .unwrap();
    // Detaching an ENI that is no longer attached counts as done.
    cloud.detach_eni(&eni.id, &i1).await.unwrap();
    cloud.delete_eni(&eni.id).await.unwrap();
    // Gone already: delete and detach count as done.
    cloud.delete_eni(&eni.id).await.unwrap();
    cloud.detach_eni(&eni.id, &i1).await.unwrap();
    cloud
        .unassign_private_ips(&eni.id, &[eni.secondary_ips[0]])
        .await
        .unwrap();
    assert!(cloud
        .describe_enis(&EniFilter {
            eni_ids: vec![eni.id.clone()],
            ..EniFilter::default()
        })
        .await
        .unwrap()
        .is_empty());
    assert!(fake.world().enis().iter().all(|e| e.id != eni.id));
}

#[tokio::test]
async fn cloud_errors_arrive_as_kinds_with_code_and_request_id() {
    let (fake, cloud) = start(WORLD).await;

    // A /29 has 8 addresses, 4 reserved: an ENI with 4 secondaries cannot fit.
    let err = cloud
        .create_eni(&eni_request("vsw-small", 4, "t-small"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::SubnetExhausted);
    assert_eq!(err.code, "InvalidVSwitchId.IpNotEnough");
    assert!(err.request_id.is_some());

    // ecs.g6.large takes 2 ENIs: the primary and one more.
    let i1 = InstanceId::new("i-1");
    let a = cloud
        .create_eni(&eni_request("vsw-h", 0, "t-a"))
        .await
        .unwrap();
    let b = cloud
        .create_eni(&eni_request("vsw-h", 0, "t-b"))
        .await
        .unwrap();
    cloud.attach_eni(&a.id, &i1).await.unwrap();
    let err = cloud.attach_eni(&b.id, &i1).await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::LimitExceeded {
            what: LimitKind::EnisPerInstance
        }
    );
    assert_eq!(err.code, "EniPerInstanceLimitExceeded");

    // ecs.g6.large: 6 addresses per ENI, the primary included.
    wait_eni_status(
        &cloud,
        &a.id,
        EniStatus::InUse,
        PollPolicy {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(30),
        },
    )
    .await
    .unwrap();
    let token = IdempotencyToken::new("t-ips");
    let err = cloud
        .assign_private_ips(&a.id, 6, &token)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::LimitExceeded {
            what: LimitKind::IpsPerEni
        }
    );

    // More than 10 per call is refused before any call.
    let before = calls(&fake, "AssignPrivateIpAddresses");
    let err = cloud
        .assign_private_ips(&b.id, 11, &IdempotencyToken::new("t-11"))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::LimitExceeded {
            what: LimitKind::IpsPerCall
        }
    );
    assert_eq!(calls(&fake, "AssignPrivateIpAddresses"), before);

    // Deleting an attached ENI is refused as a state conflict (retried, then given up).
    let err = cloud.delete_eni(&a.id).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict, "{err}");

    let err = cloud
        .attach_eni(&EniId::new("eni-missing"), &i1)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);

    // Injected faults of every retry-free kind come back as that kind.
    fake.world().set_fault(
        "DescribeVSwitches",
        Some(ApiFault {
            error_rate: 1.0,
            error_kind: FaultKind::InvalidRequest,
            ..ApiFault::default()
        }),
    );
    let err = cloud
        .describe_subnets(&[SubnetId::new("vsw-h")])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert_eq!(cloud.stats().get("DescribeVSwitches").retries, 0);
    fake.world().set_fault(
        "DescribeVSwitches",
        Some(ApiFault {
            error_rate: 1.0,
            error_kind: FaultKind::Transient,
            ..ApiFault::default()
        }),
    );
    let err = cloud
        .describe_subnets(&[SubnetId::new("vsw-h")])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.code, "ServiceUnavailable");
    fake.world().set_fault("DescribeVSwitches", None);

    // Wrong secret and unknown key: Auth, never retried.
    let mut wrong = config(&fake);
    wrong.credentials = CredentialSource::explicit("testid", "not-the-secret", None);
    let err = AlibabaCloud::new(wrong)
        .unwrap()
        .describe_subnets(&[SubnetId::new("vsw-h")])
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind.clone(), err.code.as_str()),
        (ErrorKind::Auth, "SignatureDoesNotMatch")
    );
    let mut unknown = config(&fake);
    unknown.credentials = CredentialSource::explicit("nobody", "x", None);
    let err = AlibabaCloud::new(unknown)
        .unwrap()
        .describe_subnets(&[SubnetId::new("vsw-h")])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
}

#[tokio::test]
async fn a_throttling_burst_is_retried_to_success() {
    let (fake, cloud) = start(WORLD).await;
    fake.world().set_fault(
        "DescribeNetworkInterfaces",
        Some(ApiFault {
            rate_per_second: Some(3),
            ..ApiFault::default()
        }),
    );
    let mut policy = fast_policy();
    policy.max_tries = 20;
    policy.max_backoff = Duration::from_millis(500);
    let mut cfg = config(&fake);
    cfg.call_policy = policy;
    let cloud_burst = AlibabaCloud::new(cfg).unwrap();
    drop(cloud);

    let filter = EniFilter {
        instance_id: Some(InstanceId::new("i-2")),
        ..EniFilter::default()
    };
    let burst = (0..12).map(|_| cloud_burst.describe_enis(&filter));
    let results = futures::future::join_all(burst).await;
    for r in &results {
        assert_eq!(r.as_ref().map(|e| e.len()).ok(), Some(1), "{r:?}");
    }
    let stats = cloud_burst.stats().get("DescribeNetworkInterfaces");
    assert!(stats.throttles > 0, "the server throttled some: {stats:?}");
    assert_eq!(stats.calls, 12 + stats.retries);
}

#[tokio::test]
async fn route_tables_and_entries_single_and_batch() {
    let (_fake, cloud) = start(WORLD).await;
    let tables = cloud
        .describe_route_tables(&VpcId::new("vpc-1"))
        .await
        .unwrap();
    assert_eq!(tables.len(), 1);
    assert!(tables[0].main);
    let vtb = RouteTableId::new("vtb-1");

    let entry = |cidr: &str, instance: &str| NewRouteEntry {
        destination: cidr.parse().unwrap(),
        instance_id: InstanceId::new(instance),
        name: "vpc-eni-controller".into(),
        description: format!("node {instance}"),
    };

    // One entry: the single call.
    let outcome = cloud
        .create_route_entries(&vtb, &[entry("10.244.1.0/24", "i-1")])
        .await
        .unwrap();
    assert!(outcome.is_complete());
    assert_eq!(cloud.stats().get("CreateRouteEntry").calls, 1);
    let listed = cloud.list_route_entries(&vtb).await.unwrap();
    let ours = listed
        .iter()
        .find(|e| e.destination.to_string() == "10.244.1.0/24")
        .unwrap();
    assert_eq!(ours.next_hop, NextHop::Instance(InstanceId::new("i-1")));
    assert_eq!(ours.name.as_deref(), Some("vpc-eni-controller"));
    assert_eq!(ours.description.as_deref(), Some("node i-1"));
    assert!(!ours.system);
    assert!(
        listed.iter().any(|e| e.system),
        "system entries are listed too"
    );

    // Let the table settle, then a batch with one duplicate destination.
    wait_routes_settled(&cloud, &vtb).await;
    let outcome = cloud
        .create_route_entries(
            &vtb,
            &[
                entry("10.244.2.0/24", "i-2"),
                entry("10.244.1.0/24", "i-2"),
                entry("10.244.3.0/24", "i-1"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcome.failed.len(), 1, "{outcome:?}");
    assert_eq!(outcome.failed[0].0.to_string(), "10.244.1.0/24");
    assert_eq!(outcome.failed[0].1.kind, ErrorKind::AlreadyExists);
    assert_eq!(cloud.stats().get("CreateRouteEntries").calls, 1);

    // The table takes 4 custom entries: the 5th fails with the quota.
    wait_routes_settled(&cloud, &vtb).await;
    let outcome = cloud
        .create_route_entries(
            &vtb,
            &[entry("10.244.4.0/24", "i-2"), entry("10.244.5.0/24", "i-2")],
        )
        .await
        .unwrap();
    assert_eq!(outcome.failed.len(), 1, "{outcome:?}");
    assert_eq!(
        outcome.failed[0].1.kind,
        ErrorKind::LimitExceeded {
            what: LimitKind::RouteEntriesPerTable
        }
    );

    // Delete: a batch with one destination that is not there counts as done.
    wait_routes_settled(&cloud, &vtb).await;
    let outcome = cloud
        .delete_route_entries(
            &vtb,
            &[
                ("10.244.2.0/24".parse().unwrap(), InstanceId::new("i-2")),
                ("10.244.9.0/24".parse().unwrap(), InstanceId::new("i-2")),
            ],
        )
        .await
        .unwrap();
    assert!(outcome.is_complete(), "{outcome:?}");
    wait_routes_settled(&cloud, &vtb).await;
    let outcome = cloud
        .delete_route_entries(
            &vtb,
            &[("10.244.1.0/24".parse().unwrap(), InstanceId::new("i-1"))],
        )
        .await
        .unwrap();
    assert!(outcome.is_complete(), "{outcome:?}");
    wait_routes_settled(&cloud, &vtb).await;
    let left: Vec<String> = cloud
        .list_route_entries(&vtb)
        .await
        .unwrap()
        .iter()
        .filter(|e| !e.system)
        .map(|e| e.destination.to_string())
        .collect();
    assert_eq!(left, vec!["10.244.3.0/24", "10.244.4.0/24"]);
}

/// Poll until no entry of the table is `Pending` or `Deleting` (the VPC
/// refuses changes to a table with entries in flight).
async fn wait_routes_settled(cloud: &AlibabaCloud, table: &RouteTableId) {
    for _ in 0..200 {
        let entries = cloud.list_route_entries(table).await.unwrap();
        if entries
            .iter()
            .all(|e| e.status == RouteEntryStatus::Available)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("route table {table} did not settle");
}

/// The whole ENI cycle with the fake's default latencies (attach 2 s,
/// detach 1 s) and the provider's default poll policy; prints what it cost.
#[tokio::test]
async fn full_eni_cycle_cost() {
    let yaml = WORLD.replace(
        "faults: {attachDelayMs: 100, detachDelayMs: 100, routeDelayMs: 100}",
        "faults: {}",
    );
    let world = World::from_yaml(&yaml).unwrap();
    let fake = FakeAlibaba::start(world, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut cfg = config(&fake);
    cfg.call_policy = AlibabaConfig::default_call_policy();
    cfg.poll = PollPolicy::default();
    let cloud = AlibabaCloud::new(cfg).unwrap();
    let poll = PollPolicy::default();
    let i2 = InstanceId::new("i-2");

    let started = std::time::Instant::now();
    let eni = cloud
        .create_eni(&eni_request("vsw-h", 5, "cycle"))
        .await
        .unwrap();
    cloud.attach_eni(&eni.id, &i2).await.unwrap();
    wait_eni_status(&cloud, &eni.id, EniStatus::InUse, poll)
        .await
        .unwrap();
    let drop_two = [eni.secondary_ips[0], eni.secondary_ips[1]];
    cloud
        .unassign_private_ips(&eni.id, &drop_two)
        .await
        .unwrap();
    cloud.detach_eni(&eni.id, &i2).await.unwrap();
    wait_eni_status(&cloud, &eni.id, EniStatus::Available, poll)
        .await
        .unwrap();
    cloud.delete_eni(&eni.id).await.unwrap();
    let wall = started.elapsed();

    let stats = cloud.stats().snapshot();
    let total: u64 = stats.values().map(|c| c.calls).sum();
    let per_api: Vec<String> = stats
        .iter()
        .map(|(api, c)| format!("{api}={}", c.calls))
        .collect();
    eprintln!(
        "ENI cycle: {total} calls ({}) in {wall:?}",
        per_api.join(", ")
    );
    // One call per mutating step; the rest are status polls.
    for api in [
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "UnassignPrivateIpAddresses",
        "DetachNetworkInterface",
        "DeleteNetworkInterface",
    ] {
        assert_eq!(stats.get(api).map(|c| c.calls), Some(1), "{api}");
    }
    assert!(stats.values().all(|c| c.errors == 0));
    assert!(fake.world().enis().iter().all(|e| e.id != eni.id));
}

/// An instance busy with another attach answers the next one with
/// `InvalidOperation.InvalidEcsState` (HTTP 400): the client backs off and
/// tries again, and the ENI gets attached once the first settles.
#[tokio::test]
async fn an_attach_refused_by_a_busy_instance_is_retried_to_success() {
    let (fake, cloud) = start(&WORLD.replace(
        "faults: {attachDelayMs: 100,",
        "faults: {eniOpsPerInstance: 1, attachDelayMs: 150,",
    ))
    .await;
    let i2 = InstanceId::new("i-2");
    let a = cloud
        .create_eni(&eni_request("vsw-h", 0, "t-busy-a"))
        .await
        .unwrap();
    let b = cloud
        .create_eni(&eni_request("vsw-h", 0, "t-busy-b"))
        .await
        .unwrap();
    cloud.attach_eni(&a.id, &i2).await.unwrap();
    cloud.attach_eni(&b.id, &i2).await.unwrap();
    assert!(fake.world().eni_ops_refused_busy() >= 1);
    let stats = cloud.stats().get("AttachNetworkInterface");
    assert!(
        stats.errors_by_kind.get("conflict").copied().unwrap_or(0) >= 1,
        "{stats:?}"
    );
    assert_eq!(fake.world().max_eni_ops_in_flight(&i2), 1);
    let attached = fake
        .world()
        .enis()
        .into_iter()
        .filter(|e| e.instance_id.as_ref() == Some(&i2) && e.id != a.id)
        .count();
    assert_eq!(attached, 2, "the primary and b");
}
