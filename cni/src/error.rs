//! Why a command failed, and the spec error code, short message and details
//! each reason is reported with.

use crate::spec::{code, ErrorResult};

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The config asks for a spec version this plugin does not speak.
    #[error("incompatible CNI version {0:?}")]
    IncompatibleVersion(String),
    /// The command is not part of the config's spec version.
    #[error("command {command} is not part of CNI version {version}")]
    UnsupportedCommand {
        command: &'static str,
        version: String,
    },
    /// A `CNI_*` variable is missing or malformed.
    #[error("invalid environment variable {var}: {reason}")]
    InvalidEnv { var: &'static str, reason: String },
    /// Stdin is not a JSON object.
    #[error("cannot decode the network config on stdin: {0}")]
    Decode(String),
    /// A key of the network config is missing or malformed.
    #[error("invalid network config: key {key:?}: {reason}")]
    InvalidConfig { key: String, reason: String },
    /// Something this command needs is not there yet (the allocation, the
    /// ENI's link, the node's podCIDR); the runtime retries the sandbox.
    #[error("{what}")]
    TryAgainLater { what: String },
    /// STATUS: the plugin cannot serve ADDs now.
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    #[error("pod {namespace}/{name} not found")]
    PodNotFound { namespace: String, name: String },
    #[error("pod {namespace}/{name} has uid {found}, the runtime asked for {wanted}")]
    PodUidMismatch {
        namespace: String,
        name: String,
        found: String,
        wanted: String,
    },
    /// The pod's namespace already has a different link under `CNI_IFNAME`.
    #[error("{0}")]
    InterfaceConflict(String),
    /// CHECK found the network not as ADD left it.
    #[error("{0}")]
    CheckFailed(String),
    /// The kube API answered with an error or not at all.
    #[error("kube API: {0}")]
    Kube(String),
    /// A netlink request, a namespace switch or a file failed.
    #[error("{0}")]
    Io(String),
    /// The delegate plugin failed; its own error is passed on as it is.
    #[error("delegate plugin {plugin}: {msg}: {details}")]
    Delegate {
        plugin: String,
        code: u32,
        msg: String,
        details: String,
    },
}

impl PluginError {
    pub fn invalid_config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        PluginError::InvalidConfig {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub fn io(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        PluginError::Io(format!("{context}: {err}"))
    }

    /// The spec error code.
    pub fn code(&self) -> u32 {
        match self {
            PluginError::IncompatibleVersion(_) => code::INCOMPATIBLE_VERSION,
            PluginError::UnsupportedCommand { .. } => code::UNSUPPORTED_FIELD,
            PluginError::InvalidEnv { .. } => code::INVALID_ENV,
            PluginError::Decode(_) => code::DECODE_FAILURE,
            PluginError::InvalidConfig { .. } => code::INVALID_CONFIG,
            PluginError::TryAgainLater { .. } => code::TRY_AGAIN_LATER,
            PluginError::NotAvailable(_) => code::NOT_AVAILABLE,
            PluginError::PodNotFound { .. } => code::POD_NOT_FOUND,
            PluginError::PodUidMismatch { .. } => code::POD_UID_MISMATCH,
            PluginError::InterfaceConflict(_) => code::INTERFACE_CONFLICT,
            PluginError::CheckFailed(_) => code::CHECK_FAILED,
            PluginError::Kube(_) | PluginError::Io(_) => code::IO_FAILURE,
            PluginError::Delegate { code, .. } => *code,
        }
    }

    /// The spec's short message. It names what the user needs to find the
    /// cause (the pod, the key, the variable), so runtimes that show only
    /// `msg` still say something useful.
    pub fn msg(&self) -> String {
        match self {
            PluginError::TryAgainLater { .. } => format!("try again later: {self}"),
            PluginError::Delegate { msg, .. } => msg.clone(),
            _ => self.to_string(),
        }
    }

    /// The spec's longer details.
    pub fn details(&self) -> String {
        match self {
            PluginError::Delegate {
                plugin, details, ..
            } => format!("delegate plugin {plugin}: {details}"),
            PluginError::TryAgainLater { .. } => {
                "the runtime retries the pod sandbox; nothing was left behind".to_owned()
            }
            _ => self.to_string(),
        }
    }

    pub fn to_result(&self, cni_version: &str) -> ErrorResult {
        ErrorResult {
            cni_version: cni_version.to_owned(),
            code: self.code(),
            msg: self.msg(),
            details: self.details(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec() {
        assert_eq!(PluginError::IncompatibleVersion("9".into()).code(), 1);
        assert_eq!(
            PluginError::InvalidEnv {
                var: "CNI_NETNS",
                reason: "not set".into()
            }
            .code(),
            4
        );
        assert_eq!(PluginError::io("x", "y").code(), 5);
        assert_eq!(PluginError::Decode("x".into()).code(), 6);
        assert_eq!(PluginError::invalid_config("mtu", "bad").code(), 7);
        assert_eq!(
            PluginError::TryAgainLater {
                what: "later".into()
            }
            .code(),
            11
        );
    }

    #[test]
    fn try_again_later_names_the_cause_in_msg() {
        let e = PluginError::TryAgainLater {
            what: "no allocation for pod default/web-0 after 1s".into(),
        };
        let r = e.to_result("1.0.0");
        assert_eq!(r.code, 11);
        assert!(r.msg.starts_with("try again later"), "{}", r.msg);
        assert!(r.msg.contains("default/web-0"), "{}", r.msg);
    }

    #[test]
    fn a_delegate_error_passes_through() {
        let e = PluginError::Delegate {
            plugin: "ptp".into(),
            code: 7,
            msg: "bad ipam".into(),
            details: "subnet".into(),
        };
        let r = e.to_result("1.0.0");
        assert_eq!((r.code, r.msg.as_str()), (7, "bad ipam"));
        assert!(r.details.contains("ptp"));
    }
}
