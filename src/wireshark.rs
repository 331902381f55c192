//! `ecr-sniff wireshark install|path|uninstall`: puts the dissector (`dissector/ecr.lua`,
//! built into the binary) into the personal Lua plugins folder that Wireshark and
//! tshark load at start, so that `wireshark` and `tshark` decode ECR traffic without
//! `-X lua_script:`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context as _, Result};

/// The dissector, as in the repository at build time.
pub const DISSECTOR: &str = include_str!("../dissector/ecr.lua");
/// Its file name in the plugins folder.
pub const FILE_NAME: &str = "ecr.lua";

const AFTER: &str = "\
The folder is the one `tshark -G folders` names \"Personal Lua Plugins\" (TSHARK selects
the tshark program); without tshark, ~/.local/lib/wireshark/plugins (on Windows
%APPDATA%\\Wireshark\\plugins). Wireshark loads it at start (or Analyze > Reload Lua
Plugins, Ctrl+Shift+L). Once installed, do not also pass -X lua_script:dissector/ecr.lua.

Set the POS-KEY in Wireshark under Edit > Preferences > Protocols > ECR, with
tshark -o ecr.pos_key:KEY, or through the environment variable ECR_POS_KEY.

Examples:
  ecr-sniff wireshark install
  tshark -G protocols | grep -w ecr          (check that tshark loads it)
  ecr-sniff wireshark path
  ecr-sniff wireshark uninstall";

/// Arguments of `ecr-sniff wireshark`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER)]
pub struct WiresharkArgs {
    #[command(subcommand)]
    pub action: Action,
}

/// What to do.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Copy the dissector into the personal Lua plugins folder (replacing an older copy).
    Install {
        /// Install into this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print where the dissector is (or would be) installed.
    Path {
        /// Look in this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Remove the installed dissector.
    Uninstall {
        /// Remove it from this folder instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The "Personal Lua Plugins" folder from `tshark -G folders` output.
pub fn personal_lua_folder(folders: &str) -> Option<PathBuf> {
    folders.lines().find_map(|l| {
        let rest = l.strip_prefix("Personal Lua Plugins:")?;
        let p = rest.trim();
        (!p.is_empty()).then(|| PathBuf::from(p))
    })
}

/// Wireshark's default personal Lua plugins folder, for when tshark is not there.
fn default_folder() -> Option<PathBuf> {
    if cfg!(windows) {
        return std::env::var_os("APPDATA").map(|a| PathBuf::from(a).join("Wireshark/plugins"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/lib/wireshark/plugins"))
}

/// The folder to use: `--dir`, else tshark's answer, else the default. The second
/// value says where the answer came from.
fn folder(dir: Option<PathBuf>) -> Result<(PathBuf, String)> {
    if let Some(d) = dir {
        return Ok((d, "--dir".into()));
    }
    let tshark = std::env::var_os("TSHARK").unwrap_or_else(|| OsString::from("tshark"));
    let asked = Command::new(&tshark)
        .args(["-G", "folders"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    if let Ok(out) = asked {
        if let Some(p) = personal_lua_folder(&String::from_utf8_lossy(&out.stdout)) {
            return Ok((p, format!("{} -G folders", tshark.to_string_lossy())));
        }
    }
    match default_folder() {
        Some(p) => Ok((p, "Wireshark's default (tshark not found)".into())),
        None => bail!("cannot tell the Lua plugins folder (no tshark, no HOME): give --dir"),
    }
}

pub fn run(a: WiresharkArgs) -> Result<ExitCode> {
    match a.action {
        Action::Install { dir } => {
            let (dir, from) = folder(dir)?;
            let target = dir.join(FILE_NAME);
            let before = std::fs::read(&target).ok();
            if before.as_deref() == Some(DISSECTOR.as_bytes()) {
                println!("{} is already installed and current", target.display());
                return Ok(ExitCode::SUCCESS);
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            write_atomically(&target, DISSECTOR.as_bytes())?;
            println!(
                "{} {} ({from})",
                if before.is_some() {
                    "replaced"
                } else {
                    "installed"
                },
                target.display()
            );
            println!(
                "Wireshark loads it at start (or Analyze > Reload Lua Plugins); check with: tshark -G protocols | grep -w ecr"
            );
            Ok(ExitCode::SUCCESS)
        }
        Action::Path { dir } => {
            let (dir, _) = folder(dir)?;
            println!("{}", dir.join(FILE_NAME).display());
            Ok(ExitCode::SUCCESS)
        }
        Action::Uninstall { dir } => {
            let (dir, _) = folder(dir)?;
            let target = dir.join(FILE_NAME);
            match std::fs::remove_file(&target) {
                Ok(()) => println!("removed {}", target.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("{} is not installed", target.display())
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", target.display()))
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes through a temporary file and a rename, so that a Wireshark starting at
/// the same moment never loads half a dissector.
fn write_atomically(target: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = target.with_extension("lua.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, target).with_context(|| format!("cannot write {}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_personal_lua_folder_from_tshark() {
        let out = "Temp:                \t/tmp\nPersonal Plugins:    \t/home/u/.local/lib/wireshark/plugins/4.0\nPersonal Lua Plugins:\t/home/u/.local/lib/wireshark/plugins\nGlobal Lua Plugins:  \t/usr/lib/x86_64-linux-gnu/wireshark/plugins\n";
        assert_eq!(
            personal_lua_folder(out),
            Some(PathBuf::from("/home/u/.local/lib/wireshark/plugins"))
        );
        assert_eq!(personal_lua_folder("Temp:\t/tmp\n"), None);
        assert!(DISSECTOR.contains("Proto("));
    }
}
