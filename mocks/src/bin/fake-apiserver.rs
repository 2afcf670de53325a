//! `fake-apiserver`: the in-memory kube-apiserver (with scheduler and kubelet
//! stand-ins) as a process, for kubectl and manual runs.
//!
//! Prints `listening on http://127.0.0.1:PORT` as its first stdout line.

use anyhow::Context;
use clap::Parser;
use mocks::kubeapi::{FakeApiServer, Options};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "A fake kube-apiserver with a scheduler and kubelet stand-in")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig pointing at the server to this file.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Do not run the scheduler.
    #[arg(long)]
    no_scheduler: bool,
    /// Do not run the kubelet stand-in.
    #[arg(long)]
    no_kubelet: bool,
    /// Do not run the deployment controller.
    #[arg(long)]
    no_deployments: bool,
    /// Changes kept for watches (older resourceVersions get 410 Gone).
    #[arg(long, default_value_t = 10_000)]
    history_size: usize,
    /// Extended resources whose pods wait for the allocation annotation.
    #[arg(long = "allocation-resource", default_values_t = vec!["aliyun/eni".to_string()])]
    allocation_resources: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut opts = Options {
        listen: args.listen,
        history_size: args.history_size,
        scheduler: !args.no_scheduler,
        kubelet: !args.no_kubelet,
        deployments: !args.no_deployments,
        ..Options::default()
    };
    opts.kubelet_config.allocation_resources = args.allocation_resources;
    let server = FakeApiServer::start(opts).await?;
    if let Some(path) = &args.kubeconfig_out {
        std::fs::write(path, server.kubeconfig_yaml())
            .with_context(|| format!("writing kubeconfig to {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", server.url())?;
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
