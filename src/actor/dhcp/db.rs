//! The lease database `<state>/dhcp.db`: SQLite in WAL mode with `synchronous=FULL`, so a
//! committed lease is on disk (WAL fsynced) before the client gets its ACK — RFC 2131 asks for
//! stable storage, and a lease is never lost on SIGKILL or power loss. One row per
//! (interface, address).
//!
//! Writes go through a [`Writer`]: the connection lives on its own thread, which takes every
//! lease queued while its previous transaction was committing and writes them all in the next
//! one (group commit). One fsync then covers a whole burst, and the server's receive loop never
//! waits on the disk. The thread reports each durable batch by the sequence number of its last
//! lease; the server sends the replies held for those leases only then.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{Connection, params};

use crate::proto::dhcp::server::{Lease, LeaseState, Origin};

const UPSERT: &str = "INSERT OR REPLACE INTO leases
     (interface, address, mac, client_id, hostname, cltt, expires, state, origin)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

fn origin_str(o: Origin) -> &'static str {
    match o {
        Origin::Local => "local",
        Origin::Partner => "partner",
    }
}

pub struct Db {
    conn: Connection,
}

impl Db {
    pub fn open(path: &Path) -> rusqlite::Result<Db> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS leases (
                interface TEXT NOT NULL,
                address TEXT NOT NULL,
                mac BLOB NOT NULL,
                client_id BLOB,
                hostname TEXT,
                cltt INTEGER NOT NULL,
                expires INTEGER NOT NULL,
                state TEXT NOT NULL,
                origin TEXT NOT NULL,
                PRIMARY KEY (interface, address)
            );",
        )?;
        Ok(Db { conn })
    }

    /// Write `leases` in one transaction (one fsync); all or none.
    pub fn upsert_all<'a>(
        &mut self,
        iface: &str,
        leases: impl IntoIterator<Item = &'a Lease>,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(UPSERT)?;
            for l in leases {
                st.execute(params![
                    iface,
                    l.addr.to_string(),
                    l.mac,
                    l.client_id,
                    l.hostname,
                    l.cltt as i64,
                    l.expires as i64,
                    l.state.as_str(),
                    origin_str(l.origin),
                ])?;
            }
        }
        tx.commit()
    }

    pub fn load(&self, iface: &str) -> rusqlite::Result<Vec<Lease>> {
        let mut st = self.conn.prepare(
            "SELECT address, mac, client_id, hostname, cltt, expires, state, origin
             FROM leases WHERE interface = ?1",
        )?;
        let rows = st.query_map([iface], |r| {
            let addr: String = r.get(0)?;
            let state: String = r.get(6)?;
            let origin: String = r.get(7)?;
            Ok((
                addr,
                Lease {
                    addr: Ipv4Addr::UNSPECIFIED,
                    mac: r.get(1)?,
                    client_id: r.get(2)?,
                    hostname: r.get(3)?,
                    cltt: r.get::<_, i64>(4)?.max(0) as u64,
                    expires: r.get::<_, i64>(5)?.max(0) as u64,
                    state: LeaseState::parse(&state),
                    origin: if origin == "partner" {
                        Origin::Partner
                    } else {
                        Origin::Local
                    },
                },
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (addr, mut l) = row?;
            if let Ok(a) = addr.parse() {
                l.addr = a;
                out.push(l);
            }
        }
        Ok(out)
    }
}

/// The most leases one transaction takes; more wait for the next one.
pub const MAX_BATCH: usize = 4096;

/// A durable batch: every lease queued with a sequence number up to `upto` is on disk when `ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub upto: u64,
    pub leases: usize,
    pub ok: bool,
    pub error: Option<String>,
}

struct Job {
    seq: u64,
    lease: Lease,
}

/// The lease database on its own thread, with group commit. Dropping the writer lets the
/// thread write what is queued, then close the database (which checkpoints the WAL).
pub struct Writer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    next: u64,
}

impl Writer {
    /// Start the thread; `done` is called on it after each transaction. `delay` is waited
    /// before each transaction (zero but in tests: it stands for a slow disk).
    pub fn start(
        mut db: Db,
        iface: String,
        delay: std::time::Duration,
        mut done: impl FnMut(Committed) + Send + 'static,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(format!("dhcp-db-{iface}"))
            .spawn(move || {
                let mut batch: Vec<Job> = Vec::new();
                while let Ok(first) = rx.recv() {
                    if !delay.is_zero() {
                        std::thread::sleep(delay);
                    }
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    let res = db.upsert_all(&iface, batch.iter().map(|j| &j.lease));
                    let upto = batch.last().map_or(0, |j| j.seq);
                    done(Committed {
                        upto,
                        leases: batch.len(),
                        ok: res.is_ok(),
                        error: res.err().map(|e| e.to_string()),
                    });
                    batch.clear();
                }
            })?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            next: 1,
        })
    }

    /// Queue a lease; its sequence number, or `None` when the thread is gone (nothing queued).
    pub fn queue(&mut self, lease: Lease) -> Option<u64> {
        let seq = self.next;
        self.tx.as_ref()?.send(Job { seq, lease }).ok()?;
        self.next += 1;
        Some(seq)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn lease(i: u32) -> Lease {
        Lease {
            addr: Ipv4Addr::from(0xc0a8_0100 + i),
            mac: vec![2, 0, 0, 0, 0, i as u8],
            client_id: None,
            hostname: None,
            cltt: 1000,
            expires: 8200,
            state: LeaseState::Active,
            origin: Origin::Local,
        }
    }

    #[test]
    fn writer_groups_queued_leases_and_reports_in_order() {
        let dir = std::env::temp_dir().join(format!("tandem-dhcpdb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dhcp.db");
        let _ = std::fs::remove_file(&path);
        let seen: Arc<Mutex<Vec<Committed>>> = Arc::default();
        let s2 = seen.clone();
        let zero = std::time::Duration::ZERO;
        let mut w = Writer::start(Db::open(&path).unwrap(), "lan".into(), zero, move |c| {
            s2.lock().unwrap().push(c)
        })
        .unwrap();
        let mut seqs = Vec::new();
        for i in 1..=200 {
            seqs.push(w.queue(lease(i)).unwrap());
        }
        drop(w);
        assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
        let seen = seen.lock().unwrap().clone();
        assert!(seen.iter().all(|c| c.ok), "{seen:?}");
        assert_eq!(seen.iter().map(|c| c.leases).sum::<usize>(), 200);
        assert_eq!(seen.last().unwrap().upto, 200);
        assert!(seen.windows(2).all(|w| w[0].upto < w[1].upto));
        // 200 leases queued faster than a commit: far fewer transactions than leases.
        assert!(seen.len() < 100, "{} commits for 200 leases", seen.len());
        let back = Db::open(&path).unwrap().load("lan").unwrap();
        assert_eq!(back.len(), 200);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
