//! `ecr-sniff codes`: the finding codes as README's table or as JSON.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, ValueEnum};
use ecr_capture::findings::Code;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ecr-sniff codes
  ecr-sniff codes --format json | jq -r '.[] | select(.severity == \"error\") | .code'")]
pub struct CodesArgs {
    /// `text`: the Markdown table README shows; `json`: an array of
    /// {code, severity, rule} objects (what the Wireshark dissector is tested against).
    #[arg(long, value_enum, default_value = "text")]
    pub format: CodesFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CodesFormat {
    /// The Markdown table.
    Text,
    /// A JSON array.
    Json,
}

/// Runs `ecr-sniff codes`.
pub fn run(a: &CodesArgs) -> Result<ExitCode> {
    let mut out = io::stdout().lock();
    match a.format {
        CodesFormat::Text => write!(out, "{}", ecr_capture::findings::markdown_table())?,
        CodesFormat::Json => {
            let list: Vec<serde_json::Value> = Code::ALL
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "code": c.as_str(),
                        "severity": c.severity().as_str(),
                        "rule": c.rule(),
                    })
                })
                .collect();
            serde_json::to_writer_pretty(&mut out, &list)?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
