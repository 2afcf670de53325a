//! Behaviour of the in-memory cloud a user of the model notices: limits,
//! free-IP accounting, ENI lifecycle, idempotency, routes, faults.

use mocks::cloud::{ApiFault, FaultKind, World, WorldSpec};
use providers::call::CallPolicy;
use providers::ids::{
    EniId, IdempotencyToken, InstanceId, RouteTableId, SecurityGroupId, SubnetId,
};
use providers::model::{CreateEniRequest, EniFilter, EniStatus, NewRouteEntry};
use providers::{Cloud, ErrorKind, LimitKind};
use std::time::Duration;

const ALIBABA: &str = r#"
region: cn-hangzhou
flavor: alibaba
accessKeys: [{id: testid, secret: testsecret}]
vpcs: [{id: vpc-1, cidr: 192.168.0.0/16, routeTables: [{id: vtb-1, quota: 3}]}]
vswitches:
  - {id: vsw-h, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.1.0/24}
  - {id: vsw-small, vpc: vpc-1, zone: cn-hangzhou-h, cidr: 192.168.2.0/28}
securityGroups: [{id: sg-1, vpc: vpc-1}]
instances:
  - {id: i-1, type: ecs.c6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-h, privateIp: 192.168.1.10}
  - {id: i-2, type: ecs.g6.xlarge, zone: cn-hangzhou-h, vswitch: vsw-h, privateIp: 192.168.1.11}
faults: {attachDelayMs: 0, detachDelayMs: 0, routeDelayMs: 1000}
"#;

fn world() -> World {
    World::from_yaml(ALIBABA).unwrap()
}

fn req(subnet: &str, secondary: u32, token: &str) -> CreateEniRequest {
    CreateEniRequest {
        subnet_id: SubnetId::new(subnet),
        security_groups: vec![SecurityGroupId::new("sg-1")],
        secondary_ip_count: secondary,
        tags: [("cluster".to_owned(), "c1".to_owned())].into(),
        description: "test".into(),
        idempotency_token: IdempotencyToken::new(token),
    }
}

fn i(id: &str) -> InstanceId {
    InstanceId::new(id)
}

#[test]
fn the_issue_spec_parses_and_unknown_keys_are_rejected() {
    let yaml = mocks::cloud::EXAMPLE_YAML;
    let world = World::from_yaml(yaml).unwrap();
    assert_eq!(world.region().as_str(), "cn-hangzhou");
    assert_eq!(world.access_keys()[0].id, "testid");
    assert!(!format!("{:?}", world.access_keys()).contains("testsecret"));
    let err = WorldSpec::from_yaml(&yaml.replace("faults: {}", "fautls: {}")).unwrap_err();
    assert!(err.to_string().contains("fautls"), "{err}");
}

#[test]
fn validation_names_the_field_and_the_fix() {
    let bad_vsw = ALIBABA.replace(
        "vswitch: vsw-h, privateIp: 192.168.1.10",
        "vswitch: vsw-x, privateIp: 192.168.1.10",
    );
    let err = WorldSpec::from_yaml(&bad_vsw).unwrap_err().to_string();
    assert!(
        err.contains("instances[0] (i-1).vswitch") && err.contains("vsw-x"),
        "{err}"
    );

    let outside = ALIBABA.replace("cidr: 192.168.2.0/28", "cidr: 10.2.0.0/28");
    let err = WorldSpec::from_yaml(&outside).unwrap_err().to_string();
    assert!(
        err.contains("vswitches[1] (vsw-small).cidr") && err.contains("inside the VPC"),
        "{err}"
    );

    let bad_type = ALIBABA.replace("ecs.c6.xlarge", "t3.medium");
    let err = WorldSpec::from_yaml(&bad_type).unwrap_err().to_string();
    assert!(
        err.contains("instances[0] (i-1).type") && err.contains("ecs.g6.xlarge"),
        "{err}"
    );

    let bad_api = ALIBABA.replace(
        "routeDelayMs: 1000}",
        "routeDelayMs: 1000, CreateEni: {errorRate: 0.5}}",
    );
    let err = WorldSpec::from_yaml(&bad_api).unwrap_err().to_string();
    assert!(
        err.contains("faults.CreateEni") && err.contains("CreateNetworkInterface"),
        "{err}"
    );
}

