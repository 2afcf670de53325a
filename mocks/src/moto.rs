//! The moto launcher (feature `aws`): a private moto EC2 emulator (PyPI
//! `moto[server]`, a third-party fake of EC2) on 127.0.0.1, a plain SDK client
//! of it for seeding and checking, an `AwsCloud` pointed at it, and a seeded
//! VPC. Used by the AWS tests of `providers` and by the controller's test
//! harness; meant for tests, so it panics where a test should fail.
//!
//! `moto_server` is looked up in env `MOTO_SERVER`, then `PATH`, then
//! `.venv/bin/moto_server` at the repository root. Without it the tests fail
//! with the install command, unless env `SKIP_MOTO_TESTS=1`.

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::InstanceType as Ec2InstanceType;
use ipam::ids::{ClusterId, InstanceId, RouteTableId, SecurityGroupId, SubnetId, VpcId};
use providers::aws::{AwsCloud, AwsConfig, StaticCredentials};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const INSTALL_HINT: &str =
    "moto_server not found: python3 -m venv .venv && .venv/bin/pip install 'moto[server]' (or set MOTO_SERVER=/path/to/moto_server, or SKIP_MOTO_TESTS=1 to skip)";

fn find_moto_server() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("MOTO_SERVER") {
        let path = PathBuf::from(explicit);
        return path.is_file().then_some(path);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("moto_server");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join(".venv/bin/moto_server");
    venv.is_file().then_some(venv)
}

/// A running moto server, killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// Start a fresh server; `None` when moto is missing and
    /// `SKIP_MOTO_TESTS=1` (the caller returns early).
    pub fn start() -> Option<Moto> {
        let Some(binary) = find_moto_server() else {
            if std::env::var("SKIP_MOTO_TESTS").as_deref() == Ok("1") {
                eprintln!("skipping: {INSTALL_HINT}");
                return None;
            }
            panic!("{INSTALL_HINT}");
        };
        // Ask the OS for a free port, then hand it to moto.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free local port")
            .port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        // Readiness, not a timed assertion: a generous bound for a slow start.
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// A plain SDK client on the emulator, for seeding and for checking its
    /// state behind the backend's back.
    pub fn sdk(&self) -> aws_sdk_ec2::Client {
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build();
        aws_sdk_ec2::Client::from_conf(conf)
    }

    pub fn config(&self, cluster: &str) -> AwsConfig {
        let mut config = AwsConfig::new(ClusterId::from(cluster));
        config.region = Some("us-east-1".into());
        config.endpoint = Some(self.endpoint.clone());
        config.static_credentials = Some(StaticCredentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: None,
        });
        config
    }

    pub async fn cloud(&self, cluster: &str) -> AwsCloud {
        AwsCloud::connect(self.config(cluster))
            .await
            .expect("aws cloud on moto")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`seed`] created.
pub struct SeededVpc {
    pub vpc: VpcId,
    /// 10.0.1.0/24 in us-east-1a.
    pub subnet: SubnetId,
    /// 10.0.2.0/28 in us-east-1a: 11 usable addresses.
    pub small_subnet: SubnetId,
    pub security_group: SecurityGroupId,
    /// Two t3.medium instances (3 ENIs, 6 IPv4 per ENI) in `subnet`.
    pub instances: Vec<InstanceId>,
    /// A custom (non-main) route table of the VPC.
    pub route_table: RouteTableId,
}

/// A VPC with two subnets, a security group, two t3.medium instances and a
/// route table, all through the EC2 API.
/// A security group named `pods` in `vpc`, for new ENIs.
pub async fn pods_security_group(ec2: &aws_sdk_ec2::Client, vpc: &str) -> String {
    ec2.create_security_group()
        .group_name("pods")
        .description("pods")
        .vpc_id(vpc)
        .send()
        .await
        .unwrap()
        .group_id
        .unwrap()
}

/// The id of an image moto serves, to run instances from.
pub async fn any_image(ec2: &aws_sdk_ec2::Client) -> String {
    ec2.describe_images()
        .send()
        .await
        .unwrap()
        .images()
        .first()
        .and_then(|i| i.image_id())
        .unwrap()
        .to_owned()
}

/// A VPC of 10.0.0.0/16.
pub async fn vpc(ec2: &aws_sdk_ec2::Client) -> String {
    ec2.create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap()
        .vpc_id
        .unwrap()
}

/// A subnet of `vpc` in `zone`.
pub async fn subnet(ec2: &aws_sdk_ec2::Client, vpc: &str, cidr: &str, zone: &str) -> String {
    ec2.create_subnet()
        .vpc_id(vpc)
        .cidr_block(cidr)
        .availability_zone(zone)
        .send()
        .await
        .unwrap()
        .subnet
        .unwrap()
        .subnet_id
        .unwrap()
}

pub async fn seed(ec2: &aws_sdk_ec2::Client) -> SeededVpc {
    let vpc = vpc(ec2).await;
    let subnet = |cidr: &'static str| subnet(ec2, &vpc, cidr, "us-east-1a");
    let main_subnet = subnet("10.0.1.0/24").await;
    let small_subnet = subnet("10.0.2.0/28").await;
    let sg = pods_security_group(ec2, &vpc).await;
    let image = any_image(ec2).await;
    let run = ec2
        .run_instances()
        .image_id(image)
        .instance_type(Ec2InstanceType::T3Medium)
        .subnet_id(&main_subnet)
        .min_count(2)
        .max_count(2)
        .send()
        .await
        .unwrap();
    let instances = run
        .instances()
        .iter()
        .map(|i| InstanceId::from(i.instance_id().unwrap()))
        .collect();
    let route_table = ec2
        .create_route_table()
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .route_table
        .unwrap()
        .route_table_id
        .unwrap();
    SeededVpc {
        vpc: VpcId::from(vpc),
        subnet: SubnetId::from(main_subnet),
        small_subnet: SubnetId::from(small_subnet),
        security_group: SecurityGroupId::from(sg),
        instances,
        route_table: RouteTableId::from(route_table),
    }
}
