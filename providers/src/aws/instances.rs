//! Instances, instance-type limits (cached) and subnets.

use super::api::{self, Api};
use super::errors::malformed;
use super::{wire, AwsCloud, UNKNOWN_TYPE_REFRESH};
use crate::error::{CloudError, CloudResult, ErrorKind};
use crate::model::{Instance, InstanceTypeLimits, Subnet};
use aws_sdk_ec2::types::{Filter, InstanceStateName};
use ipam::ids::{InstanceId, InstanceType, SubnetId};

impl AwsCloud {
    pub(super) async fn do_describe_instance(&self, id: &InstanceId) -> CloudResult<Instance> {
        const API: Api = api::DESCRIBE_INSTANCES;
        let out = self
            .send(API, None, |c, _| {
                c.describe_instances().instance_ids(id.as_str()).send()
            })
            .await?;
        let found = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id.as_str()));
        // EC2 lists a terminated instance for about an hour, without VPC or
        // interfaces: for the controller it is gone.
        let terminated = |i: &&aws_sdk_ec2::types::Instance| {
            i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Terminated)
        };
        match found.filter(|i| !terminated(i)) {
            Some(i) => wire::instance(API.name(), i),
            None => Err(CloudError::new(
                ErrorKind::NotFound,
                API,
                "InvalidInstanceID.NotFound",
                format!("instance {id} not found"),
            )),
        }
    }

    /// Up to 1,000 ids per `DescribeInstances`. EC2 refuses a whole call
    /// when one id does not exist; such a chunk is asked again one id at a
    /// time, so the others are still answered.
    pub(super) async fn do_describe_instances(
        &self,
        ids: &[InstanceId],
    ) -> CloudResult<Vec<Instance>> {
        const API: Api = api::DESCRIBE_INSTANCES;
        const MAX_IDS: usize = 1000;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS) {
            let list: Vec<String> = chunk.iter().map(|i| i.as_str().to_owned()).collect();
            let mut next: Option<String> = None;
            loop {
                let answer = self
                    .send(API, None, |c, _| {
                        c.describe_instances()
                            .set_instance_ids(Some(list.clone()))
                            .set_next_token(next.clone())
                            .send()
                    })
                    .await;
                let page = match answer {
                    Ok(page) => page,
                    Err(e) if e.kind == ErrorKind::NotFound => {
                        out.retain(|i: &Instance| !chunk.contains(&i.id));
                        for id in chunk {
                            match self.do_describe_instance(id).await {
                                Ok(i) => out.push(i),
                                Err(e) if e.kind == ErrorKind::NotFound => {}
                                Err(e) => return Err(e),
                            }
                        }
                        break;
                    }
                    Err(e) => return Err(e),
                };
                for i in page.reservations().iter().flat_map(|r| r.instances()) {
                    let terminated =
                        i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Terminated);
                    if !terminated {
                        out.push(wire::instance(API.name(), i)?);
                    }
                }
                match page.next_token() {
                    Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn do_instance_type_limits(
        &self,
        instance_type: &InstanceType,
    ) -> CloudResult<InstanceTypeLimits> {
        const API: Api = api::DESCRIBE_INSTANCE_TYPES;
        if let Some(limits) = self.known_types.lock().get(instance_type) {
            return Ok(limits.clone());
        }
        let not_found = || {
            CloudError::new(
                ErrorKind::NotFound,
                API,
                "InvalidInstanceType",
                format!("instance type {instance_type} is not known to EC2"),
            )
        };
        if let Some(asked) = self.unknown_types.lock().get(instance_type) {
            if asked.elapsed() < UNKNOWN_TYPE_REFRESH {
                return Err(not_found());
            }
        }
        let ec2_type = aws_sdk_ec2::types::InstanceType::from(instance_type.as_str());
        let answer = self
            .send(API, None, |c, _| {
                c.describe_instance_types()
                    .instance_types(ec2_type.clone())
                    .send()
            })
            .await;
        let out = match answer {
            Ok(out) => out,
            Err(e) if e.kind == ErrorKind::NotFound || e.code == "InvalidParameterValue" => {
                self.remember_unknown(instance_type);
                return Err(not_found());
            }
            Err(e) => return Err(e),
        };
        let Some(info) = out
            .instance_types()
            .iter()
            .find(|t| t.instance_type().map(|t| t.as_str()) == Some(instance_type.as_str()))
        else {
            self.remember_unknown(instance_type);
            return Err(not_found());
        };
        let network = info
            .network_info()
            .ok_or_else(|| malformed(API.name(), format!("{instance_type} has no NetworkInfo")))?;
        let positive = |what: &str, v: Option<i32>| {
            v.and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| malformed(API.name(), format!("{instance_type}: {what} missing")))
        };
        let limits = InstanceTypeLimits {
            instance_type: instance_type.clone(),
            max_enis: positive(
                "MaximumNetworkInterfaces",
                network.maximum_network_interfaces(),
            )?,
            ipv4_per_eni: positive(
                "Ipv4AddressesPerInterface",
                network.ipv4_addresses_per_interface(),
            )?,
        };
        self.unknown_types.lock().remove(instance_type);
        self.known_types
            .lock()
            .insert(instance_type.clone(), limits.clone());
        Ok(limits)
    }

    fn remember_unknown(&self, instance_type: &InstanceType) {
        self.unknown_types
            .lock()
            .insert(instance_type.clone(), tokio::time::Instant::now());
    }

    pub(super) async fn do_describe_subnets(&self, ids: &[SubnetId]) -> CloudResult<Vec<Subnet>> {
        const API: Api = api::DESCRIBE_SUBNETS;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // A `subnet-id` filter instead of `SubnetIds`: EC2 fails the whole
        // call for one unknown id, a filter simply leaves it out.
        let filter = Filter::builder()
            .name("subnet-id")
            .set_values(Some(ids.iter().map(|i| i.to_string()).collect()))
            .build();
        let mut subnets = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .send(API, None, |c, _| {
                    c.describe_subnets()
                        .filters(filter.clone())
                        .set_next_token(next.clone())
                        .send()
                })
                .await?;
            for s in out.subnets() {
                subnets.push(wire::subnet(API.name(), s)?);
            }
            next = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
        Ok(subnets)
    }

    /// Free addresses of one subnet, for the space check before a create or
    /// assign (emulators never run out; EC2 would fail late).
    pub(super) async fn subnet_free_ips(&self, api: &str, id: &SubnetId) -> CloudResult<u32> {
        let subnets = self.do_describe_subnets(std::slice::from_ref(id)).await?;
        subnets
            .iter()
            .find(|s| &s.id == id)
            .map(|s| s.free_ips)
            .ok_or_else(|| {
                CloudError::new(
                    ErrorKind::NotFound,
                    api,
                    "InvalidSubnetID.NotFound",
                    format!("subnet {id} not found"),
                )
            })
    }
}
