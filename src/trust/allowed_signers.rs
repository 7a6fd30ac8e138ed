//! OpenSSH's `allowed_signers` file (ssh-keygen(1), ALLOWED SIGNERS): who may sign, for which
//! namespaces, and when. It is a text format, parsed here; the keys in it are parsed by `ssh-key`.
//!
//! ```text
//! # principals      [options]                        keytype      base64-key  [comment]
//! ops@example.com   namespaces="ferry"               ssh-ed25519  AAAAC3Nz…   build machine
//! *@example.com     cert-authority,valid-before="20271231Z" ssh-ed25519 AAAA…
//! ```

use std::path::{Path, PathBuf};

use ssh_key::public::KeyData;
use ssh_key::PublicKey;

use super::TrustError;

/// One line of the file.
#[derive(Debug, Clone)]
pub struct Signer {
    /// The principals as written (a comma-separated pattern list), shown as "signed by".
    pub principals: String,
    pub key: KeyData,
    /// Lines marked `cert-authority` trust certificates signed by the key, not the key's own signatures.
    pub cert_authority: bool,
    /// `namespaces="…"`: patterns; none means every namespace.
    pub namespaces: Option<Vec<String>>,
    /// Seconds since the epoch.
    pub valid_after: Option<i64>,
    pub valid_before: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct AllowedSigners {
    pub path: PathBuf,
    pub signers: Vec<Signer>,
    /// Lines that cannot be read, as (line number, why). ssh-keygen passes over such a line, and so does
    /// ferry: a line only ever grants, so one that cannot be read grants nothing. A refusal names them.
    pub passed_over: Vec<(usize, String)>,
}

/// Far more than any allowed_signers file (about ten thousand keys).
const MAX_FILE: u64 = 1 << 20;

/// Why no line of the file lets a key sign, for the refusal message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAllowed {
    /// No line holds the key.
    Unknown,
    /// Lines hold it, but only as a certificate authority.
    OnlyCertAuthority,
    /// Lines hold it, but not for the namespace.
    Namespace,
    /// Lines hold it, but not at this time.
    Expired,
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<AllowedSigners, TrustError> {
        let text =
            crate::io::read_side_text(path, MAX_FILE).map_err(|source| TrustError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        AllowedSigners::parse(path, &text)
    }

    /// Reads every line; fails only when lines exist and none can be read, naming the first.
    pub fn parse(path: &Path, text: &str) -> Result<AllowedSigners, TrustError> {
        let (text, byte_order_mark) = match text.strip_prefix('\u{feff}') {
            Some(rest) => (rest, true),
            None => (text, false),
        };
        let mut signers = Vec::new();
        let mut passed_over = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = if byte_order_mark && number == 0 {
                Err("it starts with a UTF-8 byte order mark, which ssh-keygen reads as part of the \
                     first principal: save the file without it"
                    .to_string())
            } else {
                parse_line(line)
            };
            match parsed {
                Ok(signer) => signers.push(signer),
                Err(reason) => passed_over.push((number + 1, reason)),
            }
        }
        if let (true, Some((line, reason))) = (signers.is_empty(), passed_over.first()) {
            return Err(TrustError::AllowedSigners {
                path: path.to_path_buf(),
                line: *line,
                reason: reason.clone(),
            });
        }
        Ok(AllowedSigners {
            path: path.to_path_buf(),
            signers,
            passed_over,
        })
    }

    /// The line that lets `key` sign in `namespace` at `now` (seconds since the epoch).
    pub fn allows(&self, key: &KeyData, namespace: &str, now: i64) -> Result<&Signer, NotAllowed> {
        let mut why = NotAllowed::Unknown;
        for signer in self.signers.iter().filter(|s| &s.key == key) {
            if signer.cert_authority {
                why = why.max_with(NotAllowed::OnlyCertAuthority);
            } else if !signer
                .namespaces
                .as_ref()
                .is_none_or(|patterns| pattern_list_matches(patterns, namespace))
            {
                why = why.max_with(NotAllowed::Namespace);
            } else if signer.valid_after.is_some_and(|t| now < t)
                || signer.valid_before.is_some_and(|t| now >= t)
            {
                why = why.max_with(NotAllowed::Expired);
            } else {
                return Ok(signer);
            }
        }
        Err(why)
    }
}

impl NotAllowed {
    /// The most specific reason wins: the closer a line came to allowing the key.
    fn max_with(self, other: NotAllowed) -> NotAllowed {
        let rank = |n: &NotAllowed| match n {
            NotAllowed::Unknown => 0,
            NotAllowed::OnlyCertAuthority => 1,
            NotAllowed::Namespace => 2,
            NotAllowed::Expired => 3,
        };
        if rank(&other) > rank(&self) {
            other
        } else {
            self
        }
    }
}

