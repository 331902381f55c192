//! `ecr-sniff extcap` (issue 5). Placeholder until that issue lands: the command exists
//! so that its module can be developed on its own, and says plainly that it is not
//! available yet.

use std::process::ExitCode;

use anyhow::{bail, Result};

/// Arguments of `ecr-sniff extcap`.
#[derive(Debug, clap::Args)]
pub struct ExtcapArgs {}

pub fn run(_: ExtcapArgs) -> Result<ExitCode> {
    bail!("`ecr-sniff extcap` is not implemented yet (issue 5)")
}
