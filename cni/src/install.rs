//! `vpc-eni-cni install`: what the node DaemonSet's init container runs
//! (the image has no shell) to put the plugin on its node, in this order:
//!
//! 1. its own executable to `$VPC_ENI_CNI_BIN_DIR/vpc-eni-cni` (mode 0755);
//! 2. a kubeconfig to `$VPC_ENI_CNI_CONF_DIR/$VPC_ENI_CNI_KUBECONFIG_NAME`
//!    (mode 0600): server `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
//!    the CA and the token of the pod's service account;
//! 3. last, `$VPC_ENI_CNI_CONFLIST` into the conf dir under its own file
//!    name, so the runtime sees the network only once the binary and the
//!    kubeconfig it needs are there.
//!
//! Every input is read and checked before anything is written, so a failure
//! leaves the node as it was. Each file is written to a temporary name in
//! its target directory and renamed into place: the runtime (or a kubelet
//! running the old binary) never sees half a file. The token is never
//! printed.

use base64::Engine as _;
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv6Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file name the plugin is installed under (the conflist's `type`).
pub const PLUGIN_NAME: &str = "vpc-eni-cni";

pub const BIN_DIR_ENV: &str = "VPC_ENI_CNI_BIN_DIR";
pub const CONF_DIR_ENV: &str = "VPC_ENI_CNI_CONF_DIR";
pub const CONFLIST_ENV: &str = "VPC_ENI_CNI_CONFLIST";
pub const KUBECONFIG_NAME_ENV: &str = "VPC_ENI_CNI_KUBECONFIG_NAME";
/// Tests only: where the service account's CA and token are read from.
pub const CA_FILE_ENV: &str = "VPC_ENI_CNI_CA_FILE";
pub const TOKEN_FILE_ENV: &str = "VPC_ENI_CNI_TOKEN_FILE";
pub const SERVICE_HOST_ENV: &str = "KUBERNETES_SERVICE_HOST";
pub const SERVICE_PORT_ENV: &str = "KUBERNETES_SERVICE_PORT";

pub const DEFAULT_BIN_DIR: &str = "/host/opt/cni/bin";
pub const DEFAULT_CONF_DIR: &str = "/host/etc/cni/net.d";
pub const DEFAULT_CONFLIST: &str = "/etc/vpc-eni-cni/10-vpc-eni.conflist";
pub const DEFAULT_KUBECONFIG_NAME: &str = "vpc-eni.kubeconfig";
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

const BINARY_MODE: u32 = 0o755;
const KUBECONFIG_MODE: u32 = 0o600;
const CONFLIST_MODE: u32 = 0o644;

/// Why the install failed; each names the variable or file to look at.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("environment variable {0} is not set (the kubelet sets it in every pod)")]
    MissingEnv(&'static str),
    #[error("environment variable {var}: {reason}")]
    InvalidEnv { var: &'static str, reason: String },
    #[error("cannot read {what} {}: {err}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{what} {}: {reason}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot write {}: {err}", path.display())]
    Write { path: PathBuf, err: std::io::Error },
}

/// Where to read from and write to, from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    /// The executable to install: this binary.
    pub executable: PathBuf,
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub conflist: PathBuf,
    pub kubeconfig_name: String,
    pub ca_file: PathBuf,
    pub token_file: PathBuf,
    /// `https://host:port`.
    pub server: String,
}

/// What was installed, for the log line of each file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
    pub conflist: PathBuf,
}

