//! The two-firewall lab in network namespaces (used by `tandem lab` and the tests).

use std::process::ExitCode;

/// `tandem lab` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct LabArgs {
    /// up | down | status | demo
    pub action: String,
    /// Prefix of every namespace the lab creates.
    #[arg(long, default_value = "tdm")]
    pub prefix: String,
}

/// `tandem lab ...`.
pub fn command(_args: LabArgs) -> ExitCode {
    ExitCode::FAILURE
}
