//! The `[credentials]` checks: token endpoint, client id, the one secret
//! source (whose value is read here so that a missing variable or file
//! fails `check` rather than the first token request), and the token
//! request's options, which default by profile.

use std::path::Path;

use http::Uri;

use super::{Validator, REDACTED};
use crate::config::error::Problem;
use crate::config::raw::RawCredentials;
use crate::config::url::{self, Scheme};
use crate::config::Secret;
use crate::config::{files, quote, ClientAuth, CredentialsConfig, Profile, SecretSource};
use crate::profile::Lifetimes;

const SECRET_SOURCES: &str = "client_secret_env, client_secret_file, client_secret";

/// Form fields the proxy writes itself; `params` may not name them.
const RESERVED_PARAMS: [&str; 4] = ["grant_type", "client_id", "client_secret", "scope"];

impl Validator<'_> {
    pub(super) fn credentials(&mut self, raw: &RawCredentials) -> Option<CredentialsConfig> {
        let token_url = self.token_url(raw.token_url.as_deref());
        let client_id = self.client_id(raw.client_id.as_deref());
        let secret = self.secret(raw);
        let client_auth = self.client_auth(&raw.client_auth);
        let expires_in = self.expires_in(raw.expires_in);
        let params = self.params(raw, expires_in.flatten().is_some());
        let refresh_before_expiry = self.duration_or_zero(
            "credentials.refresh_before_expiry",
            &raw.refresh_before_expiry,
        );
        let (client_secret, secret_source) = secret?;
        Some(CredentialsConfig {
            token_url: token_url?,
            client_id: client_id?,
            client_secret,
            secret_source,
            client_auth: client_auth?,
            scope: raw.scope.clone(),
            params: params?,
            expires_in: expires_in?,
            refresh_before_expiry: refresh_before_expiry?,
        })
    }

    fn token_url(&mut self, raw: Option<&str>) -> Option<Uri> {
        const KEY: &str = "credentials.token_url";
        let raw = self.or_profile_default(KEY, raw, Profile::default_token_url)?;
        let (uri, scheme) = self.url(KEY, raw, url::token)?;
        if scheme == Scheme::Http {
            let message =
                "plain http to a loopback address: acceptable for tests and sidecars only";
            self.warn(Problem::new(KEY, message).with_value(quote(raw)));
        }
        Some(uri)
    }

    fn client_id(&mut self, raw: Option<&str>) -> Option<String> {
        const KEY: &str = "credentials.client_id";
        match raw {
            None => self.problem(Problem::new(KEY, "missing (required)")),
            Some(id) if id.trim().is_empty() => {
                self.problem(Problem::new(KEY, "must not be empty").with_value(quote(id)))
            }
            Some(id) => return Some(id.to_owned()),
        }
        None
    }

    /// Exactly one source may be set.
    fn secret(&mut self, raw: &RawCredentials) -> Option<(Secret, SecretSource)> {
        let set = [
            raw.client_secret_env.is_some(),
            raw.client_secret_file.is_some(),
            raw.client_secret.is_some(),
        ];
        let message = match set.iter().filter(|s| **s).count() {
            0 => format!("one of {SECRET_SOURCES} is required"),
            1 => return self.secret_value(raw),
            _ => format!("only one of {SECRET_SOURCES} may be set"),
        };
        self.problem(Problem::new("credentials", message));
        None
    }

    fn secret_value(&mut self, raw: &RawCredentials) -> Option<(Secret, SecretSource)> {
        if let Some(name) = &raw.client_secret_env {
            let secret = self.secret_from_env("credentials.client_secret_env", name)?;
            return Some((secret, SecretSource::Env(name.clone())));
        }
        if let Some(path) = &raw.client_secret_file {
            let resolved = self.resolve("credentials.client_secret_file", path)?;
            let secret =
                self.secret_from_file("credentials.client_secret_file", path, &resolved)?;
            return Some((secret, SecretSource::File(resolved)));
        }
        let secret = raw.client_secret.clone()?;
        let literal =
            |message: &str| Problem::new("credentials.client_secret", message).with_value(REDACTED);
        if secret.expose().trim().is_empty() {
            self.problem(literal("must not be empty"));
            return None;
        }
        self.warn(literal(
            "discouraged: use client_secret_env or client_secret_file",
        ));
        Some((secret, SecretSource::Literal))
    }

    /// The secret in the environment variable `name`, set by `key`.
    /// Messages name the variable, never its value.
    pub(super) fn secret_from_env(&mut self, key: &str, name: &str) -> Option<Secret> {
        let message = match (self.env)(name) {
            _ if name.is_empty() => "must name an environment variable".to_owned(),
            None => format!("environment variable {name} is not set"),
            Some(value) if value.trim().is_empty() => {
                format!("environment variable {name} is empty")
            }
            Some(value) => return Some(Secret::new(value)),
        };
        let problem = Problem::new(key, message);
        self.problem(problem.with_value(quote(name)));
        None
    }

    /// The secret in the file `raw` (resolved to `path`), set by `key`.
    pub(super) fn secret_from_file(&mut self, key: &str, raw: &str, path: &Path) -> Option<Secret> {
        match files::read_secret(path) {
            Ok(secret) => Some(secret),
            Err(message) => {
                let problem = Problem::new(key, message);
                self.problem(problem.with_value(quote(raw)));
                None
            }
        }
    }

    fn client_auth(&mut self, raw: &str) -> Option<ClientAuth> {
        match raw {
            "basic" => Some(ClientAuth::Basic),
            "post" => Some(ClientAuth::Post),
            other => {
                let message = r#"must be "basic" (Authorization header) or "post" (form body)"#;
                let problem = Problem::new("credentials.client_auth", message);
                self.problem(problem.with_value(quote(other)));
                None
            }
        }
    }

    /// Extra form fields; none may name a field the proxy writes itself
    /// (nor `expires_in` while that is sent from its own key).
    fn params(
        &mut self,
        raw: &RawCredentials,
        sends_expires_in: bool,
    ) -> Option<Vec<(String, String)>> {
        let mut ok = true;
        for (name, value) in &raw.params {
            let message = if RESERVED_PARAMS.contains(&name.as_str()) {
                format!(
                    "reserved: the proxy writes {name} itself (from client_id, the secret source, client_auth and scope)"
                )
            } else if name == "expires_in" && sends_expires_in {
                "set credentials.expires_in instead".to_owned()
            } else {
                continue;
            };
            ok = false;
            let key = format!("credentials.params.{name}");
            let value = if name == "client_secret" {
                REDACTED.to_owned()
            } else {
                quote(value)
            };
            self.problem(Problem::new(&key, message).with_value(value));
        }
        ok.then(|| {
            raw.params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// The lifetime to ask for: under a profile with a list of lifetimes,
    /// one of them (its default when not set); otherwise any positive
    /// number of seconds, and nothing sent when not set.
    fn expires_in(&mut self, raw: Option<i64>) -> Option<Option<u32>> {
        const KEY: &str = "credentials.expires_in";
        let message = match (self.profile.lifetimes(), raw) {
            (Lifetimes::OneOf(_, default), None) => return Some(Some(default)),
            (Lifetimes::AnyWhenSet, None) => return Some(None),
            (Lifetimes::OneOf(allowed, _), Some(secs)) => {
                if let Some(ok) = u32::try_from(secs).ok().filter(|s| allowed.contains(s)) {
                    return Some(Some(ok));
                }
                let allowed: Vec<String> = allowed.iter().map(u32::to_string).collect();
                format!("must be one of {}", allowed.join(", "))
            }
            (Lifetimes::AnyWhenSet, Some(secs)) => match u32::try_from(secs) {
                Ok(ok) if ok > 0 => return Some(Some(ok)),
                _ => "must be a positive number of seconds".to_owned(),
            },
        };
        self.problem(Problem::new(KEY, message).with_value(raw.unwrap_or_default().to_string()));
        None
    }
}
