//! Looking at the lab from inside: a command run in one of its namespaces,
//! and a ping that always ends (one echo, one second to answer, a few
//! seconds in all). Nothing here runs in the host namespace.

use super::netns::Netns;
use super::LabError;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

/// How a command run in a namespace ended.
#[derive(Clone, Debug)]
pub struct ExecOutput {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Every command is killed after this long.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(20);

/// `ip netns exec <ns> argv...`, bounded by [`EXEC_TIMEOUT`].
pub(crate) async fn exec(ns: &Netns, argv: &[&str]) -> Result<ExecOutput, LabError> {
    exec_within(ns, argv, EXEC_TIMEOUT).await
}

async fn exec_within(ns: &Netns, argv: &[&str], limit: Duration) -> Result<ExecOutput, LabError> {
    if argv.is_empty() {
        return Err(LabError::Invalid("exec needs a command".into()));
    }
    let what = format!("in {}: {}", ns.name(), argv.join(" "));
    let child = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| LabError::Command {
            command: what.clone(),
            message: e.to_string(),
        })?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| LabError::Timeout(what))??;
    Ok(ExecOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// One echo request from `from` to `ip`: true if the reply came back.
pub(crate) async fn ping(from: &Netns, ip: Ipv4Addr) -> bool {
    let ip = ip.to_string();
    let argv = ["ping", "-n", "-q", "-c", "1", "-W", "1", "-w", "2", &ip];
    match exec_within(from, &argv, Duration::from_secs(4)).await {
        Ok(out) => out.success(),
        Err(e) => {
            tracing::debug!(from = from.name(), ip, error = %e, "lab ping did not run");
            false
        }
    }
}
