//! `ecr-sniff decode`: serial bytes from the command line or a file, through the
//! same frame, reassembly, link and envelope layers as a capture.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use ecr_capture::analyzer::{Analyzer, Config};
use ecr_capture::textfile::{read_bytes, read_file, TextFileError};
use ecr_proto::link::Side;
use ecr_proto::Timestamp;

use crate::options::{load_keys, KeyArgs, OutputArgs};
use crate::WriterSink;

/// Parses hex text: white space, `:`, `-`, `,` and `0x` prefixes are ignored.
pub fn parse_hex(text: &str) -> Result<Vec<u8>> {
    let mut digits = Vec::with_capacity(text.len());
    let cleaned = text.replace("0x", "").replace("0X", "");
    for (i, c) in cleaned.chars().enumerate() {
        match c {
            c if c.is_ascii_hexdigit() => digits.push(c as u8),
            c if c.is_whitespace() || matches!(c, ':' | '-' | ',') => {}
            c => bail!("not hex: {c:?} at character {}", i + 1),
        }
    }
    if digits.len() % 2 != 0 {
        bail!("odd number of hex digits ({})", digits.len());
    }
    let nibble = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
    Ok(digits
        .chunks(2)
        .map(|p| (nibble(p[0]) << 4) | nibble(p[1]))
        .collect())
}

/// Most bytes `decode` reads (a file, or hex text on standard input): a few
/// messages, not a capture.
const MAX_INPUT: u64 = 16 << 20;

/// The bytes of a read bounded by [`MAX_INPUT`]; more is an error naming `what`.
fn bounded(read: Result<Vec<u8>, TextFileError>, what: &str) -> Result<Vec<u8>> {
    read.map_err(|e| match e {
        TextFileError::TooLarge { .. } => anyhow::anyhow!(
            "{what}: more than {} MiB: decode takes messages and short frame streams; analyse captures with `ecr-sniff analyze`",
            MAX_INPUT >> 20
        ),
        TextFileError::Io(e) => anyhow::Error::new(e).context(format!("cannot read {what}")),
        e => anyhow::Error::new(e).context(format!("cannot read {what}")),
    })
}

fn input_bytes(a: &DecodeArgs) -> Result<Vec<u8>> {
    if let Some(path) = &a.file {
        let bytes = bounded(read_file(path, MAX_INPUT), &path.display().to_string())?;
        if bytes.is_empty() {
            bail!(
                "{}: empty file (0 bytes): nothing to decode",
                path.display()
            );
        }
        // A file of hex text is read as hex; anything else as the raw bytes.
        let is_hex_text = !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace() || *b == b':');
        if is_hex_text {
            return parse_hex(&String::from_utf8_lossy(&bytes))
                .with_context(|| format!("{}", path.display()));
        }
        return Ok(bytes);
    }
    match a.hex.as_deref() {
        Some("-") => {
            let bytes = bounded(read_bytes(io::stdin().lock(), MAX_INPUT), "standard input")?;
            parse_hex(&String::from_utf8_lossy(&bytes)).context("standard input")
        }
        Some(h) => parse_hex(h).context("the HEX argument"),
        None => bail!("give hex bytes or --file"),
    }
}

pub fn run(a: DecodeArgs) -> Result<ExitCode> {
    let keys = load_keys(&a.keys)?;
    let bytes = input_bytes(&a)?;
    let from = match a.from {
        SideArg::Ecr => Side::Ecr,
        SideArg::Pos => Side::Pos,
    };
    let stdout = io::stdout();
    let mut sink = WriterSink::new(a.output.writer(stdout.lock()));
    // Bytes from the command line have no capture end: "still waiting when the
    // capture ended" would only be noise here.
    let cfg = Config {
        report_unanswered_at_end: false,
        ..Config::default()
    };
    let mut analyzer = Analyzer::new(cfg, keys, &mut sink);
    // No capture time: everything is at time 0, so no timing rule can fire.
    analyzer.serial_chunk(0, ("ECR", "POS"), from, &bytes, Timestamp(0), None);
    let (_, _) = analyzer.finish(bytes.len() as u64, vec![]);
    sink.finish().context("writing output")?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SideArg {
    /// The bytes were sent by the cash register.
    Ecr,
    /// The bytes were sent by the terminal.
    Pos,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Serial bytes as hex (spaces, colons and a 0x prefix are allowed); `-` reads
    /// hex from standard input.
    #[arg(value_name = "HEX", required_unless_present = "file")]
    pub hex: Option<String>,
    /// Read the bytes from a file instead: raw binary, or hex text (at most 16 MiB).
    #[arg(long, value_name = "FILE", conflicts_with = "hex")]
    pub file: Option<PathBuf>,
    /// Who sent the bytes.
    #[arg(long, value_enum, default_value = "ecr")]
    pub from: SideArg,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        assert_eq!(
            parse_hex("2f6e 01:10 0x7f").unwrap(),
            vec![0x2f, 0x6e, 1, 0x10, 0x7f]
        );
        assert!(parse_hex("2f6").is_err());
        assert!(parse_hex("zz").is_err());
    }
}