#[tokio::test]
async fn instances_start_with_their_primary_eni() {
    let w = world();
    let inst = w.describe_instance(&i("i-1")).await.unwrap();
    assert_eq!(inst.enis.len(), 1);
    assert!(inst.enis[0].primary);
    assert_eq!(inst.enis[0].device_index, 0);
    assert_eq!(
        inst.primary_ip,
        "192.168.1.10".parse::<std::net::Ipv4Addr>().unwrap()
    );
    let limits = w.instance_type_limits(&inst.instance_type).await.unwrap();
    assert_eq!((limits.max_enis, limits.ipv4_per_eni), (3, 10));
}

#[tokio::test]
async fn attaching_past_the_type_limit_fails_with_kind_and_code() {
    let w = world();
    // ecs.c6.xlarge: 3 ENIs including the primary -> 2 secondary.
    for n in 0..3 {
        let eni = w
            .create_eni(&req("vsw-h", 0, &format!("t{n}")))
            .await
            .unwrap();
        let result = w.attach_eni(&eni.id, &i("i-1")).await;
        if n < 2 {
            result.unwrap();
        } else {
            let err = result.unwrap_err();
            assert_eq!(
                err.kind,
                ErrorKind::LimitExceeded {
                    what: LimitKind::EnisPerInstance
                }
            );
            assert_eq!(err.code, "EniPerInstanceLimitExceeded");
            assert!(err.request_id.is_some());
        }
    }
    let inst = w.describe_instance(&i("i-1")).await.unwrap();
    let indexes: Vec<u32> = inst.enis.iter().map(|e| e.device_index).collect();
    assert_eq!(indexes, vec![0, 1, 2]);
}

