//! `ecr-sniff send` (issue 7). Placeholder until that issue lands: the command exists
//! so that its module can be developed on its own, and says plainly that it is not
//! available yet.

use std::process::ExitCode;

use anyhow::{bail, Result};

/// Arguments of `ecr-sniff send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {}

pub fn run(_: SendArgs) -> Result<ExitCode> {
    bail!("`ecr-sniff send` is not implemented yet (issue 7)")
}
