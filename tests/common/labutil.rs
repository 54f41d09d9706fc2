//! Lab helpers shared by the lab-based tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tandem::lab::{Lab, LabGuard, LabOptions, Node};

pub fn prefix(tag: &str) -> String {
    // a-z0-9, starting with a letter, at most 12 chars.
    format!("tt{}{tag}", std::process::id() % 100_000)
}

pub fn lab(tag: &str, opts: LabOptions) -> LabGuard {
    LabGuard(Lab::up(&prefix(tag), opts).expect("lab up"))
}

pub fn default_opts() -> LabOptions {
    LabOptions {
        tandem: PathBuf::from(super::TANDEM),
        master_config: super::repo_file("etc/examples/carp-master.xml"),
        backup_config: super::repo_file("etc/examples/carp-backup.xml"),
        ..LabOptions::default()
    }
}

/// vhid -> state for one node.
pub fn states(l: &Lab, fw: Node) -> Vec<(u64, String)> {
    tandem::lab::demo::carp_states(l, fw)
}

/// Kills (and reaps) a helper process when dropped, also on panic.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn all_in(l: &Lab, fw: Node, state: &str, n: usize) -> bool {
    let s = states(l, fw);
    s.len() == n && s.iter().all(|(_, st)| st == state)
}

/// Wait until `fw` has `n` VHIDs all in `state`; returns the time it took.
pub fn wait_all(l: &Lab, fw: Node, state: &str, n: usize, limit: Duration) -> Duration {
    let t = Instant::now();
    while t.elapsed() < limit {
        if all_in(l, fw, state, n) {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{fw}: not all {n} VHIDs {state} after {limit:?}: {:?}\n{}",
        states(l, fw),
        l.log_tail(fw, 30)
    );
}

pub fn settled_pair(l: &Lab) {
    wait_all(l, Node::Fw1, "MASTER", 2, Duration::from_secs(15));
    wait_all(l, Node::Fw2, "BACKUP", 2, Duration::from_secs(5));
}

pub fn addrs(l: &Lab, fw: Node, dev: &str) -> String {
    l.run(fw, &["ip", "-o", "addr", "show", "dev", dev])
        .unwrap_or_default()
}

pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not after {limit:?}");
}

/// A lab whose nodes boot from these configs instead of the how-to's examples.
pub fn lab_with(tag: &str, master: PathBuf, backup: PathBuf) -> LabGuard {
    lab(
        tag,
        LabOptions {
            master_config: master,
            backup_config: backup,
            ..default_opts()
        },
    )
}
