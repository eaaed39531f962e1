//! Path rules (`upstream.deny_paths`, `upstream.allow_paths`). A path is
//! forwarded exactly as it came, so it must read the same to every server:
//! paths with dot segments, empty segments, `;` parameters, backslashes,
//! control characters or encoded separators (`%2F`, `%2E`, `%25`…) are
//! refused outright, and the rules match the decoded, lowercased rest.
//! Pure functions.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// Percent-escapes whose decoded form could change how a server splits or
/// resolves the path (separators, dots, `%` itself, `;`, NUL, `?`, `#`).
const AMBIGUOUS_ESCAPES: [&str; 8] = ["%2f", "%5c", "%2e", "%25", "%3b", "%00", "%3f", "%23"];

/// Why a path was refused before any rule was consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The path could be read differently by different servers (400).
    Ambiguous(&'static str),
    /// A deny rule matched, or no allow rule did (403).
    NotForwarded,
}

/// The form rules are matched against: percent-decoded once and
/// ASCII-lowercased, after checking the raw path is unambiguous. A path
/// without escapes (nearly all of them) is its own decoded form: it is
/// checked in one pass over its bytes and, unless it has capitals, handed
/// back as it is; one with escapes goes the general way ([`decoded`]).
pub fn canonical(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    if !raw.starts_with('/') {
        return Err("the request target must be a path starting with /");
    }
    let bytes = raw.as_bytes();
    let (mut unsafe_character, mut bad_segment, mut capitals) = (false, false, false);
    let mut segment_start = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            b'%' | 0x80.. => return decoded(raw).map(Cow::Owned),
            b'/' => {
                bad_segment |= !is_segment(&bytes[segment_start..i]);
                segment_start = i + 1;
            }
            b'A'..=b'Z' => capitals = true,
            b'\\' | b';' | b' ' | 0..0x20 | 0x7f => unsafe_character = true,
            _ => {}
        }
    }
    // One trailing slash (or the root itself) leaves an empty last segment.
    let last = &bytes[segment_start..];
    bad_segment |= !last.is_empty() && !is_segment(last);
    if unsafe_character {
        Err(UNSAFE_CHARACTER)
    } else if bad_segment {
        Err(BAD_SEGMENT)
    } else if capitals {
        Ok(Cow::Owned(raw.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(raw))
    }
}

/// Neither empty, `.` nor `..`.
fn is_segment(segment: &[u8]) -> bool {
    !matches!(segment, b"" | b"." | b"..")
}

const BAD_SEGMENT: &str = "the path has an empty, '.' or '..' segment";

const UNSAFE_CHARACTER: &str = "the path holds a control character, whitespace, ';' or '\\'";

/// [`canonical`] for a path with escapes.
fn decoded(raw: &str) -> Result<String, &'static str> {
    let lower = raw.to_ascii_lowercase();
    if AMBIGUOUS_ESCAPES.iter().any(|e| lower.contains(e)) {
        return Err("the path encodes a separator, a dot or a percent sign");
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "the path does not decode to UTF-8")?;
    if decoded
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == ';' || c.is_whitespace())
    {
        return Err(UNSAFE_CHARACTER);
    }
    check_segments(&decoded)?;
    Ok(decoded.to_ascii_lowercase())
}

/// One trailing slash is fine; any other empty segment is not, nor is a
/// `.` or `..` segment.
fn check_segments(path: &str) -> Result<(), &'static str> {
    let body = path.strip_suffix('/').unwrap_or(path);
    if !body.is_empty() && !body[1..].split('/').all(|seg| is_segment(seg.as_bytes())) {
        return Err(BAD_SEGMENT);
    }
    Ok(())
}

/// The deny and allow prefixes, lowercased once at start-up.
#[derive(Debug, Clone)]
pub struct PathRules {
    deny: Vec<String>,
    allow: Option<Vec<String>>,
}

impl PathRules {
    pub fn new(deny: &[String], allow: Option<&[String]>) -> Self {
        let lower = |v: &[String]| v.iter().map(|p| p.to_ascii_lowercase()).collect();
        PathRules {
            deny: lower(deny),
            allow: allow.map(lower),
        }
    }

    /// Whether a request for `raw_path` may be forwarded as it is.
    pub fn check(&self, raw_path: &str) -> Result<(), Refusal> {
        let path = canonical(raw_path).map_err(Refusal::Ambiguous)?;
        if self.deny.iter().any(|p| under(&path, p)) {
            return Err(Refusal::NotForwarded);
        }
        match &self.allow {
            Some(allow) if !allow.iter().any(|p| under(&path, p)) => Err(Refusal::NotForwarded),
            _ => Ok(()),
        }
    }
}

