//! The command line's help, addresses and errors, on the real binary: only
//! `run` and `check` offer `--config`, no help shows an unset variable's
//! empty value, `--listen` takes a host name, and a failure to bind is said
//! once, with the system's reason once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use super::cli::{fitbit_proxy, shipped_config, text, BIN};

/// A child killed if the test ends before it does.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn only_run_and_check_offer_config_and_no_help_shows_an_empty_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (args, offers_config) in [
        (&["--help"][..], true),
        (&["run", "--help"][..], true),
        (&["check", "--help"][..], true),
        (&["demo", "--help"][..], false),
        (&["simulate", "--help"][..], false),
    ] {
        let out = fitbit_proxy(args, dir.path());
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        let help = text(&out);
        assert_eq!(
            help.contains("--config"),
            offers_config,
            "{args:?}:\n{help}"
        );
        assert!(!help.contains("[env:"), "{args:?}:\n{help}");
        if offers_config {
            assert!(help.contains("$FITBIT_PROXY_CONFIG"), "{args:?}:\n{help}");
        }
    }
}

#[test]
fn demo_and_simulate_refuse_a_config_they_would_ignore() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["demo", "simulate"] {
        let out = fitbit_proxy(&["--config", "proxy.toml", command], dir.path());
        assert_eq!(out.status.code(), Some(2), "{command}: {}", text(&out));
        assert!(
            text(&out).contains("takes no --config"),
            "{command}: {}",
            text(&out)
        );
        let out = fitbit_proxy(&[command, "--config", "proxy.toml"], dir.path());
        assert_eq!(out.status.code(), Some(2), "{command}: {}", text(&out));
    }
}

/// `--config` after the command, else before it, else
/// `$FITBIT_PROXY_CONFIG`, else `./proxy.toml`.
#[test]
fn the_config_path_comes_from_the_flag_then_the_variable_then_the_default() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["after.toml", "before.toml", "variable.toml"] {
        std::fs::write(dir.path().join(name), shipped_config()).unwrap();
    }
    let check = |args: &[&str], variable: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(dir.path())
            .env("FITBIT_CLIENT_SECRET", "x")
            .env_remove("FITBIT_PROXY_CONFIG");
        if let Some(v) = variable {
            cmd.env("FITBIT_PROXY_CONFIG", v);
        }
        let out = cmd.output().unwrap();
        // A missing file is named in the error: that tells which was read.
        (out.status.code(), text(&out))
    };
    let (code, _) = check(
        &["--config", "before.toml", "check", "--config", "after.toml"],
        Some("nowhere-variable.toml"),
    );
    assert_eq!(code, Some(0));
    let (code, out) = check(
        &[
            "--config",
            "before.toml",
            "check",
            "--config",
            "missing-after.toml",
        ],
        None,
    );
    assert_eq!(code, Some(2));
    assert!(out.contains("missing-after.toml"), "{out}");
    let (code, out) = check(
        &["--config", "missing-before.toml", "check"],
        Some("variable.toml"),
    );
    assert_eq!(code, Some(2));
    assert!(out.contains("missing-before.toml"), "{out}");
    let (code, out) = check(&["check"], Some("missing-variable.toml"));
    assert_eq!(code, Some(2));
    assert!(out.contains("missing-variable.toml"), "{out}");
    // An empty variable counts as unset: ./proxy.toml, which is not there.
    let (code, out) = check(&["check"], Some(""));
    assert_eq!(code, Some(2));
    assert!(out.contains("proxy.toml"), "{out}");
}

#[test]
fn listen_takes_a_host_name_and_prefers_its_loopback_address() {
    let mut child = Command::new(BIN)
        .args(["simulate", "--listen", "localhost:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Running(child);
    let banner = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a banner line")
        .unwrap();
    assert!(
        banner.contains("http://127.0.0.1:"),
        "localhost:0 should listen on 127.0.0.1: {banner}"
    );
    drop(child);

    let dir = tempfile::tempdir().unwrap();
    for bad in ["localhost", "no-port:", "127.0.0.1:99999"] {
        let out = fitbit_proxy(&["demo", "--listen", bad], dir.path());
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        assert!(
            text(&out).contains("expected IP:PORT or HOST:PORT"),
            "{bad}: {}",
            text(&out)
        );
    }
}

/// Exit 1, one line saying what could not be bound, the system's reason
/// once.
fn assert_one_bind_error(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(1), "{what}: {}", text(out));
    let all = text(out);
    let lines: Vec<&str> = all.lines().filter(|l| l.contains("cannot bind")).collect();
    assert_eq!(lines.len(), 1, "{what}: said once:\n{all}");
    assert!(lines[0].contains(what), "{what}: {}", lines[0]);
    assert_eq!(
        all.matches("Address already in use").count(),
        1,
        "{what}: the reason once:\n{all}"
    );
    assert_eq!(all.matches("os error").count(), 1, "{what}:\n{all}");
}

#[test]
fn a_bind_error_is_printed_once_with_the_reason_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();

    let out = fitbit_proxy(&["demo", "--listen", &addr], dir.path());
    assert_one_bind_error(&out, &format!("cannot bind {addr}"));
    let out = fitbit_proxy(&["simulate", "--listen", &addr], dir.path());
    assert_one_bind_error(&out, &format!("cannot bind {addr}"));

    let listen_taken = shipped_config()
        .replace("addr = \"127.0.0.1:8080\"", &format!("addr = \"{addr}\""))
        .replace("addr = \"127.0.0.1:9090\"", "addr = \"\"");
    std::fs::write(dir.path().join("listen.toml"), listen_taken).unwrap();
    let out = fitbit_proxy(&["run", "--config", "listen.toml"], dir.path());
    assert_one_bind_error(&out, &format!("cannot bind listen.addr {addr}"));

    let admin_taken = shipped_config()
        .replace("addr = \"127.0.0.1:8080\"", "addr = \"127.0.0.1:0\"")
        .replace("addr = \"127.0.0.1:9090\"", &format!("addr = \"{addr}\""));
    std::fs::write(dir.path().join("admin.toml"), admin_taken).unwrap();
    let out = fitbit_proxy(&["run", "--config", "admin.toml"], dir.path());
    assert_one_bind_error(&out, &format!("cannot bind admin.addr {addr}"));
}
