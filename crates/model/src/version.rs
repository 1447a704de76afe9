//! Talos and Kubernetes versions: parsing, what supports what, and which jumps are allowed.

use std::fmt;
use std::str::FromStr;

/// A `major.minor.patch` version, written with a leading `v` for Talos and without for Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl Version {
    /// Builds a version.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
    /// `major.minor` as a pair, for comparisons of minors.
    pub fn minor_pair(self) -> (u64, u64) {
        (self.major, self.minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A version string that is not `[v]MAJOR.MINOR.PATCH` (pre-release suffixes allowed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a version of the form v1.11.6")]
pub struct BadVersion(pub String);

impl FromStr for Version {
    type Err = BadVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadVersion(s.to_string());
        let core = s.strip_prefix('v').unwrap_or(s);
        let core = core.split(['-', '+']).next().ok_or_else(bad)?;
        let mut parts = core.split('.');
        let mut next = || -> Result<u64, BadVersion> {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let v = Version {
            major: next()?,
            minor: next()?,
            patch: next()?,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

/// Kubernetes minors supported by a Talos minor (from Talos' support matrix: Talos 1.N supports
/// Kubernetes 1.(N+18) to 1.(N+23); 1.13 -> 1.31..1.36, 1.14 -> 1.32..1.37).
pub fn kubernetes_range(talos: Version) -> Option<(u64, u64)> {
    if talos.major != 1 || !(8..=14).contains(&talos.minor) {
        return None;
    }
    Some((talos.minor + 18, talos.minor + 23))
}

/// Why a Talos version cannot run a Kubernetes version, or `None` when it can.
pub fn compatibility_problem(talos: Version, kubernetes: Version) -> Option<String> {
    match kubernetes_range(talos) {
        None => Some(format!(
            "Talos v{talos} is not a Talos version vixen knows (it supports v1.8 to v1.14)"
        )),
        Some((lo, hi))
            if kubernetes.major != 1 || kubernetes.minor < lo || kubernetes.minor > hi =>
        {
            Some(format!(
                "Talos v{talos} supports Kubernetes 1.{lo} to 1.{hi}, not {kubernetes}"
            ))
        }
        Some(_) => None,
    }
}

/// Why a Talos upgrade from `from` to `to` must not be done in one step, or `None` when it may.
///
/// Talos upgrades go through every minor (each through its latest patch); downgrades across a
/// minor are refused as well.
pub fn talos_upgrade_problem(from: Version, to: Version) -> Option<String> {
    if from.major != to.major {
        return Some(format!("Talos v{from} -> v{to} changes the major version"));
    }
    if to.minor > from.minor + 1 {
        return Some(format!(
            "Talos v{from} -> v{to} skips a minor version; upgrade to the latest v{}.{}.x first",
            from.major,
            from.minor + 1
        ));
    }
    if to.minor + 1 < from.minor {
        return Some(format!(
            "Talos v{from} -> v{to} is a downgrade across minors"
        ));
    }
    None
}

/// Why a Kubernetes upgrade from `from` to `to` must not be done in one step, or `None`.
pub fn kubernetes_upgrade_problem(from: Version, to: Version) -> Option<String> {
    if to.minor_pair() < from.minor_pair() {
        return Some(format!(
            "Kubernetes {from} -> {to} is a downgrade of the minor version"
        ));
    }
    if to.major != from.major || to.minor > from.minor + 1 {
        return Some(format!(
            "Kubernetes {from} -> {to} skips a minor version; upgrade to 1.{}.x first",
            from.minor + 1
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn parses_talos_and_kubernetes_forms() {
        assert_eq!(v("v1.11.6"), Version::new(1, 11, 6));
        assert_eq!(v("1.34.1"), Version::new(1, 34, 1));
        assert_eq!(v("v1.14.0-beta.1"), Version::new(1, 14, 0));
        for bad in ["1.34", "v1.x.0", "", "1.2.3.4", "latest"] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }

    #[test]
    fn support_matrix() {
        assert_eq!(compatibility_problem(v("v1.11.6"), v("1.34.1")), None);
        assert_eq!(compatibility_problem(v("v1.13.0"), v("1.31.0")), None);
        assert!(compatibility_problem(v("v1.11.6"), v("1.35.0")).is_some());
        assert!(compatibility_problem(v("v1.14.0"), v("1.31.0")).is_some());
        assert!(compatibility_problem(v("v2.0.0"), v("1.34.0")).is_some());
    }

    #[test]
    fn upgrade_paths() {
        assert_eq!(talos_upgrade_problem(v("v1.11.6"), v("v1.12.0")), None);
        assert_eq!(talos_upgrade_problem(v("v1.11.5"), v("v1.11.6")), None);
        let skip = talos_upgrade_problem(v("v1.11.6"), v("v1.13.0")).unwrap();
        assert!(skip.contains("v1.12.x"), "{skip}");
        assert_eq!(kubernetes_upgrade_problem(v("1.33.2"), v("1.34.1")), None);
        assert!(kubernetes_upgrade_problem(v("1.33.2"), v("1.35.0")).is_some());
        assert!(kubernetes_upgrade_problem(v("1.34.0"), v("1.33.9")).is_some());
    }
}