#[tokio::test]
async fn ips_per_eni_and_per_call_limits() {
    let w = world();
    let eni = w.create_eni(&req("vsw-h", 0, "t")).await.unwrap();
    w.attach_eni(&eni.id, &i("i-1")).await.unwrap();
    let tok = |s: &str| IdempotencyToken::new(s);

    let err = w
        .assign_private_ips(&eni.id, 11, &tok("a0"))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::LimitExceeded {
            what: LimitKind::IpsPerCall
        }
    );

    // ecs.c6.xlarge: 10 addresses per ENI, the primary included -> 9 secondary.
    let got = w.assign_private_ips(&eni.id, 9, &tok("a1")).await.unwrap();
    assert_eq!(got.len(), 9);
    let err = w
        .assign_private_ips(&eni.id, 1, &tok("a2"))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::LimitExceeded {
            what: LimitKind::IpsPerEni
        }
    );
    assert_eq!(err.code, "QuotaExceeded.PrivateIpAddress");

    // Unassign gives room back.
    w.unassign_private_ips(&eni.id, &got[..2]).await.unwrap();
    assert_eq!(
        w.assign_private_ips(&eni.id, 2, &tok("a3"))
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_small_subnet_runs_out_with_exact_free_counts() {
    let w = world();
    let small = SubnetId::new("vsw-small");
    let free = |w: World| async move {
        w.describe_subnets(&[SubnetId::new("vsw-small")])
            .await
            .unwrap()[0]
            .free_ips
    };
    // /28 = 16 addresses; Alibaba reserves the first and the last three.
    assert_eq!(free(w.clone()).await, 12);
    let eni = w.create_eni(&req("vsw-small", 5, "t1")).await.unwrap();
    assert_eq!(free(w.clone()).await, 6);
    assert_eq!(
        eni.primary_ip,
        "192.168.2.1".parse::<std::net::Ipv4Addr>().unwrap()
    );
    let more = w
        .assign_private_ips(&eni.id, 6, &IdempotencyToken::new("a"))
        .await
        .unwrap();
    assert_eq!(free(w.clone()).await, 0);
    assert!(more.iter().all(|ip| ip.octets()[3] <= 12), "{more:?}");

    let err = w.create_eni(&req("vsw-small", 0, "t2")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::SubnetExhausted);
    assert_eq!(err.code, "InvalidVSwitchId.IpNotEnough");
    let err = w
        .assign_private_ips(&eni.id, 1, &IdempotencyToken::new("b"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::SubnetExhausted);

    w.unassign_private_ips(&eni.id, &more[..3]).await.unwrap();
    assert_eq!(free(w.clone()).await, 3);
    w.delete_eni(&eni.id).await.unwrap();
    assert_eq!(free(w.clone()).await, 12);
    let gateway = w.describe_subnets(&[small]).await.unwrap()[0].gateway;
    assert_eq!(
        gateway,
        "192.168.2.13".parse::<std::net::Ipv4Addr>().unwrap()
    );
}

#[tokio::test]
async fn create_is_idempotent_by_token() {
    let w = world();
    let a = w.create_eni(&req("vsw-h", 2, "same")).await.unwrap();
    let b = w.create_eni(&req("vsw-h", 2, "same")).await.unwrap();
    assert_eq!(a.id, b.id);
    let all = w
        .describe_enis(&EniFilter {
            tags: [("cluster".to_owned(), "c1".to_owned())].into(),
            ..EniFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    let err = w.create_eni(&req("vsw-h", 3, "same")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert_eq!(err.code, "IdempotentParameterMismatch");
}

#[tokio::test(start_paused = true)]
async fn eni_lifecycle_follows_the_delays() {
    let w = World::from_yaml(&ALIBABA.replace(
        "attachDelayMs: 0, detachDelayMs: 0",
        "attachDelayMs: 2000, detachDelayMs: 1000",
    ))
    .unwrap();
    let eni = w.create_eni(&req("vsw-h", 0, "t")).await.unwrap();
    assert_eq!(eni.status, EniStatus::Available);
    w.attach_eni(&eni.id, &i("i-1")).await.unwrap();
    let status = |w: World, id: EniId| async move {
        w.describe_enis(&EniFilter {
            eni_ids: vec![id],
            ..EniFilter::default()
        })
        .await
        .unwrap()[0]
            .status
    };
    assert_eq!(
        status(w.clone(), eni.id.clone()).await,
        EniStatus::Attaching
    );
    // Attaching: a second attach and a detach are refused as conflicts.
    let err = w.attach_eni(&eni.id, &i("i-2")).await.unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_str()),
        (ErrorKind::Conflict, "InvalidOperation.InvalidEniState")
    );
    assert_eq!(
        w.detach_eni(&eni.id, &i("i-1")).await.unwrap_err().kind,
        ErrorKind::Conflict
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(status(w.clone(), eni.id.clone()).await, EniStatus::InUse);

    // Deleting an attached ENI is refused.
    let err = w.delete_eni(&eni.id).await.unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_str()),
        (ErrorKind::Conflict, "InvalidOperation.InvalidEniState")
    );

    w.detach_eni(&eni.id, &i("i-1")).await.unwrap();
    assert_eq!(
        status(w.clone(), eni.id.clone()).await,
        EniStatus::Detaching
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        status(w.clone(), eni.id.clone()).await,
        EniStatus::Available
    );
    w.delete_eni(&eni.id).await.unwrap();
    // Gone counts as done.
    w.delete_eni(&eni.id).await.unwrap();
    w.detach_eni(&eni.id, &i("i-1")).await.unwrap();
    w.unassign_private_ips(&eni.id, &[eni.primary_ip])
        .await
        .unwrap();
    assert!(w.enis().iter().all(|e| e.id != eni.id));
}

#[tokio::test]
async fn primary_enis_cannot_be_detached_or_deleted() {
    let w = world();
    let primary = w.describe_instance(&i("i-1")).await.unwrap().enis[0]
        .eni_id
        .clone();
    assert_eq!(
        w.detach_eni(&primary, &i("i-1")).await.unwrap_err().kind,
        ErrorKind::InvalidRequest
    );
    assert_eq!(
        w.delete_eni(&primary).await.unwrap_err().kind,
        ErrorKind::InvalidRequest
    );
}

#[tokio::test]
async fn remove_instance_deletes_primary_and_frees_secondaries() {
    let w = world();
    let eni = w.create_eni(&req("vsw-h", 0, "t")).await.unwrap();
    w.attach_eni(&eni.id, &i("i-1")).await.unwrap();
    let before = w.describe_subnets(&[SubnetId::new("vsw-h")]).await.unwrap()[0].free_ips;
    w.remove_instance(&i("i-1")).unwrap();
    let after = w.describe_subnets(&[SubnetId::new("vsw-h")]).await.unwrap()[0].free_ips;
    assert_eq!(after, before + 1);
    let left = w.enis();
    assert_eq!(
        left.iter().find(|e| e.id == eni.id).unwrap().status,
        EniStatus::Available
    );
    assert_eq!(
        w.describe_instance(&i("i-1")).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
}

fn route(dest: &str, inst: &str) -> NewRouteEntry {
    NewRouteEntry {
        destination: dest.parse().unwrap(),
        instance_id: i(inst),
        name: "vpc-eni-controller".into(),
        description: "node".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn route_changes_conflict_while_pending_then_succeed() {
    let w = world();
    let table = RouteTableId::new("vtb-1");
    let out = w
        .create_route_entries(&table, &[route("10.0.0.0/24", "i-1")])
        .await
        .unwrap();
    assert!(out.is_complete());
    let entries = w.list_route_entries(&table).await.unwrap();
    let ours = entries.iter().find(|e| !e.system).unwrap();
    assert_eq!(ours.status, providers::model::RouteEntryStatus::Pending);
    // System entries: one per vSwitch of the VPC.
    assert_eq!(entries.iter().filter(|e| e.system).count(), 2);

    let err = w
        .create_route_entries(&table, &[route("10.0.1.0/24", "i-2")])
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_str()),
        (ErrorKind::Conflict, "IncorrectRouteEntryStatus")
    );

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let out = w
        .create_route_entries(&table, &[route("10.0.1.0/24", "i-2")])
        .await
        .unwrap();
    assert!(out.is_complete());
}

#[tokio::test]
async fn duplicate_destinations_and_the_table_quota() {
    let w = World::from_yaml(&ALIBABA.replace("routeDelayMs: 1000", "routeDelayMs: 0")).unwrap();
    let table = RouteTableId::new("vtb-1");
    let out = w
        .create_route_entries(
            &table,
            &[
                route("10.0.0.0/24", "i-1"),
                route("10.0.0.0/24", "i-2"),
                route("192.168.1.0/24", "i-1"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(out.failed.len(), 2);
    for (_, err) in &out.failed {
        assert_eq!(
            (err.kind.clone(), err.code.as_str()),
            (ErrorKind::AlreadyExists, "InvalidCIDRBlock.Duplicate")
        );
    }
    // Quota 3 custom entries: one taken, two more fit, the fourth fails.
    let out = w
        .create_route_entries(
            &table,
            &[
                route("10.0.1.0/24", "i-1"),
                route("10.0.2.0/24", "i-1"),
                route("10.0.3.0/24", "i-2"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(out.failed.len(), 1);
    let (dest, err) = &out.failed[0];
    assert_eq!(dest.to_string(), "10.0.3.0/24");
    assert_eq!(
        err.kind,
        ErrorKind::LimitExceeded {
            what: LimitKind::RouteEntriesPerTable
        }
    );
    assert_eq!(err.code, "QuotaExceeded.RouteEntry");
    assert_eq!(
        w.route_entries(&table).iter().filter(|e| !e.system).count(),
        3
    );
    // Deleting frees quota; deleting what is gone counts as done.
    let gone = [
        ("10.0.1.0/24".parse().unwrap(), i("i-1")),
        ("10.9.0.0/24".parse().unwrap(), i("i-1")),
    ];
    assert!(w
        .delete_route_entries(&table, &gone)
        .await
        .unwrap()
        .is_complete());
    assert!(w
        .create_route_entries(&table, &[route("10.0.3.0/24", "i-2")])
        .await
        .unwrap()
        .is_complete());
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_through_memcloud_with_the_same_token_and_counted() {
    let w = world();
    w.set_fault(
        "CreateNetworkInterface",
        Some(ApiFault {
            rate_per_second: Some(1),
            ..ApiFault::default()
        }),
    );
    let cloud = mocks::cloud::MemCloud::new(w.clone(), CallPolicy::default());
    let a = cloud.create_eni(&req("vsw-h", 0, "tok-a")).await.unwrap();
    // The second create within the same second is throttled by the server,
    // retried by the caller after a backoff, and succeeds.
    let b = cloud.create_eni(&req("vsw-h", 0, "tok-b")).await.unwrap();
    assert_ne!(a.id, b.id);
    let stats = cloud.stats().get("CreateNetworkInterface");
    assert!(stats.throttles >= 1, "{stats:?}");
    assert_eq!(stats.calls, stats.throttles + 2);
    assert_eq!(w.calls()["CreateNetworkInterface"], stats.calls);
    // Exactly two ENIs exist: retries reused the token, no duplicate.
    assert_eq!(
        w.enis().iter().filter(|e| e.instance_id.is_none()).count(),
        2
    );
}

#[tokio::test]
async fn a_lost_answer_is_retried_with_the_same_token_and_makes_one_eni() {
    let w = world();
    // Half the creates take effect but their answer is lost (a transient
    // error after the effect): only the same token on the retry avoids a leak.
    w.set_fault(
        "CreateNetworkInterface",
        Some(ApiFault {
            error_rate: 0.5,
            error_kind: FaultKind::Transient,
            after_effect: true,
            ..ApiFault::default()
        }),
    );
    let policy = CallPolicy {
        max_tries: 30,
        base_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        ..CallPolicy::default()
    };
    let cloud = mocks::cloud::MemCloud::new(w.clone(), policy);
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            cloud
                .create_eni(&req("vsw-h", 0, &format!("tok-{n}")))
                .await
                .unwrap()
                .id,
        );
    }
    let stats = cloud.stats().get("CreateNetworkInterface");
    assert!(stats.errors >= 1, "{stats:?}");
    assert_eq!(stats.calls - stats.errors, 5);
    let unattached: Vec<EniId> = w
        .enis()
        .into_iter()
        .filter(|e| e.instance_id.is_none())
        .map(|e| e.id)
        .collect();
    assert_eq!(unattached, ids);

    // The raw world without a shared token does leak: that is what the test guards.
    let leaky = world();
    leaky.set_fault(
        "CreateNetworkInterface",
        Some(ApiFault {
            error_rate: 1.0,
            error_kind: FaultKind::Transient,
            after_effect: true,
            ..ApiFault::default()
        }),
    );
    assert!(leaky.create_eni(&req("vsw-h", 0, "x1")).await.is_err());
    assert!(leaky.create_eni(&req("vsw-h", 0, "x2")).await.is_err());
    assert_eq!(
        leaky
            .enis()
            .iter()
            .filter(|e| e.instance_id.is_none())
            .count(),
        2
    );
}

async fn fault_sequence(seed: u64) -> Vec<bool> {
    let yaml = ALIBABA.replace(
        "faults: {attachDelayMs: 0, detachDelayMs: 0, routeDelayMs: 1000}",
        &format!(
            "faults: {{seed: {seed}, DescribeVSwitches: {{errorRate: 0.5, errorKind: throttled}}}}"
        ),
    );
    let w = World::from_yaml(&yaml).unwrap();
    let mut seq = Vec::new();
    for _ in 0..40 {
        seq.push(w.describe_subnets(&[]).await.is_ok());
    }
    seq
}

#[tokio::test]
async fn the_same_seed_gives_the_same_fault_sequence() {
    let a = fault_sequence(7).await;
    assert_eq!(a, fault_sequence(7).await);
    assert!(a.iter().any(|ok| *ok) && a.iter().any(|ok| !*ok), "{a:?}");
    assert_ne!(a, fault_sequence(8).await);
}

#[tokio::test]
async fn calls_are_counted_per_action_and_reads_do_not_mutate() {
    let w = world();
    let cloud = mocks::cloud::MemCloud::new(w.clone(), CallPolicy::default());
    cloud.describe_instance(&i("i-1")).await.unwrap();
    cloud.describe_enis(&EniFilter::default()).await.unwrap();
    cloud
        .list_route_entries(&RouteTableId::new("vtb-1"))
        .await
        .unwrap();
    assert_eq!(w.mutating_calls(), 0);
    assert_eq!(w.calls()["DescribeInstances"], 1);
    cloud.create_eni(&req("vsw-h", 0, "t")).await.unwrap();
    assert_eq!(w.mutating_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn latency_and_faults_change_at_run_time() {
    let w = world();
    let started = tokio::time::Instant::now();
    w.describe_subnets(&[]).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);

    w.set_fault(
        "DescribeVSwitches",
        Some(ApiFault {
            latency_ms: 50,
            ..ApiFault::default()
        }),
    );
    let started = tokio::time::Instant::now();
    w.describe_subnets(&[]).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(50));

    w.set_fault(
        "DescribeVSwitches",
        Some(ApiFault {
            error_rate: 1.0,
            error_kind: FaultKind::Auth,
            ..ApiFault::default()
        }),
    );
    let err = w.describe_subnets(&[]).await.unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_str()),
        (ErrorKind::Auth, "InvalidAccessKeyId.NotFound")
    );
    // Other APIs are untouched, and clearing the fault heals the API.
    w.describe_instance(&i("i-1")).await.unwrap();
    w.set_fault("DescribeVSwitches", None);
    w.describe_subnets(&[]).await.unwrap();
    assert_eq!(w.calls()["DescribeVSwitches"], 4);
}

#[tokio::test(start_paused = true)]
async fn an_instance_takes_only_so_many_eni_operations_in_flight() {
    let spec = ALIBABA
        .replace("type: ecs.c6.xlarge", "type: ecs.g6.3xlarge")
        .replace(
            "attachDelayMs: 0, detachDelayMs: 0",
            "attachDelayMs: 2000, detachDelayMs: 1000, eniOpsPerInstance: 2",
        );
    let w = World::from_yaml(&spec).unwrap();
    let mut enis = Vec::new();
    for n in 0..4 {
        enis.push(
            w.create_eni(&req("vsw-h", 0, &format!("t{n}")))
                .await
                .unwrap(),
        );
    }
    w.attach_eni(&enis[0].id, &i("i-1")).await.unwrap();
    w.attach_eni(&enis[1].id, &i("i-1")).await.unwrap();
    // A third while two are Attaching: refused before any effect, as ECS
    // refuses an instance busy with other ENI operations.
    let err = w.attach_eni(&enis[2].id, &i("i-1")).await.unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_str()),
        (ErrorKind::Conflict, "InvalidOperation.InvalidEcsState")
    );
    assert_eq!(w.eni_ops_refused_busy(), 1);
    let third = w
        .describe_enis(&EniFilter {
            eni_ids: vec![enis[2].id.clone()],
            ..EniFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(third[0].status, EniStatus::Available);
    assert_eq!(third[0].instance_id, None);
    // Another instance is not affected.
    w.attach_eni(&enis[3].id, &i("i-2")).await.unwrap();

    // Once the two settle, the third goes through; a detach counts too.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    w.attach_eni(&enis[2].id, &i("i-1")).await.unwrap();
    w.detach_eni(&enis[0].id, &i("i-1")).await.unwrap();
    let err = w.detach_eni(&enis[1].id, &i("i-1")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert_eq!(w.max_eni_ops_in_flight(&i("i-1")), 2);
    assert_eq!(w.max_eni_ops_in_flight(&i("i-2")), 1);
}

#[tokio::test]
async fn zero_lifts_the_in_flight_limit() {
    let spec = ALIBABA
        .replace("type: ecs.c6.xlarge", "type: ecs.g6.3xlarge")
        .replace("attachDelayMs: 0", "attachDelayMs: 60000");
    for (limit, accepted) in [(1, 1), (0, 5)] {
        let w = World::from_yaml(&spec.replace(
            "detachDelayMs: 0",
            &format!("detachDelayMs: 0, eniOpsPerInstance: {limit}"),
        ))
        .unwrap();
        let mut ok = 0;
        for n in 0..5 {
            let eni = w
                .create_eni(&req("vsw-h", 0, &format!("d{n}")))
                .await
                .unwrap();
            if w.attach_eni(&eni.id, &i("i-1")).await.is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, accepted, "eniOpsPerInstance: {limit}");
        assert_eq!(w.max_eni_ops_in_flight(&i("i-1")), accepted);
    }
}
