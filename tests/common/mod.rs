//! Shared helpers for the integration tests: a throw-away network namespace and a daemon in it.
//! Everything is torn down on drop, also when the test panics.
#![allow(dead_code)]

pub mod labutil;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short name: `tt<pid><seq><tag>`.
pub fn unique(tag: &str) -> String {
    format!(
        "tt{}{}{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed),
        tag
    )
}

pub fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

pub fn sh_ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace with the given devices as veth pairs (the peer ends stay in the namespace,
/// up, named `<dev>p`), so the devices have carrier.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str, devices: &[&str]) -> Netns {
        let name = unique(tag);
        sh_ok(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        for d in devices {
            let peer = format!("{d}p");
            ns.exec_ok(&[
                "ip", "link", "add", d, "type", "veth", "peer", "name", &peer,
            ]);
            ns.exec_ok(&["ip", "link", "set", &peer, "up"]);
        }
        ns
    }

    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn exec_ok(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh_ok(&v)
    }

    /// `ip -o addr show dev D` as a list of "addr/prefix".
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let out = self.exec_ok(&["ip", "-o", "addr", "show", "dev", dev]);
        out.lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                while let Some(w) = it.next() {
                    if w == "inet" || w == "inet6" {
                        return it.next().map(str::to_string);
                    }
                }
                None
            })
            .collect()
    }

    pub fn link_up(&self, dev: &str) -> bool {
        self.exec_ok(&["ip", "-o", "link", "show", "dev", dev])
            .contains("state UP")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill whatever still runs in it, then delete it.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(tag));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the machine's dirty pages out (sync(1)). Call before timing a daemon's stop: when the
/// daemon exits, its private overlay mount goes and the kernel syncs the file system under it,
/// which is the one `cargo` just wrote its build output to; right after a build that writeback
/// alone took 1-2.5 s (seen as "SIGTERM took 2.78s" with the daemon's own stop at 55 ms).
pub fn flush_disk() {
    let _ = Command::new("sync").status();
}

pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A `tandem boot` in a namespace.
pub struct Daemon {
    pub child: Option<Child>,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub ns: String,
    pub log: PathBuf,
}

impl Daemon {
    /// Start and wait until the control socket answers (at most 10 s).
    pub fn start(ns: &Netns, state: &Path, config: Option<&Path>) -> Daemon {
        let d = Self::spawn(ns, state, config);
        d.wait_ready(Duration::from_secs(10));
        d
    }

    pub fn spawn(ns: &Netns, state: &Path, config: Option<&Path>) -> Daemon {
        let socket = state.join("tandem.sock");
        let log = state.with_extension("log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, TANDEM, "boot", "--state"])
            .arg(state)
            .arg("--socket")
            .arg(&socket);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let child = cmd.spawn().expect("spawn tandem boot");
        Daemon {
            child: Some(child),
            state: state.to_path_buf(),
            socket,
            ns: ns.name.clone(),
            log,
        }
    }

    pub fn wait_ready(&self, limit: Duration) {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self
                .try_call("system.status", serde_json::json!({}))
                .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon not ready in {limit:?}; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn try_call(&self, method: &str, params: Value) -> Result<Value, tandem::ctl::CtlError> {
        tandem::ctl::call(&self.socket, method, params, Duration::from_secs(10))
    }

    pub fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}\nlog:\n{}", self.log_text()))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Send a signal and wait for the exit; returns (exit status, time taken).
    pub fn stop(&mut self, sig: i32) -> (std::process::ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let t = Instant::now();
        // `ip netns exec` execs the daemon, so the child pid is the daemon's.
        unsafe_kill(child.id(), sig);
        let st = child.wait().unwrap();
        (st, t.elapsed())
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
