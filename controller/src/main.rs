//! The `vpc-eni-controller` binary: `run`, `check-config`, and `simulate`
//! when built with the `simulate` feature (on by default).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use controller::config::Config;

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
