//! `ConfigStore`: owns the running config (`/conf/config.xml` in the overlay) and its history
//! (`<state>/history.db`). Every write is validate → atomic write → history row. Nothing else writes
//! the config file.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use rusqlite::{Connection, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::StopMsg;
use crate::boot::overlay::Layers;
use crate::config::{Config, Finding};
use crate::sys::atomic;

/// Path of the running config inside the merged rootfs view.
pub const CONFIG_REL: &str = "conf/config.xml";

/// One stored revision (without the XML).
#[derive(Clone, Debug, Serialize)]
pub struct RevisionInfo {
    pub revision: i64,
    pub time: i64,
    pub description: String,
    pub sha256: String,
    pub size: usize,
}

/// Why a new config was not taken.
#[derive(Clone, Debug, Serialize, thiserror::Error)]
pub enum CommitError {
    #[error("the config is not well-formed XML: {0}")]
    Malformed(String),
    #[error("the config has {} error(s)", .0.len())]
    Invalid(Vec<Finding>),
    #[error("writing the config failed: {0}")]
    Io(String),
}

/// A config that was written.
#[derive(Clone, Debug)]
pub struct Committed {
    pub revision: i64,
    pub config: Arc<Config>,
    pub previous: Arc<Config>,
    pub sections: Vec<String>,
    pub description: String,
}

pub struct ConfigStore {
    layers: Layers,
    db: Connection,
    current: Arc<Config>,
    revision: i64,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Open (creating) the history database.
pub fn open_history(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS revisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time INTEGER NOT NULL,
            description TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            xml BLOB NOT NULL
        );",
    )?;
    Ok(db)
}

impl ConfigStore {
    /// Load the running config: seed it on first boot, record it in history if history does not
    /// know it (first boot, or a file changed behind our back).
    pub fn open(
        layers: Layers,
        state: PathBuf,
        seed: Option<Vec<u8>>,
    ) -> anyhow::Result<(ConfigStore, Vec<Finding>)> {
        let db = open_history(&state.join("history.db"))?;
        let read = layers.read_path(CONFIG_REL);
        atomic::clean_stale_temps(&layers.write_path(CONFIG_REL));
        let (bytes, description) = if read.exists() {
            if seed.is_some() {
                tracing::info!(path = %read.display(), "config exists; --config is only used on first boot");
            }
            (std::fs::read(&read)?, None)
        } else {
            let (bytes, what) = match seed {
                Some(b) => (b, "first boot: seeded from --config"),
                None => (
                    Config::factory_default().to_bytes(),
                    "first boot: factory default",
                ),
            };
            // Refuse to seed a config that does not even parse.
            Config::parse(&bytes).map_err(|e| anyhow::anyhow!("seed config: {e}"))?;
            atomic::write_atomic(&layers.write_path(CONFIG_REL), &bytes, 0o600)?;
            tracing::info!("{what}");
            (bytes, Some(what.to_string()))
        };
        let config = Config::parse(&bytes)
            .map_err(|e| anyhow::anyhow!("{} does not parse: {e}", read.display()))?;
        let findings = config.validate();
        let sha = sha256_hex(&bytes);
        let last: Option<(i64, String)> = db
            .query_row(
                "SELECT id, sha256 FROM revisions ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok();
        let revision = match last {
            Some((id, s)) if s == sha => id,
            _ => {
                let desc = description.unwrap_or_else(|| "config found at boot".into());
                db.execute(
                    "INSERT INTO revisions (time, description, sha256, xml) VALUES (?1, ?2, ?3, ?4)",
                    params![now_unix(), desc, sha, bytes],
                )?;
                db.last_insert_rowid()
            }
        };
        Ok((
            ConfigStore {
                layers,
                db,
                current: Arc::new(config),
                revision,
            },
            findings,
        ))
    }

    pub fn current(&self) -> Arc<Config> {
        self.current.clone()
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    fn commit(&mut self, bytes: Vec<u8>, description: String) -> Result<Committed, CommitError> {
        let config = Config::parse(&bytes).map_err(|e| CommitError::Malformed(e.to_string()))?;
        let errors = config.errors();
        if !errors.is_empty() {
            return Err(CommitError::Invalid(errors));
        }
        let sections: Vec<String> = self.current.changed_sections(&config).into_iter().collect();
        let path = self.layers.write_path(CONFIG_REL);
        atomic::write_atomic(&path, &bytes, 0o600).map_err(|e| CommitError::Io(e.to_string()))?;
        let sha = sha256_hex(&bytes);
        self.db
            .execute(
                "INSERT INTO revisions (time, description, sha256, xml) VALUES (?1, ?2, ?3, ?4)",
                params![now_unix(), description, sha, bytes],
            )
            .map_err(|e| CommitError::Io(format!("history: {e}")))?;
        self.revision = self.db.last_insert_rowid();
        let previous = std::mem::replace(&mut self.current, Arc::new(config));
        tracing::info!(revision = self.revision, sections = ?sections, "{description}");
        Ok(Committed {
            revision: self.revision,
            config: self.current.clone(),
            previous,
            sections,
            description,
        })
    }
}

impl Actor for ConfigStore {
    type Context = Context<Self>;
}

/// The running config and its revision.
#[derive(Message)]
#[rtype(result = "(Arc<Config>, i64)")]
pub struct GetConfigMsg;

impl Handler<GetConfigMsg> for ConfigStore {
    type Result = MessageResult<GetConfigMsg>;
    fn handle(&mut self, _: GetConfigMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.current.clone(), self.revision))
    }
}

