// Finding libpcap's development files before anything is compiled against them.
//
// Shared by the build script (build.rs) and the crate's unit tests, so that the
// "library missing" path is tested without uninstalling anything. Plain std only.

use std::path::{Path, PathBuf};

/// Where the libpcap the `pcap` crate links against was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// `LIBPCAP_LIBDIR` names a folder holding the library.
    LibDir(PathBuf),
    /// `pkg-config libpcap` knows it.
    PkgConfig,
    /// A linkable library in one of the usual folders.
    System(PathBuf),
}

/// The file names a linker accepts for `-lpcap` on this target.
pub fn library_names(target_os: &str) -> &'static [&'static str] {
    match target_os {
        "windows" => &["wpcap.lib", "Packet.lib", "libwpcap.a"],
        "macos" | "ios" => &["libpcap.dylib", "libpcap.tbd", "libpcap.a"],
        _ => &["libpcap.so", "libpcap.a"],
    }
}

/// The folders a linker searches by default, in the order they are tried.
pub fn system_dirs(target_arch: &str) -> Vec<PathBuf> {
    let multiarch = format!("{target_arch}-linux-gnu");
    let mut v = vec![];
    for base in ["/usr/local/lib", "/usr/lib", "/lib"] {
        v.push(PathBuf::from(base).join(&multiarch));
        v.push(PathBuf::from(base));
    }
    for d in [
        "/usr/lib64",
        "/lib64",
        "/usr/lib/arm-linux-gnueabihf",
        "/usr/lib/i386-linux-gnu",
        "/opt/homebrew/opt/libpcap/lib",
        "/usr/local/opt/libpcap/lib",
        "/opt/homebrew/lib",
        "/opt/local/lib",
    ] {
        v.push(PathBuf::from(d));
    }
    v
}

/// The first folder of `dirs` holding one of `names`.
pub fn find_in(dirs: &[PathBuf], names: &[&str]) -> Option<PathBuf> {
    dirs.iter()
        .find(|d| names.iter().any(|n| d.join(n).is_file()))
        .cloned()
}

/// Looks for libpcap as the `pcap` crate will link it: `LIBPCAP_LIBDIR` when set
/// (and then only there), else pkg-config, else the usual folders.
pub fn detect(
    libdir: Option<&Path>,
    pkg_config: impl FnOnce() -> bool,
    dirs: &[PathBuf],
    target_os: &str,
) -> Option<Found> {
    let names = library_names(target_os);
    if let Some(dir) = libdir {
        return find_in(&[dir.to_path_buf()], names).map(Found::LibDir);
    }
    if pkg_config() {
        return Some(Found::PkgConfig);
    }
    find_in(dirs, names).map(Found::System)
}

/// What the build prints when libpcap is missing.
pub fn missing_message(libdir: Option<&Path>) -> String {
    let looked = match libdir {
        Some(d) => format!("in LIBPCAP_LIBDIR={}", d.display()),
        None => "with pkg-config or in the usual library folders".to_string(),
    };
    format!(
        "\n\
error: libpcap's development files were not found ({looked}).\n\
\n\
Live network capture (`ecr-sniff -i IFACE`, `ecr-sniff live`, the cargo feature `live`,\n\
on by default) links against libpcap. Install its development package:\n\
\n\
    Debian/Ubuntu:  sudo apt-get install libpcap-dev\n\
    Fedora/RHEL:    sudo dnf install libpcap-devel\n\
    Arch:           sudo pacman -S libpcap\n\
    macOS:          xcode-select --install   (or: brew install libpcap)\n\
\n\
or point LIBPCAP_LIBDIR at the folder holding libpcap.so / libpcap.a.\n\
\n\
Everything else (analyze, check, decode, export, the serial tap, send, emulate) builds\n\
without it:\n\
\n\
    cargo build --release --no-default-features\n\
    cargo install --path . --locked --no-default-features\n"
    )
}