fn parse_line(line: &str) -> Result<Signer, String> {
    let fields = split_fields(line)?;
    let mut fields = fields.iter().map(String::as_str);
    let principals = fields
        .next()
        .ok_or("no principals")?
        .trim_matches('"')
        .to_string();
    let mut next = fields.next().ok_or("no key after the principals")?;
    let mut options = None;
    if !is_key_type(next) {
        options = Some(next);
        next = fields.next().ok_or("no key after the options")?;
    }
    let blob = fields
        .next()
        .ok_or("the key type has no base64 key after it")?;
    let key = PublicKey::from_openssh(&format!("{next} {blob}"))
        .map_err(|e| format!("the {next} key cannot be read ({e})"))?;
    let mut signer = Signer {
        principals,
        key: key.key_data().clone(),
        cert_authority: false,
        namespaces: None,
        valid_after: None,
        valid_before: None,
    };
    for option in options.map(split_options).transpose()?.unwrap_or_default() {
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name, Some(value.trim_matches('"'))),
            None => (option.as_str(), None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("cert-authority", None) => signer.cert_authority = true,
            ("namespaces", Some(list)) => {
                signer.namespaces = Some(list.split(',').map(str::to_string).collect())
            }
            ("valid-after", Some(time)) => signer.valid_after = Some(parse_time(time)?),
            ("valid-before", Some(time)) => signer.valid_before = Some(parse_time(time)?),
            _ => {
                return Err(format!(
                    "unknown option '{}'",
                    crate::io::shown(&option, 80)
                ))
            }
        }
    }
    Ok(signer)
}

/// Whitespace-separated fields; double quotes keep spaces and commas inside one field.
fn split_fields(line: &str) -> Result<Vec<String>, String> {
    Ok(split_unquoted(line, char::is_whitespace)?
        .into_iter()
        .filter(|f| !f.is_empty())
        .collect())
}

/// `a,b="x,y",c` → `a`, `b="x,y"`, `c`.
fn split_options(options: &str) -> Result<Vec<String>, String> {
    let list = split_unquoted(options, |c| c == ',')?;
    if list.iter().any(String::is_empty) {
        return Err(format!("empty option in '{options}'"));
    }
    Ok(list)
}

/// Splits at every separator outside double quotes; the quotes stay in the pieces.
fn split_unquoted(text: &str, separator: impl Fn(char) -> bool) -> Result<Vec<String>, String> {
    let mut pieces = Vec::new();
    let mut piece = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if separator(c) && !quoted {
            pieces.push(std::mem::take(&mut piece));
        } else {
            piece.push(c);
        }
    }
    if quoted {
        return Err("a quote is not closed".into());
    }
    pieces.push(piece);
    Ok(pieces)
}

fn is_key_type(field: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-", "rsa-"]
        .iter()
        .any(|prefix| field.starts_with(prefix))
}

/// `YYYYMMDD[HHMM[SS]][Z]`. Times without `Z` are local to ssh-keygen; ferry reads them as UTC, which
/// differs by at most the zone's offset.
fn parse_time(text: &str) -> Result<i64, String> {
    let bad = || format!("'{text}' is not a time (YYYYMMDD[HHMM[SS]][Z])");
    let digits = text.strip_suffix(['Z', 'z']).unwrap_or(text);
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| -> i64 {
        digits.get(range).map_or(0, |d| d.parse().unwrap_or(0))
    };
    let (year, month, day) = (number(0..4), number(4..6), number(6..8));
    let (hour, minute, second) = (number(8..10), number(10..12), number(12..14));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// ssh_config(5) PATTERNS: `*` and `?` wildcards, `!` negates; a negated match excludes outright.
fn pattern_list_matches(patterns: &[String], text: &str) -> bool {
    let mut matched = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(negated) if wildcard(negated.as_bytes(), text.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= wildcard(pattern.as_bytes(), text.as_bytes()),
        }
    }
    matched
}

