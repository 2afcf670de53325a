//! Route tables and their entries: list, create (with the instance's
//! source/destination check turned off first), delete.

use super::api::{self, Api};
use super::errors::refused;
use super::{wire, AwsCloud};
use crate::error::{CloudError, CloudResult, ErrorKind};
use crate::model::{BatchOutcome, NewRouteEntry, NextHop, RouteEntry, RouteTable};
use aws_sdk_ec2::types::{AttributeBooleanValue, Filter};
use ipam::ids::{InstanceId, RouteTableId, VpcId};
use ipnet::Ipv4Net;

impl AwsCloud {
    pub(super) async fn do_describe_route_tables(
        &self,
        vpc: &VpcId,
    ) -> CloudResult<Vec<RouteTable>> {
        const API: Api = api::DESCRIBE_ROUTE_TABLES;
        let mut filters = vec![Filter::builder()
            .name("vpc-id")
            .values(vpc.as_str())
            .build()];
        if !self.route_table_ids.is_empty() {
            filters.push(
                Filter::builder()
                    .name("route-table-id")
                    .set_values(Some(
                        self.route_table_ids.iter().map(|t| t.to_string()).collect(),
                    ))
                    .build(),
            );
        }
        let mut tables = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .send(API, None, |c, _| {
                    c.describe_route_tables()
                        .set_filters(Some(filters.clone()))
                        .set_next_token(next.clone())
                        .send()
                })
                .await?;
            for t in out.route_tables() {
                tables.push(wire::route_table(API.name(), t)?);
            }
            next = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
        Ok(tables)
    }

    pub(super) async fn do_list_route_entries(
        &self,
        table: &RouteTableId,
    ) -> CloudResult<Vec<RouteEntry>> {
        const API: Api = api::DESCRIBE_ROUTE_TABLES;
        let out = self
            .send(API, None, |c, _| {
                c.describe_route_tables()
                    .route_table_ids(table.as_str())
                    .send()
            })
            .await?;
        let found = out
            .route_tables()
            .iter()
            .find(|t| t.route_table_id() == Some(table.as_str()))
            .ok_or_else(|| {
                CloudError::new(
                    ErrorKind::NotFound,
                    API,
                    "InvalidRouteTableID.NotFound",
                    format!("route table {table} not found"),
                )
            })?;
        Ok(wire::route_entries(table, found))
    }

    /// EC2 drops packets for addresses an instance does not own unless its
    /// source/destination check is off, so a route to an instance is useless
    /// until this is done. Once per instance per process.
    async fn source_dest_check_off(&self, instance: &InstanceId) -> CloudResult<()> {
        if self.source_dest_off.lock().contains(instance) {
            return Ok(());
        }
        let off = AttributeBooleanValue::builder().value(false).build();
        self.send(api::MODIFY_INSTANCE_ATTRIBUTE, None, |c, _| {
            c.modify_instance_attribute()
                .instance_id(instance.as_str())
                .source_dest_check(off.clone())
                .send()
        })
        .await?;
        tracing::info!(instance = %instance, "turned off source/destination check");
        self.source_dest_off.lock().insert(instance.clone());
        Ok(())
    }

    pub(super) async fn do_create_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[NewRouteEntry],
    ) -> CloudResult<BatchOutcome> {
        const API: Api = api::CREATE_ROUTE;
        let mut outcome = BatchOutcome::default();
        for entry in entries {
            if let Err(e) = self.source_dest_check_off(&entry.instance_id).await {
                outcome.failed.push((entry.destination, e));
                continue;
            }
            let result = self
                .send(API, None, |c, _| {
                    c.create_route()
                        .route_table_id(table.as_str())
                        .destination_cidr_block(entry.destination.to_string())
                        .instance_id(entry.instance_id.as_str())
                        .send()
                })
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(table = %table, destination = %entry.destination, instance = %entry.instance_id, "created route");
                }
                Err(e) => outcome.failed.push((entry.destination, e)),
            }
        }
        Ok(outcome)
    }

    pub(super) async fn do_delete_route_entries(
        &self,
        table: &RouteTableId,
        entries: &[(Ipv4Net, InstanceId)],
    ) -> CloudResult<BatchOutcome> {
        const API: Api = api::DELETE_ROUTE;
        let mut outcome = BatchOutcome::default();
        if entries.is_empty() {
            return Ok(outcome);
        }
        // Delete a destination only while it still points at the instance
        // the caller named: someone may have re-pointed it since.
        let current = self.do_list_route_entries(table).await?;
        for (destination, instance) in entries {
            let Some(route) = current.iter().find(|r| &r.destination == destination) else {
                continue;
            };
            if route.system || route.next_hop != NextHop::Instance(instance.clone()) {
                outcome.failed.push((
                    *destination,
                    refused(
                        ErrorKind::InvalidRequest,
                        API.name(),
                        "RouteTargetMismatch",
                        format!(
                            "{destination} in {table} goes to {:?}, not {instance}: left alone",
                            route.next_hop
                        ),
                    ),
                ));
                continue;
            }
            let result = self
                .send(API, None, |c, _| {
                    c.delete_route()
                        .route_table_id(table.as_str())
                        .destination_cidr_block(destination.to_string())
                        .send()
                })
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(table = %table, destination = %destination, "deleted route");
                    // Forget instances no route leads to any more, so the
                    // set does not grow with every instance ever routed.
                    let still_routed = current.iter().any(|r| {
                        &r.destination != destination
                            && r.next_hop == NextHop::Instance(instance.clone())
                    });
                    if !still_routed {
                        self.source_dest_off.lock().remove(instance);
                    }
                }
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => outcome.failed.push((*destination, e)),
            }
        }
        Ok(outcome)
    }
}
