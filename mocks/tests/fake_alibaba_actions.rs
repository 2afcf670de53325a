//! fake-alibaba's actions over real HTTP: Alibaba's JSON field names and
//! nesting, paging, the model's limits and states, errors with Alibaba's
//! codes and statuses, and injected throttling answered as Alibaba does.

mod support;

use mocks::cloud::{ApiFault, FaultKind};
use serde_json::Value;
use std::collections::BTreeSet;
use support::alibaba_client::{start, Answer, Client, WORLD};

async fn create_eni(c: &Client, extra: &[(&str, &str)]) -> Value {
    let mut params = vec![("VSwitchId", "vsw-h"), ("SecurityGroupIds.1", "sg-1")];
    params.extend_from_slice(extra);
    c.call("CreateNetworkInterface", &params).await.ok().clone()
}

/// A new ENI in vsw-h, by id.
async fn new_eni_id(c: &Client) -> String {
    create_eni(c, &[]).await["NetworkInterfaceId"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn attach(c: &Client, eni: &str, instance: &str) -> Answer {
    c.call(
        "AttachNetworkInterface",
        &[("NetworkInterfaceId", eni), ("InstanceId", instance)],
    )
    .await
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn describe_instances_and_instance_types_shapes() {
    let (_fake, c) = start(WORLD).await;
    let body = c
        .call("DescribeInstances", &[("InstanceIds", r#"["i-1","i-9"]"#)])
        .await;
    let body = body.ok();
    assert_eq!(body["TotalCount"], 1);
    let inst = &body["Instances"]["Instance"][0];
    assert_eq!(inst["InstanceId"], "i-1");
    assert_eq!(inst["InstanceType"], "ecs.g6.large");
    assert_eq!(inst["ZoneId"], "cn-hangzhou-h");
    assert_eq!(inst["VpcAttributes"]["VpcId"], "vpc-1");
    assert_eq!(inst["VpcAttributes"]["VSwitchId"], "vsw-h");
    assert_eq!(
        inst["VpcAttributes"]["PrivateIpAddress"]["IpAddress"][0],
        "192.168.1.10"
    );
    let nic = &inst["NetworkInterfaces"]["NetworkInterface"][0];
    assert_eq!(nic["Type"], "Primary");
    assert_eq!(nic["PrimaryIpAddress"], "192.168.1.10");
    assert!(nic["NetworkInterfaceId"]
        .as_str()
        .unwrap()
        .starts_with("eni-"));

    let all = c.call("DescribeInstances", &[]).await;
    assert_eq!(all.ok()["TotalCount"], 2);

    let types = c
        .call(
            "DescribeInstanceTypes",
            &[
                ("InstanceTypes.1", "ecs.g6.xlarge"),
                ("InstanceTypes.2", "ecs.g6.large"),
            ],
        )
        .await;
    let list = types.ok()["InstanceTypes"]["InstanceType"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(list.len(), 2);
    let xl = list
        .iter()
        .find(|t| t["InstanceTypeId"] == "ecs.g6.xlarge")
        .unwrap();
    assert_eq!(xl["EniQuantity"], 3);
    assert_eq!(xl["EniPrivateIpAddressQuantity"], 10);
    assert_eq!(xl["CpuCoreCount"], 4);
    assert_eq!(xl["MemorySize"], 16.0);
    assert_eq!(xl["InstanceTypeFamily"], "ecs.g6");
}

#[tokio::test]
async fn eni_lifecycle_in_alibaba_shapes() {
    let (fake, c) = start(WORLD).await;
    let created = create_eni(
        &c,
        &[
            ("SecurityGroupIds.2", "sg-2"),
            ("SecondaryPrivateIpAddressCount", "2"),
            ("Tag.1.Key", "cluster"),
            ("Tag.1.Value", "c1"),
            ("Description", "pods of i-1"),
            ("ClientToken", "create-1"),
        ],
    )
    .await;
    let id = created["NetworkInterfaceId"].as_str().unwrap().to_owned();
    assert_eq!(created["Status"], "Available");
    assert_eq!(created["Type"], "Secondary");
    assert_eq!(created["VSwitchId"], "vsw-h");
    assert_eq!(created["VpcId"], "vpc-1");
    assert_eq!(created["ZoneId"], "cn-hangzhou-h");
    assert_eq!(
        strs(&created["SecurityGroupIds"]["SecurityGroupId"]),
        ["sg-1", "sg-2"]
    );
    assert_eq!(
        created["PrivateIpSets"]["PrivateIpSet"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(created["Tags"]["Tag"][0]["TagKey"], "cluster");
    assert_eq!(created["Tags"]["Tag"][0]["TagValue"], "c1");

    // The same ClientToken returns the same ENI instead of a second one.
    let again = create_eni(
        &c,
        &[
            ("SecurityGroupIds.2", "sg-2"),
            ("SecondaryPrivateIpAddressCount", "2"),
            ("Tag.1.Key", "cluster"),
            ("Tag.1.Value", "c1"),
            ("Description", "pods of i-1"),
            ("ClientToken", "create-1"),
        ],
    )
    .await;
    assert_eq!(again["NetworkInterfaceId"], created["NetworkInterfaceId"]);

    attach(&c, &id, "i-2").await.ok();
    let instance = c
        .call("DescribeInstances", &[("InstanceIds", r#"["i-2"]"#)])
        .await;
    let nics = instance.ok()["Instances"]["Instance"][0]["NetworkInterfaces"]["NetworkInterface"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(nics.len(), 2);
    let secondary = nics.iter().find(|n| n["Type"] == "Secondary").unwrap();
    assert_eq!(secondary["NetworkInterfaceId"], id.as_str());
    assert_eq!(secondary["MacAddress"], created["MacAddress"]);

    let described = c
        .call(
            "DescribeNetworkInterfaces",
            &[("Tag.1.Key", "cluster"), ("Tag.1.Value", "c1")],
        )
        .await;
    let body = described.ok();
    assert_eq!(body["TotalCount"], 1);
    let set = &body["NetworkInterfaceSets"]["NetworkInterfaceSet"][0];
    for field in [
        "NetworkInterfaceId",
        "Status",
        "Type",
        "VSwitchId",
        "VpcId",
        "ZoneId",
        "MacAddress",
        "PrivateIpAddress",
        "InstanceId",
        "CreationTime",
    ] {
        assert!(set[field].as_str().is_some(), "{field} missing in {set}");
    }
    assert_eq!(set["Status"], "InUse");
    assert_eq!(set["InstanceId"], "i-2");
    assert_eq!(set["Attachment"]["DeviceIndex"], 1);
    let ips = set["PrivateIpSets"]["PrivateIpSet"].as_array().unwrap();
    assert_eq!(ips.iter().filter(|i| i["Primary"] == true).count(), 1);

    let assigned = c
        .call(
            "AssignPrivateIpAddresses",
            &[
                ("NetworkInterfaceId", &id),
                ("SecondaryPrivateIpAddressCount", "3"),
                ("ClientToken", "assign-1"),
            ],
        )
        .await;
    let set = &assigned.ok()["AssignedPrivateIpAddressesSet"];
    assert_eq!(set["NetworkInterfaceId"], id.as_str());
    let new_ips = strs(&set["PrivateIpSet"]["PrivateIpAddress"]);
    assert_eq!(new_ips.len(), 3);

    c.call(
        "UnassignPrivateIpAddresses",
        &[
            ("NetworkInterfaceId", &id),
            ("PrivateIpAddress.1", &new_ips[0]),
        ],
    )
    .await
    .ok();
    let eni = fake
        .world()
        .enis()
        .into_iter()
        .find(|e| e.id.as_str() == id)
        .unwrap();
    assert_eq!(eni.secondary_ips.len(), 4);
    assert!(!eni
        .secondary_ips
        .iter()
        .any(|ip| ip.to_string() == new_ips[0]));

    // Delete needs Available: refused while InUse, fine after detach.
    c.call("DeleteNetworkInterface", &[("NetworkInterfaceId", &id)])
        .await
        .err(403, "InvalidOperation.InvalidEniState");
    c.call(
        "DetachNetworkInterface",
        &[("NetworkInterfaceId", &id), ("InstanceId", "i-2")],
    )
    .await
    .ok();
    c.call("DeleteNetworkInterface", &[("NetworkInterfaceId", &id)])
        .await
        .ok();
    assert!(fake.world().enis().iter().all(|e| e.id.as_str() != id));
    c.call("DeleteNetworkInterface", &[("NetworkInterfaceId", &id)])
        .await
        .err(404, "InvalidEniId.NotFound");
}

#[tokio::test]
async fn describe_network_interfaces_pages_with_next_token() {
    let (_fake, c) = start(WORLD).await;
    let mut created = BTreeSet::new();
    for _ in 0..12 {
        let eni = create_eni(&c, &[("Tag.1.Key", "owner"), ("Tag.1.Value", "me")]).await;
        created.insert(eni["NetworkInterfaceId"].as_str().unwrap().to_owned());
    }
    let mut seen = BTreeSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let mut params = vec![
            ("Tag.1.Key", "owner"),
            ("Tag.1.Value", "me"),
            ("MaxResults", "10"),
        ];
        if !token.is_empty() {
            params.push(("NextToken", token.as_str()));
        }
        let answer = c.call("DescribeNetworkInterfaces", &params).await;
        let body = answer.ok().clone();
        assert_eq!(body["TotalCount"], 12);
        for e in body["NetworkInterfaceSets"]["NetworkInterfaceSet"]
            .as_array()
            .unwrap()
        {
            assert!(seen.insert(e["NetworkInterfaceId"].as_str().unwrap().to_owned()));
        }
        pages += 1;
        token = body["NextToken"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, created);
}

#[tokio::test]
async fn model_limits_come_back_with_alibaba_codes() {
    let (_fake, c) = start(WORLD).await;
    // ecs.g6.large takes one secondary ENI.
    let a = new_eni_id(&c).await;
    let b = new_eni_id(&c).await;
    attach(&c, &a, "i-1").await.ok();
    attach(&c, &b, "i-1")
        .await
        .err(403, "EniPerInstanceLimitExceeded");
    attach(&c, "eni-nope", "i-1")
        .await
        .err(404, "InvalidEniId.NotFound");

    // A /29 vSwitch has few usable addresses.
    let answer = c
        .call(
            "CreateNetworkInterface",
            &[
                ("VSwitchId", "vsw-tiny"),
                ("SecurityGroupId", "sg-1"),
                ("SecondaryPrivateIpAddressCount", "9"),
            ],
        )
        .await;
    answer.err(403, "InvalidVSwitchId.IpNotEnough");

    // More than 10 addresses in one assign call.
    let over = c
        .call(
            "AssignPrivateIpAddresses",
            &[
                ("NetworkInterfaceId", &b),
                ("SecondaryPrivateIpAddressCount", "11"),
            ],
        )
        .await;
    over.err(400, "InvalidParam.SecondaryPrivateIpAddressCount");
}

#[tokio::test]
async fn vswitches_show_free_addresses_as_they_are_used() {
    let (_fake, c) = start(WORLD).await;
    let before = c.call("DescribeVSwitches", &[("VpcId", "vpc-1")]).await;
    let body = before.ok().clone();
    assert_eq!(body["TotalCount"], 2);
    let vsw = body["VSwitches"]["VSwitch"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["VSwitchId"] == "vsw-h")
        .unwrap()
        .clone();
    assert_eq!(vsw["CidrBlock"], "192.168.1.0/24");
    assert_eq!(vsw["ZoneId"], "cn-hangzhou-h");
    let free = vsw["AvailableIpAddressCount"].as_u64().unwrap();

    create_eni(&c, &[("SecondaryPrivateIpAddressCount", "4")]).await;
    let after = c.call("DescribeVSwitches", &[("VSwitchId", "vsw-h")]).await;
    let after = &after.ok()["VSwitches"]["VSwitch"][0];
    assert_eq!(after["AvailableIpAddressCount"].as_u64().unwrap(), free - 5);
}

#[tokio::test]
async fn route_tables_and_entries_single_and_batch() {
    let (_fake, c) = start(WORLD).await;
    let tables = c
        .call("DescribeRouteTableList", &[("VpcId", "vpc-1")])
        .await;
    let t = &tables.ok()["RouterTableList"]["RouterTableListType"][0];
    assert_eq!(t["RouteTableId"], "vtb-1");
    assert_eq!(t["VpcId"], "vpc-1");
    assert_eq!(t["RouteTableType"], "System");

    let created = c
        .call(
            "CreateRouteEntry",
            &[
                ("RouteTableId", "vtb-1"),
                ("DestinationCidrBlock", "10.0.0.0/24"),
                ("NextHopType", "Instance"),
                ("NextHopId", "i-1"),
                ("RouteEntryName", "vpc-eni-controller"),
                ("Description", "node n1"),
            ],
        )
        .await;
    let single_id = created.ok()["RouteEntryId"].as_str().unwrap().to_owned();

    // Batch: two good entries, one duplicate, one to an unknown instance; the
    // quota of 3 custom entries makes the second good one fail too.
    let batch = c
        .call(
            "CreateRouteEntries",
            &[
                ("RouteEntries.1.RouteTableId", "vtb-1"),
                ("RouteEntries.1.DstCidrBlock", "10.0.1.0/24"),
                ("RouteEntries.1.NextHop", "i-2"),
                ("RouteEntries.1.NextHopType", "Instance"),
                ("RouteEntries.1.Name", "vpc-eni-controller"),
                ("RouteEntries.2.RouteTableId", "vtb-1"),
                ("RouteEntries.2.DstCidrBlock", "10.0.0.0/24"),
                ("RouteEntries.2.NextHop", "i-2"),
                ("RouteEntries.3.RouteTableId", "vtb-1"),
                ("RouteEntries.3.DstCidrBlock", "10.0.2.0/24"),
                ("RouteEntries.3.NextHop", "i-9"),
                ("RouteEntries.4.RouteTableId", "vtb-1"),
                ("RouteEntries.4.DstCidrBlock", "10.0.3.0/24"),
                ("RouteEntries.4.NextHop", "i-1"),
                ("RouteEntries.5.RouteTableId", "vtb-1"),
                ("RouteEntries.5.DstCidrBlock", "10.0.4.0/24"),
                ("RouteEntries.5.NextHop", "i-1"),
            ],
        )
        .await;
    let body = batch.ok().clone();
    assert_eq!(body["SuccessCount"], 2);
    assert_eq!(body["FailedCount"], 3);
    assert_eq!(body["RouteEntryIds"].as_array().unwrap().len(), 2);
    let failed = body["FailedRouteEntries"].as_array().unwrap();
    let code_of = |dst: &str| {
        failed
            .iter()
            .find(|f| f["DstCidrBlock"] == dst)
            .map(|f| f["FailedCode"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        code_of("10.0.0.0/24").as_deref(),
        Some("InvalidCIDRBlock.Duplicate")
    );
    assert_eq!(
        code_of("10.0.2.0/24").as_deref(),
        Some("InvalidInstanceId.NotFound")
    );
    assert_eq!(
        code_of("10.0.4.0/24").as_deref(),
        Some("QuotaExceeded.RouteEntry")
    );
    assert!(failed
        .iter()
        .all(|f| f["NextHop"].as_str().is_some() && f["FailedMessage"].as_str().is_some()));

    // The listing, two entries per page, system entries included.
    let mut custom = Vec::new();
    let mut token = String::new();
    loop {
        let mut params = vec![("RouteTableId", "vtb-1"), ("MaxResult", "2")];
        if !token.is_empty() {
            params.push(("NextToken", token.as_str()));
        }
        let page = c.call("DescribeRouteEntryList", &params).await;
        let body = page.ok().clone();
        let entries = body["RouteEntrys"]["RouteEntry"].as_array().unwrap();
        assert!(entries.len() <= 2);
        for e in entries {
            assert!(e["Status"].as_str().is_some() && e["RouteEntryId"].as_str().is_some());
            if e["Type"] == "Custom" {
                custom.push(e.clone());
            }
        }
        token = body["NextToken"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(custom.len(), 3);
    let first = custom
        .iter()
        .find(|e| e["DestinationCidrBlock"] == "10.0.0.0/24")
        .unwrap();
    assert_eq!(first["RouteEntryId"], single_id.as_str());
    assert_eq!(first["RouteEntryName"], "vpc-eni-controller");
    assert_eq!(first["Description"], "node n1");
    assert_eq!(first["Status"], "Available");
    assert_eq!(first["NextHops"]["NextHop"][0]["NextHopType"], "Instance");
    assert_eq!(first["NextHops"]["NextHop"][0]["NextHopId"], "i-1");

    // Delete by id (single), then by destination and next hop (batch).
    c.call(
        "DeleteRouteEntry",
        &[("RouteTableId", "vtb-1"), ("RouteEntryId", &single_id)],
    )
    .await
    .ok();
    c.call(
        "DeleteRouteEntry",
        &[("RouteTableId", "vtb-1"), ("RouteEntryId", &single_id)],
    )
    .await
    .err(404, "InvalidRouteEntry.NotFound");
    let deleted = c
        .call(
            "DeleteRouteEntries",
            &[
                ("RouteEntries.1.RouteTableId", "vtb-1"),
                ("RouteEntries.1.DstCidrBlock", "10.0.1.0/24"),
                ("RouteEntries.1.NextHop", "i-2"),
                ("RouteEntries.2.RouteTableId", "vtb-1"),
                ("RouteEntries.2.RouteEntryId", "rte-doesnotexist"),
            ],
        )
        .await;
    let body = deleted.ok();
    assert_eq!(body["SuccessCount"], 1);
    assert_eq!(body["FailedCount"], 1);
    assert_eq!(
        body["FailedRouteEntries"][0]["FailedCode"],
        "InvalidRouteEntry.NotFound"
    );
}

#[tokio::test]
async fn a_table_in_a_change_refuses_another_change() {
    let yaml = WORLD.replace("routeDelayMs: 0", "routeDelayMs: 60000");
    let (_fake, c) = start(&yaml).await;
    c.call(
        "CreateRouteEntry",
        &[
            ("RouteTableId", "vtb-1"),
            ("DestinationCidrBlock", "10.0.0.0/24"),
            ("NextHopId", "i-1"),
        ],
    )
    .await
    .ok();
    let listed = c
        .call(
            "DescribeRouteEntryList",
            &[("RouteTableId", "vtb-1"), ("RouteEntryType", "Custom")],
        )
        .await;
    assert_eq!(
        listed.ok()["RouteEntrys"]["RouteEntry"][0]["Status"],
        "Pending"
    );
    c.call(
        "CreateRouteEntry",
        &[
            ("RouteTableId", "vtb-1"),
            ("DestinationCidrBlock", "10.0.1.0/24"),
            ("NextHopId", "i-1"),
        ],
    )
    .await
    .err(400, "IncorrectRouteEntryStatus");
}

#[tokio::test]
async fn injected_faults_are_answered_as_alibaba_does() {
    let (fake, c) = start(WORLD).await;
    fake.world().set_fault(
        "DescribeVSwitches",
        Some(ApiFault {
            error_rate: 1.0,
            error_kind: FaultKind::Throttled,
            ..Default::default()
        }),
    );
    let answer = c.call("DescribeVSwitches", &[]).await;
    assert_eq!(
        answer.err(400, "Throttling.User"),
        "Request was denied due to user flow control."
    );
    assert_eq!(answer.body["HostId"], "vpc.cn-hangzhou.aliyuncs.com");

    fake.world().set_fault(
        "DescribeNetworkInterfaces",
        Some(ApiFault {
            error_rate: 1.0,
            error_kind: FaultKind::Transient,
            ..Default::default()
        }),
    );
    let answer = c.call("DescribeNetworkInterfaces", &[]).await;
    answer.err(503, "ServiceUnavailable");
    assert_eq!(answer.body["HostId"], "ecs.cn-hangzhou.aliyuncs.com");

    // Cleared faults: the calls succeed again, and each HTTP call was one
    // call on the model.
    fake.world().set_fault("DescribeVSwitches", None);
    c.call("DescribeVSwitches", &[]).await.ok();
    assert_eq!(fake.world().calls()["DescribeVSwitches"], 2);
}

#[tokio::test]
async fn a_retried_assign_with_the_same_client_token_assigns_once() {
    let (fake, c) = start(WORLD).await;
    let id = new_eni_id(&c).await;
    let params = [
        ("NetworkInterfaceId", id.as_str()),
        ("SecondaryPrivateIpAddressCount", "2"),
        ("ClientToken", "assign-once"),
    ];
    let assign = || c.call("AssignPrivateIpAddresses", &params);
    let first = assign().await.ok()["AssignedPrivateIpAddressesSet"].clone();
    let second = assign().await.ok()["AssignedPrivateIpAddressesSet"].clone();
    assert_eq!(first, second);
    let eni = fake
        .world()
        .enis()
        .into_iter()
        .find(|e| e.id.as_str() == id)
        .unwrap();
    assert_eq!(eni.secondary_ips.len(), 2);
}

#[tokio::test]
async fn a_busy_instance_refuses_another_attach_as_ecs_does() {
    let world = WORLD.replace(
        "faults: {attachDelayMs: 0, detachDelayMs: 0, routeDelayMs: 0}",
        "faults: {attachDelayMs: 60000, detachDelayMs: 0, routeDelayMs: 0, eniOpsPerInstance: 1}",
    );
    let (_fake, c) = start(&world).await;
    let a = new_eni_id(&c).await;
    let b = new_eni_id(&c).await;
    attach(&c, &a, "i-2").await.ok();
    attach(&c, &b, "i-2")
        .await
        .err(400, "InvalidOperation.InvalidEcsState");
}
