//! A real `redis-server` per test, on a free loopback port, with nothing
//! saved to disk; stopped by its PID when the handle drops. Faults are
//! real: the process can be paused (SIGSTOP), resumed, killed and started
//! again on the same port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::bind;

/// The longest a server may take to answer its first PING.
const START_LIMIT: Duration = Duration::from_secs(10);

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A server with no password.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(&[]).await
    }

    /// A server with extra arguments (`["--requirepass", "pw"]`).
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..5 {
            server.port = bind().await.local_addr().unwrap().port();
            if server.spawn().await {
                return server;
            }
        }
        panic!("redis-server did not start (is it installed? .ci/run installs it)");
    }

    /// Starts one on a port that was free a moment ago (for a proxy
    /// configured before Redis is up).
    pub async fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port,
            extra: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        assert!(server.spawn().await, "redis-server did not start on {port}");
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits for PING; `false` if it exited (the
    /// port was taken in the meantime) or never answered.
    async fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--enable-debug-command", "local", "--loglevel", "warning"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        while tokio::time::Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if self.ping().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        false
    }

    async fn ping(&self) -> bool {
        let Ok(mut conn) = self.connect().await else {
            return false;
        };
        let ping = redis::cmd("PING");
        let pong = ping.query_async::<String>(&mut conn);
        // A server with a password answers NOAUTH: it is up all the same.
        tokio::time::timeout(Duration::from_secs(1), pong)
            .await
            .is_ok()
    }

    /// A connection of the test's own (authenticated when the server asks
    /// for `--requirepass`).
    pub async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut url = self.url();
        if let Some(i) = self.extra.iter().position(|a| a == "--requirepass") {
            url = format!("redis://:{}@127.0.0.1:{}", self.extra[i + 1], self.port);
        }
        let client = redis::Client::open(url)?;
        let connecting = client.get_multiplexed_async_connection();
        tokio::time::timeout(Duration::from_secs(2), connecting)
            .await
            .map_err(|_| redis::RedisError::from(std::io::Error::other("connect timed out")))?
    }

    /// Runs one command and returns its answer.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        let mut conn = self.connect().await.expect("connect to the test's Redis");
        cmd.query_async(&mut conn).await.expect("Redis command")
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").id().to_string()
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill").args([signal, &self.pid()]).status();
        assert!(sent.unwrap().success(), "kill {signal}");
    }

    /// Pauses the process: connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kills the process (its data is gone: nothing is saved).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty server on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if self.spawn().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server did not start again on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused process ignores SIGTERM but not SIGKILL.
        self.kill();
    }
}
