//! ENIs and their secondary private IPs (ECS): create, attach, detach,
//! delete, describe, assign, unassign. A repeat of a change that already
//! happened (after a lost answer) counts as done.

use super::api::{self, Api};
use super::client::{param, push_tags, Params, Product, MAX_PAGES};
use super::wire::{
    self, AssignPrivateIpAddressesResponse, CreateNetworkInterfaceResponse,
    DescribeNetworkInterfacesResponse, Empty,
};
use super::AlibabaCloud;
use crate::error::{CloudError, CloudResult, ErrorKind, LimitKind};
use crate::model::{CreateEniRequest, Eni, EniFilter, EniStatus};
use crate::wait::wait_eni_status;
use ipam::ids::{EniId, IdempotencyToken, InstanceId};
use std::net::Ipv4Addr;

/// Alibaba assigns at most this many private IPs per call.
pub(super) const MAX_IPS_PER_ASSIGN: u32 = 10;

/// `NetworkInterfaceId.N` takes at most 100 ids per call.
const MAX_ENI_IDS_PER_CALL: usize = 100;

/// Page size of `DescribeNetworkInterfaces` (`MaxResults`, 10..=500).
const ENI_PAGE_SIZE: u32 = 100;

impl AlibabaCloud {
    pub(super) async fn create_eni_impl(&self, request: &CreateEniRequest) -> CloudResult<Eni> {
        const API: Api = api::CREATE_NETWORK_INTERFACE;
        let mut params: Params = vec![param("VSwitchId", &request.subnet_id)];
        for (n, sg) in request.security_groups.iter().enumerate() {
            params.push(param(format!("SecurityGroupIds.{}", n + 1), sg));
        }
        if request.secondary_ip_count > 0 {
            params.push(param(
                "SecondaryPrivateIpAddressCount",
                request.secondary_ip_count,
            ));
        }
        push_tags(&mut params, &request.tags);
        if !request.description.is_empty() {
            params.push(param("Description", &request.description));
        }
        let answer: CreateNetworkInterfaceResponse = self
            .client
            .call(Product::Ecs, API, params, Some(&request.idempotency_token))
            .await?;
        let id = EniId::new(answer.network_interface_id.clone());
        if id.as_str().is_empty() {
            return Err(CloudError::new(
                ErrorKind::InvalidRequest,
                API,
                "UnparsableResponse",
                "CreateNetworkInterface answered without NetworkInterfaceId",
            ));
        }
        tracing::info!(eni = %id, subnet = %request.subnet_id, ips = request.secondary_ip_count, "created ENI");
        // The answer usually describes the ready ENI in full; poll only when
        // it is still being created or leaves something out.
        if let Ok(mut eni) = answer.to_eni(API.name()) {
            if eni.status == EniStatus::Available
                && eni.secondary_ips.len() == request.secondary_ip_count as usize
            {
                if eni.tags.is_empty() {
                    eni.tags = request.tags.clone();
                }
                if eni.security_groups.is_empty() {
                    eni.security_groups = request.security_groups.clone();
                }
                if eni.description.is_empty() {
                    eni.description = request.description.clone();
                }
                if eni.subnet_id.as_str().is_empty() {
                    eni.subnet_id = request.subnet_id.clone();
                }
                if !eni.vpc_id.as_str().is_empty() && !eni.zone.as_str().is_empty() {
                    return Ok(eni);
                }
            }
        }
        wait_eni_status(self, &id, EniStatus::Available, self.poll).await
    }

