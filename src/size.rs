//! Sizes as users write them on the command line and in image.conf.

use crate::error::UsageError;
use anyhow::Result;

/// `512M`, `8G`, `1073741824`: binary units, as QEMU and systemd read them.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => {
                    return Err(
                        UsageError::new(format!("size {s:?}: unknown unit (use K, M, G or T)")).into(),
                    );
                }
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| UsageError::new(format!("size {s:?} is not a number with an optional K/M/G/T")))?;
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("3X").is_err());
        assert!(parse_size("G").is_err());
    }
}
