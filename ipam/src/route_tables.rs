//! Which route tables the route reconciler writes into: the configured ones
//! (each must exist in the VPC), else the tables tagged for the cluster, else
//! the VPC's only table. Anything else is an error that says what to set.

use crate::ids::{ClusterId, RouteTableId};
use std::collections::BTreeMap;
use std::fmt;

/// A table as observed in the VPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableView {
    pub id: RouteTableId,
    pub main: bool,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableChoiceError {
    /// Configured ids that the VPC does not have.
    NotInVpc {
        missing: Vec<RouteTableId>,
        available: Vec<RouteTableId>,
    },
    /// Nothing configured, nothing tagged, and not exactly one table.
    Ambiguous { available: Vec<RouteTableId> },
}

impl fmt::Display for TableChoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |ids: &[RouteTableId]| {
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.iter()
                    .map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        match self {
            TableChoiceError::NotInVpc { missing, available } => write!(
                f,
                "routes.routeTableIds: {} not found in the cluster's VPC (tables there: {}); fix the ids in routes.routeTableIds",
                list(missing),
                list(available)
            ),
            TableChoiceError::Ambiguous { available } => write!(
                f,
                "routes.routeTableIds is empty and the VPC has {} route tables ({}), none tagged for the cluster; set routes.routeTableIds or tag the table with {}",
                available.len(),
                list(available),
                cluster_tag_key_hint()
            ),
        }
    }
}

fn cluster_tag_key_hint() -> &'static str {
    "kubernetes.io/cluster/<clusterId>"
}

/// Whether a table carries a tag that assigns it to this cluster
/// (`kubernetes.io/cluster/<id>` with any value, or `vpc-eni.io/cluster=<id>`).
/// Whether the table belongs to the cluster, so that an unnamed instance
/// route inside the cluster CIDR in it is the controller's own (clouds whose
/// routes carry no name or description: EC2). True for a table the operator
/// listed in `routes.routeTableIds` (as the cloud provider's route
/// controller treats its configured table), or tagged
/// `kubernetes.io/cluster/<id>=owned` or `vpc-eni.io/cluster=<id>`. A
/// `kubernetes.io/cluster/<id>=shared` table is written to but not owned:
/// other writers' unnamed routes there cannot be told from ours.
pub fn table_owned_by_cluster(
    tags: &BTreeMap<String, String>,
    cluster: &ClusterId,
    configured: bool,
) -> bool {
    configured
        || tags
            .get(&format!("kubernetes.io/cluster/{cluster}"))
            .map(String::as_str)
            == Some("owned")
        || tags.get("vpc-eni.io/cluster").map(String::as_str) == Some(cluster.as_str())
}

pub fn tagged_for_cluster(tags: &BTreeMap<String, String>, cluster: &ClusterId) -> bool {
    tags.contains_key(&format!("kubernetes.io/cluster/{cluster}"))
        || tags.get("vpc-eni.io/cluster").map(String::as_str) == Some(cluster.as_str())
}

/// The tables to write routes into.
pub fn choose_route_tables(
    configured: &[RouteTableId],
    observed: &[TableView],
    cluster: &ClusterId,
) -> Result<Vec<RouteTableId>, TableChoiceError> {
    let available: Vec<RouteTableId> = observed.iter().map(|t| t.id.clone()).collect();
    if !configured.is_empty() {
        let missing: Vec<RouteTableId> = configured
            .iter()
            .filter(|id| !available.contains(id))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(TableChoiceError::NotInVpc { missing, available });
        }
        let mut out = configured.to_vec();
        out.dedup();
        return Ok(out);
    }
    let tagged: Vec<RouteTableId> = observed
        .iter()
        .filter(|t| tagged_for_cluster(&t.tags, cluster))
        .map(|t| t.id.clone())
        .collect();
    if !tagged.is_empty() {
        return Ok(tagged);
    }
    if observed.len() == 1 {
        return Ok(available);
    }
    Err(TableChoiceError::Ambiguous { available })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(id: &str, tags: &[(&str, &str)]) -> TableView {
        TableView {
            id: RouteTableId::new(id),
            main: false,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_configured_or_owned_table_is_the_clusters_a_shared_one_is_not() {
        let cluster = ClusterId::new("demo");
        let tags = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        let none = BTreeMap::new();
        assert!(table_owned_by_cluster(&none, &cluster, true));
        assert!(!table_owned_by_cluster(&none, &cluster, false));
        let owned = tags("kubernetes.io/cluster/demo", "owned");
        assert!(table_owned_by_cluster(&owned, &cluster, false));
        let shared = tags("kubernetes.io/cluster/demo", "shared");
        assert!(!table_owned_by_cluster(&shared, &cluster, false));
        assert!(tagged_for_cluster(&shared, &cluster));
        let other = tags("kubernetes.io/cluster/other", "owned");
        assert!(!table_owned_by_cluster(&other, &cluster, false));
        assert!(table_owned_by_cluster(
            &tags("vpc-eni.io/cluster", "demo"),
            &cluster,
            false
        ));
    }

    #[test]
    fn configured_tables_must_exist_in_the_vpc() {
        let cluster = ClusterId::new("demo");
        let observed = [table("vtb-1", &[]), table("vtb-2", &[])];
        let got = choose_route_tables(&[RouteTableId::new("vtb-2")], &observed, &cluster);
        assert_eq!(got, Ok(vec![RouteTableId::new("vtb-2")]));
        let err = choose_route_tables(&[RouteTableId::new("vtb-9")], &observed, &cluster)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vtb-9 not found"), "{err}");
        assert!(err.contains("vtb-1, vtb-2"), "{err}");
    }

    #[test]
    fn tagged_table_wins_over_a_lone_or_main_table() {
        let cluster = ClusterId::new("demo");
        let observed = [
            table("rtb-main", &[]),
            table("rtb-k8s", &[("kubernetes.io/cluster/demo", "owned")]),
            table("rtb-other", &[("kubernetes.io/cluster/other", "owned")]),
        ];
        assert_eq!(
            choose_route_tables(&[], &observed, &cluster),
            Ok(vec![RouteTableId::new("rtb-k8s")])
        );
    }

    #[test]
    fn a_single_table_is_used_and_several_untagged_are_refused() {
        let cluster = ClusterId::new("demo");
        assert_eq!(
            choose_route_tables(&[], &[table("vtb-1", &[])], &cluster),
            Ok(vec![RouteTableId::new("vtb-1")])
        );
        let err = choose_route_tables(&[], &[table("vtb-1", &[]), table("vtb-2", &[])], &cluster)
            .unwrap_err()
            .to_string();
        assert!(err.contains("set routes.routeTableIds"), "{err}");
    }
}
