//! Calendar dates of a Unix time (UTC), for the dates release files carry: the packages are
//! dated by `SOURCE_DATE_EPOCH`, never by the clock, so that builds are reproducible.

/// A Unix time broken down into its UTC calendar date and time of day.
pub struct Utc {
    year: i64,
    month: u32,
    day: u32,
    weekday: usize,
    secs_of_day: u64,
}

impl Utc {
    pub fn from_epoch(epoch: u64) -> Utc {
        let days = (epoch / 86400) as i64;
        // Howard Hinnant's days-from-civil inverse: exact for the proleptic Gregorian calendar.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc {
            year,
            month,
            day,
            // 1970-01-01 was a Thursday.
            weekday: ((days + 4).rem_euclid(7)) as usize,
            secs_of_day: epoch % 86400,
        }
    }

    /// `2026-12-03`
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    fn hms(&self) -> String {
        let s = self.secs_of_day;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }

    /// `2026-12-03T13:29:00Z`
    pub fn rfc3339(&self) -> String {
        format!("{}T{}Z", self.date(), self.hms())
    }

    /// `Thu, 03 Dec 2026 13:29:00 +0000` (Debian changelogs)
    pub fn rfc2822(&self) -> String {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        format!(
            "{}, {:02} {} {:04} {} +0000",
            DAYS[self.weekday],
            self.day,
            MONTHS[self.month as usize - 1],
            self.year,
            self.hms()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(Utc::from_epoch(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Utc::from_epoch(0).rfc2822(),
            "Thu, 01 Jan 1970 00:00:00 +0000"
        );
        // As `date -u -d @N` prints them: a leap-year February, times of day.
        assert_eq!(
            Utc::from_epoch(951_825_599).rfc3339(),
            "2000-02-29T11:59:59Z"
        );
        assert_eq!(
            Utc::from_epoch(1_700_000_000).rfc3339(),
            "2023-11-14T22:13:20Z"
        );
        // 2100 is not a leap year.
        assert_eq!(
            Utc::from_epoch(4_107_542_399).rfc3339(),
            "2100-02-28T23:59:59Z"
        );
        assert_eq!(
            Utc::from_epoch(1_796_304_540).rfc2822(),
            "Thu, 03 Dec 2026 13:29:00 +0000"
        );
    }
}