    pub(super) async fn attach_eni_impl(
        &self,
        eni: &EniId,
        instance: &InstanceId,
    ) -> CloudResult<()> {
        let result: CloudResult<Empty> = self
            .client
            .call(
                Product::Ecs,
                api::ATTACH_NETWORK_INTERFACE,
                vec![
                    param("NetworkInterfaceId", eni),
                    param("InstanceId", instance),
                ],
                None,
            )
            .await;
        match result {
            Ok(_) => {
                tracing::info!(%eni, %instance, "attaching ENI");
                Ok(())
            }
            // A repeated attach (say after a lost answer) meets an ENI that
            // is no longer Available: done if it is going to this instance.
            Err(e) if e.kind == ErrorKind::Conflict => match self.current_eni(eni).await? {
                Some(current)
                    if current.instance_id.as_ref() == Some(instance)
                        && matches!(current.status, EniStatus::Attaching | EniStatus::InUse) =>
                {
                    tracing::debug!(%eni, %instance, "ENI already attached here; attach counts as done");
                    Ok(())
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The ENI as the cloud sees it now, `None` if it does not exist.
    async fn current_eni(&self, eni: &EniId) -> CloudResult<Option<Eni>> {
        let found = self
            .describe_enis_impl(&EniFilter {
                eni_ids: vec![eni.clone()],
                ..EniFilter::default()
            })
            .await?;
        Ok(found.into_iter().find(|e| &e.id == eni))
    }

    pub(super) async fn detach_eni_impl(
        &self,
        eni: &EniId,
        instance: &InstanceId,
    ) -> CloudResult<()> {
        let result: CloudResult<Empty> = self
            .client
            .call(
                Product::Ecs,
                api::DETACH_NETWORK_INTERFACE,
                vec![
                    param("NetworkInterfaceId", eni),
                    param("InstanceId", instance),
                ],
                None,
            )
            .await;
        match result {
            Ok(_) => {
                tracing::info!(%eni, %instance, "detaching ENI");
                Ok(())
            }
            Err(e) if e.kind == ErrorKind::NotFound => {
                tracing::debug!(%eni, %instance, code = %e.code, "ENI already gone; detach counts as done");
                Ok(())
            }
            // Alibaba refuses to detach an ENI that is not attached (a
            // repeated detach): done once it is no longer on this instance.
            Err(e) if matches!(e.kind, ErrorKind::Conflict | ErrorKind::InvalidRequest) => {
                match self.current_eni(eni).await? {
                    None => Ok(()),
                    Some(current)
                        if current.status == EniStatus::Detaching
                            || current.instance_id.as_ref() != Some(instance) =>
                    {
                        tracing::debug!(%eni, %instance, status = ?current.status, "ENI not attached here; detach counts as done");
                        Ok(())
                    }
                    Some(_) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn delete_eni_impl(&self, eni: &EniId) -> CloudResult<()> {
        let result: CloudResult<Empty> = self
            .client
            .call(
                Product::Ecs,
                api::DELETE_NETWORK_INTERFACE,
                vec![param("NetworkInterfaceId", eni)],
                None,
            )
            .await;
        match result {
            Ok(_) => {
                tracing::info!(%eni, "deleted ENI");
                Ok(())
            }
            Err(e) if e.kind == ErrorKind::NotFound => {
                tracing::debug!(%eni, "ENI already gone; delete counts as done");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn describe_enis_impl(&self, filter: &EniFilter) -> CloudResult<Vec<Eni>> {
        let mut out = Vec::new();
        if filter.eni_ids.is_empty() {
            self.describe_enis_page_set(filter, &[], &mut out).await?;
        } else {
            for chunk in filter.eni_ids.chunks(MAX_ENI_IDS_PER_CALL) {
                self.describe_enis_page_set(filter, chunk, &mut out).await?;
            }
        }
        // The filter is applied again here so that an answer that ignored a
        // parameter cannot make us act on an ENI that was not asked for.
        out.retain(|e| matches(filter, e));
        Ok(out)
    }

    async fn describe_enis_page_set(
        &self,
        filter: &EniFilter,
        ids: &[EniId],
        out: &mut Vec<Eni>,
    ) -> CloudResult<()> {
        const API: Api = api::DESCRIBE_NETWORK_INTERFACES;
        let mut base: Params = vec![param("MaxResults", ENI_PAGE_SIZE)];
        for (n, id) in ids.iter().enumerate() {
            base.push(param(format!("NetworkInterfaceId.{}", n + 1), id));
        }
        push_tags(&mut base, &filter.tags);
        if let Some(instance) = &filter.instance_id {
            base.push(param("InstanceId", instance));
        }
        if let Some(status) = filter.status {
            base.push(param("Status", wire::eni_status_name(status)));
        }
        if let Some(vpc) = &filter.vpc_id {
            base.push(param("VpcId", vpc));
        }
        let mut next_token = String::new();
        for _ in 0..MAX_PAGES {
            let mut params = base.clone();
            if !next_token.is_empty() {
                params.push(param("NextToken", &next_token));
            }
            let answer: DescribeNetworkInterfacesResponse =
                self.client.call(Product::Ecs, API, params, None).await?;
            out.extend(wire::page_enis(
                &answer.network_interface_sets.network_interface_set,
                API.name(),
            ));
            if answer.next_token.is_empty() || answer.next_token == next_token {
                return Ok(());
            }
            next_token = answer.next_token;
        }
        tracing::warn!(api = API.name(), "stopped paging after {MAX_PAGES} pages");
        Ok(())
    }

    pub(super) async fn assign_private_ips_impl(
        &self,
        eni: &EniId,
        count: u32,
        token: &IdempotencyToken,
    ) -> CloudResult<Vec<Ipv4Addr>> {
        const API: Api = api::ASSIGN_PRIVATE_IP_ADDRESSES;
        if count == 0 {
            return Ok(Vec::new());
        }
        if count > MAX_IPS_PER_ASSIGN {
            return Err(CloudError::new(
                ErrorKind::LimitExceeded {
                    what: LimitKind::IpsPerCall,
                },
                API,
                "InvalidParameter.SecondaryPrivateIpAddressCount",
                format!(
                    "{count} IPs asked in one call; Alibaba assigns at most {MAX_IPS_PER_ASSIGN}"
                ),
            ));
        }
        let answer: AssignPrivateIpAddressesResponse = self
            .client
            .call(
                Product::Ecs,
                API,
                vec![
                    param("NetworkInterfaceId", eni),
                    param("SecondaryPrivateIpAddressCount", count),
                ],
                Some(token),
            )
            .await?;
        let ips = answer
            .assigned_private_ip_addresses_set
            .private_ip_set
            .private_ip_address
            .iter()
            .map(|ip| wire::parse_ip(API.name(), "PrivateIpAddress", ip))
            .collect::<CloudResult<Vec<_>>>()?;
        tracing::info!(%eni, count = ips.len(), "assigned private IPs");
        Ok(ips)
    }

    pub(super) async fn unassign_private_ips_impl(
        &self,
        eni: &EniId,
        ips: &[Ipv4Addr],
    ) -> CloudResult<()> {
        if ips.is_empty() {
            return Ok(());
        }
        match self.unassign_once(eni, ips).await {
            Err(e) if e.kind == ErrorKind::NotFound => {
                // Either the ENI is gone (done) or some of the addresses are
                // (`InvalidIp.IpUnassigned` fails the whole call): unassign
                // what is still there.
                let still = self
                    .describe_enis_impl(&EniFilter {
                        eni_ids: vec![eni.clone()],
                        ..EniFilter::default()
                    })
                    .await?;
                let Some(current) = still.into_iter().find(|c| &c.id == eni) else {
                    return Ok(());
                };
                let remaining: Vec<Ipv4Addr> = ips
                    .iter()
                    .filter(|ip| current.secondary_ips.contains(ip))
                    .copied()
                    .collect();
                if remaining.is_empty() {
                    return Ok(());
                }
                match self.unassign_once(eni, &remaining).await {
                    Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
                    other => other,
                }
            }
            other => other,
        }
    }

    async fn unassign_once(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()> {
        let mut params: Params = vec![param("NetworkInterfaceId", eni)];
        for (n, ip) in ips.iter().enumerate() {
            params.push(param(format!("PrivateIpAddress.{}", n + 1), ip));
        }
        let _: Empty = self
            .client
            .call(
                Product::Ecs,
                api::UNASSIGN_PRIVATE_IP_ADDRESSES,
                params,
                None,
            )
            .await?;
        tracing::info!(%eni, count = ips.len(), "unassigned private IPs");
        Ok(())
    }
}

fn matches(filter: &EniFilter, eni: &Eni) -> bool {
    (filter.eni_ids.is_empty() || filter.eni_ids.contains(&eni.id))
        && filter.tags.iter().all(|(k, v)| eni.tags.get(k) == Some(v))
        && filter
            .instance_id
            .as_ref()
            .is_none_or(|i| eni.instance_id.as_ref() == Some(i))
        && filter.status.is_none_or(|s| eni.status == s)
        && filter.vpc_id.as_ref().is_none_or(|v| &eni.vpc_id == v)
}