/// Validate and write a new config.
#[derive(Message)]
#[rtype(result = "Result<Committed, CommitError>")]
pub struct CommitMsg {
    pub xml: Vec<u8>,
    pub description: String,
}

impl Handler<CommitMsg> for ConfigStore {
    type Result = Result<Committed, CommitError>;
    fn handle(&mut self, m: CommitMsg, _: &mut Context<Self>) -> Self::Result {
        self.commit(m.xml, m.description)
    }
}

/// Switch persistent CARP maintenance mode (an edit of the running config).
#[derive(Message)]
#[rtype(result = "Result<Option<Committed>, CommitError>")]
pub struct SetMaintenanceMsg {
    pub on: bool,
}

impl Handler<SetMaintenanceMsg> for ConfigStore {
    type Result = Result<Option<Committed>, CommitError>;
    fn handle(&mut self, m: SetMaintenanceMsg, _: &mut Context<Self>) -> Self::Result {
        if self.current.maintenance == m.on {
            return Ok(None);
        }
        let mut c = (*self.current).clone();
        c.set_maintenance(m.on);
        let desc = if m.on {
            "Enter CARP maintenance mode"
        } else {
            "Leave CARP maintenance mode"
        };
        self.commit(c.to_bytes(), desc.into()).map(Some)
    }
}

/// The newest revisions, newest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<RevisionInfo>, String>")]
pub struct HistoryMsg {
    pub limit: u32,
}

impl Handler<HistoryMsg> for ConfigStore {
    type Result = Result<Vec<RevisionInfo>, String>;
    fn handle(&mut self, m: HistoryMsg, _: &mut Context<Self>) -> Self::Result {
        let mut st = self
            .db
            .prepare("SELECT id, time, description, sha256, length(xml) FROM revisions ORDER BY id DESC LIMIT ?1")
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map(params![m.limit], |r| {
                Ok(RevisionInfo {
                    revision: r.get(0)?,
                    time: r.get(1)?,
                    description: r.get(2)?,
                    sha256: r.get(3)?,
                    size: r.get::<_, i64>(4)? as usize,
                })
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    }
}

impl Handler<StopMsg> for ConfigStore {
    type Result = ();
    fn handle(&mut self, _: StopMsg, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
