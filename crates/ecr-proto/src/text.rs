//! Making strings from captures safe to print on a terminal.
//!
//! A value taken from the wire (a `channel`, an `out_trade_no`, an HTTP path or
//! header, a device or interface name) may contain bytes a terminal obeys: `ESC [2J`
//! clears the screen, `ESC ]0;...BEL` retitles the window, `\r` moves back to the
//! start of the line so that the rest overwrites it, `\n` starts a line that looks
//! like the tool's own output, and the Unicode bidi controls reorder what is shown.
//! [`escape_terminal`] writes every such character as visible text instead:
//!
//! - `\n`, `\r`, `\t` as those two-character escapes;
//! - every other C0 control and DEL as `\xNN` (ESC is `\x1b`);
//! - C1 controls (U+0080..U+009F), the bidi controls (U+061C, U+200E, U+200F,
//!   U+202A..U+202E, U+2066..U+2069) and the line and paragraph separators (U+2028,
//!   U+2029) as `\u{XXXX}`.
//!
//! Everything else, backslashes included, is left as it is, so ordinary values print
//! unchanged. JSON output needs none of this: JSON escaping already covers it.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is.
pub fn is_terminal_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// `s` with every terminal control character written as a visible escape (see the
/// module documentation). Borrows when there is nothing to escape.
pub fn escape_terminal(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(is_terminal_control) else {
        return Cow::Borrowed(s);
    };
    let (clean, rest) = s.split_at(first);
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(clean);
    for c in rest.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && is_terminal_control(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_terminal_control(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Bytes that should be text (a device name, an HTTP header) made printable: invalid
/// UTF-8 is replaced with U+FFFD, then [`escape_terminal`] applies.
pub fn escape_terminal_bytes(b: &[u8]) -> String {
    escape_terminal(&String::from_utf8_lossy(b)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_what_terminals_obey() {
        assert_eq!(escape_terminal("\x1b[2J"), "\\x1b[2J");
        assert_eq!(
            escape_terminal("\x1b]0;pwned\x07title"),
            "\\x1b]0;pwned\\x07title"
        );
        assert_eq!(
            escape_terminal("a\r\nMessage 99\tx"),
            "a\\r\\nMessage 99\\tx"
        );
        assert_eq!(escape_terminal("\u{9b}2J\u{7f}"), "\\u{009b}2J\\x7f");
        assert_eq!(
            escape_terminal("abc\u{202e}fed\u{2066}\u{200f}"),
            "abc\\u{202e}fed\\u{2066}\\u{200f}"
        );
        assert_eq!(escape_terminal("\u{2028}\u{61c}"), "\\u{2028}\\u{061c}");
        assert_eq!(escape_terminal_bytes(b"tty\xff\x1b"), "tty\u{fffd}\\x1b");
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        for s in [
            "",
            "wx",
            "O-2025 07/03 \\/ 香港 €10.10 😀",
            "\u{a0}\u{200b}",
        ] {
            assert!(matches!(escape_terminal(s), Cow::Borrowed(b) if b == s));
        }
    }

    proptest! {
        #[test]
        fn output_has_no_control_characters(s in any::<String>()) {
            let e = escape_terminal(&s);
            prop_assert!(!e.chars().any(is_terminal_control), "{:?}", e);
        }

        #[test]
        fn safe_characters_are_kept_in_order(s in any::<String>()) {
            // Dropping the escapes' own text is not possible in general, but every
            // character that needed no escape appears in the output in order.
            let e = escape_terminal(&s);
            let mut rest = e.chars();
            for c in s.chars().filter(|c| !is_terminal_control(*c)) {
                prop_assert!(rest.any(|o| o == c), "{:?} lost from {:?}", c, e);
            }
            prop_assert_eq!(
                e.chars().count(),
                s.chars()
                    .map(|c| match c {
                        '\n' | '\r' | '\t' => 2,
                        c if (c as u32) < 0x80 && is_terminal_control(c) => 4,
                        c if is_terminal_control(c) => 8,
                        _ => 1,
                    })
                    .sum::<usize>()
            );
        }

        #[test]
        fn lines_stay_lines(s in "[a-z\\n\\r\\x1b\u{202e}]{0,40}") {
            prop_assert_eq!(escape_terminal(&s).lines().count(), usize::from(!s.is_empty()));
        }
    }
}
