//! Resident memory and CPU time of a process, from `/proc`.

use std::sync::OnceLock;
use std::time::Instant;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// User plus system CPU time, clock ticks.
    pub cpu_ticks: u64,
}

/// Reads `/proc/<pid>/status` and `/proc/<pid>/stat` (`pid` none: this process).
pub fn sample(pid: Option<u32>) -> Option<Sample> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_owned(),
    };
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    // There, index 0 is field 3 (state), so utime (field 14) is 11 and stime (15) is 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Sample {
        at: Instant::now(),
        rss_kib,
        cpu_ticks: utime + stime,
    })
}

/// The sum of several processes' samples (RSS and CPU time); `None` when one cannot be read.
pub fn sample_sum(pids: &[u32]) -> Option<Sample> {
    let mut sum: Option<Sample> = None;
    for &pid in pids {
        let s = sample(Some(pid))?;
        sum = Some(match sum {
            None => s,
            Some(t) => Sample {
                at: s.at,
                rss_kib: t.rss_kib + s.rss_kib,
                cpu_ticks: t.cpu_ticks + s.cpu_ticks,
            },
        });
    }
    sum
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when that cannot be run).
pub fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// CPU use between two samples, in percent of one core.
pub fn cpu_percent(from: &Sample, to: &Sample) -> f64 {
    let secs = (to.at - from.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    let cpu = to.cpu_ticks.saturating_sub(from.cpu_ticks) as f64 / clk_tck() as f64;
    100.0 * cpu / secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let a = sample(None).expect("/proc/self is readable");
        assert!(a.rss_kib > 0);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = sample(None).expect("/proc/self is readable");
        assert!(b.cpu_ticks >= a.cpu_ticks);
        assert!(cpu_percent(&a, &b) >= 0.0);
    }
}
