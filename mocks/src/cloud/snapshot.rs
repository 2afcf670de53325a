//! `WorldSnapshot`: everything in a world at one instant, serialisable (YAML
//! for `simulate --dump`) and printable as a short human summary.

use super::flavor::Flavor;
use ipam::ids::RegionId;
use providers::model::{Eni, Instance, NextHop, RouteEntry, RouteTable, Subnet};
use serde::Serialize;
use std::fmt;

/// Everything in a world, for printing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorldSnapshot {
    pub region: RegionId,
    pub flavor: Flavor,
    pub subnets: Vec<Subnet>,
    pub instances: Vec<Instance>,
    pub enis: Vec<Eni>,
    pub route_tables: Vec<TableSnapshot>,
}

/// One route table with its entries.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TableSnapshot {
    pub table: RouteTable,
    pub entries: Vec<RouteEntry>,
}

impl fmt::Display for WorldSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "world {} ({})", self.region, self.flavor)?;
        for s in &self.subnets {
            writeln!(
                f,
                "  subnet {} {} {} free={}",
                s.id, s.zone, s.cidr, s.free_ips
            )?;
        }
        for i in &self.instances {
            writeln!(
                f,
                "  instance {} {} {} ip={}",
                i.id, i.instance_type, i.zone, i.primary_ip
            )?;
            for a in &i.enis {
                let eni = self.enis.iter().find(|e| e.id == a.eni_id);
                let (status, ips) = eni
                    .map(|e| (format!("{:?}", e.status), e.secondary_ips.len()))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "    eth{} {} {} +{} ips",
                    a.device_index, a.eni_id, status, ips
                )?;
            }
        }
        for e in self.enis.iter().filter(|e| e.instance_id.is_none()) {
            writeln!(
                f,
                "  eni {} {:?} {} +{} ips (unattached)",
                e.id,
                e.status,
                e.primary_ip,
                e.secondary_ips.len()
            )?;
        }
        for t in &self.route_tables {
            let main = if t.table.main { " main" } else { "" };
            writeln!(f, "  table {}{}", t.table.id, main)?;
            for e in t.entries.iter().filter(|e| !e.system) {
                let hop = match &e.next_hop {
                    NextHop::Instance(i) => i.to_string(),
                    NextHop::Local => "local".to_owned(),
                    NextHop::Other { kind, id } => format!("{kind}:{id}"),
                };
                writeln!(f, "    {} -> {} {:?}", e.destination, hop, e.status)?;
            }
        }
        Ok(())
    }
}
