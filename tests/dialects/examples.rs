//! The configs in `examples/` for real APIs (their real token endpoints and
//! conventions) are valid: `fitbit-proxy check` accepts each, with the
//! secret in its environment variable, and prints what the profile and the
//! file give.

use std::path::Path;
use std::process::Command;

use crate::support::binary::BIN;

/// Each example, its secret's variable, and lines `check` must print.
const EXAMPLES: [(&str, &str, &[&str]); 5] = [
    ("twitch.toml", "TWITCH_CLIENT_SECRET", &["token_url = \"https://id.twitch.tv/oauth2/token\"", "client_auth = \"post\"", "headers = \"ratelimit\"", "reset = \"epoch\""]),
    ("okta.toml", "OKTA_CLIENT_SECRET", &["scope = \"custom.read\"", "headers = \"x-rate-limit\"", "reset = \"epoch\""]),
    ("auth0.toml", "AUTH0_CLIENT_SECRET", &["params = { audience = \"https://your-tenant.us.auth0.com/api/v2/\" }", "headers = \"x-ratelimit\""]),
    ("zoom.toml", "ZOOM_CLIENT_SECRET", &["token_url = \"https://zoom.us/oauth/token?grant_type=account_credentials&account_id=your-account-id\"", "headers = \"none\""]),
    ("spotify.toml", "SPOTIFY_CLIENT_SECRET", &["token_url = \"https://accounts.spotify.com/api/token\"", "headers = \"none\"", "window = \"30s\""]),
];

#[test]
fn every_example_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for (file, secret_env, want) in EXAMPLES {
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(dir.join(file))
            .env(secret_env, "SECRET_CANARY_example")
            .env_remove("FITBIT_PROXY_CONFIG")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{file}: {stderr}");
        assert!(stdout.contains("profile = \"generic\""), "{file}: {stdout}");
        assert!(
            stdout.contains("# expires_in: not sent"),
            "{file}: {stdout}"
        );
        for line in want {
            assert!(stdout.contains(line), "{file}: no {line:?} in\n{stdout}");
        }
        assert!(!stdout.contains("SECRET_CANARY") && !stderr.contains("SECRET_CANARY"));
    }
}
