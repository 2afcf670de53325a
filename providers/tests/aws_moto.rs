//! The AWS backend against moto, a third-party EC2 emulator on 127.0.0.1:
//! every operation of the `Cloud` contract on a seeded VPC.

#![cfg(feature = "aws")]

use ipam::ids::{IdempotencyToken, InstanceId, InstanceType, SubnetId};
use mocks::moto::{seed, Moto, SeededVpc};
use providers::aws::{cluster_tag, CREATED_AT_TAG};
use providers::model::{CreateEniRequest, EniFilter, EniStatus, NewRouteEntry, NextHop, Tags};
use providers::{Cloud, ErrorKind, LimitKind};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

const CLUSTER: &str = "test-cluster";

fn eni_request(world: &SeededVpc, secondary: u32, token: &str) -> CreateEniRequest {
    CreateEniRequest {
        subnet_id: world.subnet.clone(),
        security_groups: vec![world.security_group.clone()],
        secondary_ip_count: secondary,
        tags: Tags::from([("pod".to_owned(), "default/web-0".to_owned())]),
        description: "vpc-eni-controller test".into(),
        idempotency_token: IdempotencyToken::from(token),
    }
}

#[tokio::test]
async fn instance_type_and_subnet_are_described() {
    let Some(moto) = Moto::start() else { return };
    let world = seed(&moto.sdk()).await;
    let cloud = moto.cloud(CLUSTER).await;
    assert_eq!(cloud.name(), "aws");

    let instance = cloud.describe_instance(&world.instances[0]).await.unwrap();
    assert_eq!(instance.instance_type, InstanceType::from("t3.medium"));
    assert_eq!(instance.zone.as_str(), "us-east-1a");
    assert_eq!(instance.vpc_id, world.vpc);
    assert_eq!(instance.subnet_id, world.subnet);
    assert!(world_cidr_contains("10.0.1.0/24", instance.primary_ip));
    assert_eq!(instance.enis.len(), 1);
    assert_eq!(instance.enis[0].device_index, 0);
    assert!(instance.enis[0].primary);

    let limits = cloud
        .instance_type_limits(&InstanceType::from("t3.medium"))
        .await
        .unwrap();
    assert_eq!((limits.max_enis, limits.ipv4_per_eni), (3, 6));
    // Cached: a second lookup sends nothing.
    cloud
        .instance_type_limits(&InstanceType::from("t3.medium"))
        .await
        .unwrap();
    assert_eq!(cloud.stats().get("DescribeInstanceTypes").calls, 1);

    let subnets = cloud
        .describe_subnets(&[world.subnet.clone(), SubnetId::from("subnet-00000000")])
        .await
        .unwrap();
    assert_eq!(subnets.len(), 1, "unknown ids are left out");
    let subnet = &subnets[0];
    assert_eq!(subnet.cidr.to_string(), "10.0.1.0/24");
    assert_eq!(subnet.gateway, Ipv4Addr::new(10, 0, 1, 1));
    assert_eq!(subnet.zone.as_str(), "us-east-1a");
    // 256 - 5 reserved by AWS - the two instances' primary addresses.
    assert_eq!(subnet.free_ips, 249);
}

fn world_cidr_contains(cidr: &str, ip: Ipv4Addr) -> bool {
    cidr.parse::<ipnet::Ipv4Net>().unwrap().contains(&ip)
}

