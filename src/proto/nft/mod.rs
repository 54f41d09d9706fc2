//! config.xml firewall rules and outbound NAT, rendered as nftables text (pure).
//!
//! Pipeline: `config::Config` → [`convert`] → IR ([`FilterSet`], [`NatSet`]) → [`render_filter`] /
//! [`render_nat`] (resolving interface keys against a [`View`]) → [`Ruleset`], whose
//! [`Ruleset::script`] `sys::nft` feeds to `nft -f -` as one transaction.
//!
//! # Semantics (pf as OPNsense runs it, mapped onto netfilter)
//!
//! `table inet tandem_filter` has three base chains:
//! - `input` (policy drop) and `forward` (policy drop) start with `ct state established,related
//!   accept`, `ct state invalid drop` and a drop of every TCP packet that would create a state
//!   without being a bare SYN (pf's default `flags S/SA`; the loader also sets
//!   `net.netfilter.nf_conntrack_tcp_loose=0`, so a mid-stream packet without state is invalid).
//!   `input` then has the automatic rules, then `jump rules_in`. `forward` has `jump rules_out`
//!   then `jump rules_in`: as in pf, a forwarded packet must pass on the way in and on the way out.
//! - `output` (policy accept): established/related and loopback accepted, then `jump rules_out`.
//!
//! `rules_in` holds the rules with direction `in` or `any`, matched with `iifname`; `rules_out`
//! those with `out` or `any`, matched with `oifname`. In `rules_out` a pass is `return` (the
//! packet goes on to the in-direction rules in `forward`, or to the accept policy of `output`);
//! nothing matching there is a pass, like OPNsense's automatic "pass out all".
//!
//! pf evaluates all rules, a `quick` match ends the evaluation, otherwise the last match wins.
//! We render each chain's `quick` rules in order, followed by its non-quick rules in reverse
//! order, and let the first match decide: that is the same verdict (the first quick match wins
//! whatever non-quick rules matched before it; without one, the last non-quick match wins).
//! Legacy OPNsense interface rules are quick unless the config says otherwise.
//!
//! `block` is `drop`; `reject` is `reject with tcp reset` for TCP and `reject with icmpx type
//! port-unreachable` otherwise (two lines when the rule covers TCP and other protocols). `log`
//! adds `log prefix "tandem rule N: "` (N = the rule's 1-based position in the filter set).
//! `statetype` is not rendered: every pass creates a conntrack entry (keep state); there is no
//! sloppy or stateless mode. A port given with protocol `any` is treated as `tcp/udp`.
//!
//! `table ip tandem_nat` (and `table ip6 tandem_nat` when a rule names IPv6) has one
//! `postrouting` chain at priority srcnat: `ip protocol 112 accept` first (never NAT CARP), then
//! the `no nat` rules, then the translating rules in config order (pf translation rules are first
//! match). An empty target is `masquerade` (pf's dynamic `(em1:0)`), which also makes the NAT
//! table identical on both nodes. Linux keeps a connection's source port whenever it is free and
//! picks another one only on a clash, with or without static port: a static-port rule renders the
//! same `snat` and says "static-port" in its comment. pf's port randomisation without static port
//! is not reproduced.

pub mod convert;
pub mod filter;
pub mod ir;
pub mod nat;

#[cfg(test)]
mod tests;

use std::fmt;

use sha2::{Digest, Sha256};

pub use filter::render as render_filter;
pub use ir::*;
pub use nat::render as render_nat;

/// Name of the filter table (family `inet`).
pub const FILTER_TABLE: &str = "tandem_filter";
/// Name of the NAT tables (families `ip` and `ip6`).
pub const NAT_TABLE: &str = "tandem_nat";

/// Name of the state sync's table (family `inet`): it only keeps conntrack labels on.
pub const PFSYNC_TABLE: &str = "tandem_pfsync";
/// The conntrack label the state sync puts on every entry it writes for the peer, so a
/// restarted daemon (after a clean stop or a crash alike) tells the peer's states from its own.
pub const PEER_LABEL_BIT: u32 = 127;

