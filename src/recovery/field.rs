//! GF(2^16) as PAR2 defines it: the generator polynomial x^16 + x^12 + x^3 + x + 1 (0x1100B), with 2 as
//! the primitive element, and PAR2's choice of one constant per source slice.

use std::sync::OnceLock;

const POLYNOMIAL: u32 = 0x1100B;
/// The multiplicative group's order: 2 to the power 65535 is 1 again.
pub(super) const ORDER: u32 = 65535;
/// PAR2 gives each source slice a constant whose logarithm is coprime to 65535; there are 32768 of them.
pub const MAX_SOURCE_SLICES: usize = 32768;

pub(super) struct Field {
    log: Vec<u16>,
    /// Twice the period, so that the sum of two logarithms needs no reduction.
    exp: Vec<u16>,
}

/// The field's tables, built once (256 KiB).
pub(super) fn field() -> &'static Field {
    static FIELD: OnceLock<Field> = OnceLock::new();
    FIELD.get_or_init(|| {
        let mut log = vec![0u16; 1 << 16];
        let mut exp = vec![0u16; 2 * ORDER as usize];
        let mut x: u32 = 1;
        for power in 0..ORDER as usize {
            exp[power] = x as u16;
            exp[power + ORDER as usize] = x as u16;
            log[x as usize] = power as u16;
            x <<= 1;
            if x & 0x1_0000 != 0 {
                x ^= POLYNOMIAL;
            }
        }
        Field { log, exp }
    })
}

impl Field {
    pub(super) fn mul(&self, a: u16, b: u16) -> u16 {
        if a == 0 || b == 0 {
            return 0;
        }
        self.exp[self.log[a as usize] as usize + self.log[b as usize] as usize]
    }

    /// The logarithm of a non-zero element.
    pub(super) fn log(&self, a: u16) -> u16 {
        self.log[a as usize]
    }

    /// 2^(a + b), for logarithms a and b.
    pub(super) fn exp(&self, a: u16, b: u16) -> u16 {
        self.exp[a as usize + b as usize]
    }

    /// The inverse of a non-zero element.
    pub(super) fn inverse(&self, a: u16) -> u16 {
        debug_assert_ne!(a, 0);
        self.exp[(ORDER - u32::from(self.log[a as usize])) as usize % ORDER as usize]
    }

    /// 2^(log · exponent): the constant of a source slice (`log` from [`source_logs`]) raised to a
    /// recovery slice's exponent, the coefficient of that source in that recovery slice.
    pub(super) fn power(&self, log: u16, exponent: u32) -> u16 {
        let reduced = (u64::from(log) * u64::from(exponent % ORDER)) % u64::from(ORDER);
        self.exp[reduced as usize]
    }
}

/// `x · 2`: one step of the shift-and-reduce multiplication.
pub(super) fn times_two(value: u16) -> u16 {
    let shifted = u32::from(value) << 1;
    (if shifted & 0x1_0000 != 0 {
        shifted ^ POLYNOMIAL
    } else {
        shifted
    }) as u16
}

/// The logarithms of the first `count` source constants, in PAR2's order: the numbers from 1 up that
/// share no factor with 65535 (= 3·5·17·257). At most [`MAX_SOURCE_SLICES`].
pub(super) fn source_logs(count: usize) -> Vec<u16> {
    (1..ORDER)
        .filter(|n| n % 3 != 0 && n % 5 != 0 && n % 17 != 0 && n % 257 != 0)
        .take(count)
        .map(|n| n as u16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Multiplication the slow way: shift and add, reducing by the polynomial.
    fn slow_mul(a: u16, b: u16) -> u16 {
        let (mut a, mut product) = (a, 0u16);
        for bit in 0..16 {
            if b >> bit & 1 == 1 {
                product ^= a;
            }
            a = times_two(a);
        }
        product
    }

    #[test]
    fn tables_multiply_as_the_polynomial_does() {
        let field = field();
        let mut x = 0x1234u16;
        for _ in 0..10_000 {
            x = x.wrapping_mul(31).wrapping_add(7);
            let y = x.rotate_left(5) ^ 0xA5A5;
            assert_eq!(field.mul(x, y), slow_mul(x, y), "{x} * {y}");
        }
        assert_eq!(field.mul(0, 5), 0);
        // 2^16 reduces to the polynomial's low terms.
        assert_eq!(slow_mul(0x8000, 2), 0x100B);
    }

    #[test]
    fn every_non_zero_element_has_an_inverse() {
        let field = field();
        for a in 1..=u16::MAX {
            assert_eq!(field.mul(a, field.inverse(a)), 1, "{a}");
        }
    }

    #[test]
    fn source_constants_follow_par2s_sequence() {
        // par2cmdline: logbase 1, 2, 4, 7, 8, 11, 13, 14, 16, 19, ... (coprime to 65535).
        assert_eq!(source_logs(10), [1, 2, 4, 7, 8, 11, 13, 14, 16, 19]);
        let all = source_logs(usize::MAX);
        assert_eq!(all.len(), MAX_SOURCE_SLICES);
        assert_eq!(field().power(1, 1), 2);
        assert_eq!(field().power(7, 0), 1);
        assert_eq!(field().power(2, 3), field().power(1, 6));
    }
}
