//! FRR's `bgpd` (Debian `frr`) as a real router for the BGP tests: one
//! process per router with its own config, listen address, port and vty
//! socket in a per-test directory, started without zebra (or with one in a
//! network namespace the test made, whose kernel table then gets the
//! routes), and read back through `vtysh --vty_socket DIR ... json`. Meant for tests, so problems
//! are plain strings; dropping an [`Frr`] kills its process and removes
//! its directory.

use ipnet::Ipv4Net;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BGPD: &str = "/usr/lib/frr/bgpd";
pub const ZEBRA: &str = "/usr/lib/frr/zebra";

/// Why the FRR tests cannot run here, if they cannot: they need the `frr`
/// package (bgpd, vtysh, the `frr` user) and root (bgpd drops to `frr`).
pub fn unavailable() -> Option<String> {
    if !Path::new(BGPD).exists() || which("vtysh").is_none() {
        return Some("FRR is not installed (apt-get install frr; scripts/test.sh does)".into());
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some("the FRR tests start bgpd as root (it drops to user frr)".into());
    }
    None
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// A free TCP port on `addr` (bound and released; the tests' own range).
pub fn free_port(addr: Ipv4Addr) -> u16 {
    TcpListener::bind((addr, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// One path to a prefix, as FRR shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePath {
    pub next_hop: Option<Ipv4Addr>,
    pub peer: String,
    pub as_path: String,
    pub valid: bool,
    pub best: bool,
    pub stale: bool,
}

/// A running bgpd.
pub struct Frr {
    pub name: String,
    pub address: Ipv4Addr,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// zebra, when started with one (`start_with_zebra`).
    zebra: Option<Child>,
}

impl Frr {
    /// Start bgpd listening on `address:port` with `config` (a whole
    /// bgpd.conf) in a new directory named after `name`.
    pub fn start(name: &str, address: Ipv4Addr, port: u16, config: &str) -> Result<Frr, String> {
        Self::start_opts(name, address, port, config, None)
    }

    /// Like [`Frr::start`], plus a zebra in network namespace `netns` that
    /// bgpd hands its best routes to: they land in that namespace's kernel
    /// table (bgpd itself listens in the caller's namespace).
    pub fn start_with_zebra(
        name: &str,
        address: Ipv4Addr,
        port: u16,
        config: &str,
        netns: &str,
    ) -> Result<Frr, String> {
        Self::start_opts(name, address, port, config, Some(netns))
    }

    fn start_opts(
        name: &str,
        address: Ipv4Addr,
        port: u16,
        config: &str,
        zebra_netns: Option<&str>,
    ) -> Result<Frr, String> {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("bgpd.conf");
        std::fs::write(&conf, config).map_err(|e| format!("{}: {e}", conf.display()))?;
        if zebra_netns.is_some() {
            std::fs::write(dir.join("zebra.conf"), "hostname zebra-test\n!\n")
                .map_err(|e| format!("zebra.conf: {e}"))?;
        }
        let status = Command::new("chown")
            .args(["-R", "frr:frr"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err(format!("chown frr {} failed", dir.display()));
        }
        let zserv = dir.join("zserv.api");
        let zebra = match zebra_netns {
            None => None,
            Some(ns) => {
                let log =
                    std::fs::File::create(dir.join("zebra.log")).map_err(|e| e.to_string())?;
                let log2 = log.try_clone().map_err(|e| e.to_string())?;
                // `ip netns exec` execs zebra: the child is zebra itself.
                let child = Command::new("ip")
                    .args(["netns", "exec", ns, ZEBRA, "-f"])
                    .arg(dir.join("zebra.conf"))
                    .arg("-i")
                    .arg(dir.join("zebra.pid"))
                    .arg("--vty_socket")
                    .arg(&dir)
                    .arg("-z")
                    .arg(&zserv)
                    .args(["-u", "frr", "-g", "frr"])
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(log2)
                    .spawn()
                    .map_err(|e| format!("{ZEBRA}: {e}"))?;
                let deadline = Instant::now() + Duration::from_secs(20);
                while !zserv.exists() {
                    if Instant::now() > deadline {
                        return Err(format!("{name}: zebra made no socket {}", zserv.display()));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Some(child)
            }
        };
        let log = std::fs::File::create(dir.join("stdout.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let zebra_args: Vec<std::ffi::OsString> = if zebra.is_some() {
            vec!["-z".into(), zserv.into_os_string()]
        } else {
            vec!["-Z".into()]
        };
        let child = Command::new(BGPD)
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("bgpd.pid"))
            .arg("--vty_socket")
            .arg(&dir)
            .args(["-p", &port.to_string(), "-l", &address.to_string()])
            .args(&zebra_args)
            .args(["-u", "frr", "-g", "frr"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("{BGPD}: {e}"))?;
        let frr = Frr {
            name: name.to_owned(),
            address,
            port,
            dir,
            child: Some(child),
            zebra,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while frr.vtysh("show bgp summary json").is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "{name}: bgpd did not answer on its vty socket: {}",
                    frr.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(frr)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((self.address, self.port))
    }

    /// bgpd's own output, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    /// Run one vtysh command against this bgpd.
    pub fn vtysh(&self, command: &str) -> Result<String, String> {
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(["-c", command])
            .output()
            .map_err(|e| format!("vtysh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "vtysh {command:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn json(&self, command: &str) -> Result<Value, String> {
        let text = self.vtysh(command)?;
        serde_json::from_str(&text).map_err(|e| format!("{command}: {e}: {text}"))
    }

    /// FRR's IPv4 unicast table: prefix -> paths.
    pub fn routes(&self) -> Result<BTreeMap<Ipv4Net, Vec<RoutePath>>, String> {
        let v = self.json("show bgp ipv4 unicast json")?;
        let mut out = BTreeMap::new();
        let Some(routes) = v.get("routes").and_then(Value::as_object) else {
            return Ok(out);
        };
        for (prefix, paths) in routes {
            let Ok(net) = prefix.parse::<Ipv4Net>() else {
                continue;
            };
            let paths = paths
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| RoutePath {
                            next_hop: p
                                .pointer("/nexthops/0/ip")
                                .and_then(Value::as_str)
                                .and_then(|s| s.parse().ok()),
                            peer: p
                                .get("peerId")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned(),
                            as_path: p
                                .get("path")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned(),
                            valid: p.get("valid").and_then(Value::as_bool).unwrap_or(false),
                            best: p.get("bestpath").and_then(Value::as_bool).unwrap_or(false),
                            stale: p.get("stale").and_then(Value::as_bool).unwrap_or(false),
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.insert(net, paths);
        }
        Ok(out)
    }

    /// Best path's next hop per prefix.
    pub fn best_next_hops(&self) -> Result<BTreeMap<Ipv4Net, Ipv4Addr>, String> {
        Ok(self
            .routes()?
            .into_iter()
            .filter_map(|(net, paths)| {
                let best = paths.iter().find(|p| p.best).or(paths.first())?;
                Some((net, best.next_hop?))
            })
            .collect())
    }

    /// The neighbor's session state as FRR sees it (`Established`, ...).
    pub fn neighbor_state(&self, neighbor: Ipv4Addr) -> Result<String, String> {
        let v = self.json(&format!("show bgp neighbors {neighbor} json"))?;
        Ok(v.pointer(&format!("/{neighbor}/bgpState"))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned())
    }

    /// The neighbor's whole JSON, for failure messages and detail checks.
    pub fn neighbor(&self, neighbor: Ipv4Addr) -> Result<Value, String> {
        let v = self.json(&format!("show bgp neighbors {neighbor} json"))?;
        Ok(v.get(neighbor.to_string()).cloned().unwrap_or(Value::Null))
    }

    /// Kill bgpd now (also on drop).
    pub fn kill(&mut self) {
        for mut child in [self.child.take(), self.zebra.take()].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bgpd.conf: one router in `asn` with `router_id`, no policy needed for
/// eBGP, and `neighbors` (address, remote AS, extra neighbor lines).
pub fn config(asn: u32, router_id: Ipv4Addr, neighbors: &[(Ipv4Addr, u32, Vec<String>)]) -> String {
    let mut c = format!(
        "frr defaults traditional\nhostname frr-test\nlog stdout informational\n!\nrouter bgp {asn}\n bgp router-id {router_id}\n no bgp ebgp-requires-policy\n no bgp network import-check\n"
    );
    for (addr, remote, extra) in neighbors {
        c.push_str(&format!(" neighbor {addr} remote-as {remote}\n"));
        for line in extra {
            c.push_str(&format!(" neighbor {addr} {line}\n"));
        }
    }
    c.push_str(" address-family ipv4 unicast\n");
    for (addr, _, _) in neighbors {
        c.push_str(&format!("  neighbor {addr} activate\n"));
    }
    c.push_str(" exit-address-family\n!\n");
    c
}
