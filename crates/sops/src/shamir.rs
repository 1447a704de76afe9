//! Recombining a data key split with Shamir's scheme across key groups.
//!
//! Same construction as the one sops takes from HashiCorp Vault: arithmetic in GF(2^8)
//! with the AES polynomial x^8 + x^4 + x^3 + x + 1; each share is the y-bytes followed by
//! one x-coordinate byte; the secret is the polynomial evaluated at x = 0.

use zeroize::Zeroizing;

/// Multiplication in GF(2^8), without table lookups.
fn mul(a: u8, b: u8) -> u8 {
    let mut r: u8 = 0;
    for i in (0..8).rev() {
        let bit = (b >> i) & 1;
        let carry = r >> 7;
        r = (r << 1) ^ (0x1b * carry);
        r ^= a * bit;
    }
    r
}

/// Multiplicative inverse (a^254); 0 maps to 0.
fn inv(a: u8) -> u8 {
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u32;
    while e > 0 {
        if e & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    result
}

/// Combines shares into the secret. Returns `None` for inconsistent input (fewer than two
/// shares, different lengths, too short, or repeated x coordinates).
pub(crate) fn combine(shares: &[Zeroizing<Vec<u8>>]) -> Option<Zeroizing<Vec<u8>>> {
    if shares.len() < 2 {
        return None;
    }
    let len = shares[0].len();
    if len < 2 || shares.iter().any(|s| s.len() != len) {
        return None;
    }
    let xs: Vec<u8> = shares.iter().map(|s| s[len - 1]).collect();
    for (i, x) in xs.iter().enumerate() {
        if xs[..i].contains(x) {
            return None;
        }
    }
    let mut secret = Zeroizing::new(vec![0u8; len - 1]);
    for (byte, out) in secret.iter_mut().enumerate() {
        let mut acc = 0u8;
        for (i, share) in shares.iter().enumerate() {
            let mut basis = 1u8;
            for (j, xj) in xs.iter().enumerate() {
                if i != j {
                    // (0 - xj) / (xi - xj); subtraction is xor.
                    basis = mul(basis, mul(*xj, inv(xs[i] ^ xj)));
                }
            }
            acc ^= mul(share[byte], basis);
        }
        *out = acc;
    }
    Some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_inverse() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
        }
        assert_eq!(mul(0x57, 0x83), 0xc1); // FIPS-197 example
    }

    #[test]
    fn combine_linear_polynomial() {
        // f(x) = 42 + 7x for one byte: shares at x = 1 and x = 2.
        let f = |x: u8| 42 ^ mul(7, x);
        let shares = vec![Zeroizing::new(vec![f(1), 1]), Zeroizing::new(vec![f(2), 2])];
        assert_eq!(combine(&shares).unwrap().as_slice(), &[42]);
    }
}
