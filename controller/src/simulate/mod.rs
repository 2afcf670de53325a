//! The `simulate` command: fakes in-process, the real controller against them.

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Scenario YAML; the built-in default when absent.
    #[arg(long)]
    pub scenario: Option<std::path::PathBuf>,
}

pub async fn main(_args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::bail!("simulate is not built yet")
}
