//! The `vpc-eni-controller` binary.

fn main() {
    eprintln!("vpc-eni-controller: the run and simulate commands are not built yet");
    std::process::exit(1);
}
