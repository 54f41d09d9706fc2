//! Load rendered rulesets with `nft -f -` (one netlink batch = one kernel transaction) and list
//! them back. Blocking: call from a blocking context (`spawn_blocking`, a sync actor).

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

use crate::proto::nft::{Ruleset, TableId};
use crate::sys::sysctl;

/// The nft binary (looked up in `PATH`).
pub const NFT: &str = "nft";

/// pf creates TCP state only from a SYN: with `0` conntrack marks a mid-stream packet of an
/// unknown flow invalid instead of picking it up.
pub const TCP_LOOSE: &str = "net.netfilter.nf_conntrack_tcp_loose";

/// Why a load or list failed.
#[derive(Debug)]
pub enum Error {
    /// nft could not be run.
    Spawn(std::io::Error),
    /// nft refused the input; the previous ruleset is still in force. Holds nft's stderr.
    Rejected(String),
    /// Setting a sysctl the ruleset relies on failed.
    Sysctl(String, std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Spawn(e) => write!(f, "cannot run {NFT}: {e}"),
            Error::Rejected(s) => write!(f, "nft rejected the ruleset: {}", s.trim_end()),
            Error::Sysctl(k, e) => write!(f, "cannot set {k}: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn(e) | Error::Sysctl(_, e) => Some(e),
            Error::Rejected(_) => None,
        }
    }
}

/// Runs `nft <args>` with `stdin` as its input; stdout on success, stderr on failure.
fn run(args: &[&str], stdin: &str) -> Result<String, Error> {
    let mut child = Command::new(NFT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::Spawn)?;
    // Feed stdin from another thread so a large ruleset cannot deadlock against nft's output.
    let writer = child.stdin.take().map(|mut input| {
        let data = stdin.as_bytes().to_vec();
        std::thread::spawn(move || {
            // A write error (nft exited early) shows up as nft's exit status and stderr.
            let _ = input.write_all(&data);
        })
    });
    let out = child.wait_with_output().map_err(Error::Spawn)?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut err = String::from_utf8_lossy(&out.stderr).into_owned();
        if err.trim().is_empty() {
            err = format!("nft exited with {}", out.status);
        }
        Err(Error::Rejected(err))
    }
}

/// Replace every table `rs` owns in one transaction. On error nothing changed.
pub fn load(rs: &Ruleset) -> Result<(), Error> {
    run(&["-f", "-"], &rs.script()).map(|_| ())
}

/// Check `rs` against the kernel without applying it (`nft -c`).
pub fn check(rs: &Ruleset) -> Result<(), Error> {
    run(&["-c", "-f", "-"], &rs.script()).map(|_| ())
}

/// Load a filter ruleset and set the sysctl its pf semantics rely on
/// (`nf_conntrack_tcp_loose=0`; the sysctl exists once the ruleset's `ct` rules loaded conntrack).
pub fn load_filter(rs: &Ruleset) -> Result<(), Error> {
    load(rs)?;
    sysctl::set(TCP_LOOSE, "0").map_err(|e| Error::Sysctl(TCP_LOOSE.to_string(), e))
}

/// `nft list table <family> <name>`; `None` if the table does not exist.
pub fn list_table(t: TableId) -> Result<Option<String>, Error> {
    list_one(t, false)
}

