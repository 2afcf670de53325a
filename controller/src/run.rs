//! The `run` command: wire config, cloud, kube, leader election, probes and
//! reconcilers together.

use crate::config::Config;
use std::path::PathBuf;

pub async fn run(_config: Config, _kubeconfig: Option<PathBuf>) -> anyhow::Result<()> {
    anyhow::bail!("the run command is not wired yet")
}
