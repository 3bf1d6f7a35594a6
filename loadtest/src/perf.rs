//! Optional `perf` around a phase: syscall counts (`perf stat`, for SQLite's fsyncs) and a CPU
//! profile (`perf record`). Both attach to the gateway's pid and stop on SIGINT.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

/// The syscalls counted: each SQLite commit in WAL mode with `synchronous=FULL` ends in one
/// `fdatasync` (or `fsync`) of the WAL; `pwrite64` are its page writes.
const EVENTS: &str =
    "syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync,syscalls:sys_enter_pwrite64";

/// Counts read by `perf stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// `fdatasync` plus `fsync` calls.
    pub syncs: u64,
    /// `pwrite64` calls.
    pub pwrites: u64,
}

/// `perf` processes attached to a gateway for one phase.
pub struct Perf {
    stat: Option<(Child, PathBuf)>,
    record: Option<Child>,
}

fn spawn(args: &[&str]) -> Option<Child> {
    Command::new("perf")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()
}

impl Perf {
    /// Attaches `perf stat` (when `stat_dir` is set; its output file goes there) and `perf
    /// record` (when `record_to` is set) to `pids` (counted together). Missing `perf` is not
    /// an error: the phase just has no counts.
    pub async fn start(pids: &[u32], stat_dir: Option<&Path>, record_to: Option<&Path>) -> Perf {
        let pid = pids
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let stat = stat_dir.and_then(|dir| {
            let out = dir.join(format!(
                "perf-stat-{}-{}.csv",
                pids.first().copied().unwrap_or(0),
                crate::clock::now_ns()
            ));
            let child = spawn(&["stat", "-x,", "-o", out.to_str()?, "-e", EVENTS, "-p", &pid])?;
            Some((child, out))
        });
        let record = record_to.and_then(|path| {
            spawn(&[
                "record",
                "-F",
                "499",
                "-g",
                "-o",
                path.to_str()?,
                "-p",
                &pid,
            ])
        });
        if stat.is_some() || record.is_some() {
            // perf needs a moment to attach to every thread.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        Perf { stat, record }
    }

    /// Stops both; the counts when `perf stat` ran.
    pub async fn finish(self) -> Option<Counts> {
        if let Some(child) = self.record {
            interrupt(child).await;
        }
        let (child, out) = self.stat?;
        interrupt(child).await;
        let text = std::fs::read_to_string(&out).ok()?;
        let _ = std::fs::remove_file(&out);
        let mut counts = Counts::default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(',').collect();
            let (Some(value), Some(event)) = (fields.first(), fields.get(2)) else {
                continue;
            };
            let Ok(value) = value.trim().parse::<u64>() else {
                continue;
            };
            if event.contains("fdatasync") || event.contains("sys_enter_fsync") {
                counts.syncs += value;
            } else if event.contains("pwrite64") {
                counts.pwrites += value;
            }
        }
        Some(counts)
    }
}

/// SIGINT (perf then writes its output and exits), then waits.
async fn interrupt(mut child: Child) {
    if let Some(id) = child.id() {
        let _ = Command::new("kill")
            .args(["-INT", &id.to_string()])
            .status()
            .await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait()).await;
}
