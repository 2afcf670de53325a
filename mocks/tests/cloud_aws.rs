//! The aws flavor of the in-memory cloud: EC2 error codes, reserved subnet
//! addresses, one route per call, immediate routes, blackholes.

use mocks::cloud::World;
use providers::ids::{IdempotencyToken, InstanceId, RouteTableId, SubnetId, VpcId};
use providers::model::{CreateEniRequest, NewRouteEntry, NextHop, RouteEntryStatus};
use providers::{Cloud, ErrorKind, LimitKind};
use std::net::Ipv4Addr;

const AWS: &str = r#"
region: us-east-1
flavor: aws
vpcs: [{id: vpc-a, cidr: 10.0.0.0/16, routeTables: [{id: rtb-main, main: true, quota: 2}, {id: rtb-2}]}]
vswitches: [{id: subnet-a, vpc: vpc-a, zone: us-east-1a, cidr: 10.0.1.0/28}]
instances:
  - {id: i-a, type: t3.medium, zone: us-east-1a, vswitch: subnet-a, privateIp: 10.0.1.4}
  - {id: i-b, type: t3.medium, zone: us-east-1a, vswitch: subnet-a, privateIp: 10.0.1.5}
faults: {attachDelayMs: 0, detachDelayMs: 0}
"#;

fn eni_req(token: &str, secondary: u32) -> CreateEniRequest {
    CreateEniRequest {
        subnet_id: SubnetId::new("subnet-a"),
        security_groups: vec![],
        secondary_ip_count: secondary,
        tags: Default::default(),
        description: String::new(),
        idempotency_token: IdempotencyToken::new(token),
    }
}

#[tokio::test]
async fn aws_subnet_reserves_four_and_one_and_exhausts_with_ec2_code() {
    let w = World::from_yaml(AWS).unwrap();
    let subnet = &w
        .describe_subnets(&[SubnetId::new("subnet-a")])
        .await
        .unwrap()[0];
    // /28 = 16, minus 4 + 1 reserved, minus the two instances' primary IPs.
    assert_eq!(subnet.free_ips, 9);
    assert_eq!(subnet.gateway, Ipv4Addr::new(10, 0, 1, 1));
    let eni = w.create_eni(&eni_req("a", 8)).await.unwrap();
    assert_eq!(eni.primary_ip, Ipv4Addr::new(10, 0, 1, 6));
    assert_eq!(eni.secondary_ips.last(), Some(&Ipv4Addr::new(10, 0, 1, 14)));
    let err = w.create_eni(&eni_req("b", 0)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::SubnetExhausted);
    assert_eq!(err.code, "InsufficientFreeAddressesInSubnet");
}

#[tokio::test]
async fn aws_attach_limit_and_in_use_codes() {
    let w = World::from_yaml(AWS).unwrap();
    let i_a = InstanceId::new("i-a");
    let e1 = w.create_eni(&eni_req("1", 0)).await.unwrap();
    let e2 = w.create_eni(&eni_req("2", 0)).await.unwrap();
    let e3 = w.create_eni(&eni_req("3", 0)).await.unwrap();
    w.attach_eni(&e1.id, &i_a).await.unwrap();
    w.attach_eni(&e2.id, &i_a).await.unwrap();
    // t3.medium: 3 ENIs including the primary.
    let err = w.attach_eni(&e3.id, &i_a).await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::LimitExceeded {
            what: LimitKind::EnisPerInstance
        }
    );
    assert_eq!(err.code, "AttachmentLimitExceeded");
    let err = w.delete_eni(&e1.id).await.unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_str()),
        (ErrorKind::Conflict, "InvalidNetworkInterface.InUse")
    );
    // t3.medium: 6 addresses per ENI -> 5 secondary.
    w.assign_private_ips(&e1.id, 5, &IdempotencyToken::new("x"))
        .await
        .unwrap();
    let err = w
        .assign_private_ips(&e1.id, 1, &IdempotencyToken::new("y"))
        .await
        .unwrap_err();
    assert_eq!(err.code, "PrivateIpAddressLimitExceeded");
}

fn route(dest: &str, inst: &str) -> NewRouteEntry {
    NewRouteEntry {
        destination: dest.parse().unwrap(),
        instance_id: InstanceId::new(inst),
        name: "ignored".into(),
        description: "ignored".into(),
    }
}

#[tokio::test]
async fn aws_routes_are_immediate_single_and_blackhole_when_the_instance_goes() {
    let w = World::from_yaml(AWS).unwrap();
    let caps = w.capabilities();
    assert_eq!(
        (
            caps.route_batch_size,
            caps.serialize_route_changes,
            caps.max_ips_per_assign
        ),
        (1, false, 50)
    );
    let tables = w.describe_route_tables(&VpcId::new("vpc-a")).await.unwrap();
    assert_eq!(tables.iter().filter(|t| t.main).count(), 1);
    let rtb = RouteTableId::new("rtb-main");
    assert!(w
        .create_route_entries(&rtb, &[route("10.1.0.0/24", "i-a")])
        .await
        .unwrap()
        .is_complete());
    // No serialisation: a second change right away is fine.
    assert!(w
        .create_route_entries(&rtb, &[route("10.1.1.0/24", "i-b")])
        .await
        .unwrap()
        .is_complete());
    let err = w
        .create_route_entries(&rtb, &[route("10.1.2.0/24", "i-b")])
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_str()),
        (
            ErrorKind::LimitExceeded {
                what: LimitKind::RouteEntriesPerTable
            },
            "RouteLimitExceeded"
        )
    );
    let err = w
        .create_route_entries(&rtb, &[route("10.1.0.0/24", "i-b")])
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_str()),
        (ErrorKind::AlreadyExists, "RouteAlreadyExists")
    );
    let err = w
        .create_route_entries(
            &rtb,
            &[route("10.1.5.0/24", "i-a"), route("10.1.6.0/24", "i-a")],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);

    let entries = w.list_route_entries(&rtb).await.unwrap();
    let local = entries.iter().find(|e| e.system).unwrap();
    assert_eq!(
        (local.destination.to_string(), &local.next_hop),
        ("10.0.0.0/16".to_owned(), &NextHop::Local)
    );
    assert!(entries
        .iter()
        .filter(|e| !e.system)
        .all(|e| e.status == RouteEntryStatus::Available && e.name.is_none()));

    w.remove_instance(&InstanceId::new("i-a")).unwrap();
    let gone = w
        .route_entries(&rtb)
        .into_iter()
        .find(|e| e.destination.to_string() == "10.1.0.0/24")
        .unwrap();
    assert_eq!(gone.status, RouteEntryStatus::Blackhole);
    // The primary ENI went with the instance: its address is free again.
    assert_eq!(w.describe_subnets(&[]).await.unwrap()[0].free_ips, 10);
}

#[tokio::test]
async fn a_busy_instance_refuses_an_attach_with_ec2s_code() {
    let w = World::from_yaml(&AWS.replace(
        "faults: {attachDelayMs: 0, detachDelayMs: 0}",
        "faults: {attachDelayMs: 60000, detachDelayMs: 0, eniOpsPerInstance: 1}",
    ))
    .unwrap();
    let a = w.create_eni(&eni_req("busy-a", 0)).await.unwrap();
    let b = w.create_eni(&eni_req("busy-b", 0)).await.unwrap();
    w.attach_eni(&a.id, &InstanceId::new("i-a")).await.unwrap();
    let err = w
        .attach_eni(&b.id, &InstanceId::new("i-a"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_str()),
        (ErrorKind::Conflict, "IncorrectInstanceState")
    );
}
