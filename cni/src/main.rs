//! The `vpc-eni-cni` binary: a container runtime runs it once per command,
//! with no arguments (`CNI_COMMAND` says what to do); the node DaemonSet's
//! init container runs `vpc-eni-cni install` ([`cni::install`]).

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next()) {
        (None, _) => {}
        (Some(a), None) if a == "install" => return cni::install::main(),
        (Some(a), _) => {
            eprintln!(
                "vpc-eni-cni: unexpected arguments starting at {a:?}\n\
                 usage: vpc-eni-cni            (a CNI plugin: CNI_COMMAND and the network config on stdin)\n       \
                 vpc-eni-cni install    (put the plugin, its kubeconfig and conflist on the node)"
            );
            return ExitCode::from(2);
        }
    }
    // kube's TLS uses rustls with aws-lc; name the provider once.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_from_env("VPC_ENI_CNI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();

    let mut stdin = Vec::new();
    // VERSION may come with no stdin at all; a read error reads as empty.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let out = cni::plugin::execute(|k| std::env::var(k).ok(), &stdin);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.stdout.as_bytes());
    let _ = stdout.flush();
    ExitCode::from(out.exit_code)
}
