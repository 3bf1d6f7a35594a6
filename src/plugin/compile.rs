//! Where components are compiled: a small thread pool of its own, at a lower priority.
//!
//! Compiling a Python or JavaScript component is 15-30 s of CPU. wasmtime's parallel compilation
//! runs its work on rayon, by default on the global pool (one thread per core, normal priority):
//! an upload then took every core from live plugin calls, and under load calls of the running
//! version hit their deadline. Here the compile runs inside [`CompilePool::install`], so all of
//! wasmtime's parallel work stays on `plugins.compile_threads` threads whose nice value is raised
//! by `plugins.compile_nice`: compiles beyond the pool's size wait their turn, and the scheduler
//! prefers live traffic while a compile runs.
//!
//! The pool's threads live as long as the runtime. That also keeps memory in check: glibc gives
//! each new thread that allocates its own malloc arena and rarely hands an arena's freed memory
//! back, so compiling on ever new threads (tokio's blocking pool, rayon's global pool) grew the
//! resident size with every upload; the same few threads reuse the same arenas.

use rayon::{ThreadPool, ThreadPoolBuilder};

/// The compile threads.
pub(super) struct CompilePool {
    pool: ThreadPool,
}

impl CompilePool {
    /// Starts `threads` compile threads, each with its nice value raised by `nice`.
    pub(super) fn new(threads: usize, nice: i32) -> Result<CompilePool, String> {
        let pool = ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("hookyard-compile-{i}"))
            .start_handler(move |_| lower_priority(nice))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(CompilePool { pool })
    }

    /// Runs `f` (a compile) on the pool; blocks the calling thread until it is done, so call it
    /// from a blocking context.
    pub(super) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

/// Raises the calling thread's nice value by `nice` (Linux: a thread id is a valid target of
/// `setpriority(PRIO_PROCESS)` and affects that thread only). Failing is harmless: the compile
/// then runs at normal priority, which is logged once per thread.
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if let Err(e) = rustix::process::setpriority_process(Some(tid), current + nice) {
            tracing::warn!(error = %e, "cannot lower the priority of a plugin compile thread");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn compiles_run_on_the_pool_at_a_lower_priority() {
        let pool = CompilePool::new(1, 5).unwrap();
        let outside = rustix::process::getpriority_process(None).unwrap();
        let (name, inside) = pool.install(|| {
            let tid = rustix::thread::gettid();
            (
                std::thread::current().name().map(str::to_owned),
                rustix::process::getpriority_process(Some(tid)).unwrap(),
            )
        });
        assert_eq!(name.as_deref(), Some("hookyard-compile-0"));
        assert_eq!(inside, (outside + 5).min(19));
    }
}