/// `path` is under `prefix`; a prefix written with a trailing slash also
/// covers the bare directory (`/oauth2/` covers `/oauth2`).
fn under(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix)
        || (prefix.len() > 1 && prefix.ends_with('/') && path == &prefix[..prefix.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_and_refusals() {
        let ok = [
            ("/", "/"),
            ("/1/user/-/profile.json", "/1/user/-/profile.json"),
            (
                "/1/user/-/activities/date/2026-11-23.json",
                "/1/user/-/activities/date/2026-11-23.json",
            ),
            ("/1/x/", "/1/x/"),
            ("/OAuth2/Token", "/oauth2/token"),
            ("/1/foods/search%C3%A9.json", "/1/foods/searché.json"),
            ("/1/a%41b", "/1/aab"),
        ];
        for (raw, want) in ok {
            assert_eq!(canonical(raw).as_deref(), Ok(want), "{raw:?}");
        }
        let refused = [
            "",
            "*",
            "x/y",
            "//oauth2/token",
            "/1//x",
            "/./oauth2/token",
            "/1/../oauth2/token",
            "/..",
            "/1/.",
            "/%2Foauth2/token",
            "/%2foauth2",
            "/%252Foauth2/token",
            "/%2e/oauth2",
            "/%2E%2E/oauth2/",
            "/oauth2;x/token",
            "/oauth2%3bx/token",
            "/1/..;/oauth2/token",
            "/oauth2%00/token",
            "/oauth2%20/token",
            "/oauth2%09/token",
            "/oauth2%3F/token",
            "/1/%c0%ae%c0%ae/oauth2/token",
            "/\\oauth2\\token",
            "/oauth2/x/../../1/user",
            "/oauth2/%2e%2e/1/user",
            "/%2525252foauth2/token",
            "/%ff%fe",
        ];
        for raw in refused {
            assert!(
                canonical(raw).is_err(),
                "{raw:?} was accepted as {:?}",
                canonical(raw)
            );
        }
    }

    /// A path without escapes takes the short way; it must reach the same
    /// verdict, reason and form as the general way: every path of up to
    /// six characters over an alphabet of the characters that matter.
    #[test]
    fn the_short_way_agrees_with_the_general_one() {
        let alphabet = ['/', 'a', 'B', '.', ';', ' ', '\\', '\t', '\x7f'];
        let mut paths = vec![String::from("/")];
        let mut checked = 0;
        while let Some(path) = paths.pop() {
            assert_eq!(
                canonical(&path).map(Cow::into_owned),
                decoded(&path),
                "{path:?}"
            );
            checked += 1;
            if path.len() < 6 {
                paths.extend(alphabet.iter().map(|c| format!("{path}{c}")));
            }
        }
        assert!(checked > 60_000, "{checked}");
    }

    #[test]
    fn deny_and_allow_rules() {
        let deny = vec!["/oauth2/".to_string()];
        let allow = vec!["/1/".to_string(), "/1.2/".to_string()];
        let deny_only = PathRules::new(&deny, None);
        let both = PathRules::new(&deny, Some(&allow));
        use Refusal::NotForwarded as No;
        type Verdict = Result<(), Refusal>;
        let cases: [(&str, Verdict, Verdict); 8] = [
            ("/1/user/-/profile.json", Ok(()), Ok(())),
            ("/oauth2/token", Err(No), Err(No)),
            ("/oauth2", Err(No), Err(No)),
            ("/OAUTH2/token", Err(No), Err(No)),
            ("/oauth2x", Ok(()), Err(No)),
            ("/1.2/x", Ok(()), Ok(())),
            ("/2/x", Ok(()), Err(No)),
            ("/1", Ok(()), Ok(())),
        ];
        for (path, deny_want, both_want) in cases {
            assert_eq!(deny_only.check(path), deny_want, "deny only: {path}");
            assert_eq!(both.check(path), both_want, "deny + allow: {path}");
        }
        assert!(matches!(
            both.check("/2/x/../../1/user"),
            Err(Refusal::Ambiguous(_))
        ));
        assert!(matches!(
            both.check("/2%2f..%2f1/user"),
            Err(Refusal::Ambiguous(_))
        ));
    }
}
