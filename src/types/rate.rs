//! Byte rates as an operator writes them (`50MiB/s`, like `rsync --bwlimit` but with the
//! unit spelled out): parsed strictly, so `50M`, `50mib/s` or `50 MiB` are errors rather
//! than guesses, and shown back the same way.

/// The slowest limit taken: below this a single 64 KiB chunk would wait a minute.
pub const MIN_RATE: u64 = 1024;
/// The fastest limit taken (a limit above any link's speed is no limit).
pub const MAX_RATE: u64 = 1 << 40;

const UNITS: [(&str, u64); 7] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("kB", 1_000),
    ("B", 1),
];

/// Parses `N<unit>/s` (`N` a decimal number with at most three decimals; `unit` one of
/// `B`, `kB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`) into bytes per second, between
/// [`MIN_RATE`] and [`MAX_RATE`].
pub fn parse_rate(raw: &str) -> Result<u64, String> {
    let shown: String = raw.chars().take(40).collect();
    let bad = |why: &str| {
        format!("{shown:?} is not a byte rate ({why}): write it like 50MiB/s, 512KiB/s or 1.5GB/s")
    };
    let body = raw
        .strip_suffix("/s")
        .ok_or_else(|| bad("it must end in /s"))?;
    let (number, unit) = UNITS
        .iter()
        .find_map(|(u, m)| body.strip_suffix(u).map(|n| (n, *m)))
        .ok_or_else(|| bad("the unit is one of B, kB, KiB, MB, MiB, GB, GiB"))?;
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole)
        || (number.contains('.') && !digits(frac))
        || frac.len() > 3
        || whole.len() > 15
    {
        return Err(bad("the number is digits with at most three decimals"));
    }
    let whole: u64 = whole.parse().map_err(|_| bad("the number is too large"))?;
    let frac_thousandths: u64 = format!("{frac:0<3}")
        .parse()
        .map_err(|_| bad("the decimals are not digits"))?;
    let thousandths = whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(frac_thousandths))
        .and_then(|t| t.checked_mul(unit))
        .ok_or_else(|| bad("it is too large"))?;
    let rate = thousandths / 1000;
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(format!(
            "{shown:?} is out of range: a byte rate is between {} and {}",
            format_rate(MIN_RATE),
            format_rate(MAX_RATE)
        ));
    }
    Ok(rate)
}

/// Bytes per second as [`parse_rate`] reads them back: the largest binary unit that
/// divides it exactly (`50MiB/s`), else bytes (`1500000B/s`).
pub fn format_rate(bytes_per_s: u64) -> String {
    for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes_per_s >= m && bytes_per_s.is_multiple_of(m) {
            return format!("{}{unit}/s", bytes_per_s / m);
        }
    }
    format!("{bytes_per_s}B/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_strictly() {
        let ok = [
            ("50MiB/s", 50 << 20),
            ("20MiB/s", 20 << 20),
            ("512KiB/s", 512 << 10),
            ("1.5GB/s", 1_500_000_000),
            ("1GiB/s", 1 << 30),
            ("100kB/s", 100_000),
            ("2048B/s", 2048),
            ("0.5MiB/s", 1 << 19),
        ];
        for (raw, want) in ok {
            assert_eq!(parse_rate(raw), Ok(want), "{raw}");
            assert_eq!(parse_rate(&format_rate(want)), Ok(want), "{raw}");
        }
        for bad in [
            "",
            "50",
            "50M",
            "50MiB",
            "50 MiB/s",
            "50mib/s",
            "50Mib/s",
            "-1MiB/s",
            "1e3MiB/s",
            ".5MiB/s",
            "5.MiB/s",
            "1.2345MiB/s",
            "MiB/s",
            "0MiB/s",
            "1B/s",
            "1023B/s",
            "2048TiB/s",
            "99999999999999999999GiB/s",
            "5MiB/s ",
            "5MiB/sec",
            "５MiB/s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(format_rate(50 << 20), "50MiB/s");
        assert_eq!(format_rate(1_500_000), "1500000B/s");
    }
}
