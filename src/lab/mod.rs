//! The two-firewall lab in network namespaces (used by `tandem lab` and the tests).
//!
//! ```text
//!            <P>-client                         <P>-server
//!         eth0 192.168.1.100                  eth0 172.18.0.250 (WAN gateway)
//!              |  cl                               |  sv
//!   <P>-sw   [ br-lan ]                         [ br-wan ]
//!              |  f1l      |  f2l                  |  f1w      |  f2w
//!            em0 (LAN)   em0 (LAN)               em1 (WAN)   em1 (WAN)
//!            <P>-fw1 ----------- em2 (PFSYNC) ------ <P>-fw2
//! ```
//!
//! Every device is created directly inside its namespace (`ip -n`), so the root namespace only
//! ever sees the namespace names. The firewalls' addresses are tandem's job (from its config);
//! [`LabOptions::fw_addresses`] sets the table of ARCHITECTURE.md by hand for topology tests.
//! `down` kills every process in the lab's namespaces and deletes them, which also deletes the
//! veths and bridges; it works on a half-built lab and after a crash.

mod cli;
pub mod demo;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use cli::{LabArgs, command};

/// Where every lab keeps its pid files, sockets, state and logs.
pub const RUN_ROOT: &str = "/run/tandem-lab";

/// How long `up` waits for both daemons to answer `system.status`.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(15);

/// Timeout of one control call made through [`Lab::ctl`].
pub const CTL_TIMEOUT: Duration = Duration::from_secs(10);

/// One namespace of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    Fw1,
    Fw2,
    Client,
    Server,
    Switch,
}

impl Node {
    /// Every node, firewalls first.
    pub const ALL: [Node; 5] = [
        Node::Fw1,
        Node::Fw2,
        Node::Client,
        Node::Server,
        Node::Switch,
    ];
    /// The two firewalls.
    pub const FIREWALLS: [Node; 2] = [Node::Fw1, Node::Fw2];

    /// Suffix of the namespace name (`<prefix>-<name>`) and of its run directory.
    pub fn name(self) -> &'static str {
        match self {
            Node::Fw1 => "fw1",
            Node::Fw2 => "fw2",
            Node::Client => "client",
            Node::Server => "server",
            Node::Switch => "sw",
        }
    }

    pub fn is_firewall(self) -> bool {
        matches!(self, Node::Fw1 | Node::Fw2)
    }
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which bridge of the switch a veth hangs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bridge {
    Lan,
    Wan,
}

impl Bridge {
    pub fn name(self) -> &'static str {
        match self {
            Bridge::Lan => "br-lan",
            Bridge::Wan => "br-wan",
        }
    }
}

/// One cable from a node to the switch: (port name in the switch ns, node, device in the node, bridge).
pub const CABLES: [(&str, Node, &str, Bridge); 6] = [
    ("f1l", Node::Fw1, "em0", Bridge::Lan),
    ("f1w", Node::Fw1, "em1", Bridge::Wan),
    ("f2l", Node::Fw2, "em0", Bridge::Lan),
    ("f2w", Node::Fw2, "em1", Bridge::Wan),
    ("cl", Node::Client, "eth0", Bridge::Lan),
    ("sv", Node::Server, "eth0", Bridge::Wan),
];

/// The firewalls' addresses of ARCHITECTURE.md, set by the lab only with [`LabOptions::fw_addresses`].
pub const FW_ADDRESSES: [(Node, &str, &str); 6] = [
    (Node::Fw1, "em0", "192.168.1.10/24"),
    (Node::Fw1, "em1", "172.18.0.101/24"),
    (Node::Fw1, "em2", "10.0.0.1/24"),
    (Node::Fw2, "em0", "192.168.1.20/24"),
    (Node::Fw2, "em1", "172.18.0.102/24"),
    (Node::Fw2, "em2", "10.0.0.2/24"),
];

/// The server's WAN address (it is also the firewalls' WAN gateway).
pub const SERVER_ADDR: &str = "172.18.0.250/24";

/// The client's static address and default gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAddr {
    /// Address with prefix length, e.g. `192.168.1.100/24`.
    pub cidr: String,
    /// Default gateway, e.g. the LAN VIP `192.168.1.1`.
    pub gateway: Option<String>,
}

