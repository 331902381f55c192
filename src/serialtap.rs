//! `ecr-sniff serial` (issue 5). Placeholder until that issue lands: the command exists
//! so that its module can be developed on its own, and says plainly that it is not
//! available yet.

use std::process::ExitCode;

use anyhow::{bail, Result};

/// Arguments of `ecr-sniff serial`.
#[derive(Debug, clap::Args)]
pub struct SerialArgs {}

pub fn run(_: SerialArgs) -> Result<ExitCode> {
    bail!("`ecr-sniff serial` is not implemented yet (issue 5)")
}
