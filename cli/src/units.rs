//! Parsers for the values flags take: durations (`80ms`, `1.5s`), rates
//! (`5000/s`, `300/min`), fractions (`20%`, `0.2`), worker ranges
//! (`2..64`). Each error says what was expected, and clap names the flag.

use std::time::Duration;

/// A duration: a number and a unit (`ns`, `us`, `ms`, `s`, `m`, `h`).
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| {
            format!("`{s}` has no unit: expected a duration such as 80ms, 1.5s or 2m")
        })?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("`{s}` is not a duration: expected a number and a unit, such as 80ms")
    })?;
    let seconds = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{unit}`: expected ns, us, ms, s, m or h"
            ))
        }
    };
    let total = value * seconds;
    if !total.is_finite() || total > 1e9 {
        return Err(format!("`{s}` is too long a duration"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// A duration above zero.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() {
        return Err(format!("`{s}` is zero: expected a duration above zero"));
    }
    Ok(d)
}

/// A rate per second: `5000/s`, `5000` (per second), `300/min`, `2/ms`,
/// `10/h`; above zero.
pub fn rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, per) = match t.split_once('/') {
        Some((n, p)) => (n, p),
        None => (t, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a rate: expected a number per unit, such as 5000/s"))?;
    let per_second = match per.trim() {
        "s" => 1.0,
        "ms" => 1e3,
        "m" | "min" => 1.0 / 60.0,
        "h" => 1.0 / 3600.0,
        other => {
            return Err(format!(
                "`{s}` has an unknown unit `{other}`: expected /s, /ms, /min or /h"
            ))
        }
    };
    let rate = value * per_second;
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!(
            "`{s}` is not above zero: expected a positive rate such as 5000/s"
        ));
    }
    Ok(rate)
}

/// A fraction in [0, 1]: `20%` or `0.2`.
pub fn fraction(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let value = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| {
        format!("`{s}` is not a fraction: expected a percentage (20%) or a number (0.2)")
    })?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!(
            "`{s}` is out of range: expected 0% to 100% (0 to 1)"
        ));
    }
    Ok(value)
}

/// A fraction in (0, 1].
pub fn utilisation(s: &str) -> Result<f64, String> {
    let u = fraction(s)?;
    if u == 0.0 {
        return Err(format!(
            "`{s}` is zero: expected a utilisation above 0 and at most 1"
        ));
    }
    Ok(u)
}

/// A count above zero.
pub fn count(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    if n == 0 {
        return Err(format!("`{s}` is zero: expected at least 1"));
    }
    Ok(n)
}

/// An elastic worker range `MIN..MAX`, 1 ≤ MIN ≤ MAX.
pub fn worker_range(s: &str) -> Result<(usize, usize), String> {
    let (lo, hi) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}` is not a range: expected MIN..MAX, such as 2..64"))?;
    let lo = count(lo).map_err(|e| format!("minimum: {e}"))?;
    let hi = count(hi).map_err(|e| format!("maximum: {e}"))?;
    if lo > hi {
        return Err(format!(
            "`{s}` has its minimum above its maximum: expected MIN..MAX with MIN <= MAX"
        ));
    }
    Ok((lo, hi))
}

/// A duration as people read it: `80 ms`, `1.50 s`, `250 µs`.
pub fn show(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_rates_and_fractions_parse_with_their_units() {
        assert_eq!(duration("80ms"), Ok(Duration::from_millis(80)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("250us"), Ok(Duration::from_micros(250)));
        assert!(duration("80").unwrap_err().contains("no unit"));
        assert!(duration("80 parsecs").unwrap_err().contains("unknown unit"));
        assert!(duration("fast").is_err());
        assert!(positive_duration("0s").unwrap_err().contains("zero"));
        assert_eq!(rate("5000/s"), Ok(5000.0));
        assert_eq!(rate("5000"), Ok(5000.0));
        assert_eq!(rate("120/min"), Ok(2.0));
        assert!(rate("0/s").unwrap_err().contains("above zero"));
        assert!(rate("-5/s").unwrap_err().contains("above zero"));
        assert!(rate("5/fortnight").unwrap_err().contains("unknown unit"));
        assert_eq!(fraction("20%"), Ok(0.2));
        assert_eq!(fraction("0.25"), Ok(0.25));
        assert!(fraction("120%").unwrap_err().contains("out of range"));
        assert!(utilisation("0").is_err());
        assert_eq!(worker_range("2..64"), Ok((2, 64)));
        assert!(worker_range("8..2").unwrap_err().contains("minimum above"));
        assert!(worker_range("0..2").unwrap_err().contains("zero"));
        assert!(count("0").is_err());
        assert_eq!(count("1_000"), Ok(1000));
    }
}
