//! Go's `time.ParseDuration` and `time.Duration.String`, for the kms `timeout` field.
//!
//! kube-apiserver decodes `timeout` into a `metav1.Duration` (Go's `time.ParseDuration`) and
//! prints it back with `Duration.String` in validation messages (`Invalid value: "-1s"`), so
//! both directions must be Go's, to the character.

use super::go_quote;

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000 * NANOSECOND;
const MILLISECOND: u64 = 1_000 * MICROSECOND;
const SECOND: u64 = 1_000 * MILLISECOND;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// `1 << 63`: one more than the largest positive duration.
const LIMIT: u64 = 1 << 63;

fn unit(u: &str) -> Option<u64> {
    Some(match u {
        "ns" => NANOSECOND,
        "us" | "\u{b5}s" | "\u{3bc}s" => MICROSECOND,
        "ms" => MILLISECOND,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        _ => return None,
    })
}

/// Parses a Go duration (`[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` or `0`) into nanoseconds. The error
/// text is Go's (`time: invalid duration "x"`, `time: missing unit in duration "1"`,
/// `time: unknown unit "d" in duration "1d"`).
pub(crate) fn parse(text: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(text));
    let mut s = text.as_bytes();
    let mut neg = false;
    if let Some(&c) = s.first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            s = &s[1..];
        }
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut d: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Consume [0-9]*.
        let before = s.len();
        let mut v: u64 = 0;
        while let Some(&c) = s.first() {
            if !c.is_ascii_digit() {
                break;
            }
            if v > LIMIT / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(c - b'0');
            if v > LIMIT {
                return Err(invalid());
            }
            s = &s[1..];
        }
        let pre = before != s.len();
        // Consume (\.[0-9]*)?.
        let mut post = false;
        let mut f: u64 = 0;
        let mut scale: f64 = 1.0;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let before = s.len();
            let mut overflow = false;
            while let Some(&c) = s.first() {
                if !c.is_ascii_digit() {
                    break;
                }
                if !overflow {
                    if f > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = f * 10 + u64::from(c - b'0');
                        if y > LIMIT {
                            overflow = true;
                        } else {
                            f = y;
                            scale *= 10.0;
                        }
                    }
                }
                s = &s[1..];
            }
            post = before != s.len();
        }
        if !pre && !post {
            return Err(invalid());
        }
        // Consume the unit: everything up to the next '.' or digit.
        let end = s
            .iter()
            .position(|&c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if end == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(text)));
        }
        let u = String::from_utf8_lossy(&s[..end]).into_owned();
        s = &s[end..];
        let Some(unit) = unit(&u) else {
            return Err(format!(
                "time: unknown unit {} in duration {}",
                go_quote(&u),
                go_quote(text)
            ));
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            // Go computes this in float64 and truncates; so do we.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let frac = (f as f64 * (unit as f64 / scale)) as u64;
            v = v.saturating_add(frac);
            if v > LIMIT {
                return Err(invalid());
            }
        }
        d = d.saturating_add(v);
        if d > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        // d <= 1 << 63, so the negation fits (i64::MIN at the limit).
        return Ok(0i64.wrapping_sub_unsigned(d));
    }
    i64::try_from(d).map_err(|_| invalid())
}

/// Formats nanoseconds as Go's `time.Duration.String` does (`0s`, `1.5s`, `1m30s`, `100ms`,
/// `1h0m0s`).
pub(crate) fn format(d: i64) -> String {
    let neg = d < 0;
    let mut u = d.unsigned_abs();
    // Built back to front, as Go does.
    let mut out: Vec<String> = Vec::new();
    if u < SECOND {
        let prec;
        if u == 0 {
            return "0s".to_owned();
        } else if u < MICROSECOND {
            prec = 0;
            out.push("ns".to_owned());
        } else if u < MILLISECOND {
            prec = 3;
            out.push("\u{b5}s".to_owned());
        } else {
            prec = 6;
            out.push("ms".to_owned());
        }
        let (frac, rest) = fmt_frac(u, prec);
        out.push(frac);
        out.push(rest.to_string());
    } else {
        out.push("s".to_owned());
        let (frac, rest) = fmt_frac(u, 9);
        out.push(frac);
        u = rest;
        out.push((u % 60).to_string());
        u /= 60;
        if u > 0 {
            out.push("m".to_owned());
            out.push((u % 60).to_string());
            u /= 60;
            if u > 0 {
                out.push("h".to_owned());
                out.push(u.to_string());
            }
        }
    }
    if neg {
        out.push("-".to_owned());
    }
    out.reverse();
    out.concat()
}

/// The fraction of `v / 10^prec` as `.ddd` without trailing zeros (empty when zero), and
/// `v / 10^prec`.
fn fmt_frac(mut v: u64, prec: u32) -> (String, u64) {
    let mut digits = Vec::new();
    let mut print = false;
    for _ in 0..prec {
        let digit = v % 10;
        print = print || digit != 0;
        if print {
            digits.push(char::from(b'0' + u8::try_from(digit).unwrap_or(0)));
        }
        v /= 10;
    }
    if print {
        digits.push('.');
    }
    digits.reverse();
    (digits.into_iter().collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("3s"), Ok(3_000_000_000));
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("-0"), Ok(0));
        assert_eq!(parse("0s"), Ok(0));
        assert_eq!(parse("-1s"), Ok(-1_000_000_000));
        assert_eq!(parse("+1.5s"), Ok(1_500_000_000));
        assert_eq!(parse("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse(".5s"), Ok(500_000_000));
        assert_eq!(parse("1.s"), Ok(1_000_000_000));
        assert_eq!(parse("100ms"), Ok(100_000_000));
        assert_eq!(parse("1us"), Ok(1_000));
        assert_eq!(parse("1\u{b5}s"), Ok(1_000));
        assert_eq!(parse("1\u{3bc}s"), Ok(1_000));
        assert_eq!(parse("2h"), Ok(7_200_000_000_000));
    }

    #[test]
    fn refuses_what_go_refuses_with_go_wording() {
        assert_eq!(parse(""), Err("time: invalid duration \"\"".to_owned()));
        assert_eq!(
            parse("abc"),
            Err("time: invalid duration \"abc\"".to_owned())
        );
        assert_eq!(
            parse("3"),
            Err("time: missing unit in duration \"3\"".to_owned())
        );
        assert_eq!(
            parse("1d"),
            Err("time: unknown unit \"d\" in duration \"1d\"".to_owned())
        );
        assert_eq!(parse(".s"), Err("time: invalid duration \".s\"".to_owned()));
        assert_eq!(parse("-"), Err("time: invalid duration \"-\"".to_owned()));
        assert_eq!(
            parse("9999999999h"),
            Err("time: invalid duration \"9999999999h\"".to_owned())
        );
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(0), "0s");
        assert_eq!(format(-1_000_000_000), "-1s");
        assert_eq!(format(1_500_000_000), "1.5s");
        assert_eq!(format(90_000_000_000), "1m30s");
        assert_eq!(format(3_600_000_000_000), "1h0m0s");
        assert_eq!(format(100_000_000), "100ms");
        assert_eq!(format(1_500), "1.5\u{b5}s");
        assert_eq!(format(7), "7ns");
        assert_eq!(format(-60_000_000_000), "-1m0s");
        assert_eq!(format(i64::MIN), "-2562047h47m16.854775808s");
    }
}
