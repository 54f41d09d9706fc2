//! Worker threads that write entries into the kernel's table.
//!
//! The kernel does the work of a ctnetlink create inside `send` (NAT setup, hashing, building
//! the event for listeners): a bulk of 100k entries keeps a core busy for most of a second. On
//! a thread of its own those sends never stall the caller's event loop (ACKs, CARP, the control
//! socket keep flowing). The kernel handles each request under the nfnetlink subsystem's mutex,
//! so more than one worker adds no throughput (the pfsync actor runs one); several are supported
//! for other callers. Each worker owns a netlink socket; the caller sends every operation on one
//! state to the same worker, and a worker keeps the order it was given, so a state's create,
//! updates and removal never overtake each other.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Conntrack, Entry, Tuple};

/// One write.
#[derive(Clone, Debug)]
pub enum Op {
    /// Create, or update if it exists.
    Upsert(Entry),
    /// Delete the entry with this original tuple in this zone (a missing entry is fine).
    Delete(Tuple, u16),
}

/// What one round of a worker did (sent to the report callback).
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub worker: usize,
    pub upserted: usize,
    pub upsert_errors: Vec<String>,
    pub deleted: usize,
    pub delete_errors: usize,
}

/// Most operations a worker takes into one round (it merges what queued up meanwhile).
const MAX_ROUND: usize = 16_384;

pub struct Injector {
    workers: Vec<mpsc::UnboundedSender<Vec<Op>>>,
    portids: Vec<u32>,
}

impl Injector {
    /// Starts `n` (at least 1) workers in the calling thread's network namespace; `report` is
    /// called from the worker threads after every round.
    pub async fn start(
        n: usize,
        report: Arc<dyn Fn(Report) + Send + Sync>,
    ) -> std::io::Result<Injector> {
        let mut workers = Vec::new();
        let mut portids = Vec::new();
        for i in 0..n.max(1) {
            let (tx, rx) = mpsc::unbounded_channel::<Vec<Op>>();
            let (ready_tx, ready_rx) = oneshot::channel::<std::io::Result<u32>>();
            let report = report.clone();
            std::thread::Builder::new()
                .name(format!("ct-inject-{i}"))
                .spawn(move || worker(i, rx, ready_tx, report))?;
            let portid = ready_rx
                .await
                .map_err(|_| std::io::Error::other("injection worker died at start"))??;
            workers.push(tx);
            portids.push(portid);
        }
        Ok(Injector { workers, portids })
    }

    /// The netlink ports of the workers (events they cause carry these).
    pub fn portids(&self) -> &[u32] {
        &self.portids
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The worker that handles the state with this key.
    pub fn worker_for(&self, key: u64) -> usize {
        (key % self.workers.len().max(1) as u64) as usize
    }

    /// Queues `ops` on `worker` (in order, after what it was given before).
    pub fn submit(&self, worker: usize, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        if let Some(tx) = self.workers.get(worker) {
            let _ = tx.send(ops);
        }
    }
}

fn worker(
    index: usize,
    mut rx: mpsc::UnboundedReceiver<Vec<Op>>,
    ready: oneshot::Sender<std::io::Result<u32>>,
    report: Arc<dyn Fn(Report) + Send + Sync>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        let ct = match Conntrack::open() {
            Ok(ct) => ct,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        if ready.send(Ok(ct.portid())).is_err() {
            return;
        }
        // Ends when the Injector (every sender) is dropped.
        while let Some(mut ops) = rx.recv().await {
            while ops.len() < MAX_ROUND {
                match rx.try_recv() {
                    Ok(more) => ops.extend(more),
                    Err(_) => break,
                }
            }
            let mut rep = Report {
                worker: index,
                ..Report::default()
            };
            let mut ops = ops.into_iter().peekable();
            while let Some(op) = ops.next() {
                match op {
                    Op::Upsert(e) => {
                        let mut run = vec![e];
                        while let Some(Op::Upsert(_)) = ops.peek() {
                            if let Some(Op::Upsert(e)) = ops.next() {
                                run.push(e);
                            }
                        }
                        let res = ct.upsert_batch(&run).await;
                        for (r, e) in res.into_iter().zip(run.iter()) {
                            match r {
                                Ok(()) => rep.upserted += 1,
                                Err(err) => rep.upsert_errors.push(format!("{:?}: {err}", e.orig)),
                            }
                        }
                    }
                    Op::Delete(t, z) => {
                        let mut run = vec![(t, z)];
                        while let Some(Op::Delete(..)) = ops.peek() {
                            if let Some(Op::Delete(t, z)) = ops.next() {
                                run.push((t, z));
                            }
                        }
                        for r in ct.delete_batch(&run).await {
                            match r {
                                Ok(()) => rep.deleted += 1,
                                Err(_) => rep.delete_errors += 1,
                            }
                        }
                    }
                }
            }
            report(rep);
        }
    });
}
