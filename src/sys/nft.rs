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
    match run(&["list", "table", t.family, t.name], "") {
        Ok(s) => Ok(Some(s)),
        Err(Error::Rejected(e)) if e.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

/// What [`ensure`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensured {
    /// Every table `rs` owns was there; nothing was loaded.
    Present,
    /// At least one was missing (someone deleted it, `nft flush ruleset`): `rs` was loaded again.
    Reloaded,
}

/// Loads `rs` again if any table it owns is missing. Only presence is checked (nft prints a
/// table back normalised, not as it was given).
pub fn ensure(rs: &Ruleset) -> Result<Ensured, Error> {
    for t in &rs.owned {
        if list_table(*t)?.is_none() {
            load(rs)?;
            return Ok(Ensured::Reloaded);
        }
    }
    Ok(Ensured::Present)
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
