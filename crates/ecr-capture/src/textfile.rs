//! Small text files the user names (key files, `check` expectation files), read
//! within a bound.
//!
//! These are configuration, not capture content, but a mistyped argument is
//! common (`--key-file capture.pcap`), and reading whatever was named whole would
//! take as much memory as the file is large before failing. So the read stops one
//! byte past the bound, and the errors say what was found: too large, or not text
//! (with the offset of the first byte that is not UTF-8).

use std::io::Read;
use std::path::Path;

/// Why a text file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TextFileError {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// More bytes than the bound.
    #[error("larger than {}", size_text(*max))]
    TooLarge {
        /// The bound, in bytes.
        max: u64,
    },
    /// Not UTF-8.
    #[error("not text (byte {offset} is not UTF-8)")]
    NotText {
        /// Offset of the first byte that is not part of a UTF-8 character.
        offset: usize,
    },
}

/// `1 MiB`, `64 MiB`, `512 KiB`, `100 bytes`.
fn size_text(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Reads all of `r` if it holds at most `max` bytes (more is
/// [`TextFileError::TooLarge`], found after reading `max + 1` bytes at most).
pub fn read_bytes(r: impl Read, max: u64) -> Result<Vec<u8>, TextFileError> {
    let mut bytes = Vec::new();
    r.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(TextFileError::TooLarge { max });
    }
    Ok(bytes)
}

/// Reads the UTF-8 text of `r`, at most `max` bytes ([`read_bytes`]).
pub fn read_text(r: impl Read, max: u64) -> Result<String, TextFileError> {
    as_text(read_bytes(r, max)?)
}

/// [`read_bytes`] of the file at `path`. A regular file larger than `max` is
/// refused by its size, before any of it is read.
pub fn read_file(path: &Path, max: u64) -> Result<Vec<u8>, TextFileError> {
    let f = std::fs::File::open(path)?;
    match f.metadata() {
        Ok(m) if m.is_file() && m.len() > max => Err(TextFileError::TooLarge { max }),
        _ => read_bytes(f, max),
    }
}

/// [`read_text`] of the file at `path`, refused by its size like [`read_file`].
pub fn read_text_file(path: &Path, max: u64) -> Result<String, TextFileError> {
    as_text(read_file(path, max)?)
}

fn as_text(bytes: Vec<u8>) -> Result<String, TextFileError> {
    String::from_utf8(bytes).map_err(|e| TextFileError::NotText {
        offset: e.utf8_error().valid_up_to(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_up_to_the_bound() {
        assert_eq!(read_text(&b"abc\n"[..], 4).unwrap(), "abc\n");
        assert_eq!(read_text(&b""[..], 4).unwrap(), "");
    }

    #[test]
    fn one_byte_more_is_too_large_and_says_the_bound() {
        let e = read_text(&b"abcde"[..], 4).unwrap_err();
        assert!(matches!(e, TextFileError::TooLarge { max: 4 }), "{e:?}");
        assert_eq!(e.to_string(), "larger than 4 bytes");
        let e = read_text(&[b'x'; 2049][..], 2048).unwrap_err();
        assert_eq!(e.to_string(), "larger than 2 KiB");
        assert_eq!(
            TextFileError::TooLarge { max: 1 << 20 }.to_string(),
            "larger than 1 MiB"
        );
    }

    #[test]
    fn reads_no_more_than_one_byte_past_the_bound() {
        // An endless reader: the bound alone ends the read.
        let e = read_text(std::io::repeat(b'k'), 1000).unwrap_err();
        assert!(matches!(e, TextFileError::TooLarge { max: 1000 }));
    }

    #[test]
    fn binary_is_not_text_with_the_offset() {
        let pcap = [0x41, 0x42, 0xd4, 0xc3, 0xb2, 0xa1];
        let e = read_text(&pcap[..], 100).unwrap_err();
        assert!(matches!(e, TextFileError::NotText { offset: 2 }), "{e:?}");
        assert_eq!(e.to_string(), "not text (byte 2 is not UTF-8)");
    }

    #[test]
    fn a_large_file_is_refused_by_its_size() {
        let dir = std::env::temp_dir().join(format!("ecr-textfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.txt");
        std::fs::write(&path, [b'k'; 100]).unwrap();
        assert!(matches!(
            read_text_file(&path, 99),
            Err(TextFileError::TooLarge { max: 99 })
        ));
        assert_eq!(read_text_file(&path, 100).unwrap().len(), 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let e = read_text_file(Path::new("/nonexistent/keys.txt"), 10).unwrap_err();
        assert!(matches!(e, TextFileError::Io(_)), "{e:?}");
    }
}
