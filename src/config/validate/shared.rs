//! The `[shared]` checks: where Redis is, how to log in, the key prefix and
//! the call timeout. A password written inside `redis_url` is refused with
//! the whole value redacted, because a URL is logged and printed.

use std::time::Duration;

use redis::IntoConnectionInfo;

use super::{Validator, REDACTED};
use crate::config::error::Problem;
use crate::config::raw::RawShared;
use crate::config::{quote, RedisConfig, Secret, SecretSource, SharedConfig};

/// A Redis call slower than this would hold up every request that waits
/// on it; beyond it Redis is as good as down.
const MAX_TIMEOUT: Duration = Duration::from_secs(5);
/// Long enough for any deployment's naming scheme, short enough that the
/// keys stay readable.
const MAX_PREFIX_LEN: usize = 64;

impl Validator<'_> {
    pub(super) fn shared(&mut self, raw: &RawShared) -> Option<SharedConfig> {
        let redis = self.redis(raw);
        let key_prefix = self.key_prefix(&raw.key_prefix);
        let timeout = self.shared_timeout(&raw.timeout);
        Some(SharedConfig {
            redis: redis?,
            key_prefix: key_prefix?,
            timeout: timeout?,
        })
    }

    fn shared_timeout(&mut self, raw: &str) -> Option<Duration> {
        const KEY: &str = "shared.timeout";
        let timeout = self.duration(KEY, raw)?;
        if timeout <= MAX_TIMEOUT {
            return Some(timeout);
        }
        let message = format!(
            "must be at most {}: a slower Redis holds up the requests that wait on it",
            humantime::format_duration(MAX_TIMEOUT)
        );
        self.problem(Problem::new(KEY, message).with_value(quote(raw)));
        None
    }

    /// `Some(None)` when Redis is off (`redis_url = ""`).
    fn redis(&mut self, raw: &RawShared) -> Option<Option<RedisConfig>> {
        let password_set = raw.redis_password_env.is_some() || raw.redis_password_file.is_some();
        if raw.redis_url.is_empty() {
            if password_set {
                let message = "ignored: shared.redis_url is empty (the proxy runs alone)";
                self.warn(Problem::new("shared", message));
            }
            return Some(None);
        }
        let url = self.redis_url(&raw.redis_url);
        let password = self.redis_password(raw);
        let (password, password_source) = password?;
        Some(Some(RedisConfig {
            url: url?,
            password,
            password_source,
        }))
    }

    fn redis_url(&mut self, raw: &str) -> Option<String> {
        const KEY: &str = "shared.redis_url";
        if has_password(raw) {
            let message = "must not contain a password (it would be logged and printed): \
                           set shared.redis_password_env or shared.redis_password_file";
            self.problem(Problem::new(KEY, message).with_value(REDACTED));
            return None;
        }
        match check_url(raw) {
            Ok(()) => Some(raw.to_owned()),
            Err(message) => {
                self.problem(Problem::new(KEY, message).with_value(quote(raw)));
                None
            }
        }
    }

    fn redis_password(
        &mut self,
        raw: &RawShared,
    ) -> Option<(Option<Secret>, Option<SecretSource>)> {
        match (&raw.redis_password_env, &raw.redis_password_file) {
            (None, None) => Some((None, None)),
            (Some(name), None) => {
                let secret = self.secret_from_env("shared.redis_password_env", name)?;
                Some((Some(secret), Some(SecretSource::Env(name.clone()))))
            }
            (None, Some(path)) => {
                let key = "shared.redis_password_file";
                let resolved = self.resolve(key, path)?;
                let secret = self.secret_from_file(key, path, &resolved)?;
                Some((Some(secret), Some(SecretSource::File(resolved))))
            }
            (Some(_), Some(_)) => {
                let message = "only one of redis_password_env, redis_password_file may be set";
                self.problem(Problem::new("shared", message));
                None
            }
        }
    }

    fn key_prefix(&mut self, raw: &str) -> Option<String> {
        let fits = (1..=MAX_PREFIX_LEN).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        if fits {
            return Some(raw.to_owned());
        }
        let message = format!(
            "must be 1 to {MAX_PREFIX_LEN} printable ASCII characters without spaces, \
             \"{{\" or \"}}\" (braces mark a Redis Cluster hash tag)"
        );
        self.problem(Problem::new("shared.key_prefix", message).with_value(quote(raw)));
        None
    }
}

/// Whether the URL's user information (`user:password@`) has a password.
/// Looked at before anything else, so that no other message quotes it.
fn has_password(raw: &str) -> bool {
    let rest = raw.split_once("://").map_or(raw, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// `redis://` or `rediss://`, a host, an optional port and database
/// number, and nothing else: options in a query or fragment (such as
/// rediss' `#insecure`) would change behaviour without showing in `check`.
fn check_url(raw: &str) -> Result<(), String> {
    let scheme = raw.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("redis" | "rediss")) {
        return Err("must start with redis:// or rediss:// (TLS)".into());
    }
    if raw.contains('#') {
        return Err("must not have a fragment (#...)".into());
    }
    if raw.contains('?') {
        return Err("must not have a query (?...)".into());
    }
    let uri: http::Uri = raw.parse().map_err(|e| format!("not a valid URL ({e})"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    raw.into_connection_info()
        .map(drop)
        .map_err(|e| format!("not a valid Redis URL ({})", e.category()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_in_the_user_information() {
        let cases = [
            ("redis://u:p@h:6379/0", true),
            ("redis://:p@h", true),
            ("rediss://user:pa@ss@h", true),
            ("redis://u@h", false),
            ("redis://h:6379", false),
            ("redis://h/0?x=a:b@c", false),
            ("u:p@h", true),
        ];
        for (raw, want) in cases {
            assert_eq!(has_password(raw), want, "{raw}");
        }
    }

    #[test]
    fn urls() {
        let cases: [(&str, Result<(), &str>); 10] = [
            ("redis://127.0.0.1:6379", Ok(())),
            ("redis://10.0.0.5:6379/3", Ok(())),
            ("rediss://cache.example:6380/0", Ok(())),
            ("REDIS://h", Ok(())),
            ("redis://user@h:6379", Ok(())),
            ("http://h:6379", Err("must start with redis://")),
            ("h:6379", Err("must start with redis://")),
            ("rediss://h#insecure", Err("fragment")),
            ("redis://h/?protocol=resp3", Err("query")),
            ("redis://h/zero", Err("not a valid Redis URL")),
        ];
        for (raw, want) in cases {
            match (check_url(raw), want) {
                (Ok(()), Ok(())) => {}
                (Err(got), Err(want)) => assert!(got.contains(want), "{raw}: {got}"),
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            }
        }
    }
}
