//! The lease database `<state>/dhcp.db`: SQLite in WAL mode with `synchronous=FULL`, so a
//! committed lease is on disk (WAL fsynced) before the client gets its ACK — RFC 2131 asks for
//! stable storage, and a lease is never lost on SIGKILL or power loss. One row per
//! (interface, address).

use std::net::Ipv4Addr;
use std::path::Path;

use rusqlite::{Connection, params};

use crate::proto::dhcp::server::{Lease, LeaseState, Origin};

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

    pub fn upsert(&self, iface: &str, l: &Lease) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO leases
             (interface, address, mac, client_id, hostname, cltt, expires, state, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                iface,
                l.addr.to_string(),
                l.mac,
                l.client_id,
                l.hostname,
                l.cltt as i64,
                l.expires as i64,
                l.state.as_str(),
                match l.origin {
                    Origin::Local => "local",
                    Origin::Partner => "partner",
                }
            ],
        )?;
        Ok(())
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
