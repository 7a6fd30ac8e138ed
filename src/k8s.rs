//! Kubernetes versions as users type them, and the version requirements vendors write in their tables.
//!
//! Image tables speak in minor versions (`v1.17-v1.19`, `v1.16.x`, `v1.20+`); every patch, distribution
//! suffix (`+k3s1`, `-eks-5e0fdde`) and pre-release of a minor belongs to that minor. So both a user's
//! version and a requirement reduce to `major.minor` before they are compared.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A Kubernetes minor version, e.g. `1.28`. Patch level and suffixes are dropped on parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("'{0}' is not a Kubernetes version (expected e.g. 1.28, v1.28.3, 1.28.3+k3s1)")]
    BadVersion(String),
    #[error(
        "'{0}' is not a Kubernetes version requirement \
         (expected e.g. v1.16+, v1.17-v1.19, v1.16.x)"
    )]
    BadRequirement(String),
    #[error("requirement '{0}' ends before it starts")]
    EmptyRange(String),
}

impl KubeVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        KubeVersion { major, minor }
    }

    /// The next minor version: the exclusive end of a range that includes `self`.
    pub fn next_minor(self) -> Self {
        KubeVersion::new(self.major, self.minor + 1)
    }
}

impl FromStr for KubeVersion {
    type Err = VersionError;

    /// Accepts `1.28`, `v1.28.3`, `1.28.3+k3s1`, `v1.27.9-eks-5e0fdde`, `1.30.0-rc.1` and the vendor's `v.1.16`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || VersionError::BadVersion(text.to_string());
        let trimmed = text.trim();
        let unprefixed = trimmed.strip_prefix(['v', 'V']).unwrap_or(trimmed);
        let unprefixed = unprefixed.strip_prefix('.').unwrap_or(unprefixed);
        // Build metadata (+k3s1) and pre-release/vendor suffixes (-eks-…, -rc.1) never change the minor.
        let core = unprefixed.split(['+', '-']).next().unwrap_or_default();
        let mut parts = core.split('.');
        let major = parse_number(parts.next()).ok_or_else(bad)?;
        let minor = parse_number(parts.next()).ok_or_else(bad)?;
        match parts.next() {
            None => {}
            Some(patch) if patch.chars().all(|c| c.is_ascii_digit()) && !patch.is_empty() => {}
            Some(_) => return Err(bad()),
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(KubeVersion::new(major, minor))
    }
}

fn parse_number(part: Option<&str>) -> Option<u32> {
    let part = part?;
    if part.is_empty() || !part.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

serde_as_string!(KubeVersion);

/// A span of minor versions: `min` up to and including `max`, or open-ended when `max` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KubeRange {
    pub min: KubeVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<KubeVersion>,
}

impl KubeRange {
    pub fn contains(&self, version: KubeVersion) -> bool {
        version >= self.min && self.max.is_none_or(|max| version <= max)
    }
}

impl FromStr for KubeRange {
    type Err = VersionError;

    /// Parses a requirement as vendors write it: `v1.16+`, `v1.17-v1.19`, `v1.16.x`, `v.1.16.x`, `v1.19`,
    /// `v1.13.x-v1.16.x`, or a bare `1.16`. Anything else is refused rather than guessed at.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || VersionError::BadRequirement(text.to_string());
        let trimmed = text.trim();
        // Strict, unlike a user's version: a table cell with a suffix is a misreading, not a distribution.
        // `v1.16.x` names every patch of one minor; the `.x` may close either end of a span.
        let minor = |part: &str, patches: bool| {
            let part = part.trim();
            let part = part.strip_prefix(['v', 'V']).unwrap_or(part);
            let part = part.strip_prefix('.').unwrap_or(part);
            let part = match part.strip_suffix(".x").or_else(|| part.strip_suffix(".X")) {
                Some(minor) if patches => minor,
                _ => part,
            };
            let (major, minor) = part.split_once('.').ok_or_else(bad)?;
            match (parse_number(Some(major)), parse_number(Some(minor))) {
                (Some(major), Some(minor)) => Ok(KubeVersion::new(major, minor)),
                _ => Err(bad()),
            }
        };
        let range = if let Some(open) = trimmed.strip_suffix('+') {
            KubeRange {
                min: minor(open, false)?,
                max: None,
            }
        } else if let Some((low, high)) = trimmed.split_once('-') {
            KubeRange {
                min: minor(low, true)?,
                max: Some(minor(high, true)?),
            }
        } else {
            let exact = minor(trimmed, true)?;
            KubeRange {
                min: exact,
                max: Some(exact),
            }
        };
        if range.max.is_some_and(|max| max < range.min) {
            return Err(VersionError::EmptyRange(text.to_string()));
        }
        Ok(range)
    }
}