/// `*` (any run of bytes) and `?` (one byte). On a mismatch only the last `*` is tried on one byte
/// further: what an earlier `*` would match, a later one matches as well. So the time is at most the
/// product of the lengths, where trying every `*` at every position took exponential time (a pattern
/// of 200 `*` ran for minutes).
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // After the last `*` seen: where its pattern continues, and the text it has taken up to.
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                last_star = Some((p, t));
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match last_star {
                Some((after, taken)) => {
                    p = after;
                    t = taken + 1;
                    last_star = Some((after, t));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDiLJajhWfX43FKnS9gJhSIT4RtDAbHCrulTvJRrJZEU";

    fn parse(text: &str) -> Result<AllowedSigners, TrustError> {
        AllowedSigners::parse(Path::new("allowed_signers"), text)
    }

    #[test]
    fn lines_with_and_without_options_parse() {
        let file = parse(&format!(
            "# ops\n\nops@example.com {KEY} laptop\n\"a@x,b@x\" namespaces=\"git,ferry\",valid-after=\"20200101\",valid-before=\"20300101Z\" {KEY}\n*@ca cert-authority {KEY}\n"
        ))
        .unwrap();
        assert_eq!(file.signers.len(), 3);
        assert_eq!(file.signers[0].principals, "ops@example.com");
        assert_eq!(file.signers[0].namespaces, None);
        let second = &file.signers[1];
        assert_eq!(second.principals, "a@x,b@x");
        assert_eq!(
            second.namespaces.as_deref(),
            Some(&["git".to_string(), "ferry".to_string()][..])
        );
        assert_eq!(second.valid_after, Some(1_577_836_800));
        assert_eq!(second.valid_before, Some(1_893_456_000));
        assert!(file.signers[2].cert_authority);
    }

    #[test]
    fn the_most_specific_reason_is_given_when_no_line_allows_the_key() {
        let now = 1_700_000_000;
        let file = parse(&format!("a@x namespaces=\"git\" {KEY}\n")).unwrap();
        let key = file.signers[0].key.clone();
        assert_eq!(
            file.allows(&key, "ferry", now).unwrap_err(),
            NotAllowed::Namespace
        );
        assert!(file.allows(&key, "git", now).is_ok());
        let file = parse(&format!("a@x valid-before=\"20200101\" {KEY}\n")).unwrap();
        assert_eq!(
            file.allows(&key, "ferry", now).unwrap_err(),
            NotAllowed::Expired
        );
        let file = parse(&format!("a@x cert-authority {KEY}\n")).unwrap();
        assert_eq!(
            file.allows(&key, "ferry", now).unwrap_err(),
            NotAllowed::OnlyCertAuthority
        );
        let file = parse(&format!("a@x namespaces=\"f*,!fe?ry\" {KEY}\n")).unwrap();
        assert_eq!(
            file.allows(&key, "ferry", now).unwrap_err(),
            NotAllowed::Namespace
        );
        assert!(file.allows(&key, "foo", now).is_ok());
    }

    #[test]
    fn wildcards_match_as_ssh_keygen_does_without_trying_every_star_everywhere() {
        for (pattern, text, matches) in [
            ("ferry", "ferry", true),
            ("f*", "ferry", true),
            ("*y", "ferry", true),
            ("f?rry", "ferry", true),
            ("f??ry", "ferry", true),
            ("f*r*y", "ferry", true),
            ("*rr*", "ferry", true),
            ("*", "", true),
            ("", "", true),
            ("?", "", false),
            ("fe", "ferry", false),
            ("*x", "ferry", false),
            ("f*z*y", "ferry", false),
            ("ferry?", "ferry", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ] {
            assert_eq!(
                wildcard(pattern.as_bytes(), text.as_bytes()),
                matches,
                "{pattern} ~ {text}"
            );
        }
        // Tried every way, 200 stars before a byte the text lacks is C(205, 5) ≈ 3·10⁹ attempts.
        let stars = format!("{}x", "*".repeat(200));
        assert!(!wildcard(stars.as_bytes(), b"ferry"));
        assert!(wildcard("*".repeat(200).as_bytes(), b"ferry"));
    }

    #[test]
    fn a_byte_order_mark_or_a_bad_line_passes_that_line_over_naming_it() {
        let other =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3XYmrEu9U5aGo4eg3syeWJ50k0hmSRJBwBc7Hmckeh";
        let file = parse(&format!(
            "\u{feff}first@x {KEY}\nbad@x ssh-ed25519 AAAA\ngood@x {other}\n"
        ))
        .unwrap();
        assert_eq!(file.signers.len(), 1);
        assert_eq!(file.signers[0].principals, "good@x");
        assert_eq!(
            file.passed_over,
            [
                (
                    1,
                    "it starts with a UTF-8 byte order mark, which ssh-keygen reads as part of the \
                     first principal: save the file without it"
                        .to_string()
                ),
                (
                    2,
                    "the ssh-ed25519 key cannot be read (Base64 encoding error: invalid Base64 length)".to_string()
                )
            ]
        );
        // A mark before a comment loses nothing.
        let file = parse(&format!("\u{feff}# ops\nfirst@x {KEY}\n")).unwrap();
        assert_eq!(file.signers[0].principals, "first@x");
        assert!(file.passed_over.is_empty());
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        for (text, reason) in [
            ("a@x\n", "no key after the principals"),
            (
                "a@x ssh-ed25519\n",
                "the key type has no base64 key after it",
            ),
            (
                "a@x ssh-ed25519 AAAA\n",
                "the ssh-ed25519 key cannot be read",
            ),
            (&format!("a@x nope {KEY}"), "unknown option 'nope'"),
            (
                &format!("a@x valid-after=\"2020\" {KEY}"),
                "'2020' is not a time",
            ),
            (&format!("a@x \"unclosed {KEY}"), "a quote is not closed"),
        ] {
            let error = parse(&format!("# header\n{text}")).unwrap_err().to_string();
            assert!(
                error.starts_with("allowed_signers, line 2: ") && error.contains(reason),
                "{text:?}: {error}"
            );
        }
    }
}