impl Default for ClientAddr {
    fn default() -> Self {
        ClientAddr {
            cidr: "192.168.1.100/24".into(),
            gateway: Some("192.168.1.1".into()),
        }
    }
}

/// How to build the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabOptions {
    /// Start tandem in fw1 and fw2 and wait until both answer `system.status`.
    pub boot: bool,
    /// The tandem binary to boot.
    pub tandem: PathBuf,
    /// Config fw1 boots with.
    pub master_config: PathBuf,
    /// Config fw2 boots with.
    pub backup_config: PathBuf,
    /// The client's address; `None` leaves eth0 up without an address (e.g. for DHCP).
    pub client_addr: Option<ClientAddr>,
    /// Give the firewalls the addresses of [`FW_ADDRESSES`] and bring em0/em1/em2 up. Only for
    /// tests of the topology itself: normally tandem sets them from its config.
    pub fw_addresses: bool,
}

impl Default for LabOptions {
    /// Boot this executable with the example configs found by [`find_examples`].
    fn default() -> Self {
        let examples = find_examples().unwrap_or_else(|| PathBuf::from("etc/examples"));
        LabOptions {
            boot: true,
            tandem: default_binary(),
            master_config: examples.join("carp-master.xml"),
            backup_config: examples.join("carp-backup.xml"),
            client_addr: Some(ClientAddr::default()),
            fw_addresses: false,
        }
    }
}

/// This executable if it is tandem; from a test binary (`target/<profile>/deps/x-hash`), the
/// `tandem` beside `deps/`. Integration tests had better pass `env!("CARGO_BIN_EXE_tandem")`.
fn default_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tandem"));
    if exe.file_name().is_some_and(|n| n == "tandem") {
        return exe;
    }
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("tandem"))
        .filter(|t| t.is_file())
        .unwrap_or(exe)
}

/// The directory holding `carp-master.xml` and `carp-backup.xml`: `$TANDEM_EXAMPLES`, else
/// `etc/examples` found walking up from the current directory, then from the executable's.
pub fn find_examples() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TANDEM_EXAMPLES") {
        return Some(PathBuf::from(dir));
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        starts.push(dir);
    }
    starts.iter().find_map(|start| {
        start
            .ancestors()
            .map(|d| d.join("etc/examples"))
            .find(|d| d.join("carp-master.xml").is_file())
    })
}

/// A lab, built by [`Lab::up`] or found again by [`Lab::attach`].
#[derive(Debug)]
pub struct Lab {
    pub prefix: String,
    /// `/run/tandem-lab/<prefix>`.
    pub run_dir: PathBuf,
    opts: LabOptions,
    /// Daemons this process started (waited on so they never linger as zombies).
    children: Mutex<HashMap<Node, Child>>,
    /// How our own daemons ended, once reaped (for error messages).
    exits: Mutex<HashMap<Node, ExitStatus>>,
}

/// Tears the lab down when dropped, even on panic (for tests).
#[derive(Debug)]
pub struct LabGuard(pub Lab);

impl std::ops::Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.0
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.down() {
            eprintln!("lab {}: down failed: {e:#}", self.0.prefix);
        }
    }
}

/// A prefix is 1 to 12 of `[a-z0-9]`, starting with a letter: namespace names, run paths and
/// socket paths (108 bytes at most) stay short and unambiguous.
pub fn check_prefix(prefix: &str) -> anyhow::Result<()> {
    let ok = (1..=12).contains(&prefix.len())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        bail!("lab prefix {prefix:?}: want 1 to 12 of a-z0-9, starting with a letter");
    }
    Ok(())
}

impl Lab {
    /// Build the topology (tearing down any lab of the same prefix first); with `opts.boot`, start
    /// tandem in both firewalls and wait until both answer `system.status`. On failure everything
    /// built so far is torn down and the error carries the nodes' log tails.
    pub fn up(prefix: &str, opts: LabOptions) -> anyhow::Result<Lab> {
        check_prefix(prefix)?;
        if opts.boot {
            for file in [&opts.tandem, &opts.master_config, &opts.backup_config] {
                if !file.is_file() {
                    bail!(
                        "lab {prefix}: {} not found (the example configs are looked up in \
                         $TANDEM_EXAMPLES, else etc/examples above the current directory or the binary)",
                        file.display()
                    );
                }
            }
        }
        let lab = Lab::new(prefix, opts);
        lab.down()
            .context("clearing an earlier lab of this prefix")?;
        let built = lab.build().and_then(|()| {
            if lab.opts.boot {
                lab.boot_pair()
            } else {
                Ok(())
            }
        });
        match built {
            Ok(()) => Ok(lab),
            Err(e) => {
                if let Err(d) = lab.down() {
                    eprintln!("lab {prefix}: tearing down after a failed up: {d:#}");
                }
                Err(e.context(format!("lab {prefix}: up failed")))
            }
        }
    }

