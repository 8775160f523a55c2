//! Bearer tokens: made at random, kept in the config only as their SHA-256
//! hash, and compared in constant time.

use std::fmt::Write as _;

use ring::{digest, rand::SecureRandom as _};
use subtle::ConstantTimeEq as _;

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Whether two hashes are equal, in time that does not depend on where
/// they differ.
pub(crate) fn equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The 32 bytes of a 64-digit hex hash, or `None`.
pub fn parse_hex_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A new random token: 32 bytes from the system's secure generator, in
/// hex, prefixed so that it is recognisable in a leaked file.
pub fn generate() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(format!("ct_{}", hex(&bytes)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// SHA-256 as everyone computes it (`printf abc | sha256sum`).
    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let hash = sha256(b"token");
        assert_eq!(parse_hex_hash(&hex(&hash)), Some(hash));
        assert_eq!(parse_hex_hash(&hex(&hash).to_uppercase()), Some(hash));
        assert_eq!(parse_hex_hash("abc"), None);
        assert_eq!(parse_hex_hash(&"g".repeat(64)), None);
        assert_eq!(parse_hex_hash(&"é".repeat(32)), None);
    }

    #[test]
    fn generated_tokens_differ_and_look_alike() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("ct_") && a.len() == 67, "{a}");
        assert!(equal(&sha256(a.as_bytes()), &sha256(a.as_bytes())));
        assert!(!equal(&sha256(a.as_bytes()), &sha256(b.as_bytes())));
    }
}
