//! Error paths of the AWS backend with `aws-smithy-mocks`: every mapped EC2
//! error code reaches its kind through the real EC2 error parser, the shared
//! Caller is the only thing that retries, and NotFound on teardown is done.

#![cfg(feature = "aws")]

use aws_sdk_ec2::operation::attach_network_interface::AttachNetworkInterfaceOutput;
use aws_sdk_ec2::operation::create_network_interface::CreateNetworkInterfaceOutput;
use aws_sdk_ec2::operation::create_route::CreateRouteOutput;
use aws_sdk_ec2::operation::describe_instance_types::DescribeInstanceTypesOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput;
use aws_sdk_ec2::operation::describe_route_tables::DescribeRouteTablesOutput;
use aws_sdk_ec2::operation::describe_subnets::DescribeSubnetsOutput;
use aws_sdk_ec2::operation::modify_instance_attribute::ModifyInstanceAttributeOutput;
use aws_sdk_ec2::types::{
    Instance, InstanceNetworkInterface, InstanceNetworkInterfaceAttachment, InstanceTypeInfo,
    NetworkInfo, NetworkInterface, NetworkInterfaceAttachment, NetworkInterfacePrivateIpAddress,
    NetworkInterfaceStatus, Placement, Reservation, Route, RouteOrigin, RouteState, RouteTable,
    Subnet, Tag,
};
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use ipam::ids::{
    ClusterId, EniId, IdempotencyToken, InstanceId, InstanceType, RouteTableId, SubnetId,
};
use providers::aws::{cluster_tag, default_call_policy, AwsCloud, AwsConfig};
use providers::call::CallPolicy;
use providers::model::{CreateEniRequest, NewRouteEntry, Tags};
use providers::{Cloud, ErrorKind, LimitKind};
use std::time::Duration;

const CLUSTER: &str = "test-cluster";

/// An EC2 error answer exactly as EC2 sends it (query protocol XML).
fn ec2_error(status: u16, code: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{code} from the mock</Message></Error></Errors><RequestID>req-{code}</RequestID></Response>"
    );
    let mut response = Response::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
    response.headers_mut().insert("x-amzn-requestid", "req-7");
    response
}

fn cloud_with(rules: &[&Rule], max_tries: u32) -> AwsCloud {
    let client: Client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules);
    let mut config = AwsConfig::new(ClusterId::from(CLUSTER));
    config.call_policy = CallPolicy {
        max_tries,
        ..default_call_policy()
    };
    AwsCloud::from_sdk_client(client, config)
}

fn instance(enis: &[(&str, i32)]) -> DescribeInstancesOutput {
    let mut i = Instance::builder()
        .instance_id("i-1")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Medium)
        .placement(Placement::builder().availability_zone("us-east-1a").build())
        .vpc_id("vpc-1")
        .subnet_id("subnet-1")
        .private_ip_address("10.0.1.10");
    for (id, index) in enis {
        i = i.network_interfaces(
            InstanceNetworkInterface::builder()
                .network_interface_id(*id)
                .attachment(
                    InstanceNetworkInterfaceAttachment::builder()
                        .device_index(*index)
                        .build(),
                )
                .build(),
        );
    }
    DescribeInstancesOutput::builder()
        .reservations(Reservation::builder().instances(i.build()).build())
        .build()
}

fn t3_medium() -> DescribeInstanceTypesOutput {
    DescribeInstanceTypesOutput::builder()
        .instance_types(
            InstanceTypeInfo::builder()
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Medium)
                .network_info(
                    NetworkInfo::builder()
                        .maximum_network_interfaces(3)
                        .ipv4_addresses_per_interface(6)
                        .build(),
                )
                .build(),
        )
        .build()
}

fn subnet(free: i32) -> DescribeSubnetsOutput {
    DescribeSubnetsOutput::builder()
        .subnets(
            Subnet::builder()
                .subnet_id("subnet-1")
                .vpc_id("vpc-1")
                .availability_zone("us-east-1a")
                .cidr_block("10.0.1.0/24")
                .available_ip_address_count(free)
                .build(),
        )
        .build()
}

