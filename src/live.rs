//! `ecr-sniff live` (issue 5). Placeholder until that issue lands: the command exists
//! so that its module can be developed on its own, and says plainly that it is not
//! available yet.

use std::process::ExitCode;

use anyhow::{bail, Result};

/// Arguments of `ecr-sniff live`.
#[derive(Debug, clap::Args)]
pub struct LiveArgs {}

pub fn run(_: LiveArgs) -> Result<ExitCode> {
    bail!("`ecr-sniff live` is not implemented yet (issue 5)")
}
