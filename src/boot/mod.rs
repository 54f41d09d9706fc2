//! Rootfs overlay, state directory, first-boot defaults.

use std::path::PathBuf;

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
pub fn run(_args: BootArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet implemented")
}
