//! Rootfs overlay, state directory, first-boot defaults.

pub mod overlay;

use std::path::PathBuf;

use actix::Actor;

use crate::actor::control::Control;
use crate::actor::store::ConfigStore;
use crate::bus::Bus;
use crate::supervisor::{AdoptControlMsg, BootInfo, ShutdownMsg, Supervisor};
use crate::sys::netlink;

/// `tandem boot` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct BootArgs {
    /// Lower (read-only) rootfs layer; default: the factory rootfs built into the binary.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// State directory (overlay upper layer, history, leases, socket).
    #[arg(long, default_value = "/var/lib/tandem")]
    pub state: PathBuf,
    /// Config to seed /conf/config.xml with on first boot (default: the factory config).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Control socket path (default: <state>/tandem.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// Boot the node and run until SIGTERM/SIGINT.
///
/// Order matters: the mount namespace is unshared before any thread exists; then the actix system
/// starts the config store, the supervisor (which starts the other actors) and the control socket.
pub fn run(args: BootArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let state = args.state.clone();
    std::fs::create_dir_all(&state)
        .with_context(|| format!("creating state dir {}", state.display()))?;
    let state = state.canonicalize()?;
    let lower = match &args.root {
        Some(r) => r
            .canonicalize()
            .with_context(|| format!("--root {}", r.display()))?,
        None => {
            let d = state.join("factory-rootfs");
            overlay::extract_factory(&d).context("extracting the factory rootfs")?;
            d
        }
    };
    let seed = match &args.config {
        Some(p) => {
            Some(std::fs::read(p).with_context(|| format!("reading --config {}", p.display()))?)
        }
        None => None,
    };
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| state.join("tandem.sock"));
    let (layers, why_not) =
        overlay::setup(&lower, &state).context("setting up the rootfs overlay")?;
    match &why_not {
        None => {
            tracing::info!(lower = %lower.display(), upper = %layers.upper.display(), "rootfs: overlayfs mounted in a private mount namespace")
        }
        Some(why) => {
            tracing::info!(lower = %lower.display(), upper = %layers.upper.display(), "rootfs: overlayfs not available ({why}); using in-process lookup (upper, then lower)")
        }
    }
    let (store, findings) = ConfigStore::open(layers.clone(), state.clone(), seed)?;
    for f in &findings {
        match f.severity {
            crate::config::Severity::Error => tracing::error!("config: {f}"),
            crate::config::Severity::Warning => tracing::warn!("config: {f}"),
        }
    }
    let boot = BootInfo {
        state_dir: state.clone(),
        socket: socket.clone(),
        overlay: layers.kind,
        overlay_note: why_not,
        lower_or_merged: layers.merged.clone().unwrap_or_else(|| lower.clone()),
        lower,
    };

    let sys = actix::System::new();
    let sock = socket.clone();
    let started: anyhow::Result<()> = sys.block_on(async move {
        let bus = Bus::new();
        let nl = netlink::connect().context("opening rtnetlink")?;
        let config = store.current();
        let revision = store.revision();
        let store = store.start();
        let sup = Supervisor::new(bus.clone(), nl, store, config, revision, boot).start();
        let control = Control::bind(sock.clone(), sup.clone(), bus)
            .with_context(|| format!("binding the control socket {}", sock.display()))?;
        let control = control.start();
        sup.do_send(AdoptControlMsg(control));
        actix_rt::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
            if sup.send(ShutdownMsg).await.is_err() {
                actix::System::current().stop();
            }
        });
        Ok(())
    });
    if let Err(e) = started {
        let _ = std::fs::remove_file(&socket);
        return Err(e);
    }
    sys.run()?;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}
