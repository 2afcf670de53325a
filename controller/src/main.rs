//! The `vpc-eni-controller` binary: `run`, `check-config`, `cleanup-eni`,
//! `import-terway`, `status`, and `simulate` when built with the `simulate` feature
//! (on by default).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use controller::config::Config;

/// jemalloc instead of the C library's malloc: glibc's keeps an arena per
/// contending thread and the freed pages of each, so the resident set ends
/// far above the live heap (objects decoded and dropped by the watches on
/// every runtime thread); musl's (the image) is slow under contention.
/// Its settings (one arena, pages returned after a second) are baked in by
/// `.cargo/config.toml`. Figures: README "Scale benchmark".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "vpc-eni-controller",
    version,
    about = "Pod networking native to the cloud VPC: VPC routes for node podCIDRs, exclusive ENIs for pods that ask for them."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MaxPodsProvider {
    Alibaba,
    Aws,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller against a cluster and a cloud.
    Run {
        /// The YAML config file (see README "Configuration").
        #[arg(long)]
        config: PathBuf,
        /// Kubeconfig to use; in-cluster config when absent.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
    /// Validate a config file and explain what it will do; touches nothing.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// After ENI mode is switched off: release the ENIs of deleted ENI pods
    /// and remove their finalizer, then remove the ENI resource from every
    /// node's status once no pod holds or asks for it.
    CleanupEni {
        /// The controller's config, with eni.enabled: false (the resource
        /// name and cloud come from it).
        #[arg(long)]
        config: PathBuf,
        /// Kubeconfig to use; in-cluster config when absent.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Say what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Turn Terway's eni-config ConfigMap into this controller's config: YAML
    /// on stdout, with a comment for every Terway setting it cannot carry.
    ImportTerway {
        /// The ConfigMap as `kubectl -n kube-system get configmap eni-config
        /// -o yaml` prints it (or its eni_conf JSON alone); `-` reads stdin.
        #[arg(long)]
        eni_config: PathBuf,
        /// provider.region (else Terway's region_id), e.g. cn-hangzhou.
        #[arg(long)]
        region: Option<String>,
        /// clusterId (else Terway's cluster_id, else its ack.aliyun.com ENI tag).
        #[arg(long)]
        cluster_id: Option<String>,
        /// The pod CIDR: turns routes (VPC) mode on with it.
        #[arg(long)]
        cluster_cidr: Option<ipnet::Ipv4Net>,
        /// Also validate the result as check-config does (exit 2 with the
        /// problems on stderr, the YAML still on stdout).
        #[arg(long)]
        check: bool,
    },
    /// Show, read-only, what the cluster holds of the cloud: per node the
    /// secondary ENIs attached and allowed, per configured subnet the free
    /// and cluster-held IPs and when it runs out, per route table the
    /// entries ours and foreign against the quota. Makes only kube list and
    /// cloud describe/list calls. Per node in shared-ENI mode, the shared
    /// IPs pods use and those pooled.
    Status {
        /// The controller's config (cluster id, cloud, eni.subnets, routes).
        #[arg(long)]
        config: PathBuf,
        /// Kubeconfig to use; in-cluster config when absent.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Output: tables, tables with more columns, or one JSON document.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: controller::status::Output,
        /// Describe the subnets twice, this many seconds apart, and forecast
        /// when each runs out at the rate seen between the two. 0 (default):
        /// no forecast (the controller exports the last hour's as the metric
        /// vpc_eni_subnet_exhaustion_seconds).
        #[arg(long, default_value_t = 0)]
        watch_seconds: u64,
    },
    /// Print how many pods a node of an instance type can run in shared-ENI
    /// mode: shared ENIs x (IPv4 per ENI - 1) + 2 host-network pods, from
    /// the bundled instance-type table (or limits given by hand). Set the
    /// kubelet's --max-pods to it.
    MaxPods {
        #[arg(long, value_enum)]
        provider: MaxPodsProvider,
        /// e.g. ecs.g7.xlarge or m5.large.
        #[arg(long)]
        instance_type: String,
        /// Shared ENIs per node (sharedEni.maxEnis); default: every
        /// secondary ENI slot of the type.
        #[arg(long)]
        shared_enis: Option<u32>,
        /// ENIs the type allows, primary included (for a type not in the table).
        #[arg(long, requires = "ipv4_per_eni")]
        max_enis: Option<u32>,
        /// Private IPv4 addresses per ENI, primary included.
        #[arg(long, requires = "max_enis")]
        ipv4_per_eni: Option<u32>,
        /// Also print how the number was reached (on stderr).
        #[arg(long, short)]
        verbose: bool,
    },
    /// Run the real controller against in-process fakes (cloud + apiserver)
    /// and show what a user would see.
    #[cfg(feature = "simulate")]
    Simulate(controller::simulate::SimulateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!("{}: OK", config.display());
                println!("{}", controller::explain::explain(&c));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: invalid config:\n{e}", config.display());
                ExitCode::from(2)
            }
        },
        Command::Run { config, kubeconfig } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: invalid config:\n{e}", config.display());
                    return ExitCode::from(2);
                }
            };
            controller::logging::init(config.controller.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(controller::run::run(config, kubeconfig)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("vpc-eni-controller: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CleanupEni {
            config,
            kubeconfig,
            dry_run,
        } => cleanup_eni(config, kubeconfig, dry_run),
        Command::ImportTerway {
            eni_config,
            region,
            cluster_id,
            cluster_cidr,
            check,
        } => import_terway(eni_config, region, cluster_id, cluster_cidr, check),
        Command::Status {
            config,
            kubeconfig,
            output,
            watch_seconds,
        } => status(config, kubeconfig, output, watch_seconds),
        Command::MaxPods {
            provider,
            instance_type,
            shared_enis,
            max_enis,
            ipv4_per_eni,
            verbose,
        } => {
            let ask = controller::maxpods::Ask {
                provider: match provider {
                    MaxPodsProvider::Alibaba => controller::config::ProviderKind::Alibaba,
                    MaxPodsProvider::Aws => controller::config::ProviderKind::Aws,
                },
                instance_type,
                shared_enis,
                max_enis,
                ipv4_per_eni,
            };
            match controller::maxpods::max_pods(&ask) {
                Ok(a) => {
                    println!("{}", a.max_pods);
                    if verbose {
                        eprintln!("{}", a.explanation);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        #[cfg(feature = "simulate")]
        Command::Simulate(args) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(controller::simulate::main(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("simulate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn cleanup_eni(path: PathBuf, kubeconfig: Option<PathBuf>, dry_run: bool) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: invalid config:\n{e}", path.display());
            return ExitCode::from(2);
        }
    };
    if config.eni.enabled {
        eprintln!(
            "{}: eni.enabled is true. Switch ENI mode off in the controller's config first (a controller still in ENI mode writes back what this removes), then run cleanup-eni with that config.",
            path.display()
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(controller::eni::cleanup::command(
        &config, kubeconfig, dry_run,
    )) {
        Ok(summary) if summary.done() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cleanup-eni: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn status(
    path: PathBuf,
    kubeconfig: Option<PathBuf>,
    output: controller::status::Output,
    watch_seconds: u64,
) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: invalid config:\n{e}", path.display());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let watch = std::time::Duration::from_secs(watch_seconds);
    match runtime.block_on(controller::status::command(
        &config, kubeconfig, output, watch,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("status: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn import_terway(
    path: PathBuf,
    region: Option<String>,
    cluster_id: Option<String>,
    cluster_cidr: Option<ipnet::Ipv4Net>,
    check: bool,
) -> ExitCode {
    let stdin = path.as_os_str() == "-";
    let text = if stdin {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(&path)
    };
    let source = if stdin {
        "stdin".to_owned()
    } else {
        path.display().to_string()
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {source}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = controller::terway::ImportOptions {
        source: source.clone(),
        region,
        cluster_id,
        cluster_cidr,
    };
    let imported = match controller::terway::import(&text, &options) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{source}: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", imported.yaml);
    if !check {
        return ExitCode::SUCCESS;
    }
    let problems = controller::terway::check(&imported);
    if problems.is_empty() {
        eprintln!("check-config: OK");
        ExitCode::SUCCESS
    } else {
        eprintln!("check-config: the imported config is not ready:");
        for p in problems {
            eprintln!("  - {p}");
        }
        ExitCode::from(2)
    }
}
