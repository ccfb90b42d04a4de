//! `metav1.Time` (Unix seconds) to RFC 3339 UTC, as Kubernetes prints it in JSON.

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in Unix seconds; `metav1.Time` prints it as null.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// Formats Unix `seconds` as `YYYY-MM-DDTHH:MM:SSZ`.
///
/// Kubernetes' JSON form has whole seconds, so `nanos` only matters for recognising Go's zero
/// time, which gives `None`, as do years outside 0000..=9999 (not expressible in RFC 3339).
pub(super) fn rfc3339(seconds: i64, nanos: i32) -> Option<String> {
    if seconds == GO_ZERO_TIME && nanos == 0 {
        return None;
    }
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    ))
}

/// The proleptic Gregorian date `(year, month, day)` of a day count since 1970-01-01.
///
/// Howard Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>):
/// shift the epoch to 0000-03-01 so that leap days fall at the end of a year, then split into
/// 400-year eras, years of the era, and days of the year.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    // |days| <= i64::MAX / 86_400, so none of this can overflow.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(0, 0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000, 0).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400, 0).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1, 0).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_799, 0).unwrap(), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_800, 0), None);
        assert_eq!(rfc3339(GO_ZERO_TIME, 0), None);
        assert_eq!(
            rfc3339(GO_ZERO_TIME + 1, 0).unwrap(),
            "0001-01-01T00:00:01Z"
        );
        assert_eq!(rfc3339(i64::MAX, 0), None);
        assert_eq!(rfc3339(i64::MIN, 0), None);
    }

    #[test]
    fn every_day_round_trips() {
        // Days from 1900 to 2100 map to consecutive, valid dates.
        let mut prev = civil_from_days(-25_568);
        for d in -25_567..47_482 {
            let (y, m, day) = civil_from_days(d);
            assert!((1..=12).contains(&m) && (1..=31).contains(&day));
            assert!((y, m, day) > prev, "{d}");
            prev = (y, m, day);
        }
        assert_eq!(civil_from_days(47_481), (2099, 12, 31));
    }
}
