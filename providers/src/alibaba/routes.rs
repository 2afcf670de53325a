//! Route tables and their entries (VPC OpenAPI), created and
//! deleted one at a time (`CreateRouteEntry` / `DeleteRouteEntry`) or in
//! batches of up to 50 (`CreateRouteEntries` / `DeleteRouteEntries`), with
//! per-entry failures reported in a [`BatchOutcome`].

use super::api::{self, Api};
use super::client::{param, Params, Product, MAX_PAGES};
use super::errors::kind_for_batch_failure;
use super::wire::{
    DescribeRouteEntryListResponse, DescribeRouteTableListResponse, Empty,
    RouteEntriesBatchResponse,
};
use super::AlibabaCloud;
use crate::error::{CloudError, CloudResult, ErrorKind};
use crate::model::{BatchOutcome, NewRouteEntry, RouteEntry, RouteTable};
use ipam::ids::{InstanceId, RouteTableId, VpcId};
use ipnet::Ipv4Net;

/// Entries one batch call may carry.
pub(super) const BATCH_SIZE: usize = 50;

const TABLE_PAGE_SIZE: u32 = 50;
const ENTRY_PAGE_SIZE: u32 = 100;

/// Whether a whole-call error of a single-entry call is about that entry
/// (reported in the outcome) rather than about the call (returned as `Err`).
fn is_entry_error(kind: &ErrorKind) -> bool {
    !matches!(
        kind,
        ErrorKind::Throttled | ErrorKind::Transient | ErrorKind::Conflict | ErrorKind::Auth
    )
}

impl AlibabaCloud {
    pub(super) async fn describe_route_tables_impl(
        &self,
        vpc: &VpcId,
    ) -> CloudResult<Vec<RouteTable>> {
        const API: Api = api::DESCRIBE_ROUTE_TABLE_LIST;
        let mut tables = Vec::new();
        for page in 1..=MAX_PAGES {
            let answer: DescribeRouteTableListResponse = self
                .client
                .call(
                    Product::Vpc,
                    API,
                    vec![
                        param("VpcId", vpc),
                        param("PageNumber", page),
                        param("PageSize", TABLE_PAGE_SIZE),
                    ],
                    None,
                )
                .await?;
            let got = answer.router_table_list.router_table_list_type.len();
            tables.extend(
                answer
                    .router_table_list
                    .router_table_list_type
                    .iter()
                    .map(|t| t.to_route_table())
                    .filter(|t| &t.vpc_id == vpc || t.vpc_id.as_str().is_empty()),
            );
            let total = answer.total_count.unwrap_or(0) as usize;
            if got == 0 || page * (TABLE_PAGE_SIZE as usize) >= total {
                break;
            }
        }
        Ok(tables)
    }

    pub(super) async fn list_route_entries_impl(
        &self,
        table: &RouteTableId,
    ) -> CloudResult<Vec<RouteEntry>> {
        const API: Api = api::DESCRIBE_ROUTE_ENTRY_LIST;
        let mut entries = Vec::new();
        let mut next_token = String::new();
        for _ in 0..MAX_PAGES {
            let mut params = vec![
                param("RouteTableId", table),
                param("MaxResult", ENTRY_PAGE_SIZE),
            ];
            if !next_token.is_empty() {
                params.push(param("NextToken", &next_token));
            }
            let answer: DescribeRouteEntryListResponse =
                self.client.call(Product::Vpc, API, params, None).await?;
            for wire_entry in &answer.route_entrys.route_entry {
                match wire_entry.to_route_entry(table) {
                    Some(entry) => entries.push(entry),
                    None => tracing::trace!(
                        destination = %wire_entry.destination_cidr_block,
                        "route entry outside the IPv4 contract skipped"
                    ),
                }
            }
            if answer.next_token.is_empty() || answer.next_token == next_token {
                break;
            }
            next_token = answer.next_token;
        }
        Ok(entries)
    }