/// `nft [-s] list table`: `-s` leaves out counter values and other state.
fn list_one(t: TableId, stateless: bool) -> Result<Option<String>, Error> {
    let args = ["-s", "list", "table", t.family, t.name];
    match run(if stateless { &args } else { &args[1..] }, "") {
        Ok(s) => Ok(Some(s)),
        Err(Error::Rejected(e)) if e.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The nftables ruleset generation of this network namespace (`NFT_MSG_GETGEN`): the kernel
/// bumps it with every committed ruleset change, whoever makes it. One netlink round trip.
pub fn generation() -> std::io::Result<u32> {
    use crate::sys::conntrack::codec;
    let mut s = netlink_sys::Socket::new(codec::NETLINK_NETFILTER)?;
    s.bind_auto()?;
    s.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    nix::sys::socket::setsockopt(
        &s,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(1, 0),
    )
    .map_err(std::io::Error::from)?;
    let mut w = codec::Writer::new();
    w.getgen(1);
    s.send(&w.buf, 0)?;
    let mut buf = Vec::with_capacity(8192);
    s.recv(&mut buf, 0)?;
    codec::parse_generation(&buf).map_err(|e| std::io::Error::other(e.to_string()))
}

/// How a table tandem owns differs from what tandem loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// Never loaded (the first load failed).
    NotLoaded,
    /// Gone: `nft flush ruleset`, `nft delete table`, another tool replacing the ruleset.
    Missing(TableId),
    /// Its chains or rules are not the ones loaded (someone added, changed or deleted some),
    /// or it exists although the ruleset has it removed.
    Changed(TableId),
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::NotLoaded => write!(
                f,
                "the tables were not loaded (or not listed after the load)"
            ),
            Drift::Missing(t) => write!(f, "table {t} is missing"),
            Drift::Changed(t) => write!(f, "table {t} was changed outside tandem"),
        }
    }
}

/// Keeps the tables of a ruleset as tandem loaded them. After a load it remembers each owned
/// table as nft lists it without counters (`nft -s`) and the ruleset generation; a check costs
/// one netlink round trip while the generation stays, and lists the tables only when it moved.
#[derive(Debug)]
pub struct Guard {
    rs: Ruleset,
    /// `None` until a load succeeded.
    listed: Option<Vec<Option<String>>>,
    generation: Option<u32>,
}

impl Guard {
    /// A guard for `rs`, not loaded yet: the first [`Guard::keep`] loads it.
    pub fn new(rs: Ruleset) -> Guard {
        Guard {
            rs,
            listed: None,
            generation: None,
        }
    }

    pub fn ruleset(&self) -> &Ruleset {
        &self.rs
    }

    /// Remembers the tables as they are now: call right after loading the guarded ruleset.
    pub fn loaded(&mut self) -> Result<(), Error> {
        // The generation first: a change made while the tables are listed moves it, and the
        // next check looks again.
        self.generation = generation().ok();
        self.listed = Some(list_stateless(&self.rs)?);
        Ok(())
    }

    /// How the tables differ from what was loaded, if they do. Changes nothing.
    pub fn check(&mut self) -> Result<Option<Drift>, Error> {
        let Some(listed) = &self.listed else {
            return Ok(Some(Drift::NotLoaded));
        };
        let now_gen = generation().ok();
        if now_gen.is_some() && now_gen == self.generation {
            return Ok(None);
        }
        let now = list_stateless(&self.rs)?;
        for ((t, was), is) in self.rs.owned.iter().zip(listed).zip(&now) {
            match (was, is) {
                (Some(_), None) => return Ok(Some(Drift::Missing(*t))),
                (a, b) if a != b => return Ok(Some(Drift::Changed(*t))),
                _ => {}
            }
        }
        // Someone changed another table: nothing to do until the generation moves again.
        self.generation = now_gen;
        Ok(None)
    }

    /// Checks the tables and, when they drifted, loads the ruleset again with `load` (which
    /// replaces every owned table in one transaction). `Ok(Some(drift))`: repaired.
    pub fn keep(
        &mut self,
        load: impl Fn(&Ruleset) -> Result<(), Error>,
    ) -> Result<Option<Drift>, Error> {
        let Some(drift) = self.check()? else {
            return Ok(None);
        };
        load(&self.rs)?;
        self.loaded()?;
        Ok(Some(drift))
    }
}

/// Each owned table as `nft -s list table` prints it (`None`: absent).
fn list_stateless(rs: &Ruleset) -> Result<Vec<Option<String>>, Error> {
    rs.owned.iter().map(|t| list_one(*t, true)).collect()
}

/// Every table the ruleset owns, listed (absent tables skipped), concatenated.
pub fn list(rs: &Ruleset) -> Result<String, Error> {
    let mut out = String::new();
    for t in &rs.owned {
        if let Some(s) = list_table(*t)? {
            out.push_str(&s);
        }
    }
    Ok(out)
}
