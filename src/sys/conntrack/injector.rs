//! A worker thread that writes entries into the kernel's table.
//!
//! The kernel does the work of a ctnetlink create inside `send` (NAT setup, hashing, building
//! the event for listeners): a bulk of 100k entries keeps a core busy for most of a second. On
//! a thread of its own those sends never stall the caller's event loop (ACKs, CARP, the control
//! socket keep flowing). One worker: the kernel handles every ctnetlink write under the
//! nfnetlink subsystem's mutex, so a second one only spun on it (a quarter of fw2's CPU during a
//! 100k bulk, by perf) and no bulk got faster. The worker owns a netlink socket and keeps the
//! order it was given, so a state's create, updates and removal never overtake each other.

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

/// What one round of the worker did (sent to the report callback).
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub upserted: usize,
    pub upsert_errors: Vec<String>,
    pub deleted: usize,
    pub delete_errors: usize,
}

/// Most operations the worker takes into one round (it merges what queued up meanwhile).
const MAX_ROUND: usize = 16_384;

/// Once this many writes were done since the last trim and nothing more is queued (a bulk is
/// in), the heap is trimmed: the queued entries were freed here, but malloc keeps the pages
/// (fw2 stayed at 53 MB after a 100k bulk instead of 43 MB).
const TRIM_AFTER: usize = 10_000;

pub struct Injector {
    tx: mpsc::UnboundedSender<Vec<Op>>,
    portid: u32,
}

impl Injector {
    /// Starts the worker in the calling thread's network namespace; `report` is called from the
    /// worker thread after every round.
    pub async fn start(report: Arc<dyn Fn(Report) + Send + Sync>) -> std::io::Result<Injector> {
        let (tx, rx) = mpsc::unbounded_channel::<Vec<Op>>();
        let (ready_tx, ready_rx) = oneshot::channel::<std::io::Result<u32>>();
        std::thread::Builder::new()
            .name("ct-inject".into())
            .spawn(move || worker(rx, ready_tx, report))?;
        let portid = ready_rx
            .await
            .map_err(|_| std::io::Error::other("injection worker died at start"))??;
        Ok(Injector { tx, portid })
    }

    /// The worker's netlink port (events it causes carry it).
    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// Queues `ops` (in order, after what the worker was given before).
    pub fn submit(&self, ops: Vec<Op>) {
        if !ops.is_empty() {
            let _ = self.tx.send(ops);
        }
    }
}

fn worker(
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
        let mut since_trim = 0;
        while let Some(mut ops) = rx.recv().await {
            while ops.len() < MAX_ROUND {
                match rx.try_recv() {
                    Ok(more) => ops.extend(more),
                    Err(_) => break,
                }
            }
            let mut rep = Report::default();
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
            since_trim += rep.upserted + rep.upsert_errors.len() + rep.deleted + rep.delete_errors;
            report(rep);
            if since_trim >= TRIM_AFTER && rx.is_empty() {
                since_trim = 0;
                crate::sys::memory::trim();
            }
        }
    });
}
