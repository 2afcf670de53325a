//! Route tables of the model: system entries per flavor, asynchronous
//! custom entries (Pending -> Available, Deleting -> gone), per-table quota,
//! duplicate destinations, and Alibaba's one-change-at-a-time rule.

use super::flavor::{Fail, Flavor};
use super::state::{fail, EntryState, OpResult, State, TableState};
use ipam::ids::{InstanceId, RouteTableId, VpcId};
use ipnet::Ipv4Net;
use providers::model::{NewRouteEntry, NextHop, RouteEntry, RouteEntryStatus, RouteTable};
use tokio::time::Instant;

impl State {
    pub fn describe_route_tables(&self, vpc: &VpcId) -> OpResult<Vec<RouteTable>> {
        if !self.vpc_cidrs.contains_key(vpc) {
            return fail(Fail::VpcNotFound, format!("VPC {vpc} does not exist"));
        }
        Ok(self
            .tables
            .iter()
            .filter(|(_, t)| &t.vpc == vpc)
            .map(|(id, t)| RouteTable {
                id: id.clone(),
                vpc_id: t.vpc.clone(),
                main: t.main,
                tags: t.tags.clone(),
            })
            .collect())
    }

    fn system_entries(&self, table_id: &RouteTableId, vpc: &VpcId) -> Vec<RouteEntry> {
        let system = |destination| RouteEntry {
            route_table_id: table_id.clone(),
            destination,
            next_hop: NextHop::Local,
            status: RouteEntryStatus::Available,
            name: None,
            description: None,
            system: true,
        };
        match self.flavor {
            Flavor::Alibaba => self
                .subnets
                .values()
                .filter(|s| &s.vpc == vpc)
                .map(|s| system(s.pool.cidr))
                .collect(),
            Flavor::Aws => self
                .vpc_cidrs
                .get(vpc)
                .map(|c| system(*c))
                .into_iter()
                .collect(),
        }
    }

    pub fn list_route_entries(&self, table_id: &RouteTableId) -> OpResult<Vec<RouteEntry>> {
        let Some(table) = self.tables.get(table_id) else {
            return fail(
                Fail::RouteTableNotFound,
                format!("route table {table_id} does not exist"),
            );
        };
        let mut out = self.system_entries(table_id, &table.vpc);
        out.extend(table.entries.values().map(|e| e.entry.clone()));
        Ok(out)
    }

    fn check_table(&self, table_id: &RouteTableId, batch: usize) -> OpResult<&TableState> {
        let Some(table) = self.tables.get(table_id) else {
            return fail(
                Fail::RouteTableNotFound,
                format!("route table {table_id} does not exist"),
            );
        };
        let max = self.flavor.capabilities().route_batch_size;
        if batch > max {
            return fail(
                Fail::RouteBatchTooLarge,
                format!("{batch} entries in one call, at most {max}"),
            );
        }
        if self.flavor == Flavor::Alibaba
            && table.entries.values().any(|e| {
                matches!(
                    e.entry.status,
                    RouteEntryStatus::Pending | RouteEntryStatus::Deleting
                )
            })
        {
            return fail(
                Fail::RouteTableBusy,
                format!("route table {table_id} has an entry in a change; retry when it settles"),
            );
        }
        Ok(table)
    }

    /// Create entries; the per-entry failures come back in the list.
    pub fn create_route_entries(
        &mut self,
        table_id: &RouteTableId,
        entries: &[NewRouteEntry],
        now: Instant,
    ) -> OpResult<Vec<(Ipv4Net, Fail, String)>> {
        let table = self.check_table(table_id, entries.len())?;
        let vpc = table.vpc.clone();
        let quota = table.quota;
        let system: Vec<Ipv4Net> = self
            .system_entries(table_id, &vpc)
            .iter()
            .map(|e| e.destination)
            .collect();
        let mut custom = table.entries.len() as u32;
        let mut failed = Vec::new();
        let mut accepted = Vec::new();
        for new in entries {
            let dest = new.destination;
            let taken = system.contains(&dest)
                || table.entries.contains_key(&dest)
                || accepted.iter().any(|e: &RouteEntry| e.destination == dest);
            if taken {
                failed.push((
                    dest,
                    Fail::RouteDuplicate,
                    format!("{dest} is already routed in {table_id}"),
                ));
                continue;
            }
            match self.instances.get(&new.instance_id) {
                None => {
                    failed.push((
                        dest,
                        Fail::InstanceNotFound,
                        format!("instance {} does not exist", new.instance_id),
                    ));
                    continue;
                }
                Some(i) if i.vpc != vpc => {
                    failed.push((
                        dest,
                        Fail::Mismatch,
                        format!("instance {} is not in VPC {vpc}", new.instance_id),
                    ));
                    continue;
                }
                Some(_) => {}
            }
            if custom >= quota {
                failed.push((
                    dest,
                    Fail::RouteQuota,
                    format!("route table {table_id} holds {custom} of {quota} entries"),
                ));
                continue;
            }
            custom += 1;
            accepted.push(RouteEntry {
                route_table_id: table_id.clone(),
                destination: dest,
                next_hop: NextHop::Instance(new.instance_id.clone()),
                status: RouteEntryStatus::Available,
                name: Some(new.name.clone()).filter(|_| self.flavor == Flavor::Alibaba),
                description: Some(new.description.clone())
                    .filter(|_| self.flavor == Flavor::Alibaba),
                system: false,
            });
        }
        // EC2 routes are active at once; Alibaba entries are Pending first.
        let delay = match self.flavor {
            Flavor::Alibaba => self.delays.route,
            Flavor::Aws => std::time::Duration::ZERO,
        };
        if let Some(table) = self.tables.get_mut(table_id) {
            for mut entry in accepted {
                let settle_at = if delay.is_zero() {
                    None
                } else {
                    entry.status = RouteEntryStatus::Pending;
                    Some(now + delay)
                };
                table
                    .entries
                    .insert(entry.destination, EntryState { entry, settle_at });
            }
        }
        Ok(failed)
    }

    /// Delete entries by destination and next hop; entries already gone
    /// (or pointing elsewhere) count as done.
    pub fn delete_route_entries(
        &mut self,
        table_id: &RouteTableId,
        entries: &[(Ipv4Net, InstanceId)],
        now: Instant,
    ) -> OpResult<Vec<(Ipv4Net, Fail, String)>> {
        let table = self.check_table(table_id, entries.len())?;
        let system: Vec<Ipv4Net> = self
            .system_entries(table_id, &table.vpc)
            .iter()
            .map(|e| e.destination)
            .collect();
        let delay = match self.flavor {
            Flavor::Alibaba => self.delays.route,
            Flavor::Aws => std::time::Duration::ZERO,
        };
        let mut failed = Vec::new();
        let Some(table) = self.tables.get_mut(table_id) else {
            return fail(
                Fail::RouteTableNotFound,
                format!("route table {table_id} does not exist"),
            );
        };
        for (dest, instance) in entries {
            if system.contains(dest) {
                failed.push((
                    *dest,
                    Fail::SystemRoute,
                    format!("{dest} is a system entry"),
                ));
                continue;
            }
            let ours = table
                .entries
                .get(dest)
                .is_some_and(|e| e.entry.next_hop == NextHop::Instance(instance.clone()));
            if !ours {
                continue;
            }
            if delay.is_zero() {
                table.entries.remove(dest);
            } else if let Some(e) = table.entries.get_mut(dest) {
                e.entry.status = RouteEntryStatus::Deleting;
                e.settle_at = Some(now + delay);
            }
        }
        Ok(failed)
    }
}
