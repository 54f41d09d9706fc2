//! `Filter` and `Nat`: each owns its nftables table(s). On every config change it re-renders
//! (pure, `proto::nft`) and loads only when the rendered text changed, in one nft transaction;
//! a ruleset nft rejects leaves the previous one in force and is reported. Every
//! [`CHECK_EVERY`] it checks its tables are still the ones it loaded, and loads them again if
//! someone deleted or changed them (`nft flush ruleset`, another tool replacing the ruleset):
//! a firewall whose tables vanished would forward everything, unfiltered and un-NATed.
//!
//! ```text
//!  supervisor ──ApplyRulesetMsg(config)──▶ Filter / Nat ──nft -f (blocking pool)──▶ kernel
//!  control    ──RulesetStatusMsg─────────▶ Filter / Nat
//! ```

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use super::StopMsg;
use crate::config::Config;
use crate::proto::nft::{self, Ruleset, convert};
use crate::sys::nft as sysnft;

/// Which table set an actor owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Filter,
    Nat,
}

impl Kind {
    pub fn render(self, cfg: &Config) -> Result<Ruleset, nft::Error> {
        match self {
            Kind::Filter => convert::filter(cfg),
            Kind::Nat => convert::nat(cfg),
        }
    }
}

/// `filter.ruleset` / `nat.ruleset`.
#[derive(Clone, Debug, Serialize)]
pub struct RulesetStatus {
    pub table: Kind,
    /// The ruleset in force (as rendered by tandem), if one was loaded.
    pub text: Option<String>,
    pub sha256: Option<String>,
    pub loads: u64,
    pub failed_loads: u64,
    pub last_error: Option<String>,
    /// Times the tables were found deleted or changed outside tandem and loaded again.
    pub repairs: u64,
    /// What the last repair found, and when (ms since the epoch).
    pub last_repair: Option<String>,
    pub last_repair_unix_ms: Option<u64>,
    /// Why the last check of the tables failed (`None`: it worked).
    pub check_error: Option<String>,
}

/// How often the tables are checked. A check is one netlink round trip while no ruleset in
/// the namespace changed, so this can be short.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

pub struct NftActor {
    kind: Kind,
    loaded: Option<Ruleset>,
    loads: u64,
    failed: u64,
    last_error: Option<String>,
    /// The tables as last loaded (`None` before the first load, and while a check runs).
    guard: Option<sysnft::Guard>,
    repairs: u64,
    last_repair: Option<(String, u64)>,
    check_error: Option<String>,
}

impl NftActor {
    pub fn new(kind: Kind) -> NftActor {
        NftActor {
            kind,
            loaded: None,
            loads: 0,
            failed: 0,
            last_error: None,
            guard: None,
            repairs: 0,
            last_repair: None,
            check_error: None,
        }
    }

    /// Checks the tables against what was loaded; loads them again if they drifted.
    fn check(&mut self, ctx: &mut Context<Self>) {
        let Some(mut guard) = self.guard.take() else {
            return;
        };
        let kind = self.kind;
        // `wait`: no ruleset is applied while the check runs.
        ctx.wait(
            async move {
                tokio::task::spawn_blocking(move || {
                    let r = guard.keep(|rs| load_kind(kind, rs));
                    (guard, r)
                })
                .await
            }
            .into_actor(self)
            .map(move |res, act, _| {
                let (guard, r) = match res {
                    Ok((g, r)) => (g, r.map_err(|e| e.to_string())),
                    Err(e) => {
                        // The guard went with the task: a fresh one loads the ruleset in force
                        // again at the next check.
                        act.guard = act.loaded.clone().map(sysnft::Guard::new);
                        act.check_error = Some(format!("check task failed: {e}"));
                        return;
                    }
                };
                let sha = guard.ruleset().digest();
                act.guard = Some(guard);
                match r {
                    Ok(None) => act.check_error = None,
                    Ok(Some(drift)) => {
                        act.repairs += 1;
                        act.last_repair = Some((drift.to_string(), unix_ms()));
                        act.check_error = None;
                        tracing::warn!(table = ?kind, sha256 = %sha, "{drift}: the {kind:?} ruleset is loaded again");
                    }
                    Err(e) => {
                        if act.check_error.as_deref() != Some(e.as_str()) {
                            tracing::error!(table = ?kind, "checking the {kind:?} tables failed: {e}");
                        }
                        act.check_error = Some(e);
                    }
                }
            }),
        );
    }
}

