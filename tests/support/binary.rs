//! The real `fitbit-proxy` binary as a child process, for what needs a
//! process: signals, exit codes, logs, rlimits, files left behind.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use fitbit_proxy::sim::ServerHandle;
use http::StatusCode;

use super::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_fitbit-proxy");

/// A loopback port that was free a moment ago.
pub async fn free_addr() -> SocketAddr {
    bind().await.local_addr().unwrap()
}

/// A child process, killed if the test fails before it exits.
pub struct Running(pub Option<Child>);

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// SIGHUP: reload the config.
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    fn signal(&self, name: &str) {
        let pid = self.pid().to_string();
        let killed = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    /// Whether the child is still running (it has not exited).
    pub fn alive(&mut self) -> bool {
        let child = self.0.as_mut().expect("running");
        child.try_wait().unwrap().is_none()
    }

    /// Waits (at most 30 s) for the child to exit.
    pub async fn exited(mut self) -> Output {
        let child = self.0.take().expect("running");
        let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the proxy exits")
            .unwrap()
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running binary: its ports and the directory its config is in.
pub struct Proxy {
    pub child: Running,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// Holds `proxy.toml`.
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// The config file the binary runs with.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("proxy.toml")
    }

    /// After SIGTERM: whether `/readyz` went to 503 and the proxy's port
    /// refused connections, polled for at most a second.
    pub async fn draining_and_refusing(&self) -> (bool, bool) {
        let client = http1_client();
        let (mut draining, mut refused) = (false, false);
        for _ in 0..40 {
            if !draining {
                let res = client
                    .request(get(&format!("http://{}/readyz", self.admin)))
                    .await;
                draining = res.is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE);
            }
            if !refused {
                let connect = tokio::net::TcpStream::connect(self.proxy).await;
                refused = connect.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
            }
            if draining && refused {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        (draining, refused)
    }
}

/// How to start the binary; `Default` is the harness's config with the
/// admin listener on, JSON logs and `RUST_LOG=info`.
pub struct Launch {
    pub extra: Extras,
    /// Run through `sh -c "ulimit -n N; exec …"`.
    pub nofile: Option<u32>,
    /// Working directory and `TMPDIR` of the child.
    pub cwd: Option<std::path::PathBuf>,
    /// `log.format`: `json` or `text`.
    pub log_format: &'static str,
    pub rust_log: &'static str,
    /// The admin listener's address (default: a free loopback port).
    pub admin: Option<SocketAddr>,
    /// TOML appended to the config (a section of its own, e.g. `[shared]`).
    pub append: String,
    /// Read the client secret from this file instead of the environment.
    pub secret_file: Option<std::path::PathBuf>,
    /// More environment variables of the child.
    pub env: Vec<(&'static str, String)>,
}

impl Default for Launch {
    fn default() -> Self {
        Launch {
            extra: Extras::default(),
            nofile: None,
            cwd: None,
            log_format: "json",
            rust_log: "info",
            admin: None,
            append: String::new(),
            secret_file: None,
            env: Vec::new(),
        }
    }
}

impl Launch {
    /// The default launch with these extra config lines.
    pub fn with(extra: Extras) -> Self {
        Launch {
            extra,
            ..Launch::default()
        }
    }

    /// Writes the config and starts the binary in front of `upstream`,
    /// without waiting for it.
    pub async fn spawn(self, upstream: &ServerHandle) -> Proxy {
        let proxy = free_addr().await;
        let admin = match self.admin {
            Some(addr) => addr,
            None => free_addr().await,
        };
        let mut extra = self.extra;
        extra.admin = Some(format!("addr = \"{admin}\""));
        let toml = config_toml(upstream, None, &extra)
            .replace("addr = \"127.0.0.1:0\"", &format!("addr = \"{proxy}\""))
            + &format!("[log]\nformat = \"{}\"\n", self.log_format)
            + &self.append;
        let toml = match &self.secret_file {
            Some(file) => toml.replace(
                &format!("client_secret_env = \"{SECRET_ENV}\""),
                &format!("client_secret_file = {:?}", file.display().to_string()),
            ),
            None => toml,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, toml).unwrap();
        let mut cmd = match self.nofile {
            None => Command::new(BIN),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(BIN);
                sh
            }
        };
        cmd.args(["run", "--config"])
            .arg(&path)
            .env(SECRET_ENV, SECRET)
            .env("RUST_LOG", self.rust_log)
            // Two serving threads on any machine, as on a two-core one
            // (inbound/workers.rs); a test's own env may say otherwise.
            .env("TOKIO_WORKER_THREADS", "2")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd).env("TMPDIR", cwd);
        }
        Proxy {
            child: Running(Some(cmd.spawn().unwrap())),
            proxy,
            admin,
            dir,
        }
    }

    /// [`Launch::spawn`], then waits (bounded, 10 s) until `/readyz` says
    /// 200.
    pub async fn start(self, upstream: &ServerHandle) -> Proxy {
        let p = self.spawn(upstream).await;
        let client = http1_client();
        for _ in 0..400 {
            if let Ok(res) = client
                .request(get(&format!("http://{}/readyz", p.admin)))
                .await
            {
                if res.status() == StatusCode::OK {
                    return p;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the proxy did not become ready within 10 s");
    }
}

/// Every stderr line as JSON (all of them must be).
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {l}: {e}"))
        })
        .collect()
}

/// The access-log lines among `lines`.
pub fn access_lines(lines: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    lines
        .iter()
        .filter(|v| v["target"] == "fitbit_proxy::access")
        .collect()
}

/// Whether any file under `dir` contains `needle`.
pub fn any_file_contains(dir: &Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            any_file_contains(&path, needle)
        } else {
            std::fs::read(&path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
        }
    })
}