    pub(super) async fn create_route_entries_impl(
        &self,
        table: &RouteTableId,
        entries: &[NewRouteEntry],
    ) -> CloudResult<BatchOutcome> {
        let mut outcome = BatchOutcome::default();
        match entries {
            [] => {}
            [one] => self.create_one(table, one, &mut outcome).await?,
            many => {
                for chunk in many.chunks(BATCH_SIZE) {
                    self.create_batch(table, chunk, &mut outcome).await?;
                }
            }
        }
        Ok(outcome)
    }

    async fn create_one(
        &self,
        table: &RouteTableId,
        entry: &NewRouteEntry,
        outcome: &mut BatchOutcome,
    ) -> CloudResult<()> {
        const API: Api = api::CREATE_ROUTE_ENTRY;
        let mut params: Params = vec![
            param("RouteTableId", table),
            param("DestinationCidrBlock", entry.destination),
            param("NextHopType", "Instance"),
            param("NextHopId", &entry.instance_id),
        ];
        if !entry.name.is_empty() {
            params.push(param("RouteEntryName", &entry.name));
        }
        if !entry.description.is_empty() {
            params.push(param("Description", &entry.description));
        }
        // A generated token, the same on every retry: a retried create
        // after a lost answer does not become a duplicate-entry error.
        let token = ipam::ids::IdempotencyToken::new(uuid::Uuid::new_v4().to_string());
        let result: CloudResult<Empty> = self
            .client
            .call(Product::Vpc, API, params, Some(&token))
            .await;
        match result {
            Ok(_) => {
                tracing::info!(%table, destination = %entry.destination, next_hop = %entry.instance_id, "created route entry");
                Ok(())
            }
            Err(e) if is_entry_error(&e.kind) => {
                outcome.failed.push((entry.destination, e));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn create_batch(
        &self,
        table: &RouteTableId,
        chunk: &[NewRouteEntry],
        outcome: &mut BatchOutcome,
    ) -> CloudResult<()> {
        const API: Api = api::CREATE_ROUTE_ENTRIES;
        let mut params: Params = Vec::new();
        for (n, entry) in chunk.iter().enumerate() {
            let p = format!("RouteEntries.{}", n + 1);
            params.push(param(format!("{p}.RouteTableId"), table));
            params.push(param(format!("{p}.DstCidrBlock"), entry.destination));
            params.push(param(format!("{p}.NextHop"), &entry.instance_id));
            params.push(param(format!("{p}.NextHopType"), "Instance"));
            if !entry.name.is_empty() {
                params.push(param(format!("{p}.Name"), &entry.name));
            }
            if !entry.description.is_empty() {
                params.push(param(format!("{p}.Description"), &entry.description));
            }
        }
        let answer: RouteEntriesBatchResponse =
            self.client.call(Product::Vpc, API, params, None).await?;
        let destinations: Vec<Ipv4Net> = chunk.iter().map(|e| e.destination).collect();
        let failed = failures(API.name(), &answer, &destinations);
        tracing::info!(%table, sent = chunk.len(), failed = failed.len(), "created route entries");
        outcome.failed.extend(failed);
        Ok(())
    }

    pub(super) async fn delete_route_entries_impl(
        &self,
        table: &RouteTableId,
        entries: &[(Ipv4Net, InstanceId)],
    ) -> CloudResult<BatchOutcome> {
        let mut outcome = BatchOutcome::default();
        match entries {
            [] => {}
            [one] => self.delete_one(table, one, &mut outcome).await?,
            many => {
                for chunk in many.chunks(BATCH_SIZE) {
                    self.delete_batch(table, chunk, &mut outcome).await?;
                }
            }
        }
        // Destinations already gone count as done.
        outcome
            .failed
            .retain(|(_, e)| e.kind != ErrorKind::NotFound);
        Ok(outcome)
    }

    async fn delete_one(
        &self,
        table: &RouteTableId,
        (destination, instance): &(Ipv4Net, InstanceId),
        outcome: &mut BatchOutcome,
    ) -> CloudResult<()> {
        const API: Api = api::DELETE_ROUTE_ENTRY;
        let params = vec![
            param("RouteTableId", table),
            param("DestinationCidrBlock", destination),
            param("NextHopId", instance),
        ];
        let result: CloudResult<Empty> = self.client.call(Product::Vpc, API, params, None).await;
        match result {
            Ok(_) => {
                tracing::info!(%table, %destination, "deleted route entry");
                Ok(())
            }
            Err(e) if is_entry_error(&e.kind) => {
                outcome.failed.push((*destination, e));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_batch(
        &self,
        table: &RouteTableId,
        chunk: &[(Ipv4Net, InstanceId)],
        outcome: &mut BatchOutcome,
    ) -> CloudResult<()> {
        const API: Api = api::DELETE_ROUTE_ENTRIES;
        let mut params: Params = Vec::new();
        for (n, (destination, instance)) in chunk.iter().enumerate() {
            let p = format!("RouteEntries.{}", n + 1);
            params.push(param(format!("{p}.RouteTableId"), table));
            params.push(param(format!("{p}.DstCidrBlock"), destination));
            params.push(param(format!("{p}.NextHop"), instance));
        }
        let answer: RouteEntriesBatchResponse =
            self.client.call(Product::Vpc, API, params, None).await?;
        let destinations: Vec<Ipv4Net> = chunk.iter().map(|(d, _)| *d).collect();
        let failed = failures(API.name(), &answer, &destinations);
        tracing::info!(%table, sent = chunk.len(), failed = failed.len(), "deleted route entries");
        outcome.failed.extend(failed);
        Ok(())
    }
}

/// The per-entry failures of a batch answer, keyed by the destination we
/// sent (an answer's `DstCidrBlock` may be written differently, e.g. a bare
/// address for a /32).
fn failures(
    api: &str,
    answer: &RouteEntriesBatchResponse,
    sent: &[Ipv4Net],
) -> Vec<(Ipv4Net, CloudError)> {
    answer
        .failed_route_entries
        .iter()
        .filter_map(|f| {
            let raw = f.dst_cidr_block.trim();
            let destination = raw
                .parse::<Ipv4Net>()
                .ok()
                .or_else(|| raw.parse::<std::net::Ipv4Addr>().ok().map(Ipv4Net::from))
                .filter(|d| sent.contains(d))
                .or_else(|| {
                    tracing::warn!(
                        api,
                        destination = raw,
                        "batch failure for a destination we did not send"
                    );
                    None
                })?;
            let mut err = CloudError::new(
                kind_for_batch_failure(&f.failed_code),
                api,
                f.failed_code.clone(),
                f.failed_message.clone(),
            );
            if !answer.request_id.is_empty() {
                err = err.with_request_id(answer.request_id.clone());
            }
            Some((destination, err))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_failures_map_to_destinations_and_kinds() {
        let answer: RouteEntriesBatchResponse = serde_json::from_str(
            r#"{"RequestId":"REQ","SuccessCount":1,"FailedCount":3,"FailedRouteEntries":[
              {"DstCidrBlock":"10.244.2.0/24","NextHop":"i-b","FailedCode":"VPC_ROUTE_ENTRY_CIDR_BLOCK_DUPLICATE","FailedMessage":"exists"},
              {"DstCidrBlock":"10.0.0.9","NextHop":"i-c","FailedCode":"QuotaExceeded.RouteEntry","FailedMessage":"full"},
              {"DstCidrBlock":"172.16.0.0/24","NextHop":"i-x","FailedCode":"X","FailedMessage":"not ours"}]}"#,
        )
        .unwrap();
        let sent: Vec<Ipv4Net> = ["10.244.1.0/24", "10.244.2.0/24", "10.0.0.9/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let failed = failures("CreateRouteEntries", &answer, &sent);
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[0].0, sent[1]);
        assert_eq!(failed[0].1.kind, ErrorKind::AlreadyExists);
        assert_eq!(failed[0].1.request_id.as_deref(), Some("REQ"));
        assert_eq!(failed[1].0, sent[2]);
        assert!(matches!(failed[1].1.kind, ErrorKind::LimitExceeded { .. }));
    }
}