fn load_kind(kind: Kind, rs: &Ruleset) -> Result<(), sysnft::Error> {
    match kind {
        Kind::Filter => sysnft::load_filter(rs),
        Kind::Nat => sysnft::load(rs),
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Actor for NftActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(CHECK_EVERY, |act, ctx| act.check(ctx));
    }
}

/// Render from this config and load if it differs from what is in force.
#[derive(Message)]
#[rtype(result = "Result<bool, String>")]
pub struct ApplyRulesetMsg(pub Arc<Config>);

impl Handler<ApplyRulesetMsg> for NftActor {
    // Atomic: one load at a time, never during a check of the tables.
    type Result = AtomicResponse<Self, Result<bool, String>>;
    fn handle(&mut self, m: ApplyRulesetMsg, _: &mut Context<Self>) -> Self::Result {
        let kind = self.kind;
        let rs = match kind.render(&m.0) {
            Ok(rs) => rs,
            Err(e) => {
                let msg = format!("cannot render the {kind:?} ruleset: {e}");
                tracing::error!("{msg}");
                self.last_error = Some(msg.clone());
                return AtomicResponse::new(Box::pin(fut::ready(Err(msg))));
            }
        };
        if self.loaded.as_ref().is_some_and(|l| l.text == rs.text) {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(false))));
        }
        AtomicResponse::new(Box::pin(
            async move {
                let r = rs.clone();
                let res = tokio::task::spawn_blocking(move || {
                    load_kind(kind, &r)?;
                    // What the tables look like now, for the checks.
                    let mut guard = sysnft::Guard::new(r);
                    if let Err(e) = guard.loaded() {
                        tracing::warn!(table = ?kind, "cannot list the tables just loaded ({e}); the next check loads them again");
                    }
                    Ok::<_, sysnft::Error>(guard)
                })
                .await;
                (rs, res)
            }
            .into_actor(self)
            .map(move |(rs, res), act, _| {
                let res = match res {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(format!("nft task failed: {e}")),
                };
                match res {
                    Ok(guard) => {
                        tracing::info!(table = ?kind, sha256 = %rs.digest(), "ruleset loaded");
                        act.guard = Some(guard);
                        act.loads += 1;
                        act.loaded = Some(rs);
                        act.last_error = None;
                        Ok(true)
                    }
                    Err(e) => {
                        tracing::error!(table = ?kind, "ruleset NOT loaded, previous one stays in force: {e}");
                        act.failed += 1;
                        act.last_error = Some(e.clone());
                        Err(e)
                    }
                }
            }),
        ))
    }
}

/// Status for the control socket.
#[derive(Message)]
#[rtype(result = "RulesetStatus")]
pub struct RulesetStatusMsg;

impl Handler<RulesetStatusMsg> for NftActor {
    type Result = MessageResult<RulesetStatusMsg>;
    fn handle(&mut self, _: RulesetStatusMsg, _: &mut Context<Self>) -> Self::Result {
        MessageResult(RulesetStatus {
            table: self.kind,
            text: self.loaded.as_ref().map(|r| r.text.clone()),
            sha256: self.loaded.as_ref().map(Ruleset::digest),
            loads: self.loads,
            failed_loads: self.failed,
            last_error: self.last_error.clone(),
            repairs: self.repairs,
            last_repair: self.last_repair.as_ref().map(|r| r.0.clone()),
            last_repair_unix_ms: self.last_repair.as_ref().map(|r| r.1),
            check_error: self.check_error.clone(),
        })
    }
}

impl Handler<StopMsg> for NftActor {
    type Result = ();
    fn handle(&mut self, _: StopMsg, ctx: &mut Context<Self>) {
        // The tables stay: a firewall keeps filtering while its daemon restarts.
        ctx.stop();
    }
}

/// Check a candidate config before it is committed: every rule renders, and nft accepts both
/// rulesets (`nft -c`, nothing is changed). Blocking.
pub fn precheck(cfg: &Config) -> Result<(), Vec<crate::config::Finding>> {
    let mut findings = Vec::new();
    for kind in [Kind::Filter, Kind::Nat] {
        match kind.render(cfg) {
            Ok(rs) => {
                if let Err(e) = sysnft::check(&rs) {
                    findings.push(crate::config::Finding {
                        severity: crate::config::Severity::Error,
                        path: match kind {
                            Kind::Filter => "filter".into(),
                            Kind::Nat => "nat".into(),
                        },
                        message: e.to_string(),
                    });
                }
            }
            Err(e) => findings.push(crate::config::Finding {
                severity: crate::config::Severity::Error,
                path: e.path.clone(),
                message: e.reason.to_string(),
            }),
        }
    }
    if findings.is_empty() {
        Ok(())
    } else {
        Err(findings)
    }
}
