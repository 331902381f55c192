//! `ecr-sniff emulate` (issue 7). Placeholder until that issue lands: the command exists
//! so that its module can be developed on its own, and says plainly that it is not
//! available yet.

use std::process::ExitCode;

use anyhow::{bail, Result};

/// Arguments of `ecr-sniff emulate`.
#[derive(Debug, clap::Args)]
pub struct EmulateArgs {}

pub fn run(_: EmulateArgs) -> Result<ExitCode> {
    bail!("`ecr-sniff emulate` is not implemented yet (issue 7)")
}
