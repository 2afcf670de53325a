//! Free-IP accounting under random operation sequences: no address is ever
//! handed out twice, none of the reserved ones ever, and `free_ips` always
//! equals the usable addresses minus those held by ENIs and instances.

use mocks::cloud::{Flavor, World};
use proptest::prelude::*;
use providers::ids::{IdempotencyToken, SecurityGroupId, SubnetId};
use providers::model::{CreateEniRequest, EniFilter};
use providers::Cloud;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Clone, Debug)]
enum Op {
    Create(u32),
    Assign(usize, u32),
    Unassign(usize, usize),
    Delete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..6).prop_map(Op::Create),
        (0usize..8, 1u32..12).prop_map(|(e, n)| Op::Assign(e, n)),
        (0usize..8, 0usize..4).prop_map(|(e, n)| Op::Unassign(e, n)),
        (0usize..8).prop_map(Op::Delete),
    ]
}

fn spec(flavor: &str, sg: &str) -> String {
    format!(
        r#"
region: r1
flavor: {flavor}
vpcs: [{{id: vpc-1, cidr: 10.0.0.0/16}}]
vswitches: [{{id: sub-1, vpc: vpc-1, zone: r1-a, cidr: 10.0.3.0/28}}]
securityGroups: [{{id: {sg}, vpc: vpc-1}}]
"#
    )
}

async fn run(flavor: Flavor, ops: Vec<Op>) {
    let name = if flavor == Flavor::Aws {
        "aws"
    } else {
        "alibaba"
    };
    let w = World::from_yaml(&spec(name, "sg-1")).unwrap();
    let cidr: ipnet::Ipv4Net = "10.0.3.0/28".parse().unwrap();
    let usable = if flavor == Flavor::Aws { 11 } else { 12 };
    let mut token = 0u32;
    let mut next_token = || {
        token += 1;
        IdempotencyToken::new(format!("t{token}"))
    };
    for op in ops {
        let enis = w.describe_enis(&EniFilter::default()).await.unwrap();
        match op {
            Op::Create(n) => {
                let req = CreateEniRequest {
                    subnet_id: SubnetId::new("sub-1"),
                    security_groups: vec![SecurityGroupId::new("sg-1")],
                    secondary_ip_count: n,
                    tags: Default::default(),
                    description: String::new(),
                    idempotency_token: next_token(),
                };
                let _ = w.create_eni(&req).await;
            }
            Op::Assign(e, n) => {
                if let Some(eni) = enis.get(e) {
                    let _ = w.assign_private_ips(&eni.id, n, &next_token()).await;
                }
            }
            Op::Unassign(e, n) => {
                if let Some(eni) = enis.get(e) {
                    let ips: Vec<Ipv4Addr> = eni.secondary_ips.iter().take(n).copied().collect();
                    w.unassign_private_ips(&eni.id, &ips).await.unwrap();
                }
            }
            Op::Delete(e) => {
                if let Some(eni) = enis.get(e) {
                    w.delete_eni(&eni.id).await.unwrap();
                }
            }
        }
        let enis = w.describe_enis(&EniFilter::default()).await.unwrap();
        let mut held = BTreeSet::new();
        for eni in &enis {
            for ip in std::iter::once(eni.primary_ip).chain(eni.secondary_ips.iter().copied()) {
                assert!(held.insert(ip), "{ip} handed out twice");
                assert!(
                    cidr.contains(&ip) && !flavor.is_reserved(&cidr, ip),
                    "{ip} is reserved"
                );
            }
        }
        let free = w.describe_subnets(&[]).await.unwrap()[0].free_ips;
        assert_eq!(free as usize, usable - held.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn free_ips_stay_exact(ops in proptest::collection::vec(op(), 1..40), aws in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(run(if aws { Flavor::Aws } else { Flavor::Alibaba }, ops));
    }
}
