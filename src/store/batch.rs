//! Group commit for a store whose every call would otherwise be its own transaction.
//!
//! Callers queue items; a few committer tasks each take whatever is queued (up to a cap) and
//! commit it in one transaction, so under load many callers share one commit (one WAL flush)
//! while a lone caller waits for nobody. If a shared transaction fails, each of its items is
//! retried in a transaction of its own, so one bad item fails only its own caller.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{Error, Result};

/// Work that can be committed many items to a transaction.
#[async_trait]
pub(crate) trait Batch: Send + Sync + 'static {
    /// One caller's work.
    type Item: Send + 'static;
    /// One caller's result.
    type Output: Send + 'static;
    /// Commits `items` in one transaction: one output per item, in order, or an error for all.
    async fn commit(&self, items: &[Self::Item]) -> Result<Vec<Self::Output>>;
}

type Queued<B> = (
    <B as Batch>::Item,
    oneshot::Sender<Result<<B as Batch>::Output>>,
);

/// The queue in front of a [`Batch`] and its committer tasks (stopped when dropped).
pub(crate) struct Batcher<B: Batch> {
    queue: mpsc::UnboundedSender<Queued<B>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<B: Batch> Batcher<B> {
    /// Starts `committers` tasks committing at most `max_items` items per transaction.
    pub(crate) fn start(batch: B, committers: usize, max_items: usize) -> Batcher<B> {
        let (queue, rx) = mpsc::unbounded_channel::<Queued<B>>();
        let rx = Arc::new(Mutex::new(rx));
        let batch = Arc::new(batch);
        let tasks = (0..committers.max(1))
            .map(|_| tokio::spawn(run(batch.clone(), rx.clone(), max_items.max(1))))
            .collect();
        Batcher { queue, tasks }
    }

    /// Queues `item` and waits for its transaction.
    pub(crate) async fn submit(&self, item: B::Item) -> Result<B::Output> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((item, tx))
            .map_err(|_| Error::Unavailable("the store is closing".to_owned()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the store is closing".to_owned()))?
    }
}

impl<B: Batch> Drop for Batcher<B> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn run<B: Batch>(
    batch: Arc<B>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Queued<B>>>>,
    max_items: usize,
) {
    loop {
        // One committer at a time takes what is queued; the others are committing meanwhile.
        let taken = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut taken = vec![first];
            while taken.len() < max_items {
                match rx.try_recv() {
                    Ok(more) => taken.push(more),
                    Err(_) => break,
                }
            }
            taken
        };
        let (items, replies): (Vec<B::Item>, Vec<_>) = taken.into_iter().unzip();
        match batch.commit(&items).await {
            Ok(outputs) if outputs.len() == items.len() => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            // Alone, an item's failure is its own; together, it would be everyone's.
            _ if items.len() > 1 => {
                for (item, reply) in items.into_iter().zip(replies) {
                    let result =
                        batch
                            .commit(std::slice::from_ref(&item))
                            .await
                            .and_then(|mut outputs| {
                                outputs.pop().ok_or_else(|| {
                                    Error::Database("a commit returned no result".to_owned())
                                })
                            });
                    let _ = reply.send(result);
                }
            }
            Ok(_) => {
                for reply in replies {
                    let _ = reply.send(Err(Error::Database(
                        "a commit returned the wrong number of results".to_owned(),
                    )));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(clone_error(&e)));
                }
            }
        }
    }
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::Conflict(m) => Error::Conflict(m.clone()),
        Error::Database(m) => Error::Database(m.clone()),
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        Error::Corrupt(m) => Error::Corrupt(m.clone()),
        Error::Secret(m) => Error::Secret(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Doubles numbers; a batch holding a negative number fails as a whole.
    struct Doubler {
        commits: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Batch for Doubler {
        type Item = i64;
        type Output = i64;
        async fn commit(&self, items: &[i64]) -> Result<Vec<i64>> {
            self.commits.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            if items.iter().any(|i| *i < 0) {
                return Err(Error::Database(format!("negative in {items:?}")));
            }
            Ok(items.iter().map(|i| i * 2).collect())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_commits_and_a_bad_item_fails_alone() {
        let commits = Arc::new(AtomicUsize::new(0));
        let batcher = Arc::new(Batcher::start(
            Doubler {
                commits: commits.clone(),
            },
            2,
            64,
        ));
        let calls: Vec<_> = (-1..200)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { (i, batcher.submit(i).await) })
            })
            .collect();
        let mut failed = Vec::new();
        for call in calls {
            let (i, result) = call.await.unwrap();
            match result {
                Ok(doubled) => assert_eq!(doubled, i * 2),
                Err(_) => failed.push(i),
            }
        }
        assert_eq!(failed, vec![-1], "only the bad item fails");
        // 201 items in far fewer transactions: the shared ones plus one retry per item of the
        // batch that held -1 (at most 64).
        let made = commits.load(Ordering::SeqCst);
        assert!(made < 100, "{made} commits for 201 items");
    }

    #[tokio::test]
    async fn a_lone_caller_waits_for_nobody() {
        let commits = Arc::new(AtomicUsize::new(0));
        let batcher = Batcher::start(
            Doubler {
                commits: commits.clone(),
            },
            1,
            64,
        );
        assert_eq!(batcher.submit(21).await.unwrap(), 42);
        assert_eq!(
            batcher.submit(-3).await.unwrap_err().to_string(),
            "database error: negative in [-3]"
        );
        assert_eq!(commits.load(Ordering::SeqCst), 2);
    }
}
