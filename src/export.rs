//! `ecr-sniff export` (issue 4). Placeholder until that issue lands: the command exists
//! so that its module can be developed on its own, and says plainly that it is not
//! available yet.

use std::process::ExitCode;

use anyhow::{bail, Result};

/// Arguments of `ecr-sniff export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {}

pub fn run(_: ExportArgs) -> Result<ExitCode> {
    bail!("`ecr-sniff export` is not implemented yet (issue 4)")
}