    /// The lab of `prefix` as it stands (options as saved by `up`, else the defaults).
    pub fn attach(prefix: &str) -> Lab {
        let run_dir = Path::new(RUN_ROOT).join(prefix);
        let opts = fs::read(run_dir.join("lab.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Lab::new(prefix, opts)
    }

    fn new(prefix: &str, opts: LabOptions) -> Lab {
        Lab {
            prefix: prefix.to_string(),
            run_dir: Path::new(RUN_ROOT).join(prefix),
            opts,
            children: Mutex::new(HashMap::new()),
            exits: Mutex::new(HashMap::new()),
        }
    }

    /// The options this lab was built with.
    pub fn options(&self) -> &LabOptions {
        &self.opts
    }

    /// Namespace name of `node`: `<prefix>-<node>`.
    pub fn ns(&self, node: Node) -> String {
        format!("{}-{}", self.prefix, node.name())
    }

    /// `<run_dir>/<node>`: the node's pid file, socket, state and log.
    pub fn node_dir(&self, node: Node) -> PathBuf {
        self.run_dir.join(node.name())
    }

    pub fn socket(&self, fw: Node) -> PathBuf {
        self.node_dir(fw).join("tandem.sock")
    }

    pub fn state_dir(&self, fw: Node) -> PathBuf {
        self.node_dir(fw).join("state")
    }

    /// The daemon's stdout and stderr.
    pub fn log_path(&self, fw: Node) -> PathBuf {
        self.node_dir(fw).join("tandem.log")
    }

    fn pid_path(&self, fw: Node) -> PathBuf {
        self.node_dir(fw).join("tandem.pid")
    }

    /// Run `argv` in `node`'s namespace and wait for it (a non-zero exit is not an error here).
    pub fn exec(&self, node: Node, argv: &[&str]) -> anyhow::Result<Output> {
        self.netns_command(node, argv)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("ip netns exec {} {}", self.ns(node), argv.join(" ")))
    }

    /// Like [`Lab::exec`] but a non-zero exit is an error (with its stderr); returns stdout.
    pub fn run(&self, node: Node, argv: &[&str]) -> anyhow::Result<String> {
        let out = self.exec(node, argv)?;
        if !out.status.success() {
            bail!(
                "in {}: `{}` failed ({}): {}",
                self.ns(node),
                argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start `argv` in `node`'s namespace in its own process group, stdout and stderr appended to `log`.
    pub fn spawn(&self, node: Node, argv: &[&str], log: &Path) -> anyhow::Result<Child> {
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        self.netns_command(node, argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("ip netns exec {} {}", self.ns(node), argv.join(" ")))
    }

    fn netns_command(&self, node: Node, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(node)]).args(argv);
        cmd
    }

    /// Call a control method of the daemon in `fw`.
    pub fn ctl(&self, fw: Node, method: &str, params: Value) -> anyhow::Result<Value> {
        crate::ctl::call(&self.socket(fw), method, params, CTL_TIMEOUT)
            .with_context(|| format!("{fw}: {method}"))
    }

    /// Boot tandem in `fw`'s namespace: `tandem boot --state --config --socket`, logging to
    /// [`Lab::log_path`], its pid in `<node_dir>/tandem.pid`. Does not wait for it to answer.
    pub fn start_node(&self, fw: Node) -> anyhow::Result<()> {
        if !fw.is_firewall() {
            bail!("{fw} is not a firewall");
        }
        if let Some(pid) = self.node_pid(fw) {
            bail!("{fw}: tandem already runs (pid {pid})");
        }
        let config = match fw {
            Node::Fw1 => &self.opts.master_config,
            _ => &self.opts.backup_config,
        };
        if !config.is_file() {
            bail!(
                "{fw}: config {} not found (set TANDEM_EXAMPLES to the directory of carp-master.xml \
                 and carp-backup.xml, or run from the source tree)",
                config.display()
            );
        }
        let socket = self.socket(fw);
        let state = self.state_dir(fw);
        fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        match fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(format!("removing stale {}", socket.display())),
        }
        let tandem = self.opts.tandem.to_string_lossy().into_owned();
        let argv = [
            tandem.as_str(),
            "boot",
            "--state",
            &state.to_string_lossy(),
            "--config",
            &config.to_string_lossy(),
            "--socket",
            &socket.to_string_lossy(),
        ];
        let child = self.spawn(fw, &argv, &self.log_path(fw))?;
        fs::write(self.pid_path(fw), format!("{}\n", child.id()))
            .with_context(|| format!("writing {}", self.pid_path(fw).display()))?;
        lock(&self.exits).remove(&fw);
        self.children_lock().insert(fw, child);
        Ok(())
    }

    /// Pid of the daemon in `fw` if it runs (checked against its command line, so a reused pid
    /// is never taken for it).
    pub fn node_pid(&self, fw: Node) -> Option<i32> {
        self.reap(fw);
        let pid: i32 = fs::read_to_string(self.pid_path(fw))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // Our own unreaped child cannot have had its pid reused.
        let child = self
            .children_lock()
            .get(&fw)
            .is_some_and(|c| i64::from(c.id()) == i64::from(pid));
        let socket = self.socket(fw).to_string_lossy().into_owned();
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        // The command line reads empty while the process is between the two halves of an exec
        // (`ip netns exec` -> interpreter -> daemon).
        let ours = child
            || cmdline.is_empty()
            || cmdline
                .split(|&b| b == 0)
                .any(|arg| arg == socket.as_bytes());
        (ours && alive(pid)).then_some(pid)
    }

    /// Send `sig` to the daemon in `fw` and wait (10 s at most) until it has exited; returns how
    /// long that took. An error if it was not running or did not exit in time.
    pub fn stop_node(&self, fw: Node, sig: Signal) -> anyhow::Result<Duration> {
        let Some(pid) = self.node_pid(fw) else {
            bail!("{fw}: tandem does not run");
        };
        let start = Instant::now();
        kill(Pid::from_raw(pid), sig).with_context(|| format!("{fw}: kill {sig} {pid}"))?;
        let deadline = start + Duration::from_secs(10);
        loop {
            self.reap(fw);
            if !alive(pid) {
                let took = start.elapsed();
                let _ = fs::remove_file(self.pid_path(fw));
                return Ok(took);
            }
            if Instant::now() > deadline {
                bail!("{fw}: tandem (pid {pid}) still runs 10 s after {sig}");
            }
            sleep(Duration::from_millis(5));
        }
    }

    /// "Pull the plug" of `fw`: its LAN and WAN links down (em2, the sync link, stays up).
    pub fn pull_plug(&self, fw: Node) -> anyhow::Result<()> {
        self.set_links(fw, "down")
    }

    /// Undo [`Lab::pull_plug`].
    pub fn restore_plug(&self, fw: Node) -> anyhow::Result<()> {
        self.set_links(fw, "up")
    }

    fn set_links(&self, fw: Node, state: &str) -> anyhow::Result<()> {
        if !fw.is_firewall() {
            bail!("{fw} is not a firewall");
        }
        for dev in ["em0", "em1"] {
            ip(&["-n", &self.ns(fw), "link", "set", dev, state])?;
        }
        Ok(())
    }

    /// The last `lines` lines of the daemon log of `fw` (empty if there is none).
    pub fn log_tail(&self, fw: Node, lines: usize) -> String {
        tail(&self.log_path(fw), lines)
    }

    /// Kill every process in the lab's namespaces, delete the namespaces (and with them every
    /// veth and bridge) and the run directory. Idempotent; works on a half-built or crashed lab.
    pub fn down(&self) -> anyhow::Result<()> {
        let existing = netns_list()?;
        let ours: Vec<String> = Node::ALL
            .iter()
            .map(|&n| self.ns(n))
            .filter(|ns| existing.contains(ns))
            .collect();
        // Daemons whose pid file says they run, even if they left their namespace.
        let mut pids: Vec<i32> = Node::FIREWALLS
            .iter()
            .filter_map(|&fw| self.node_pid(fw))
            .collect();
        for ns in &ours {
            pids.extend(netns_pids(ns));
        }
        pids.sort_unstable();
        pids.dedup();
        self.kill_all(&pids);
        for ns in &ours {
            // A process may have been started in the namespace while we killed: once more.
            let late = netns_pids(ns);
            self.kill_all(&late);
            ip(&["netns", "del", ns]).or_else(|e| {
                if netns_list()?.contains(ns) {
                    Err(e)
                } else {
                    Ok(String::new())
                }
            })?;
        }
        match fs::remove_dir_all(&self.run_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(format!("removing {}", self.run_dir.display())),
        }
        // /run/tandem-lab itself stays: removing it would race with a parallel lab's `up`.
        Ok(())
    }

    /// SIGTERM, up to 2 s grace, then SIGKILL; waits (bounded) until they are gone.
    fn kill_all(&self, pids: &[i32]) {
        if pids.is_empty() {
            return;
        }
        for &pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let gone = |lab: &Lab| {
            for fw in Node::FIREWALLS {
                lab.reap(fw);
            }
            pids.iter().all(|&p| !alive(p))
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !gone(self) && Instant::now() < deadline {
            sleep(Duration::from_millis(10));
        }
        for &pid in pids {
            if alive(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !gone(self) && Instant::now() < deadline {
            sleep(Duration::from_millis(10));
        }
    }

    /// Collect the exit status of our own child in `fw` if it has exited (no zombie left behind).
    fn reap(&self, fw: Node) {
        let mut children = self.children_lock();
        let Some(child) = children.get_mut(&fw) else {
            return;
        };
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                children.remove(&fw);
                lock(&self.exits).insert(fw, status);
            }
            Err(_) => {
                children.remove(&fw);
            }
        }
    }

    /// How the daemon this process started in `fw` ended, if it has.
    pub fn exit_status(&self, fw: Node) -> Option<ExitStatus> {
        self.reap(fw);
        lock(&self.exits).get(&fw).copied()
    }

    fn children_lock(&self) -> std::sync::MutexGuard<'_, HashMap<Node, Child>> {
        lock(&self.children)
    }

    /// Namespaces, sysctls, bridges, cables, client and server addresses.
    ///
    /// Bridges: STP off, no forward delay, no multicast snooping (CARP and DHCP multicast must
    /// reach every port). VLAN filtering is off by default; naming it would fail on kernels built
    /// without it.
    fn build(&self) -> anyhow::Result<()> {
        fs::create_dir_all(&self.run_dir)
            .with_context(|| format!("creating {}", self.run_dir.display()))?;
        fs::write(
            self.run_dir.join("lab.json"),
            serde_json::to_vec_pretty(&self.opts)?,
        )?;
        for node in Node::ALL {
            let ns = self.ns(node);
            netns_add(&ns)?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // Before any device exists, so every device inherits it: v6 addresses usable at once.
            self.run(
                node,
                &[
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
            )?;
        }
        // The switch is a switch: no addresses, no router solicitations or MLD reports of its own.
        self.run(
            Node::Switch,
            &[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
        let sw = self.ns(Node::Switch);
        for br in [Bridge::Lan, Bridge::Wan] {
            ip(&[
                "-n",
                &sw,
                "link",
                "add",
                br.name(),
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ])?;
            ip(&["-n", &sw, "link", "set", br.name(), "up"])?;
        }
        for (port, node, dev, br) in CABLES {
            let ns = self.ns(node);
            ip(&[
                "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", port, "master", br.name(), "up"])?;
        }
        // The sync cable: fw1 em2 <-> fw2 em2.
        ip(&[
            "-n",
            &self.ns(Node::Fw1),
            "link",
            "add",
            "em2",
            "type",
            "veth",
            "peer",
            "name",
            "em2",
            "netns",
            &self.ns(Node::Fw2),
        ])?;

        let client = self.ns(Node::Client);
        ip(&["-n", &client, "link", "set", "eth0", "up"])?;
        if let Some(addr) = &self.opts.client_addr {
            ip(&["-n", &client, "addr", "add", &addr.cidr, "dev", "eth0"])?;
            if let Some(gw) = &addr.gateway {
                ip(&["-n", &client, "route", "add", "default", "via", gw])?;
            }
        }
        let server = self.ns(Node::Server);
        ip(&["-n", &server, "addr", "add", SERVER_ADDR, "dev", "eth0"])?;
        ip(&["-n", &server, "link", "set", "eth0", "up"])?;

        if self.opts.fw_addresses {
            for (fw, dev, cidr) in FW_ADDRESSES {
                let ns = self.ns(fw);
                ip(&["-n", &ns, "addr", "add", cidr, "dev", dev])?;
                ip(&["-n", &ns, "link", "set", dev, "up"])?;
            }
        }
        Ok(())
    }

    /// Start both daemons and wait until both answer `system.status`.
    fn boot_pair(&self) -> anyhow::Result<()> {
        for fw in Node::FIREWALLS {
            self.start_node(fw)?;
        }
        let deadline = Instant::now() + BOOT_TIMEOUT;
        for fw in Node::FIREWALLS {
            self.wait_ready(fw, deadline.saturating_duration_since(Instant::now()))?;
        }
        Ok(())
    }

    /// Wait until the daemon in `fw` answers `system.status`. Fails at once, with the end of
    /// its log, if it exits; fails after `timeout` if it never answers.
    pub fn wait_ready(&self, fw: Node, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.node_pid(fw).is_none() {
                let how = match self.exit_status(fw) {
                    Some(status) => status.to_string(),
                    None => "not running".into(),
                };
                bail!(
                    "{fw}: tandem exited during boot ({how}); last lines of {}:\n{}",
                    self.log_path(fw).display(),
                    indent(&self.log_tail(fw, 20))
                );
            }
            let socket = self.socket(fw);
            let answered = socket.exists()
                && crate::ctl::call(
                    &socket,
                    "system.status",
                    serde_json::json!({}),
                    Duration::from_secs(1),
                )
                .is_ok();
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{fw}: no answer to system.status on {} within {:.1} s; last lines of {}:\n{}",
                    socket.display(),
                    timeout.as_secs_f64(),
                    self.log_path(fw).display(),
                    indent(&self.log_tail(fw, 20))
                );
            }
            sleep(Duration::from_millis(50));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Is `pid` a live (not zombie) process?
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Run `ip ARGS`; an error (with stderr) unless it exits 0. Returns stdout.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of every network namespace (`ip netns list`).
pub fn netns_list() -> anyhow::Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Pids of the processes in namespace `ns` (empty if it does not exist).
pub fn netns_pids(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// A network namespace of its own for a measurement or a test, deleted on drop.
pub struct TempNetns(pub String);

impl TempNetns {
    /// Creates namespace `name` (callers make it unique, e.g. with their pid).
    pub fn new(name: &str) -> anyhow::Result<TempNetns> {
        netns_add(name)?;
        Ok(TempNetns(name.to_string()))
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// `ip netns add`, retried: concurrent first uses of /run/netns can race in iproute2.
fn netns_add(ns: &str) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..5 {
        match ip(&["netns", "add", ns]) {
            Ok(_) => return Ok(()),
            Err(e) => {
                if netns_list()?.iter().any(|n| n == ns) {
                    // Created by the failed attempt's half: remove and retry from clean.
                    let _ = ip(&["netns", "del", ns]);
                }
                last = Some(e);
                sleep(Duration::from_millis(50));
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("ip netns add {ns} failed")))
}

/// The last `lines` lines of a file, reading at most its last 64 KiB.
fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (empty log)".into();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        for good in ["tdm", "tt123x", "a", "abcdefghijkl"] {
            check_prefix(good).unwrap();
        }
        for bad in ["", "1ab", "Tdm", "a-b", "abcdefghijklm", "a b", "a/b"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_fit() {
        let lab = Lab::new("abcdefghijkl", LabOptions::default());
        assert_eq!(lab.ns(Node::Client), "abcdefghijkl-client");
        // Unix socket paths are limited to 108 bytes.
        assert!(lab.socket(Node::Fw2).as_os_str().len() < 108);
        for (port, _, dev, _) in CABLES {
            assert!(port.len() <= 15 && dev.len() <= 15);
        }
    }

    #[test]
    fn tails() {
        let dir = std::env::temp_dir().join(format!("tandem-lab-tail-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("log");
        fs::write(&f, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&f, 2), "c\nd");
        assert_eq!(tail(&f, 10), "a\nb\nc\nd");
        assert_eq!(tail(&dir.join("missing"), 3), "");
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(indent(""), "    (empty log)");
    }

    #[test]
    fn liveness() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(i32::MAX));
    }
}