impl Install {
    /// Read the environment through `var`; `executable` is the file to
    /// install as the plugin (this binary).
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
        executable: PathBuf,
    ) -> Result<Install, InstallError> {
        let path = |name: &'static str, default: &str| -> Result<PathBuf, InstallError> {
            match var(name) {
                None => Ok(PathBuf::from(default)),
                Some(v) if v.is_empty() => Err(InstallError::InvalidEnv {
                    var: name,
                    reason: "is empty".into(),
                }),
                Some(v) => Ok(PathBuf::from(v)),
            }
        };
        let required = |name: &'static str| -> Result<String, InstallError> {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or(InstallError::MissingEnv(name))
        };
        let kubeconfig_name =
            var(KUBECONFIG_NAME_ENV).unwrap_or_else(|| DEFAULT_KUBECONFIG_NAME.to_owned());
        if !plain_file_name(&kubeconfig_name) {
            return Err(InstallError::InvalidEnv {
                var: KUBECONFIG_NAME_ENV,
                reason: format!("{kubeconfig_name:?} is not a plain file name"),
            });
        }
        let host = required(SERVICE_HOST_ENV)?;
        let port = required(SERVICE_PORT_ENV)?;
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(InstallError::InvalidEnv {
                var: SERVICE_PORT_ENV,
                reason: format!("{port:?} is not a port number"),
            });
        }
        Ok(Install {
            executable,
            bin_dir: path(BIN_DIR_ENV, DEFAULT_BIN_DIR)?,
            conf_dir: path(CONF_DIR_ENV, DEFAULT_CONF_DIR)?,
            conflist: path(CONFLIST_ENV, DEFAULT_CONFLIST)?,
            kubeconfig_name,
            ca_file: path(CA_FILE_ENV, &format!("{SERVICE_ACCOUNT_DIR}/ca.crt"))?,
            token_file: path(TOKEN_FILE_ENV, &format!("{SERVICE_ACCOUNT_DIR}/token"))?,
            server: server_url(&host, &port),
        })
    }

    /// Check every input, then write the binary, the kubeconfig and, last,
    /// the conflist.
    pub fn run(&self) -> Result<Installed, InstallError> {
        let binary = read(&self.executable, "the plugin's own executable")?;
        if binary.is_empty() {
            return Err(invalid(
                "the plugin's own executable",
                &self.executable,
                "is empty",
            ));
        }
        let ca = read(&self.ca_file, "the service account's CA")?;
        if !String::from_utf8_lossy(&ca).contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid(
                "the service account's CA",
                &self.ca_file,
                "holds no PEM certificate",
            ));
        }
        let token = read(&self.token_file, "the service account's token")?;
        let token = String::from_utf8(token)
            .map_err(|_| {
                invalid(
                    "the service account's token",
                    &self.token_file,
                    "is not text",
                )
            })?
            .trim()
            .to_owned();
        if token.is_empty() || token.chars().any(char::is_whitespace) {
            return Err(invalid(
                "the service account's token",
                &self.token_file,
                "is empty or not a single token",
            ));
        }
        let conflist_text = read(&self.conflist, "the conflist")?;
        check_conflist(&conflist_text, &self.kubeconfig_name)
            .map_err(|reason| invalid("the conflist", &self.conflist, reason))?;
        let conflist_name = self
            .conflist
            .file_name()
            .ok_or_else(|| invalid("the conflist", &self.conflist, "has no file name"))?;
        let kubeconfig = kubeconfig_yaml(&self.server, &ca, &token);

        let installed = Installed {
            binary: self.bin_dir.join(PLUGIN_NAME),
            kubeconfig: self.conf_dir.join(&self.kubeconfig_name),
            conflist: self.conf_dir.join(conflist_name),
        };
        write_atomic(&installed.binary, &binary, BINARY_MODE)?;
        write_atomic(
            &installed.kubeconfig,
            kubeconfig.as_bytes(),
            KUBECONFIG_MODE,
        )?;
        write_atomic(&installed.conflist, &conflist_text, CONFLIST_MODE)?;
        Ok(installed)
    }
}

