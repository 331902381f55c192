//! Stops the build at once, with the package to install, when the feature `live` is
//! on and libpcap's development files are missing (instead of a long compile that
//! ends in a linker error about `-lpcap`).

#[path = "build/libpcap.rs"]
mod libpcap;

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/libpcap.rs");
    println!("cargo:rerun-if-env-changed=LIBPCAP_LIBDIR");
    if std::env::var_os("CARGO_FEATURE_LIVE").is_none() || std::env::var_os("DOCS_RS").is_some() {
        return;
    }
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    // macOS ships libpcap in its SDK, Windows in the Npcap SDK: the linker finds them
    // where this script cannot look reliably, so the check is for Linux and the BSDs.
    if matches!(target_os.as_str(), "macos" | "ios" | "windows") {
        return;
    }
    let libdir = std::env::var_os("LIBPCAP_LIBDIR").map(PathBuf::from);
    let pkg_config = || {
        pkg_config::Config::new()
            .cargo_metadata(false)
            .env_metadata(false)
            .probe("libpcap")
            .is_ok()
    };
    let dirs = libpcap::system_dirs(&target_arch);
    if libpcap::detect(libdir.as_deref(), pkg_config, &dirs, &target_os).is_none() {
        eprintln!("{}", libpcap::missing_message(libdir.as_deref()));
        std::process::exit(1);
    }
}
