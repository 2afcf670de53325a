//! The OpenAPI actions this backend calls, one constant each (what
//! `client::RpcClient::call` takes), and [`API_NAMES`], the list of them a
//! config's per-API rate limits are checked against.

declare_apis! {
    // ECS
    DESCRIBE_INSTANCES = "DescribeInstances";
    DESCRIBE_INSTANCE_TYPES = "DescribeInstanceTypes";
    CREATE_NETWORK_INTERFACE = "CreateNetworkInterface";
    ATTACH_NETWORK_INTERFACE = "AttachNetworkInterface";
    DETACH_NETWORK_INTERFACE = "DetachNetworkInterface";
    DELETE_NETWORK_INTERFACE = "DeleteNetworkInterface";
    DESCRIBE_NETWORK_INTERFACES = "DescribeNetworkInterfaces";
    ASSIGN_PRIVATE_IP_ADDRESSES = "AssignPrivateIpAddresses";
    UNASSIGN_PRIVATE_IP_ADDRESSES = "UnassignPrivateIpAddresses";
    // VPC
    DESCRIBE_VSWITCHES = "DescribeVSwitches";
    DESCRIBE_ROUTE_TABLE_LIST = "DescribeRouteTableList";
    DESCRIBE_ROUTE_ENTRY_LIST = "DescribeRouteEntryList";
    CREATE_ROUTE_ENTRY = "CreateRouteEntry";
    DELETE_ROUTE_ENTRY = "DeleteRouteEntry";
    CREATE_ROUTE_ENTRIES = "CreateRouteEntries";
    DELETE_ROUTE_ENTRIES = "DeleteRouteEntries";
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files whose code calls the cloud.
    const CALLERS: &[&str] = &[
        include_str!("instances.rs"),
        include_str!("enis.rs"),
        include_str!("routes.rs"),
    ];

    #[test]
    fn api_names_are_distinct_and_each_is_called() {
        crate::api_names::check_declared(DECLARED, CALLERS, &[]);
    }
}
