//! `Filter` and `Nat`: each owns its nftables table(s). On every config change it re-renders
//! (pure, `proto::nft`) and loads only when the rendered text changed, in one nft transaction;
//! a ruleset nft rejects leaves the previous one in force and is reported.
//!
//! ```text
//!  supervisor ──ApplyRulesetMsg(config)──▶ Filter / Nat ──nft -f (blocking pool)──▶ kernel
//!  control    ──RulesetStatusMsg─────────▶ Filter / Nat
//! ```

use std::sync::Arc;

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
}

pub struct NftActor {
    kind: Kind,
    loaded: Option<Ruleset>,
    loads: u64,
    failed: u64,
    last_error: Option<String>,
}

impl NftActor {
    pub fn new(kind: Kind) -> NftActor {
        NftActor {
            kind,
            loaded: None,
            loads: 0,
            failed: 0,
            last_error: None,
        }
    }
}

impl Actor for NftActor {
    type Context = Context<Self>;
}

/// Render from this config and load if it differs from what is in force.
#[derive(Message)]
#[rtype(result = "Result<bool, String>")]
pub struct ApplyRulesetMsg(pub Arc<Config>);

impl Handler<ApplyRulesetMsg> for NftActor {
    type Result = ResponseActFuture<Self, Result<bool, String>>;
    fn handle(&mut self, m: ApplyRulesetMsg, _: &mut Context<Self>) -> Self::Result {
        let kind = self.kind;
        let rs = match kind.render(&m.0) {
            Ok(rs) => rs,
            Err(e) => {
                let msg = format!("cannot render the {kind:?} ruleset: {e}");
                tracing::error!("{msg}");
                self.last_error = Some(msg.clone());
                return Box::pin(fut::ready(Err(msg)));
            }
        };
        if self.loaded.as_ref().is_some_and(|l| l.text == rs.text) {
            return Box::pin(fut::ready(Ok(false)));
        }
        Box::pin(
            async move {
                let r = rs.clone();
                let res = tokio::task::spawn_blocking(move || match kind {
                    Kind::Filter => sysnft::load_filter(&r),
                    Kind::Nat => sysnft::load(&r),
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
                    Ok(()) => {
                        tracing::info!(table = ?kind, sha256 = %rs.digest(), "ruleset loaded");
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
        )
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