/// The state sync's table. The kernel keeps conntrack labels in a namespace only while a rule
/// there uses `ct label`; this one does, in a chain no hook calls (it never sees a packet).
pub fn pfsync_labels() -> Ruleset {
    let t = TableId {
        family: "inet",
        name: PFSYNC_TABLE,
    };
    Ruleset {
        owned: vec![t],
        text: format!(
            "table {t} {{\n\tchain peer_states {{\n\t\tct label {PEER_LABEL_BIT} counter comment \"entries the state sync wrote for the peer (never hooked: it keeps labels on)\"\n\t}}\n}}\n"
        ),
    }
}

/// A table tandem owns: it is deleted and recreated by every load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableId {
    pub family: &'static str,
    pub name: &'static str,
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.family, self.name)
    }
}

/// A rendered ruleset: the nft text of the tables it defines, and every table it owns (a table
/// owned but not defined in `text` is removed by the load).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    pub owned: Vec<TableId>,
    pub text: String,
}

impl Ruleset {
    /// sha256 of `text`, lower-case hex.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.text.as_bytes()))
    }

    /// The `nft -f` input that replaces every owned table in one transaction: each owned table
    /// is created empty if missing and deleted, then the new tables are defined.
    pub fn script(&self) -> String {
        let mut s = String::new();
        for t in &self.owned {
            s.push_str(&format!("table {t} {{}}\ndelete table {t}\n"));
        }
        s.push_str(&self.text);
        s
    }
}

/// Why a rule cannot be rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    UnknownInterface(String),
    BadProtocol(String),
    BadPort(String),
    BadAddress(String),
    BadTarget(String),
    /// Ports need tcp or udp.
    PortsWithoutTcpUdp,
    /// `ipprotocol` and the addresses or protocol can never match together.
    FamilyMismatch,
    /// The interface has no address to resolve `optNip` or a NAT target to.
    NoAddress(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::UnknownInterface(i) => write!(f, "unknown interface {i}"),
            Reason::BadProtocol(p) => write!(f, "unsupported protocol {p}"),
            Reason::BadPort(p) => write!(f, "bad port {p}"),
            Reason::BadAddress(a) => write!(f, "bad or unsupported address {a}"),
            Reason::BadTarget(t) => write!(f, "bad nat target {t}"),
            Reason::PortsWithoutTcpUdp => write!(f, "ports need protocol tcp, udp or tcp/udp"),
            Reason::FamilyMismatch => {
                write!(
                    f,
                    "address family of the addresses does not match ipprotocol"
                )
            }
            Reason::NoAddress(i) => write!(f, "interface {i} has no static address"),
        }
    }
}

/// A rule that cannot be rendered, named by its config path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub path: String,
    pub reason: Reason,
}

impl Error {
    pub fn new(path: &str, reason: Reason) -> Error {
        Error {
            path: path.to_string(),
            reason,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for Error {}

/// An nft string literal (comment, log prefix, interface name): quotes, backslashes and control
/// characters replaced, at most `max` bytes.
pub(crate) fn quote(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut len = 0;
    for c in s.chars() {
        let c = match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_control() => ' ',
            c => c,
        };
        len += c.len_utf8();
        if len > max {
            break;
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `comment "<path> <descr>"`, within nft's 128-byte comment limit.
pub(crate) fn comment(path: &str, descr: &str) -> String {
    let text = if descr.trim().is_empty() {
        path.to_string()
    } else {
        format!("{path} {}", descr.trim())
    };
    format!("comment {}", quote(&text, 120))
}

/// `{ a, b }` for several items, `a` for one.
pub(crate) fn set<T: fmt::Display>(items: &[T]) -> String {
    if items.len() == 1 {
        items[0].to_string()
    } else {
        let v: Vec<String> = items.iter().map(|i| i.to_string()).collect();
        format!("{{ {} }}", v.join(", "))
    }
}
