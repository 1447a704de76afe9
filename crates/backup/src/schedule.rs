//! When the next scheduled snapshot is due: `backup.schedule` (5-field cron) read in
//! `backup.timeZone`, so `0 3 * * *` in `Europe/Paris` is 03:00 Paris time in winter and in
//! summer. Pure: the caller brings the clock.

use chrono::{DateTime, Utc};
use vixen_model::backup::{BackupSpec, parse_schedule, parse_time_zone};

/// The first scheduled time strictly after `now`, or `None` without a (valid) schedule.
/// Validation refuses an invalid schedule or zone before this is ever asked.
pub fn next_after(spec: &BackupSpec, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cron = parse_schedule(spec.schedule.as_deref()?).ok()?;
    let tz = parse_time_zone(&spec.time_zone)?;
    cron.find_next_occurrence(&now.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A schedule as the agent follows it: due once per scheduled time, never for times that
/// passed before it started (a restarted agent does not take a burst of missed snapshots).
#[derive(Debug, Clone)]
pub struct Due {
    spec: BackupSpec,
    next: Option<DateTime<Utc>>,
}

impl Due {
    /// Follows `spec` from `now` on.
    pub fn new(spec: BackupSpec, now: DateTime<Utc>) -> Self {
        let next = next_after(&spec, now);
        Self { spec, next }
    }

    /// The next time it is due.
    pub fn next(&self) -> Option<DateTime<Utc>> {
        self.next
    }

    /// Follows a changed spec (a new commit) from `now`; an unchanged one keeps its next time.
    pub fn update(&mut self, spec: &BackupSpec, now: DateTime<Utc>) {
        if spec.schedule != self.spec.schedule || spec.time_zone != self.spec.time_zone {
            *self = Self::new(spec.clone(), now);
        }
    }

    /// Whether a snapshot is due at `now`; when it is, the next time moves past `now` (one
    /// snapshot however many scheduled times were missed).
    pub fn take(&mut self, now: DateTime<Utc>) -> bool {
        match self.next {
            Some(t) if t <= now => {
                self.next = next_after(&self.spec, now);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(schedule: &str, tz: &str) -> BackupSpec {
        serde_yaml_ng::from_str(&format!(
            "schedule: '{schedule}'\ntimeZone: {tz}\ntarget: {{local: {{path: /b}}}}\n"
        ))
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn three_in_the_morning_follows_the_zone_through_summer_time() {
        let s = spec("0 3 * * *", "Europe/Paris");
        // Winter: UTC+1.
        assert_eq!(
            next_after(&s, at("2026-12-02T08:00:00Z")),
            Some(at("2026-12-03T02:00:00Z"))
        );
        // Summer: UTC+2.
        assert_eq!(
            next_after(&s, at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T01:00:00Z"))
        );
        assert_eq!(
            next_after(&spec("0 3 * * *", "UTC"), at("2026-07-01T00:00:00Z")),
            Some(at("2026-07-01T03:00:00Z"))
        );
    }

    #[test]
    fn due_once_per_time_and_never_for_times_missed_before_the_start() {
        let s = spec("*/15 * * * *", "UTC");
        let mut d = Due::new(s.clone(), at("2026-12-02T08:01:00Z"));
        assert_eq!(d.next(), Some(at("2026-12-02T08:15:00Z")));
        assert!(!d.take(at("2026-12-02T08:14:59Z")));
        assert!(d.take(at("2026-12-02T08:15:02Z")));
        assert!(
            !d.take(at("2026-12-02T08:15:30Z")),
            "once per scheduled time"
        );
        // The agent was stopped for an hour: one snapshot, not four.
        assert!(d.take(at("2026-12-02T09:20:00Z")));
        assert!(!d.take(at("2026-12-02T09:21:00Z")));
        assert_eq!(d.next(), Some(at("2026-12-02T09:30:00Z")));
        // A new commit with the same schedule keeps the time; a changed one starts over.
        d.update(&s, at("2026-12-02T09:22:00Z"));
        assert_eq!(d.next(), Some(at("2026-12-02T09:30:00Z")));
        d.update(&spec("0 3 * * *", "UTC"), at("2026-12-02T09:22:00Z"));
        assert_eq!(d.next(), Some(at("2026-12-03T03:00:00Z")));
    }

    #[test]
    fn no_schedule_is_never_due() {
        let s: BackupSpec = serde_yaml_ng::from_str("target: {local: {path: /b}}").unwrap();
        let mut d = Due::new(s, at("2026-12-02T08:00:00Z"));
        assert_eq!(d.next(), None);
        assert!(!d.take(at("2030-01-01T00:00:00Z")));
    }
}