#[tokio::test]
async fn unknown_instance_and_instance_type_are_not_found() {
    let Some(moto) = Moto::start() else { return };
    let _world = seed(&moto.sdk()).await;
    let cloud = moto.cloud(CLUSTER).await;

    let err = cloud
        .describe_instance(&InstanceId::from("i-0123456789abcdef0"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);

    let bogus = InstanceType::from("x9.bogus");
    let err = cloud.instance_type_limits(&bogus).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    // Asked again within the minute: answered from memory, no new call.
    let err = cloud.instance_type_limits(&bogus).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(cloud.stats().get("DescribeInstanceTypes").calls, 1);
}

#[tokio::test]
async fn eni_lifecycle_create_attach_assign_unassign_detach_delete() {
    let Some(moto) = Moto::start() else { return };
    let ec2 = moto.sdk();
    let world = seed(&ec2).await;
    let cloud = moto.cloud(CLUSTER).await;
    let node = &world.instances[0];

    let eni = cloud
        .create_eni(&eni_request(&world, 2, "tok-1"))
        .await
        .unwrap();
    assert_eq!(eni.status, EniStatus::Available);
    assert_eq!(eni.subnet_id, world.subnet);
    // moto draws creation-time addresses at random, duplicates possible.
    assert!((1..=2).contains(&eni.secondary_ips.len()));
    assert!(!eni.secondary_ips.contains(&eni.primary_ip));
    assert_eq!(eni.security_groups, vec![world.security_group.clone()]);
    let (key, value) = cluster_tag(&CLUSTER.into());
    assert_eq!(eni.tags.get(&key), Some(&value));
    assert_eq!(
        eni.tags.get("pod").map(String::as_str),
        Some("default/web-0")
    );
    assert!(eni.tags.contains_key(CREATED_AT_TAG));
    assert!(eni.created_at.is_some());
    assert_eq!(eni.description, "vpc-eni-controller test");

    // Listed by our cluster tag and by status.
    let by_tag = cloud
        .describe_enis(&EniFilter {
            tags: Tags::from([(key.clone(), value.clone())]),
            status: Some(EniStatus::Available),
            ..EniFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_tag.iter().map(|e| &e.id).collect::<Vec<_>>(),
        vec![&eni.id]
    );

    cloud.attach_eni(&eni.id, node).await.unwrap();
    let instance = cloud.describe_instance(node).await.unwrap();
    let attached = instance.enis.iter().find(|e| e.eni_id == eni.id).unwrap();
    assert_eq!(attached.device_index, 1, "first free device index");
    assert_eq!(
        cloud.stats().get("ModifyNetworkInterfaceAttribute").calls,
        1
    );
    // Attaching again is done already, not an error and not a new attachment.
    cloud.attach_eni(&eni.id, node).await.unwrap();
    assert_eq!(cloud.stats().get("AttachNetworkInterface").calls, 1);

    let on_node = cloud
        .describe_enis(&EniFilter {
            instance_id: Some(node.clone()),
            ..EniFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(on_node.len(), 2, "primary + ours");
    let ours = on_node.iter().find(|e| e.id == eni.id).unwrap();
    assert_eq!(ours.status, EniStatus::InUse);
    assert_eq!(ours.instance_id.as_ref(), Some(node));
    assert_eq!(ours.device_index, Some(1));

    // moto answers Assign with every address of the ENI; only new ones come back.
    let before: BTreeSet<Ipv4Addr> = ours.secondary_ips.iter().copied().collect();
    let added = cloud
        .assign_private_ips(&eni.id, 2, &IdempotencyToken::from("assign-1"))
        .await
        .unwrap();
    assert_eq!(added.len(), 2);
    assert!(added
        .iter()
        .all(|ip| !before.contains(ip) && *ip != eni.primary_ip));

    // A t3.medium ENI holds 6 addresses: one more than the room left is
    // refused, and no Assign call goes out.
    let held = 1 + cloud
        .describe_enis(&EniFilter {
            eni_ids: vec![eni.id.clone()],
            ..EniFilter::default()
        })
        .await
        .unwrap()[0]
        .secondary_ips
        .len() as u32;
    let room = 6 - held;
    let assigns = cloud.stats().get("AssignPrivateIpAddresses").calls;
    let err = cloud
        .assign_private_ips(&eni.id, room + 1, &IdempotencyToken::from("assign-2"))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::LimitExceeded {
            what: LimitKind::IpsPerEni
        }
    );
    assert_eq!(cloud.stats().get("AssignPrivateIpAddresses").calls, assigns);
    // Exactly the room left does fit.
    assert_eq!(
        cloud
            .assign_private_ips(&eni.id, room, &IdempotencyToken::from("assign-3"))
            .await
            .unwrap()
            .len() as u32,
        room
    );

    // Unassign one address we hold plus one that is long gone: done.
    let gone = Ipv4Addr::new(10, 0, 9, 9);
    cloud
        .unassign_private_ips(&eni.id, &[added[0], gone])
        .await
        .unwrap();
    let now = cloud
        .describe_enis(&EniFilter {
            eni_ids: vec![eni.id.clone()],
            ..EniFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(now.len(), 1);
    assert!(!now[0].secondary_ips.contains(&added[0]));
    assert_eq!(now[0].secondary_ips.len(), 4);
    // The primary address is never unassigned.
    let err = cloud
        .unassign_private_ips(&eni.id, &[eni.primary_ip])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);

    // Deleting an attached ENI is refused before EC2 (moto would allow it).
    let err = cloud.delete_eni(&eni.id).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert_eq!(cloud.stats().get("DeleteNetworkInterface").calls, 0);

    cloud.detach_eni(&eni.id, node).await.unwrap();
    let detached = providers::wait::wait_eni_status(
        &cloud,
        &eni.id,
        EniStatus::Available,
        providers::wait::PollPolicy::default(),
    )
    .await
    .unwrap();
    assert_eq!(detached.instance_id, None);
    // Detaching again: nothing attached, done.
    cloud.detach_eni(&eni.id, node).await.unwrap();
    assert_eq!(cloud.stats().get("DetachNetworkInterface").calls, 1);

    cloud.delete_eni(&eni.id).await.unwrap();
    let left = ec2
        .describe_network_interfaces()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("network-interface-id")
                .values(eni.id.as_str())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(left.network_interfaces().is_empty(), "deleted in moto");
    // Deleting again: NotFound counts as done.
    cloud.delete_eni(&eni.id).await.unwrap();
}

#[tokio::test]
async fn fourth_eni_on_t3_medium_fails_before_any_attach_call() {
    let Some(moto) = Moto::start() else { return };
    let ec2 = moto.sdk();
    let world = seed(&ec2).await;
    let cloud = moto.cloud(CLUSTER).await;
    let node = &world.instances[0];

    let mut enis = Vec::new();
    for i in 0..3 {
        enis.push(
            cloud
                .create_eni(&eni_request(&world, 0, &format!("tok-{i}")))
                .await
                .unwrap(),
        );
    }
    cloud.attach_eni(&enis[0].id, node).await.unwrap();
    cloud.attach_eni(&enis[1].id, node).await.unwrap();
    assert_eq!(cloud.stats().get("AttachNetworkInterface").calls, 2);

    // Primary + 2 attached = 3 = MaximumNetworkInterfaces of a t3.medium.
    let err = cloud.attach_eni(&enis[2].id, node).await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::LimitExceeded {
            what: LimitKind::EnisPerInstance
        }
    );
    assert_eq!(err.code, "AttachmentLimitExceeded");
    assert_eq!(
        cloud.stats().get("AttachNetworkInterface").calls,
        2,
        "no AttachNetworkInterface was sent for the fourth ENI"
    );
    // moto's own view: three interfaces on the instance, the fourth still free.
    let on_instance = ec2
        .describe_network_interfaces()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(node.as_str())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(on_instance.network_interfaces().len(), 3);
    let third = cloud
        .describe_enis(&EniFilter {
            eni_ids: vec![enis[2].id.clone()],
            ..EniFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(third[0].status, EniStatus::Available);
    // The other instance still takes it.
    cloud
        .attach_eni(&enis[2].id, &world.instances[1])
        .await
        .unwrap();
}

#[tokio::test]
async fn full_subnet_fails_before_create_or_assign() {
    let Some(moto) = Moto::start() else { return };
    let world = seed(&moto.sdk()).await;
    let cloud = moto.cloud(CLUSTER).await;

    // A /28 has 11 usable addresses: an ENI with 11 secondaries needs 12.
    let mut request = eni_request(&world, 11, "big");
    request.subnet_id = world.small_subnet.clone();
    let err = cloud.create_eni(&request).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::SubnetExhausted);
    assert_eq!(cloud.stats().get("CreateNetworkInterface").calls, 0);

    // moto picks addresses at random and may hand out fewer than asked in a
    // nearly full subnet, so ask for more than what is left, whatever it is.
    request.secondary_ip_count = 4;
    request.idempotency_token = IdempotencyToken::from("fits");
    let eni = cloud.create_eni(&request).await.unwrap();
    let free = cloud
        .describe_subnets(std::slice::from_ref(&world.small_subnet))
        .await
        .unwrap()[0]
        .free_ips;
    assert!(free < 11, "the ENI took addresses: {free} left");
    let err = cloud
        .assign_private_ips(&eni.id, free + 1, &IdempotencyToken::from("a"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::SubnetExhausted);
    assert_eq!(cloud.stats().get("AssignPrivateIpAddresses").calls, 0);
}

#[tokio::test]
async fn enis_of_others_are_never_deleted() {
    let Some(moto) = Moto::start() else { return };
    let ec2 = moto.sdk();
    let world = seed(&ec2).await;
    let cloud = moto.cloud(CLUSTER).await;

    let foreign = ec2
        .create_network_interface()
        .subnet_id(world.subnet.as_str())
        .send()
        .await
        .unwrap()
        .network_interface
        .unwrap()
        .network_interface_id
        .unwrap();
    let err = cloud
        .delete_eni(&foreign.as_str().into())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    // Another cluster's ENI is just as foreign.
    let theirs = moto
        .cloud("other-cluster")
        .await
        .create_eni(&eni_request(&world, 0, "t"))
        .await
        .unwrap();
    let err = cloud.delete_eni(&theirs.id).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert_eq!(cloud.stats().get("DeleteNetworkInterface").calls, 0);
    let all = cloud.describe_enis(&EniFilter::default()).await.unwrap();
    assert!(all.iter().any(|e| e.id.as_str() == foreign));
    assert!(all.iter().any(|e| e.id == theirs.id));
}

#[tokio::test]
async fn routes_are_listed_created_and_deleted() {
    let Some(moto) = Moto::start() else { return };
    let ec2 = moto.sdk();
    let world = seed(&ec2).await;
    let cloud = moto.cloud(CLUSTER).await;
    let (node_a, node_b) = (&world.instances[0], &world.instances[1]);

    let tables = cloud.describe_route_tables(&world.vpc).await.unwrap();
    assert_eq!(tables.len(), 2, "main + custom");
    assert!(tables.iter().any(|t| t.main));
    let custom = tables.iter().find(|t| t.id == world.route_table).unwrap();
    assert!(!custom.main);

    let entries = cloud.list_route_entries(&world.route_table).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].next_hop, NextHop::Local);
    assert!(entries[0].system);

    let pod_cidr_a: ipnet::Ipv4Net = "10.244.1.0/24".parse().unwrap();
    let pod_cidr_b: ipnet::Ipv4Net = "10.244.2.0/24".parse().unwrap();
    let new = |cidr, node: &InstanceId| NewRouteEntry {
        destination: cidr,
        instance_id: node.clone(),
        name: "vpc-eni-controller".into(),
        description: "pod CIDR".into(),
    };
    let outcome = cloud
        .create_route_entries(&world.route_table, &[new(pod_cidr_a, node_a)])
        .await
        .unwrap();
    assert!(outcome.is_complete(), "{outcome:?}");
    // The instance forwards for its pods now.
    let check = ec2
        .describe_instance_attribute()
        .instance_id(node_a.as_str())
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::SourceDestCheck)
        .send()
        .await
        .unwrap();
    assert_eq!(
        check.source_dest_check().and_then(|v| v.value()),
        Some(false)
    );

    // Same destination again: AlreadyExists for that entry, the rest proceeds.
    let outcome = cloud
        .create_route_entries(
            &world.route_table,
            &[new(pod_cidr_a, node_a), new(pod_cidr_b, node_b)],
        )
        .await
        .unwrap();
    assert_eq!(outcome.failed.len(), 1);
    assert_eq!(outcome.failed[0].0, pod_cidr_a);
    assert_eq!(outcome.failed[0].1.kind, ErrorKind::AlreadyExists);
    // Source/dest check turned off once per instance, not once per route.
    assert_eq!(cloud.stats().get("ModifyInstanceAttribute").calls, 2);

    let entries = cloud.list_route_entries(&world.route_table).await.unwrap();
    let a = entries
        .iter()
        .find(|e| e.destination == pod_cidr_a)
        .unwrap();
    assert_eq!(a.next_hop, NextHop::Instance(node_a.clone()));
    assert!(!a.system);
    assert_eq!(entries.len(), 3);

    // A delete naming the wrong instance leaves the route alone.
    let outcome = cloud
        .delete_route_entries(&world.route_table, &[(pod_cidr_a, node_b.clone())])
        .await
        .unwrap();
    assert_eq!(outcome.failed.len(), 1);
    assert_eq!(cloud.stats().get("DeleteRoute").calls, 0);

    let outcome = cloud
        .delete_route_entries(
            &world.route_table,
            &[(pod_cidr_a, node_a.clone()), (pod_cidr_b, node_b.clone())],
        )
        .await
        .unwrap();
    assert!(outcome.is_complete(), "{outcome:?}");
    let entries = cloud.list_route_entries(&world.route_table).await.unwrap();
    assert_eq!(entries.len(), 1, "only the local route is left");
    // Deleting what is gone is done.
    let outcome = cloud
        .delete_route_entries(&world.route_table, &[(pod_cidr_a, node_a.clone())])
        .await
        .unwrap();
    assert!(outcome.is_complete());
}
