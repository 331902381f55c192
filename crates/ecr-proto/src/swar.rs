//! Eight bytes at a time in a register ("SIMD within a register"): the word tests
//! the JSON string scanners share (the string parser and its run copier here, the
//! JSON Lines writer's escape check and the 9002 text framer's quote search in
//! `ecr-capture`), written once.
//!
//! Each mask has the top bit of every byte that matches set, exactly up to and
//! including the lowest match: a borrow can flag bytes above it, so a caller uses
//! only the lowest set bit (`trailing_zeros() / 8`) or whether the mask is zero,
//! which is exact. A byte of 0x80 or more never matches (`!w` clears its top bit).

/// One in each byte of a word.
const ONES: u64 = 0x0101_0101_0101_0101;
/// The top bit of each byte of a word.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The eight bytes of `s` at `at`, little-endian (the first byte lowest), if there
/// are eight.
#[inline(always)]
pub fn word_at(s: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = s.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// `x`'s zero bytes, before the top bits are picked out.
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x
}

/// `w`'s bytes below 0x20, before the top bits are picked out.
#[inline(always)]
fn control_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES * 0x20) & !w
}

/// The bytes of `w` equal to `b` (the "has a zero byte" test of `w ^ b...b`).
#[inline(always)]
pub fn eq_mask(w: u64, b: u8) -> u64 {
    zero_bytes(w ^ (ONES * u64::from(b))) & HIGH
}

/// The bytes of `w` that end a run of plain JSON string text: a quote, a
/// backslash or a control character (the three tests, one mask at the end).
#[inline(always)]
pub fn json_special_mask(w: u64) -> u64 {
    let quote = zero_bytes(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_bytes(w ^ (ONES * u64::from(b'\\')));
    (quote | backslash | control_bytes(w)) & HIGH
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The lowest flagged byte, as the callers read a mask.
    fn lowest(m: u64) -> Option<usize> {
        (m != 0).then(|| (m.trailing_zeros() / 8) as usize)
    }

    proptest! {
        #[test]
        fn masks_find_the_first_match_exactly(
            b in proptest::array::uniform8(prop_oneof![
                Just(b'"'), Just(b'\\'), Just(0x1f), Just(0x20), Just(0x21), Just(0xa2),
                Just(0xdc), Just(0x00), any::<u8>()]),
        ) {
            let w = u64::from_le_bytes(b);
            prop_assert_eq!(lowest(eq_mask(w, b'"')), b.iter().position(|&c| c == b'"'));
            prop_assert_eq!(
                lowest(json_special_mask(w)),
                b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)
            );
        }
    }

    #[test]
    fn a_word_is_read_little_endian_and_only_whole() {
        assert_eq!(word_at(b"\x01\0\0\0\0\0\0\0x", 0), Some(1));
        assert_eq!(word_at(b"12345678", 1), None);
        assert_eq!(word_at(b"", usize::MAX), None);
    }
}
