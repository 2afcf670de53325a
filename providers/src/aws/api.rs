//! The EC2 operations this backend calls, one constant each (what
//! `AwsCloud::send` takes), and [`API_NAMES`], the list of them a config's
//! per-API rate limits are checked against.
//!
//! Compiled without the `aws` feature too (no SDK here): a config for AWS is
//! validated in any build.

declare_apis! {
    DESCRIBE_INSTANCES = "DescribeInstances";
    DESCRIBE_INSTANCE_TYPES = "DescribeInstanceTypes";
    DESCRIBE_SUBNETS = "DescribeSubnets";
    CREATE_NETWORK_INTERFACE = "CreateNetworkInterface";
    ATTACH_NETWORK_INTERFACE = "AttachNetworkInterface";
    DETACH_NETWORK_INTERFACE = "DetachNetworkInterface";
    DELETE_NETWORK_INTERFACE = "DeleteNetworkInterface";
    DESCRIBE_NETWORK_INTERFACES = "DescribeNetworkInterfaces";
    MODIFY_NETWORK_INTERFACE_ATTRIBUTE = "ModifyNetworkInterfaceAttribute";
    ASSIGN_PRIVATE_IP_ADDRESSES = "AssignPrivateIpAddresses";
    UNASSIGN_PRIVATE_IP_ADDRESSES = "UnassignPrivateIpAddresses";
    DESCRIBE_ROUTE_TABLES = "DescribeRouteTables";
    CREATE_ROUTE = "CreateRoute";
    DELETE_ROUTE = "DeleteRoute";
    MODIFY_INSTANCE_ATTRIBUTE = "ModifyInstanceAttribute";
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
