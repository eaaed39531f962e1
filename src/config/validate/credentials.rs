//! The `[credentials]` checks: token endpoint, client id, and the one secret
//! source, whose value is read here so that a missing variable or file fails
//! `check` rather than the first token request.

use std::path::Path;

use http::Uri;

use super::{Validator, REDACTED};
use crate::config::error::Problem;
use crate::config::raw::RawCredentials;
use crate::config::url::{self, Scheme};
use crate::config::Secret;
use crate::config::{files, quote, CredentialsConfig, SecretSource};
use crate::profile::fitbit::TOKEN_LIFETIMES;

const SECRET_SOURCES: &str = "client_secret_env, client_secret_file, client_secret";

impl Validator<'_> {
    pub(super) fn credentials(&mut self, raw: &RawCredentials) -> Option<CredentialsConfig> {
        let token_url = self.token_url(&raw.token_url);
        let client_id = self.client_id(raw.client_id.as_deref());
        let secret = self.secret(raw);
        let expires_in = self.expires_in(raw.expires_in);
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
            expires_in: expires_in?,
            refresh_before_expiry: refresh_before_expiry?,
        })
    }

    fn token_url(&mut self, raw: &str) -> Option<Uri> {
        const KEY: &str = "credentials.token_url";
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

    fn expires_in(&mut self, raw: i64) -> Option<u32> {
        let granted = u32::try_from(raw)
            .ok()
            .filter(|s| TOKEN_LIFETIMES.contains(s));
        if granted.is_some() {
            return granted;
        }
        let allowed: Vec<String> = TOKEN_LIFETIMES.iter().map(u32::to_string).collect();
        let message = format!("must be one of {}", allowed.join(", "));
        self.problem(Problem::new("credentials.expires_in", message).with_value(raw.to_string()));
        None
    }
}
