//! What a container runtime hands the plugin: the network config on stdin
//! and CNI_ARGS. Parsed or refused with a CNI error, never a panic.
#![no_main]
use cni::config::NetConf;
use cni::spec::CniArgs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = NetConf::version_hint(data);
    let _ = NetConf::parse(data);
    let _ = CniArgs::parse(&String::from_utf8_lossy(data));
});
