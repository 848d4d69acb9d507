//! Which scheduled backups to delete, with the semantics of restic's `forget`.

use serde::{Deserialize, Serialize};

const MS_PER_DAY: i64 = 86_400_000;

/// How many backups each rule keeps; 0 turns a rule off. A backup kept by any rule is kept.
///
/// Missing fields take their default, so a configuration can override one rule alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// The newest backups, whatever their dates.
    pub last: u32,
    /// The newest backup of each of this many most recent UTC days that have a backup.
    pub daily: u32,
    /// Likewise per ISO week (Monday to Sunday, UTC).
    pub weekly: u32,
    /// Likewise per calendar month (UTC).
    pub monthly: u32,
}

impl Default for Policy {
    /// Lagoon's default of 7 daily and 6 weekly backups, plus `last: 1`: redundant with
    /// `daily` as it stands, but it keeps the newest backup alive when a configuration turns
    /// the daily rule off.
    fn default() -> Self {
        Self {
            last: 1,
            daily: 7,
            weekly: 6,
            monthly: 0,
        }
    }
}

/// `backups`: (id, created_ms since the Unix epoch, UTC), any order. Returns the ids to delete,
/// oldest first. An all-zero policy keeps nothing.
pub fn to_delete(backups: &[(i64, i64)], policy: &Policy) -> Vec<i64> {
    let mut newest_first = backups.to_vec();
    // Equal times fall back to the id (the higher counts as newer), so the outcome never
    // depends on the input order.
    newest_first.sort_unstable_by_key(|&(id, ms)| std::cmp::Reverse((ms, id)));
    let mut rules = [
        Rule::new(Period::Backup, policy.last),
        Rule::new(Period::Day, policy.daily),
        Rule::new(Period::Week, policy.weekly),
        Rule::new(Period::Month, policy.monthly),
    ];
    let mut doomed: Vec<i64> = Vec::new();
    for (rank, &(id, ms)) in newest_first.iter().enumerate() {
        // Every rule sees every backup, as in restic: one kept by `last` still fills its day.
        let kept = rules
            .iter_mut()
            .fold(false, |kept, rule| rule.claims(rank, ms) | kept);
        if !kept {
            doomed.push(id);
        }
    }
    doomed.reverse();
    doomed
}

/// What a rule keeps one backup of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Backup,
    Day,
    Week,
    Month,
}

impl Period {
    /// A key equal for two backups exactly when they fall in the same period. `rank` is the
    /// backup's place in newest-first order.
    fn key(self, rank: usize, ms: i64) -> (i64, u32) {
        let day = ms.div_euclid(MS_PER_DAY);
        match self {
            Period::Backup => (rank as i64, 0),
            Period::Day => (day, 0),
            Period::Week => iso_week(day),
            Period::Month => {
                let (year, month, _) = civil_from_days(day);
                (year, month)
            }
        }
    }
}

struct Rule {
    period: Period,
    remaining: u32,
    last: Option<(i64, u32)>,
}

impl Rule {
    fn new(period: Period, count: u32) -> Self {
        Self {
            period,
            remaining: count,
            last: None,
        }
    }

