//! Network namespaces by path: open one, and run a closure with the calling
//! thread inside it, coming back to where the thread was before returning.
//!
//! The plugin's thread never stays in a foreign namespace: a netlink socket
//! is created inside the namespace it must act in (it stays bound there) and
//! a delegate plugin is spawned from inside the host namespace (a child
//! inherits its parent thread's namespace). Kube I/O therefore always runs
//! in the namespace the plugin started in.

use crate::error::PluginError;
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

/// The calling thread's own namespace (not the process's: `setns` is per thread).
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Open the namespace file at `path` (e.g. `/var/run/netns/x`).
    pub fn open(path: &Path) -> Result<Self, PluginError> {
        let file = File::open(path)
            .map_err(|e| PluginError::io(format!("open netns {}", path.display()), e))?;
        Ok(NetNs {
            file,
            path: path.to_owned(),
        })
    }

    /// The calling thread's namespace.
    pub fn current() -> Result<Self, PluginError> {
        Self::open(Path::new(THREAD_NETNS))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Is this the same namespace as `other` (same nsfs inode)?
    pub fn same_as(&self, other: &NetNs) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), other.file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Run `f` with the calling thread inside this namespace, then return
    /// the thread to the namespace it was in.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, PluginError> {
        let home = File::open(THREAD_NETNS).map_err(|e| PluginError::io("open own netns", e))?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| PluginError::io(format!("enter netns {}", self.path.display()), e))?;
        let back = Back(home.as_fd());
        let out = f();
        drop(back);
        Ok(out)
    }
}

/// Returns the thread to its namespace even if the closure panics.
struct Back<'a>(BorrowedFd<'a>);

impl Drop for Back<'_> {
    fn drop(&mut self) {
        if let Err(e) = setns(self.0, CloneFlags::CLONE_NEWNET) {
            // A thread stuck in the wrong namespace would do kube I/O and
            // link changes in the wrong place: stop rather than go on.
            eprintln!("vpc-eni-cni: cannot return to the original netns: {e}");
            std::process::abort();
        }
    }
}
