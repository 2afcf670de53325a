//! `fake-alibaba --listen 127.0.0.1:0 --state STATE.yaml`: serve an in-memory
//! cloud world through the Alibaba OpenAPI front until killed. The first line
//! on stdout is `listening on http://127.0.0.1:PORT`, so a script can start it
//! on a free port and read the endpoint back. Logs go to stderr (`RUST_LOG`).

use anyhow::Context;
use clap::Parser;
use mocks::alibaba::FakeAlibaba;
use mocks::cloud::World;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "fake-alibaba",
    about = "Alibaba Cloud ECS/VPC OpenAPI fake on an in-memory cloud world"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// World spec (YAML): region, access keys, VPCs, vSwitches, instances, faults.
    #[arg(long)]
    state: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();

    let yaml = std::fs::read_to_string(&args.state)
        .with_context(|| format!("cannot read the world spec {}", args.state.display()))?;
    let world = World::from_yaml(&yaml)
        .with_context(|| format!("world spec {} is not valid", args.state.display()))?;
    let fake = FakeAlibaba::start(world, args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;

    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", fake.url())?;
    stdout.flush()?;

    wait_for_stop().await;
    fake.shutdown().await;
    Ok(())
}

/// Until Ctrl-C or SIGTERM.
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
