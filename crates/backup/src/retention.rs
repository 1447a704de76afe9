//! Which snapshots retention deletes: all but the newest `count`, and those older than
//! `max_age`; the newest snapshot is never deleted (a cluster always keeps one).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The keys to delete among `(key, taken_at)` (any order).
pub fn to_prune(
    snapshots: &[(String, DateTime<Utc>)],
    count: u32,
    max_age: Option<Duration>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut sorted: Vec<&(String, DateTime<Utc>)> = snapshots.iter().collect();
    // Newest first; the key breaks ties so the answer is stable.
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let keep = (count.max(1)) as usize;
    sorted
        .iter()
        .enumerate()
        .filter(|(i, (_, at))| {
            *i >= keep
                || (*i > 0
                    && max_age.is_some_and(|m| {
                        now.signed_duration_since(*at)
                            .to_std()
                            .is_ok_and(|age| age > m)
                    }))
        })
        .map(|(_, (k, _))| k.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + h * 3600, 0).unwrap()
    }

    #[test]
    fn table() {
        let now = at(100);
        let snaps: Vec<(String, DateTime<Utc>)> = [90, 99, 50, 98, 10]
            .iter()
            .map(|h| (format!("s{h}"), at(*h)))
            .collect();
        let h = |n: u64| Some(Duration::from_secs(n * 3600));
        let cases: &[(u32, Option<Duration>, &[&str])] = &[
            (10, None, &[]),
            (3, None, &["s50", "s10"]),
            (1, None, &["s98", "s90", "s50", "s10"]),
            // count 0 means 1: the newest is kept.
            (0, None, &["s98", "s90", "s50", "s10"]),
            (10, h(20), &["s50", "s10"]),
            (2, h(20), &["s90", "s50", "s10"]),
        ];
        for (count, age, want) in cases {
            let mut got = to_prune(&snaps, *count, *age, now);
            got.sort();
            let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(got, want, "count {count} age {age:?}");
        }
        // Every snapshot too old: the newest stays.
        let old = vec![("a".to_string(), at(1)), ("b".to_string(), at(2))];
        assert_eq!(to_prune(&old, 5, h(1), now), vec!["a".to_string()]);
    }
}
