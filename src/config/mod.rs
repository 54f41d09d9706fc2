//! OPNsense `config.xml`: a byte-exact DOM, the typed model tandem uses, validation and diff.

pub mod dom;

use std::path::Path;
use std::process::ExitCode;

/// `tandem config check FILE`.
pub fn check_command(_file: &Path) -> ExitCode {
    ExitCode::FAILURE
}