impl fmt::Display for KubeRange {
    /// Writes `1.16`, `1.17-1.19` or `1.20+`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.max {
            None => write!(f, "{}+", self.min),
            Some(max) if max == self.min => write!(f, "{}", self.min),
            Some(max) => write!(f, "{}-{}", self.min, max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32) -> KubeVersion {
        KubeVersion::new(major, minor)
    }

    #[test]
    fn user_versions_reduce_to_their_minor() {
        for (text, expected) in [
            ("1.28", v(1, 28)),
            ("v1.28.3", v(1, 28)),
            ("1.28.3+k3s1", v(1, 28)),
            ("v1.27.9-eks-5e0fdde", v(1, 27)),
            ("1.30.0-rc.1", v(1, 30)),
            (" V1.16 ", v(1, 16)),
        ] {
            assert_eq!(text.parse::<KubeVersion>(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn nonsense_versions_are_refused() {
        for text in [
            "", "1", "v", "1.x", "one.two", "1.28.3.4", "1..28", "1.28.x", "-1.2",
        ] {
            assert!(
                text.parse::<KubeVersion>().is_err(),
                "{text} should be refused"
            );
        }
    }

    #[test]
    fn vendor_requirements_parse() {
        let open = |min| KubeRange { min, max: None };
        let closed = |min, max| KubeRange {
            min,
            max: Some(max),
        };
        for (text, expected) in [
            ("v1.16+", open(v(1, 16))),
            ("v1.20+", open(v(1, 20))),
            ("v1.17-v1.19", closed(v(1, 17), v(1, 19))),
            ("v1.16.x", closed(v(1, 16), v(1, 16))),
            ("v.1.16.x", closed(v(1, 16), v(1, 16))),
            ("1.16", closed(v(1, 16), v(1, 16))),
            ("v1.19", closed(v(1, 19), v(1, 19))),
            ("v1.13.x-v1.16.x", closed(v(1, 13), v(1, 16))),
            ("v1.20-v1.24", closed(v(1, 20), v(1, 24))),
        ] {
            assert_eq!(text.parse::<KubeRange>(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_requirements_are_refused() {
        assert!(matches!(
            "v1.19-v1.17".parse::<KubeRange>(),
            Err(VersionError::EmptyRange(_))
        ));
        for text in [
            "",
            "+",
            "v1+",
            "latest",
            "v1.16.x+",
            "1.16-",
            "1.16~1.34",
            ">=1.16",
            "v1.16+ and later",
            "v1.x",
            "v1.16-v1.17-v1.18",
            "v1.16.3+",
            "v1.16-rc+",
        ] {
            assert!(
                text.parse::<KubeRange>().is_err(),
                "{text} should be refused"
            );
        }
    }

    #[test]
    fn a_range_covers_every_patch_of_its_last_minor() {
        let range: KubeRange = "v1.17-v1.19".parse().unwrap();
        assert!(range.contains("1.19.16".parse().unwrap()));
        assert!(range.contains("v1.17.0".parse().unwrap()));
        assert!(!range.contains("1.20.0".parse().unwrap()));
        assert!(!range.contains("1.16.15".parse().unwrap()));
    }

    #[test]
    fn display_is_compact() {
        assert_eq!("v1.20+".parse::<KubeRange>().unwrap().to_string(), "1.20+");
        assert_eq!(
            "v1.17-v1.19".parse::<KubeRange>().unwrap().to_string(),
            "1.17-1.19"
        );
        assert_eq!("v.1.16.x".parse::<KubeRange>().unwrap().to_string(), "1.16");
    }
}
