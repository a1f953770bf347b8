//! Exact arithmetic on Kubernetes quantities (`2Gi`, `500m`, `1e3`).
//!
//! Quota and capacity figures must add up exactly, so quantities are parsed into a rational
//! number of base units (bytes, or cores) with integer arithmetic: no floating point.

/// A parsed quantity, held as `numerator / 10^scale` base units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedQuantity {
    numerator: i128,
    scale: u32,
}

/// Why a string is not a Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a quantity: {reason}")]
pub struct QuantityError {
    input: String,
    reason: &'static str,
}

impl ParsedQuantity {
    /// Parse a quantity in Kubernetes syntax: an optional sign, a decimal number, then a
    /// binary suffix (Ki..Ei), a decimal suffix (n, u, m, k, M..E) or an exponent (e3).
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let err = |reason| QuantityError { input: input.to_owned(), reason };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err("it does not start with a number"));
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let digits = format!("{int_part}{frac_part}");
        if digits.len() > 30 {
            return Err(err("it has too many digits"));
        }
        let mut numerator: i128 = digits.parse().map_err(|_| err("it does not start with a number"))?;
        let mut scale = u32::try_from(frac_part.len()).map_err(|_| err("it has too many digits"))?;
        let (mul_pow2, exp10): (u32, i32) = match suffix {
            "" => (0, 0),
            "Ki" => (10, 0),
            "Mi" => (20, 0),
            "Gi" => (30, 0),
            "Ti" => (40, 0),
            "Pi" => (50, 0),
            "Ei" => (60, 0),
            "n" => (0, -9),
            "u" => (0, -6),
            "m" => (0, -3),
            "k" => (0, 3),
            "M" => (0, 6),
            "G" => (0, 9),
            "T" => (0, 12),
            "P" => (0, 15),
            "E" => (0, 18),
            s if s.starts_with(['e', 'E']) => {
                let e: i32 = s[1..].parse().map_err(|_| err("its exponent is not a number"))?;
                if !(-30..=30).contains(&e) {
                    return Err(err("its exponent is out of range"));
                }
                (0, e)
            }
            _ => return Err(err("its suffix is not one of Ki Mi Gi Ti Pi Ei n u m k M G T P E")),
        };
        let overflow = || err("it is too large");
        numerator = numerator.checked_mul(1i128 << mul_pow2).ok_or_else(overflow)?;
        if exp10 >= 0 {
            numerator = numerator
                .checked_mul(10i128.pow(exp10.unsigned_abs()))
                .ok_or_else(overflow)?;
        } else {
            scale += exp10.unsigned_abs();
        }
        if negative {
            numerator = -numerator;
        }
        Ok(Self { numerator, scale })
    }

    /// The value rounded up to a whole number of base units (bytes for memory and storage).
    pub fn ceil_units(&self) -> i128 {
        let den = 10i128.pow(self.scale);
        let q = self.numerator.div_euclid(den);
        if self.numerator.rem_euclid(den) == 0 { q } else { q + 1 }
    }

    /// The value in thousandths of a base unit, rounded up (millicores for CPU).
    pub fn ceil_milli(&self) -> i128 {
        Self { numerator: self.numerator.saturating_mul(1000), scale: self.scale }.ceil_units()
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.numerator < 0
    }
}

/// Parse a quantity and round it up to whole bytes.
pub fn to_bytes(q: &str) -> Result<i128, QuantityError> {
    ParsedQuantity::parse(q).map(|p| p.ceil_units())
}

/// Format a byte count the way Kubernetes prints memory: the largest binary suffix that
/// divides it exactly (`2Gi`, `1536Mi`, `100`).
pub fn format_bytes(bytes: i128) -> String {
    const SUFFIXES: [(&str, u32); 6] =
        [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
    if bytes != 0 {
        for (suffix, shift) in SUFFIXES {
            let unit = 1i128 << shift;
            if bytes % unit == 0 {
                return format!("{}{suffix}", bytes / unit);
            }
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_suffixes_parse_to_bytes() {
        assert_eq!(to_bytes("64Mi").unwrap(), 64 << 20);
        assert_eq!(to_bytes("2Gi").unwrap(), 2 << 30);
        assert_eq!(to_bytes("1.5Gi").unwrap(), 3 << 29);
    }

    #[test]
    fn decimal_suffixes_and_exponents_parse() {
        assert_eq!(to_bytes("1k").unwrap(), 1000);
        assert_eq!(to_bytes("1e3").unwrap(), 1000);
        assert_eq!(to_bytes("2G").unwrap(), 2_000_000_000);
        assert_eq!(ParsedQuantity::parse("500m").unwrap().ceil_milli(), 500);
        assert_eq!(ParsedQuantity::parse("500m").unwrap().ceil_units(), 1);
        assert_eq!(to_bytes("12345").unwrap(), 12345);
    }

    #[test]
    fn malformed_quantities_are_rejected_with_a_reason() {
        for bad in ["", "Gi", "2GB", "1..2", "abc", "2 Gi", "1e", "--1"] {
            let e = ParsedQuantity::parse(bad).unwrap_err();
            assert!(e.to_string().contains("is not a quantity"), "{bad}: {e}");
        }
    }

    #[test]
    fn negative_quantities_are_seen() {
        assert!(ParsedQuantity::parse("-1Gi").unwrap().is_negative());
        assert!(!ParsedQuantity::parse("0").unwrap().is_negative());
    }

    #[test]
    fn bytes_format_with_the_largest_exact_suffix() {
        assert_eq!(format_bytes(2 << 30), "2Gi");
        assert_eq!(format_bytes(1536 << 20), "1536Mi");
        assert_eq!(format_bytes(100), "100");
        assert_eq!(format_bytes(0), "0");
    }
}
