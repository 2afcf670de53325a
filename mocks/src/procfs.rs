//! Memory figures of a process from `/proc/<pid>/status`, for the
//! benchmarks that report them (`simulate --json`, `bench-scale`).

/// A process's resident set size now (`VmRSS`) and its peak (`VmHWM`), in
/// bytes; `None` when the process is gone or the file has neither.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((
        status_bytes(&status, "VmRSS:")?,
        status_bytes(&status, "VmHWM:")?,
    ))
}

/// A `kB` field of a status file (`name` with its colon), in bytes.
pub fn status_bytes(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_in_bytes() {
        let status = "Name:\tx\nVmPeak:\t  200 kB\nVmHWM:\t   1234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(status_bytes(status, "VmHWM:"), Some(1234 * 1024));
        assert_eq!(status_bytes(status, "VmRSS:"), Some(1000 * 1024));
        assert_eq!(status_bytes("Name:\tx\n", "VmHWM:"), None);
    }

    #[test]
    fn this_process_has_memory() {
        let (rss, peak) = memory(std::process::id()).unwrap();
        assert!(rss > 0 && peak >= rss, "{rss} {peak}");
    }
}
