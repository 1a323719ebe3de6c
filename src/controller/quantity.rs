//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2`, `1e3`) as exact thousandths, so that
//! requests and limits can be compared the way the API server compares them.

/// The quantity in thousandths of its unit (`100m` → 100, `1Ki` → 1,024,000), rounded up as
/// the API server rounds sub-milli precision; `None` if it is not a well-formed quantity or
/// is too large.
pub fn milli(text: &str) -> Option<i128> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'-' => (-1, &text[1..]),
        b'+' => (1, &text[1..]),
        _ => (1, text),
    };
    let number_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') || fraction.len() > 18 {
        return None;
    }
    let mantissa: i128 = format!("{whole}{fraction}").parse().ok()?;
    let (num, den) = scale(suffix)?;
    let den = den.checked_mul(10i128.checked_pow(fraction.len() as u32)?)?;
    let value = mantissa.checked_mul(num)?.checked_mul(1000)?;
    // Round away from zero, as resource.Quantity does on parsing.
    let value = (value + den - 1) / den;
    (value <= i64::MAX as i128 * 1000).then_some(sign * value)
}

/// A suffix's value as a fraction.
fn scale(suffix: &str) -> Option<(i128, i128)> {
    let binary = |p: u32| Some((1i128 << (10 * p), 1));
    let decimal = |e: i32| {
        let p = 10i128.checked_pow(e.unsigned_abs())?;
        Some(if e >= 0 { (p, 1) } else { (1, p) })
    };
    match suffix {
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "" => decimal(0),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        _ => {
            let exp = suffix.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let e: i32 = exp.parse().ok()?;
            if e.abs() > 18 {
                return None;
            }
            decimal(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::milli;

    #[test]
    fn quantities_as_the_api_server_reads_them() {
        let cases: &[(&str, Option<i128>)] = &[
            ("0", Some(0)),
            ("1", Some(1000)),
            ("100m", Some(100)),
            ("0.1", Some(100)),
            (".5", Some(500)),
            ("1.", Some(1000)),
            ("1.5", Some(1500)),
            ("+2", Some(2000)),
            ("-2", Some(-2000)),
            ("1k", Some(1_000_000)),
            ("1Ki", Some(1_024_000)),
            ("64Mi", Some(64 * 1024 * 1024 * 1000)),
            ("1.5Gi", Some(1536 * 1024 * 1024 * 1000)),
            ("256M", Some(256_000_000_000)),
            ("1e3", Some(1_000_000)),
            ("1E3", Some(1_000_000)),
            ("1e-3", Some(1)),
            ("5e+2", Some(500_000)),
            // Sub-milli precision is rounded up.
            ("1n", Some(1)),
            ("1500u", Some(2)),
            ("0.0001", Some(1)),
            ("7Ei", Some(7 * (1i128 << 60) * 1000)),
            ("8Ei", None),
            ("", None),
            ("m", None),
            ("Mi", None),
            ("1.2.3", None),
            ("1 Mi", None),
            ("1mi", None),
            ("1MB", None),
            ("1e", None),
            ("1e1.5", None),
            ("1e99", None),
            ("99999999999999999999999", None),
            ("abc", None),
            ("--1", None),
        ];
        for (text, want) in cases {
            assert_eq!(milli(text), *want, "{text:?}");
        }
    }

    #[test]
    fn binary_and_decimal_compare_by_value() {
        assert!(milli("1Gi").unwrap() > milli("1G").unwrap());
        assert!(milli("1000m").unwrap() == milli("1").unwrap());
        assert!(milli("129Mi").unwrap() > milli("128Mi").unwrap());
    }
}
