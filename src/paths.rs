//! Path rules (`upstream.deny_paths`, `upstream.allow_paths`), matched on a
//! normalised path so that `//oauth2/`, `/./oauth2/`, `/1/../oauth2/`,
//! `%2Foauth2` or `/OAuth2/` cannot slip past a rule. Pure functions.

use percent_encoding::percent_decode_str;

/// How many rounds of percent-decoding are applied before matching: enough
/// to see through `%252F` (double encoding) without looping on hostile input.
const DECODE_ROUNDS: usize = 3;

/// The most permissive reading any server could give `raw`: percent-decoded
/// (repeatedly), `\` taken as `/`, empty and `.` segments dropped, `..`
/// resolved, ASCII-lowercased. Always starts with `/`.
pub fn normalise(raw: &str) -> String {
    let mut decoded = raw.to_owned();
    for _ in 0..DECODE_ROUNDS {
        let next = percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = decoded.ends_with(['/', '\\']) && !segments.is_empty();
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out.make_ascii_lowercase();
    out
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

    /// Whether a request for `raw_path` may be forwarded.
    pub fn permits(&self, raw_path: &str) -> bool {
        let path = normalise(raw_path);
        if self.deny.iter().any(|p| under(&path, p)) {
            return false;
        }
        match &self.allow {
            Some(allow) => allow.iter().any(|p| under(&path, p)),
            None => true,
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
    fn normalises_like_the_most_permissive_server() {
        let cases = [
            ("/", "/"),
            ("", "/"),
            ("/1/user/-/profile.json", "/1/user/-/profile.json"),
            ("//oauth2/token", "/oauth2/token"),
            ("/./oauth2/token", "/oauth2/token"),
            ("/1/../oauth2/token", "/oauth2/token"),
            ("/../../oauth2/", "/oauth2/"),
            ("/%2Foauth2/token", "/oauth2/token"),
            ("/%2foauth2%2ftoken", "/oauth2/token"),
            ("/%252Foauth2/token", "/oauth2/token"),
            ("/%2e/oauth2", "/oauth2"),
            ("/%2E%2E/oauth2/", "/oauth2/"),
            ("/OAuth2/Token", "/oauth2/token"),
            ("/\\oauth2\\token", "/oauth2/token"),
            ("/1/x/", "/1/x/"),
            ("/1//x", "/1/x"),
            ("/%ff%fe", "/\u{fffd}\u{fffd}"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise(raw), want, "raw: {raw:?}");
        }
    }

    #[test]
    fn deny_and_allow_rules() {
        let deny = vec!["/oauth2/".to_string()];
        let allow = vec!["/1/".to_string(), "/1.2/".to_string()];
        let deny_only = PathRules::new(&deny, None);
        let both = PathRules::new(&deny, Some(&allow));
        let cases = [
            ("/1/user/-/profile.json", true, true),
            ("/oauth2/token", false, false),
            ("/oauth2", false, false),
            ("//oauth2/token", false, false),
            ("/1/../oauth2/token", false, false),
            ("/%2Foauth2/token", false, false),
            ("/OAUTH2/token", false, false),
            ("/oauth2x", true, false),
            ("/1.2/x", true, true),
            ("/2/x", true, false),
            ("/1", true, true),
            ("/1/%2e%2e/2/x", true, false),
        ];
        for (path, deny_ok, both_ok) in cases {
            assert_eq!(deny_only.permits(path), deny_ok, "deny only: {path}");
            assert_eq!(both.permits(path), both_ok, "deny + allow: {path}");
        }
    }
}