/// The `install` subcommand: the environment of this process, this binary.
/// Prints where each file went (never the token); the error otherwise.
pub fn main() -> std::process::ExitCode {
    let run = || -> Result<Installed, InstallError> {
        let exe = std::env::current_exe().map_err(|err| InstallError::Read {
            what: "the plugin's own executable",
            path: PathBuf::from("/proc/self/exe"),
            err,
        })?;
        Install::from_env(|k| std::env::var(k).ok(), exe)?.run()
    };
    match run() {
        Ok(done) => {
            println!("installed {}", done.binary.display());
            println!("installed {}", done.kubeconfig.display());
            println!("installed {}", done.conflist.display());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vpc-eni-cni install: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn invalid(what: &'static str, path: &Path, reason: impl Into<String>) -> InstallError {
    InstallError::Invalid {
        what,
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, InstallError> {
    std::fs::read(path).map_err(|err| InstallError::Read {
        what,
        path: path.to_owned(),
        err,
    })
}

fn plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// `https://host:port`, an IPv6 address in brackets.
pub fn server_url(host: &str, port: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<Ipv6Addr>().is_ok() {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// The conflist parses, and its first plugin (or, for a single network
/// config, the config itself) is this plugin. A `kubeconfig` it names must
/// be the file install writes, or every ADD would fail to find it.
fn check_conflist(text: &[u8], kubeconfig_name: &str) -> Result<(), String> {
    let v: Value = serde_json::from_slice(text).map_err(|e| format!("is not valid JSON: {e}"))?;
    let plugin = match v.get("plugins") {
        Some(Value::Array(list)) => list.first().ok_or("has an empty \"plugins\" list")?,
        Some(_) => return Err("has a \"plugins\" key that is not a list".into()),
        None => &v,
    };
    match plugin.get("type").and_then(Value::as_str) {
        Some(PLUGIN_NAME) => {}
        Some(other) => {
            return Err(format!(
                "names plugin type {other:?}, not {PLUGIN_NAME:?} (as its first plugin)"
            ))
        }
        None => return Err(format!("names no plugin type (want {PLUGIN_NAME:?})")),
    }
    let wanted = plugin
        .get("kubeconfig")
        .and_then(Value::as_str)
        .unwrap_or(crate::config::DEFAULT_KUBECONFIG);
    if Path::new(wanted).file_name().and_then(|n| n.to_str()) != Some(kubeconfig_name) {
        return Err(format!(
            "has the plugin read kubeconfig {wanted:?}, but install writes {kubeconfig_name:?} ({KUBECONFIG_NAME_ENV})"
        ));
    }
    Ok(())
}

/// The plugin's kubeconfig: one cluster (server, CA inline), one user (the
/// token inline), one context.
fn kubeconfig_yaml(server: &str, ca: &[u8], token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    let v = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "vpc-eni", "cluster": {
            "server": server,
            "certificate-authority-data": ca,
        }}],
        "users": [{"name": PLUGIN_NAME, "user": {"token": token}}],
        "contexts": [{"name": "vpc-eni", "context": {"cluster": "vpc-eni", "user": PLUGIN_NAME}}],
        "current-context": "vpc-eni",
    });
    // A JSON document is YAML too; serde_yaml only makes it easier to read
    // on the node. Plain maps and strings: encoding cannot fail.
    serde_yaml::to_string(&v).unwrap_or_else(|_| v.to_string())
}

/// Write `bytes` to `path` with `mode`: a temporary file in the same
/// directory, synced, then renamed over `path` (a running copy of an old
/// binary keeps its inode). The temporary file goes on any failure.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let werr = |err| InstallError::Write {
        path: path.to_owned(),
        err,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have taken bits off `mode`.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself survives a crash once the directory is synced.
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        werr(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.secret-token-value.sig";
    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";
    const CONFLIST: &str = r#"{"cniVersion":"1.0.0","name":"vpc-eni","plugins":[{"type":"vpc-eni-cni","kubeconfig":"/etc/cni/net.d/vpc-eni.kubeconfig","delegate":{"type":"ptp"}}]}"#;

    static SEQ: AtomicU32 = AtomicU32::new(0);

    /// A scratch tree: the image side (executable, conflist, service
    /// account) and the host side (bin and conf dirs); removed on drop.
    struct Tree {
        root: PathBuf,
        env: HashMap<&'static str, String>,
    }

    impl Tree {
        fn new() -> Tree {
            let root = std::env::temp_dir().join(format!(
                "vpc-eni-install-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&root);
            for d in ["image", "sa", "host/opt/cni/bin", "host/etc/cni/net.d"] {
                std::fs::create_dir_all(root.join(d)).unwrap();
            }
            std::fs::write(root.join("image/vpc-eni-cni"), b"\x7fELF plugin bytes").unwrap();
            std::fs::write(root.join("image/10-vpc-eni.conflist"), CONFLIST).unwrap();
            std::fs::write(root.join("sa/ca.crt"), CA).unwrap();
            std::fs::write(root.join("sa/token"), format!("{TOKEN}\n")).unwrap();
            let p = |s: &str| root.join(s).display().to_string();
            let env = HashMap::from([
                (BIN_DIR_ENV, p("host/opt/cni/bin")),
                (CONF_DIR_ENV, p("host/etc/cni/net.d")),
                (CONFLIST_ENV, p("image/10-vpc-eni.conflist")),
                (KUBECONFIG_NAME_ENV, "vpc-eni.kubeconfig".to_owned()),
                (CA_FILE_ENV, p("sa/ca.crt")),
                (TOKEN_FILE_ENV, p("sa/token")),
                (SERVICE_HOST_ENV, "10.96.0.1".to_owned()),
                (SERVICE_PORT_ENV, "443".to_owned()),
            ]);
            Tree { root, env }
        }

        fn install(&self) -> Result<Installed, InstallError> {
            Install::from_env(
                |k| self.env.get(k).cloned(),
                self.root.join("image/vpc-eni-cni"),
            )?
            .run()
        }

        /// Every file under the host side, hidden ones included.
        fn host_files(&self) -> Vec<String> {
            let mut out = Vec::new();
            for d in ["host/opt/cni/bin", "host/etc/cni/net.d"] {
                for e in std::fs::read_dir(self.root.join(d)).unwrap() {
                    out.push(format!("{d}/{}", e.unwrap().file_name().to_string_lossy()));
                }
            }
            out.sort();
            out
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn all_three_files_land_with_their_modes() {
        let t = Tree::new();
        let done = t.install().unwrap();
        assert_eq!(
            t.host_files(),
            [
                "host/etc/cni/net.d/10-vpc-eni.conflist",
                "host/etc/cni/net.d/vpc-eni.kubeconfig",
                "host/opt/cni/bin/vpc-eni-cni",
            ],
            "no temporary file is left"
        );
        assert_eq!(done.binary, t.root.join("host/opt/cni/bin/vpc-eni-cni"));
        assert_eq!(
            std::fs::read(&done.binary).unwrap(),
            b"\x7fELF plugin bytes"
        );
        assert_eq!(mode(&done.binary), 0o755);
        assert_eq!(mode(&done.kubeconfig), 0o600);
        assert_eq!(std::fs::read_to_string(&done.conflist).unwrap(), CONFLIST);
        assert_eq!(mode(&done.conflist), 0o644);
    }

    #[test]
    fn the_kubeconfig_carries_the_server_ca_and_token() {
        let t = Tree::new();
        let done = t.install().unwrap();
        let kc = kube::config::Kubeconfig::read_from(&done.kubeconfig).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("vpc-eni"));
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.96.0.1:443"));
        let ca = base64::engine::general_purpose::STANDARD
            .decode(cluster.certificate_authority_data.as_deref().unwrap())
            .unwrap();
        assert_eq!(ca, CA.as_bytes());
        assert!(kc.auth_infos[0].auth_info.as_ref().unwrap().token.is_some());
        let raw: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&done.kubeconfig).unwrap()).unwrap();
        assert_eq!(raw["users"][0]["user"]["token"].as_str(), Some(TOKEN));
        let ctx = kc.contexts[0].context.as_ref().unwrap();
        assert_eq!(
            (ctx.cluster.as_str(), ctx.user.as_deref()),
            ("vpc-eni", Some(PLUGIN_NAME))
        );
    }

    #[test]
    fn a_second_install_replaces_the_files() {
        let t = Tree::new();
        t.install().unwrap();
        std::fs::write(t.root.join("image/vpc-eni-cni"), b"new binary").unwrap();
        std::fs::write(t.root.join("sa/token"), "rotated-token").unwrap();
        let done = t.install().unwrap();
        assert_eq!(std::fs::read(&done.binary).unwrap(), b"new binary");
        assert!(std::fs::read_to_string(&done.kubeconfig)
            .unwrap()
            .contains("rotated-token"));
        assert_eq!(t.host_files().len(), 3);
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(server_url("fd00::1", "443"), "https://[fd00::1]:443");
        assert_eq!(server_url("[fd00::1]", "6443"), "https://[fd00::1]:6443");
        assert_eq!(server_url("10.96.0.1", "443"), "https://10.96.0.1:443");
        assert_eq!(server_url("api.example", "443"), "https://api.example:443");
    }

    /// Install fails with `needle` in its message and leaves the host side
    /// empty.
    fn fails_naming(t: &Tree, needle: &str) {
        let e = t.install().unwrap_err().to_string();
        assert!(e.contains(needle), "{e:?} does not name {needle:?}");
        assert!(!e.contains(TOKEN), "the token leaked: {e}");
        assert_eq!(t.host_files(), Vec::<String>::new(), "after {e}");
    }

    #[test]
    fn a_missing_ca_fails_naming_it_and_writes_nothing() {
        let t = Tree::new();
        std::fs::remove_file(t.root.join("sa/ca.crt")).unwrap();
        fails_naming(&t, &t.root.join("sa/ca.crt").display().to_string());
        let t = Tree::new();
        std::fs::write(t.root.join("sa/ca.crt"), "not pem").unwrap();
        fails_naming(&t, "CA");
    }

    #[test]
    fn a_conflist_of_another_type_fails_naming_it_and_writes_nothing() {
        let t = Tree::new();
        let path = t.root.join("image/10-vpc-eni.conflist");
        std::fs::write(
            &path,
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        fails_naming(&t, "\"bridge\"");
        fails_naming(&t, &path.display().to_string());
        for (text, needle) in [
            ("{not json", "not valid JSON"),
            (r#"{"plugins":[]}"#, "empty"),
            (r#"{"type":"ptp"}"#, "\"ptp\""),
            (
                r#"{"plugins":[{"type":"vpc-eni-cni","kubeconfig":"/etc/cni/net.d/other"}]}"#,
                KUBECONFIG_NAME_ENV,
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            fails_naming(&t, needle);
        }
        // A single network config of this plugin is fine.
        std::fs::write(
            &path,
            r#"{"cniVersion":"1.0.0","name":"x","type":"vpc-eni-cni"}"#,
        )
        .unwrap();
        assert!(t.install().is_ok());
    }

    #[test]
    fn missing_inputs_are_named() {
        let t = Tree::new();
        std::fs::remove_file(t.root.join("sa/token")).unwrap();
        fails_naming(&t, "token");
        let t = Tree::new();
        std::fs::write(t.root.join("sa/token"), "\n").unwrap();
        fails_naming(&t, "token");
        let mut t = Tree::new();
        t.env.remove(SERVICE_HOST_ENV);
        fails_naming(&t, SERVICE_HOST_ENV);
        let mut t = Tree::new();
        t.env.insert(SERVICE_PORT_ENV, "https".into());
        fails_naming(&t, SERVICE_PORT_ENV);
        let mut t = Tree::new();
        t.env.insert(KUBECONFIG_NAME_ENV, "../kc".into());
        fails_naming(&t, KUBECONFIG_NAME_ENV);
        let t = Tree::new();
        std::fs::remove_file(t.root.join("image/10-vpc-eni.conflist")).unwrap();
        fails_naming(&t, "conflist");
    }

    #[test]
    fn an_unwritable_target_fails_naming_it() {
        let mut t = Tree::new();
        let missing = t.root.join("host/nowhere");
        t.env.insert(BIN_DIR_ENV, missing.display().to_string());
        let e = t.install().unwrap_err().to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
    }

    /// The DaemonSet sets only variables install reads, and the conflist it
    /// ships passes install's check with the kubeconfig name it sets.
    #[test]
    fn the_shipped_daemonset_and_conflist_fit_install() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/node");
        let ds: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("daemonset.yaml")).unwrap())
                .unwrap();
        let init = &ds["spec"]["template"]["spec"]["initContainers"][0];
        let env: HashMap<String, String> = init["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap().to_owned();
                (s("name"), s("value"))
            })
            .collect();
        let known = [BIN_DIR_ENV, CONF_DIR_ENV, CONFLIST_ENV, KUBECONFIG_NAME_ENV];
        for name in env.keys() {
            assert!(known.contains(&name.as_str()), "install ignores {name}");
        }
        assert_eq!(env[BIN_DIR_ENV], DEFAULT_BIN_DIR);
        assert_eq!(env[CONF_DIR_ENV], DEFAULT_CONF_DIR);
        assert_eq!(env[CONFLIST_ENV], DEFAULT_CONFLIST);
        let conflist = std::fs::read(dir.join("10-vpc-eni.conflist")).unwrap();
        check_conflist(&conflist, &env[KUBECONFIG_NAME_ENV]).unwrap();
    }

    #[test]
    fn defaults_are_the_daemonsets_paths() {
        let env = HashMap::from([(SERVICE_HOST_ENV, "10.96.0.1"), (SERVICE_PORT_ENV, "443")]);
        let i = Install::from_env(|k| env.get(k).map(|v| v.to_string()), "/x".into()).unwrap();
        assert_eq!(i.bin_dir, PathBuf::from("/host/opt/cni/bin"));
        assert_eq!(i.conf_dir, PathBuf::from("/host/etc/cni/net.d"));
        assert_eq!(
            i.conflist,
            PathBuf::from("/etc/vpc-eni-cni/10-vpc-eni.conflist")
        );
        assert_eq!(i.kubeconfig_name, "vpc-eni.kubeconfig");
        assert_eq!(
            i.token_file,
            PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
        );
        assert_eq!(
            i.ca_file,
            PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
        );
    }
}
