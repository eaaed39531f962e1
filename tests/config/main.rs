//! Config loading as an operator meets it: the shipped `proxy.toml`, the
//! defaults, one message per bad setting, and secrets that never leak;
//! and the command line around it (`check`, `run`, exit codes). The rules are tested here and only here; how the proxy behaves under
//! each setting is tested where that behaviour lives (tests/forwarding.rs
//! for `max_request_body`, tests/listener.rs for `allow`, …).

mod cli;
mod loading;
mod rendering;
mod validation;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use fitbit_proxy::config::{Config, ConfigError};

pub(crate) const CANARY: &str = "SECRET_CANARY_config";

pub(crate) const CREDENTIALS: &str = r#"
[credentials]
client_id = "23ABCD"
client_secret_env = "FITBIT_CLIENT_SECRET"
"#;

/// The environment the tests pretend to run in.
pub(crate) fn env(name: &str) -> Option<String> {
    match name {
        "FITBIT_CLIENT_SECRET" => Some(CANARY.to_owned()),
        "EMPTY_SECRET" => Some(String::new()),
        _ => None,
    }
}

pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_at(text, Path::new("proxy.toml"))
}

/// `text` read as if from the file `source`.
pub(crate) fn parse_at(text: &str, source: &Path) -> Result<Config, ConfigError> {
    Config::from_toml_str_with_env(text, source, &env)
}

/// Adds working credentials unless the snippet is about them.
pub(crate) fn with_credentials(snippet: &str) -> String {
    if snippet.contains("[credentials]") {
        snippet.to_owned()
    } else {
        format!("{snippet}\n{CREDENTIALS}")
    }
}

pub(crate) fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory removed on drop (std only, to keep dev-dependencies small).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("fitbit-proxy-config-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
