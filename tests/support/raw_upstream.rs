//! A raw upstream for answers the simulator never gives (a `101`, repeated
//! `Set-Cookie` lines, an h2 peer that looks at the HPACK bytes): it hands
//! each accepted connection to the test, and a proxy is started in front of
//! it with the simulator as its token endpoint.

use std::net::SocketAddr;

use fitbit_proxy::sim::{Sim, TestCa};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;

use super::{bind, config_toml, parse_config, serve, sim_config, spawn_proxy, write_ca};
use super::{Extras, Harness, Transport};

/// Starts a proxy whose `upstream.url` is `url` (the raw upstream's) and
/// whose token endpoint is a fresh simulator; `ca` is trusted for a TLS
/// upstream. `Harness::sim` sees only token requests.
pub async fn start_proxy(url: &str, ca: Option<&TestCa>, extra: &Extras) -> Harness {
    let sim = Sim::new(sim_config());
    let (upstream, _) = serve(&sim, Transport::Plain).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.map(|ca| write_ca(dir.path(), ca));
    let toml = config_toml(&upstream, ca_file.as_deref(), extra).replacen(
        &format!("\nurl = \"{}\"", upstream.base_url()),
        &format!("\nurl = \"{url}\""),
        1,
    );
    assert!(toml.contains(url), "{toml}");
    let config = parse_config(&toml, dir.path());
    let (proxy, stop, task) = spawn_proxy(config.clone()).await;
    Harness {
        sim,
        upstream,
        proxy,
        admin: None,
        config,
        dir,
        stop: Some(stop),
        task,
    }
}

/// A loopback listener for the raw upstream and its address.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let l = bind().await;
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Reads one HTTP/1 request head (through the blank line), or `None` if
/// the peer closed first.
pub async fn read_head<I: AsyncRead + Unpin>(io: &mut I) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if io.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}