/// An ENI of ours; attached to i-1 at `device_index` when given.
fn eni(device_index: Option<i32>) -> DescribeNetworkInterfacesOutput {
    let (key, value) = cluster_tag(&ClusterId::from(CLUSTER));
    let mut ni = NetworkInterface::builder()
        .network_interface_id("eni-1")
        .subnet_id("subnet-1")
        .vpc_id("vpc-1")
        .private_ip_address("10.0.1.20")
        .private_ip_addresses(
            NetworkInterfacePrivateIpAddress::builder()
                .private_ip_address("10.0.1.20")
                .primary(true)
                .build(),
        )
        .tag_set(Tag::builder().key(key).value(value).build());
    ni = match device_index {
        Some(index) => ni.status(NetworkInterfaceStatus::InUse).attachment(
            NetworkInterfaceAttachment::builder()
                .attachment_id("eni-attach-1")
                .instance_id("i-1")
                .device_index(index)
                .build(),
        ),
        None => ni.status(NetworkInterfaceStatus::Available),
    };
    DescribeNetworkInterfacesOutput::builder()
        .network_interfaces(ni.build())
        .build()
}

#[tokio::test]
async fn every_mapped_ec2_code_reaches_its_kind() {
    let cases: &[(&'static str, u16, ErrorKind)] = &[
        ("RequestLimitExceeded", 503, ErrorKind::Throttled),
        ("Throttling", 400, ErrorKind::Throttled),
        (
            "AttachmentLimitExceeded",
            400,
            ErrorKind::LimitExceeded {
                what: LimitKind::EnisPerInstance,
            },
        ),
        (
            "PrivateIpAddressLimitExceeded",
            400,
            ErrorKind::LimitExceeded {
                what: LimitKind::IpsPerEni,
            },
        ),
        (
            "RouteLimitExceeded",
            400,
            ErrorKind::LimitExceeded {
                what: LimitKind::RouteEntriesPerTable,
            },
        ),
        (
            "InsufficientFreeAddressesInSubnet",
            400,
            ErrorKind::SubnetExhausted,
        ),
        (
            "NetworkInterfaceLimitExceeded",
            400,
            ErrorKind::QuotaExceeded,
        ),
        (
            "InvalidNetworkInterfaceID.NotFound",
            400,
            ErrorKind::NotFound,
        ),
        ("InvalidRoute.NotFound", 400, ErrorKind::NotFound),
        ("InvalidInstanceID.NotFound", 400, ErrorKind::NotFound),
        ("RouteAlreadyExists", 400, ErrorKind::AlreadyExists),
        ("UnauthorizedOperation", 403, ErrorKind::Auth),
        ("AuthFailure", 401, ErrorKind::Auth),
        ("DependencyViolation", 400, ErrorKind::Conflict),
        ("InvalidNetworkInterface.InUse", 400, ErrorKind::Conflict),
        ("IncorrectState", 400, ErrorKind::Conflict),
        ("IncorrectInstanceState", 400, ErrorKind::Conflict),
        ("InternalError", 500, ErrorKind::Transient),
        ("SomethingNew", 503, ErrorKind::Transient),
        ("InvalidParameterValue", 400, ErrorKind::InvalidRequest),
        ("SomethingElseNew", 400, ErrorKind::InvalidRequest),
    ];
    for (code, status, kind) in cases.iter().cloned() {
        let rule =
            mock!(Client::describe_instances).then_http_response(move || ec2_error(status, code));
        // One try: the kind is what matters here, not the retry.
        let cloud = cloud_with(&[&rule], 1);
        let err = cloud
            .describe_instance(&InstanceId::from("i-1"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, kind, "{code}");
        assert_eq!(err.code, code);
        assert_eq!(err.api, "DescribeInstances");
        assert_eq!(err.message, format!("{code} from the mock"));
        assert_eq!(err.request_id.as_deref(), Some("req-7"), "{code}");
        assert_eq!(
            rule.num_calls(),
            1,
            "{code}: the SDK must not retry by itself"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn throttling_storm_is_retried_to_success_through_the_caller() {
    let rule = mock!(Client::describe_instances)
        .sequence()
        .http_response(|| ec2_error(503, "RequestLimitExceeded"))
        .times(5)
        .output(|| instance(&[("eni-p", 0)]))
        .build();
    let cloud = cloud_with(&[&rule], 6);
    let found = cloud
        .describe_instance(&InstanceId::from("i-1"))
        .await
        .unwrap();
    assert_eq!(found.enis.len(), 1);
    assert_eq!(
        rule.num_calls(),
        6,
        "5 throttled answers + 1 success, each one wire call"
    );
    let stats = cloud.stats().get("DescribeInstances");
    assert_eq!(
        (stats.calls, stats.throttles, stats.retries, stats.errors),
        (6, 5, 5, 5)
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_beyond_the_retry_budget_surfaces_as_throttled() {
    let rule = mock!(Client::describe_instances)
        .sequence()
        .http_response(|| ec2_error(503, "RequestLimitExceeded"))
        .repeatedly()
        .build();
    let cloud = cloud_with(&[&rule], 4);
    let err = cloud
        .describe_instance(&InstanceId::from("i-1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Throttled);
    assert_eq!(rule.num_calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn create_eni_retries_reuse_the_client_token() {
    let subnets = mock!(Client::describe_subnets).then_output(|| subnet(100));
    // Only a request carrying the caller's token matches; another token would
    // find no rule and fail the test.
    let create = mock!(Client::create_network_interface)
        .match_requests(|r| r.client_token() == Some("pod-uid-1"))
        .sequence()
        .http_response(|| ec2_error(503, "RequestLimitExceeded"))
        .times(2)
        .output(|| {
            CreateNetworkInterfaceOutput::builder()
                .network_interface(eni(None).network_interfaces()[0].clone())
                .build()
        })
        .build();
    let cloud = cloud_with(&[&subnets, &create], 6);
    let request = CreateEniRequest {
        subnet_id: SubnetId::from("subnet-1"),
        security_groups: vec![],
        secondary_ip_count: 0,
        tags: Tags::new(),
        description: String::new(),
        idempotency_token: IdempotencyToken::from("pod-uid-1"),
    };
    let created = cloud.create_eni(&request).await.unwrap();
    assert_eq!(created.id, EniId::from("eni-1"));
    assert_eq!(create.num_calls(), 3);
}

#[tokio::test]
async fn create_eni_in_a_full_subnet_is_subnet_exhausted() {
    let subnets = mock!(Client::describe_subnets).then_output(|| subnet(100));
    let create = mock!(Client::create_network_interface)
        .then_http_response(|| ec2_error(400, "InsufficientFreeAddressesInSubnet"));
    let cloud = cloud_with(&[&subnets, &create], 6);
    let request = CreateEniRequest {
        subnet_id: SubnetId::from("subnet-1"),
        security_groups: vec![],
        secondary_ip_count: 3,
        tags: Tags::new(),
        description: String::new(),
        idempotency_token: IdempotencyToken::from("t"),
    };
    let err = cloud.create_eni(&request).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::SubnetExhausted);
    assert_eq!(err.kind.cool_down(), Some(Duration::from_secs(600)));
    assert_eq!(create.num_calls(), 1, "not retried");
}

#[tokio::test]
async fn ec2_attachment_limit_is_limit_exceeded_and_nothing_follows() {
    let instances = mock!(Client::describe_instances).then_output(|| instance(&[("eni-p", 0)]));
    let types = mock!(Client::describe_instance_types).then_output(t3_medium);
    let attach = mock!(Client::attach_network_interface)
        .match_requests(|r| r.device_index() == Some(1))
        .then_http_response(|| ec2_error(400, "AttachmentLimitExceeded"));
    let modify = mock!(Client::modify_network_interface_attribute).then_output(|| {
        aws_sdk_ec2::operation::modify_network_interface_attribute::ModifyNetworkInterfaceAttributeOutput::builder().build()
    });
    let cloud = cloud_with(&[&instances, &types, &attach, &modify], 6);
    let err = cloud
        .attach_eni(&EniId::from("eni-1"), &InstanceId::from("i-1"))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::LimitExceeded {
            what: LimitKind::EnisPerInstance
        }
    );
    assert_eq!(attach.num_calls(), 1);
    assert_eq!(modify.num_calls(), 0);
}

/// EC2 answers `IncorrectInstanceState` (HTTP 400) to an attach while the
/// instance is busy with other ENI operations: the Caller backs off and
/// tries again until the instance takes it.
#[tokio::test(start_paused = true)]
async fn a_busy_instance_refusing_an_attach_is_retried_to_success() {
    let instances = mock!(Client::describe_instances).then_output(|| instance(&[("eni-p", 0)]));
    let types = mock!(Client::describe_instance_types).then_output(t3_medium);
    let attach = mock!(Client::attach_network_interface)
        .sequence()
        .http_response(|| ec2_error(400, "IncorrectInstanceState"))
        .times(2)
        .output(|| {
            AttachNetworkInterfaceOutput::builder()
                .attachment_id("eni-attach-3")
                .build()
        })
        .build();
    let modify = mock!(Client::modify_network_interface_attribute).then_output(|| {
        aws_sdk_ec2::operation::modify_network_interface_attribute::ModifyNetworkInterfaceAttributeOutput::builder().build()
    });
    let cloud = cloud_with(&[&instances, &types, &attach, &modify], 6);
    cloud
        .attach_eni(&EniId::from("eni-1"), &InstanceId::from("i-1"))
        .await
        .unwrap();
    assert_eq!(attach.num_calls(), 3);
    let stats = cloud.stats().get("AttachNetworkInterface");
    assert_eq!(
        (stats.retries, stats.errors_by_kind.get("conflict").copied()),
        (2, Some(2))
    );
}

#[tokio::test]
async fn attach_sets_delete_on_termination() {
    let instances =
        mock!(Client::describe_instances).then_output(|| instance(&[("eni-p", 0), ("eni-x", 2)]));
    let types = mock!(Client::describe_instance_types).then_output(t3_medium);
    // Index 1 is the first free one (2 is taken).
    let attach = mock!(Client::attach_network_interface)
        .match_requests(|r| {
            r.device_index() == Some(1) && r.network_interface_id() == Some("eni-1")
        })
        .then_output(|| {
            AttachNetworkInterfaceOutput::builder()
                .attachment_id("eni-attach-9")
                .build()
        });
    let modify = mock!(Client::modify_network_interface_attribute)
        .match_requests(|r| {
            r.attachment()
                .is_some_and(|a| a.attachment_id() == Some("eni-attach-9") && a.delete_on_termination() == Some(true))
        })
        .then_output(|| {
            aws_sdk_ec2::operation::modify_network_interface_attribute::ModifyNetworkInterfaceAttributeOutput::builder().build()
        });
    let cloud = cloud_with(&[&instances, &types, &attach, &modify], 1);
    cloud
        .attach_eni(&EniId::from("eni-1"), &InstanceId::from("i-1"))
        .await
        .unwrap();
    assert_eq!((attach.num_calls(), modify.num_calls()), (1, 1));
}

#[tokio::test]
async fn ec2_ip_limit_and_subnet_errors_on_assign() {
    for (code, kind) in [
        (
            "PrivateIpAddressLimitExceeded",
            ErrorKind::LimitExceeded {
                what: LimitKind::IpsPerEni,
            },
        ),
        (
            "InsufficientFreeAddressesInSubnet",
            ErrorKind::SubnetExhausted,
        ),
    ] {
        let describe = mock!(Client::describe_network_interfaces).then_output(|| eni(Some(1)));
        let instances = mock!(Client::describe_instances)
            .then_output(|| instance(&[("eni-p", 0), ("eni-1", 1)]));
        let types = mock!(Client::describe_instance_types).then_output(t3_medium);
        let subnets = mock!(Client::describe_subnets).then_output(|| subnet(100));
        let assign = mock!(Client::assign_private_ip_addresses)
            .match_requests(|r| r.secondary_private_ip_address_count() == Some(2))
            .then_http_response(move || ec2_error(400, code));
        let cloud = cloud_with(&[&describe, &instances, &types, &subnets, &assign], 6);
        let err = cloud
            .assign_private_ips(&EniId::from("eni-1"), 2, &IdempotencyToken::from("t"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, kind, "{code}");
        assert_eq!(assign.num_calls(), 1);
    }
}

#[tokio::test]
async fn not_found_on_detach_and_delete_counts_as_done() {
    let describe_attached = mock!(Client::describe_network_interfaces).then_output(|| eni(Some(1)));
    let detach = mock!(Client::detach_network_interface)
        .match_requests(|r| r.attachment_id() == Some("eni-attach-1"))
        .then_http_response(|| ec2_error(400, "InvalidAttachmentID.NotFound"));
    let cloud = cloud_with(&[&describe_attached, &detach], 6);
    cloud
        .detach_eni(&EniId::from("eni-1"), &InstanceId::from("i-1"))
        .await
        .unwrap();
    assert_eq!(detach.num_calls(), 1);

    let describe_free = mock!(Client::describe_network_interfaces).then_output(|| eni(None));
    let delete = mock!(Client::delete_network_interface)
        .then_http_response(|| ec2_error(400, "InvalidNetworkInterfaceID.NotFound"));
    let cloud = cloud_with(&[&describe_free, &delete], 6);
    cloud.delete_eni(&EniId::from("eni-1")).await.unwrap();
    assert_eq!(delete.num_calls(), 1);

    // An ENI EC2 no longer lists at all: nothing to send.
    let describe_none = mock!(Client::describe_network_interfaces)
        .then_output(|| DescribeNetworkInterfacesOutput::builder().build());
    let delete = mock!(Client::delete_network_interface)
        .then_http_response(|| ec2_error(500, "InternalError"));
    let cloud = cloud_with(&[&describe_none, &delete], 6);
    cloud.delete_eni(&EniId::from("eni-1")).await.unwrap();
    cloud
        .detach_eni(&EniId::from("eni-1"), &InstanceId::from("i-1"))
        .await
        .unwrap();
    assert_eq!(delete.num_calls(), 0);
}

#[tokio::test]
async fn route_errors_land_per_entry() {
    let table = RouteTableId::from("rtb-1");
    let dest: ipnet::Ipv4Net = "10.244.1.0/24".parse().unwrap();
    let full: ipnet::Ipv4Net = "10.244.2.0/24".parse().unwrap();
    let modify = mock!(Client::modify_instance_attribute)
        .then_output(|| ModifyInstanceAttributeOutput::builder().build());
    let exists = mock!(Client::create_route)
        .match_requests(|r| r.destination_cidr_block() == Some("10.244.1.0/24"))
        .then_http_response(|| ec2_error(400, "RouteAlreadyExists"));
    let over = mock!(Client::create_route)
        .match_requests(|r| r.destination_cidr_block() == Some("10.244.2.0/24"))
        .then_http_response(|| ec2_error(400, "RouteLimitExceeded"));
    let ok = mock!(Client::create_route)
        .then_output(|| CreateRouteOutput::builder().r#return(true).build());
    let cloud = cloud_with(&[&modify, &exists, &over, &ok], 6);
    let entry = |d| NewRouteEntry {
        destination: d,
        instance_id: InstanceId::from("i-1"),
        name: String::new(),
        description: String::new(),
    };
    let third: ipnet::Ipv4Net = "10.244.3.0/24".parse().unwrap();
    let outcome = cloud
        .create_route_entries(&table, &[entry(dest), entry(full), entry(third)])
        .await
        .unwrap();
    let failed: Vec<_> = outcome
        .failed
        .iter()
        .map(|(d, e)| (*d, e.kind.clone()))
        .collect();
    assert_eq!(
        failed,
        vec![
            (dest, ErrorKind::AlreadyExists),
            (
                full,
                ErrorKind::LimitExceeded {
                    what: LimitKind::RouteEntriesPerTable
                }
            ),
        ]
    );
    assert_eq!(ok.num_calls(), 1);
    assert_eq!(modify.num_calls(), 1, "source/dest check once per instance");

    // DeleteRoute answering InvalidRoute.NotFound: done.
    let tables = mock!(Client::describe_route_tables).then_output(move || {
        DescribeRouteTablesOutput::builder()
            .route_tables(
                RouteTable::builder()
                    .route_table_id("rtb-1")
                    .vpc_id("vpc-1")
                    .routes(
                        Route::builder()
                            .destination_cidr_block("10.244.1.0/24")
                            .instance_id("i-1")
                            .origin(RouteOrigin::CreateRoute)
                            .state(RouteState::Active)
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let delete =
        mock!(Client::delete_route).then_http_response(|| ec2_error(400, "InvalidRoute.NotFound"));
    let cloud = cloud_with(&[&tables, &delete], 6);
    let outcome = cloud
        .delete_route_entries(&table, &[(dest, InstanceId::from("i-1"))])
        .await
        .unwrap();
    assert!(outcome.is_complete(), "{outcome:?}");
    assert_eq!(delete.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn unknown_instance_type_is_asked_again_only_after_a_minute() {
    let types = mock!(Client::describe_instance_types)
        .then_http_response(|| ec2_error(400, "InvalidInstanceType"));
    let cloud = cloud_with(&[&types], 6);
    let bogus = InstanceType::from("x9.bogus");
    for _ in 0..3 {
        let err = cloud.instance_type_limits(&bogus).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
    }
    assert_eq!(types.num_calls(), 1);
    tokio::time::advance(Duration::from_secs(61)).await;
    cloud.instance_type_limits(&bogus).await.unwrap_err();
    assert_eq!(types.num_calls(), 2);
}

#[tokio::test]
async fn auth_failures_are_not_retried() {
    let rule = mock!(Client::describe_network_interfaces)
        .then_http_response(|| ec2_error(403, "UnauthorizedOperation"));
    let cloud = cloud_with(&[&rule], 6);
    let err = cloud
        .describe_enis(&providers::model::EniFilter::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn describe_enis_follows_every_page() {
    let first = mock!(Client::describe_network_interfaces)
        .match_requests(|r| r.next_token().is_none())
        .then_output(|| {
            let mut page = eni(None);
            page.next_token = Some("page-2".into());
            page
        });
    let second = mock!(Client::describe_network_interfaces)
        .match_requests(|r| r.next_token() == Some("page-2"))
        .then_output(|| {
            let mut page = eni(Some(1));
            page.network_interfaces = page.network_interfaces.map(|mut v| {
                v[0].network_interface_id = Some("eni-2".into());
                v
            });
            page
        });
    let cloud = cloud_with(&[&first, &second], 1);
    let enis = cloud
        .describe_enis(&providers::model::EniFilter::default())
        .await
        .unwrap();
    let ids: Vec<_> = enis.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, vec!["eni-1", "eni-2"]);
    assert_eq!(enis[1].status, providers::model::EniStatus::InUse);
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_terminated_instance_is_not_found() {
    let rule = mock!(Client::describe_instances).then_output(|| {
        // What EC2 lists for an hour after termination: no VPC, no interfaces.
        let gone = Instance::builder()
            .instance_id("i-1")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Medium)
            .state(
                aws_sdk_ec2::types::InstanceState::builder()
                    .name(aws_sdk_ec2::types::InstanceStateName::Terminated)
                    .build(),
            )
            .build();
        DescribeInstancesOutput::builder()
            .reservations(Reservation::builder().instances(gone).build())
            .build()
    });
    let cloud = cloud_with(&[&rule], 6);
    let err = cloud
        .describe_instance(&InstanceId::from("i-1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn describing_more_enis_than_one_filter_takes_is_split_into_calls_of_200() {
    // A request with more than 200 filter values would be refused by EC2
    // (FilterLimitExceeded); only requests within the limit match this rule.
    let describe = mock!(Client::describe_network_interfaces)
        .match_requests(|r| r.filters().iter().all(|f| f.values().len() <= 200))
        .then_output(|| DescribeNetworkInterfacesOutput::builder().build());
    let cloud = cloud_with(&[&describe], 1);
    let filter = providers::model::EniFilter {
        eni_ids: (0..450).map(|i| EniId::from(format!("eni-{i}"))).collect(),
        ..Default::default()
    };
    cloud.describe_enis(&filter).await.unwrap();
    assert_eq!(describe.num_calls(), 3);
}
