//! Lower-case hex: the one encoding of the digests, keys and random tokens aegird makes.

use std::fmt::Write as _;

pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `bytes` random bytes from the thread's CSPRNG, as `2 * bytes` hex characters.
pub fn random(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    encode(&buf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lower_case_and_random_tokens_differ() {
        assert_eq!(super::encode(&[0x00, 0xab, 0xff]), "00abff");
        let (a, b) = (super::random(32), super::random(32));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