    /// Keeps the backup if it is the first (so the newest) seen of its period and the rule
    /// still has room. Backups must arrive newest first.
    fn claims(&mut self, rank: usize, ms: i64) -> bool {
        if self.remaining == 0 {
            return false;
        }
        let key = self.period.key(rank, ms);
        if self.last == Some(key) {
            return false;
        }
        self.last = Some(key);
        self.remaining -= 1;
        true
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Years start in March, so the leap day ends a year instead of sitting inside it.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let march_based_month = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * march_based_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// (year, month 1..=12, day 1..=31) of a day number (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_based_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_based_month + 2) / 5 + 1;
    let month = if march_based_month < 10 {
        march_based_month + 3
    } else {
        march_based_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are small by construction: 1..=12 and 1..=31.
    (year, month as u32, day as u32)
}

/// (ISO year, week 1..=53) of a day number.
fn iso_week(days: i64) -> (i64, u32) {
    // 1970-01-01 was a Thursday; Monday counts as 0.
    let weekday = (days + 3).rem_euclid(7);
    // A week belongs to the year its Thursday falls in.
    let thursday = days - weekday + 3;
    let (year, _, _) = civil_from_days(thursday);
    let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
    (year, week as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn ms(year: i64, month: u32, day: u32, hour: i64) -> i64 {
        days_from_civil(year, month, day) * MS_PER_DAY + hour * HOUR
    }

    fn policy(last: u32, daily: u32, weekly: u32, monthly: u32) -> Policy {
        Policy {
            last,
            daily,
            weekly,
            monthly,
        }
    }

    /// Checks the answer is the same for the input reversed, as order must not matter.
    fn delete(backups: &[(i64, i64)], policy: Policy) -> Vec<i64> {
        let doomed = to_delete(backups, &policy);
        let mut reversed = backups.to_vec();
        reversed.reverse();
        assert_eq!(to_delete(&reversed, &policy), doomed);
        doomed
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28),
            1
        );
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn iso_weeks() {
        let week = |y, m, d| iso_week(days_from_civil(y, m, d));
        assert_eq!(week(1970, 1, 1), (1970, 1));
        assert_eq!(week(2015, 12, 31), (2015, 53));
        assert_eq!(week(2016, 1, 3), (2015, 53));
        assert_eq!(week(2016, 1, 4), (2016, 1));
        assert_eq!(week(2018, 12, 31), (2019, 1));
        assert_eq!(week(2020, 12, 28), (2020, 53));
        assert_eq!(week(2021, 1, 3), (2020, 53));
        assert_eq!(week(2021, 1, 4), (2021, 1));
        assert_eq!(week(2024, 12, 30), (2025, 1));
        assert_eq!(week(1969, 12, 29), (1970, 1));
    }

    #[test]
    fn days_split_at_utc_midnight_across_month_and_year() {
        let backups = [
            (1, ms(2023, 12, 31, 1)),
            (2, ms(2023, 12, 31, 23) + 59 * 60_000),
            (3, ms(2024, 1, 1, 0)),
            (4, ms(2024, 1, 31, 23)),
            (5, ms(2024, 2, 1, 0) + 1),
        ];
        assert_eq!(delete(&backups, policy(0, 5, 0, 0)), [1]);
        assert_eq!(delete(&backups, policy(0, 2, 0, 0)), [1, 2, 3]);
        assert_eq!(delete(&backups, policy(0, 0, 0, 3)), [1, 3]);
        assert_eq!(delete(&backups, policy(0, 0, 0, 2)), [1, 2, 3]);
    }

    #[test]
    fn only_days_with_a_backup_count() {
        let backups = [
            (1, ms(2024, 1, 1, 12)),
            (2, ms(2024, 1, 5, 12)),
            (3, ms(2024, 1, 20, 12)),
        ];
        assert_eq!(delete(&backups, policy(0, 2, 0, 0)), [1]);
    }

    #[test]
    fn weeks_cross_iso_week_53() {
        let backups = [
            (1, ms(2020, 12, 27, 12)), // Sunday, week 52
            (2, ms(2020, 12, 28, 12)), // Monday, week 53
            (3, ms(2021, 1, 3, 12)),   // Sunday, still week 53 of 2020
            (4, ms(2021, 1, 4, 12)),   // Monday, week 1 of 2021
        ];
        assert_eq!(delete(&backups, policy(0, 0, 2, 0)), [1, 2]);
        assert_eq!(delete(&backups, policy(0, 0, 3, 0)), [2]);
    }

    #[test]
    fn ties_keep_the_higher_id() {
        let at = ms(2024, 6, 1, 3);
        let backups = [(8, at), (5, at), (9, at - 1)];
        assert_eq!(delete(&backups, policy(1, 0, 0, 0)), [9, 5]);
        assert_eq!(delete(&backups, policy(0, 1, 0, 0)), [9, 5]);
        assert_eq!(delete(&backups, policy(2, 0, 0, 0)), [9]);
    }

    #[test]
    fn empty_policy_deletes_everything_oldest_first() {
        let backups = [(3, 30), (1, 10), (2, 20)];
        assert_eq!(delete(&backups, policy(0, 0, 0, 0)), [1, 2, 3]);
        assert!(delete(&[], Policy::default()).is_empty());
    }

    #[test]
    fn last_counts_backups_not_days() {
        let backups: Vec<(i64, i64)> = (1..=5).map(|i| (i, ms(2024, 1, 1, i))).collect();
        assert_eq!(delete(&backups, policy(3, 0, 0, 0)), [1, 2]);
        // A backup kept by `last` still fills its day: daily adds nothing on the same day.
        assert_eq!(delete(&backups, policy(1, 1, 0, 0)), [1, 2, 3, 4]);
    }

    #[test]
    fn sixty_daily_backups_with_the_default_policy() {
        // 2024-02-01 (a Thursday) to 2024-03-31 (a Sunday), ids 1 to 60, at 02:00 UTC.
        let backups: Vec<(i64, i64)> = (1..=60)
            .map(|id| (id, ms(2024, 2, 1, 2) + (id - 1) * MS_PER_DAY))
            .collect();
        let kept_by_week = [25, 32, 39, 46, 53]; // the Sundays of the five weeks before the last
        let kept_by_day = 54..=60;
        let expected: Vec<i64> = (1..=60)
            .filter(|id| !kept_by_week.contains(id) && !kept_by_day.contains(id))
            .collect();
        assert_eq!(expected.len(), 48);
        assert_eq!(delete(&backups, Policy::default()), expected);
        // Two months hold backups, so monthly: 3 keeps only their two newest.
        assert_eq!(delete(&backups, policy(0, 0, 0, 3)).len(), 58);
        assert!(!delete(&backups, policy(0, 0, 0, 3)).contains(&29));
    }

    #[test]
    fn before_the_epoch() {
        let backups = [(1, ms(1969, 12, 31, 23)), (2, ms(1970, 1, 1, 1))];
        assert_eq!(
            civil_from_days((-HOUR).div_euclid(MS_PER_DAY)),
            (1969, 12, 31)
        );
        assert!(delete(&backups, policy(0, 2, 0, 0)).is_empty());
        assert_eq!(delete(&backups, policy(0, 0, 0, 1)), [1]);
    }

    #[test]
    fn policy_serde_fills_missing_fields_with_defaults() {
        let p: Policy = serde_json::from_str(r#"{"daily":3}"#).unwrap();
        assert_eq!(p, policy(1, 3, 6, 0));
        let json = serde_json::to_string(&Policy::default()).unwrap();
        assert_eq!(json, r#"{"last":1,"daily":7,"weekly":6,"monthly":0}"#);
        assert_eq!(
            serde_json::from_str::<Policy>(&json).unwrap(),
            Policy::default()
        );
    }
}
