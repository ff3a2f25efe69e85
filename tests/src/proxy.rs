//! A TCP proxy the tests control, to stage database outages without touching the shared server:
//! the server under test talks to MariaDB through it, and [`TcpProxy::cut`] drops every
//! connection and refuses new ones (as a stopped or unreachable database would) until
//! [`TcpProxy::restore`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy.
pub struct TcpProxy {
    /// Where clients connect (`127.0.0.1:<port>`).
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    cut_tx: watch::Sender<u64>,
}

impl TcpProxy {
    /// Starts forwarding a random loopback port to `target`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    #[expect(clippy::expect_used, reason = "a test helper fails its test")]
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let down = Arc::new(AtomicBool::new(false));
        let (cut_tx, cut_rx) = watch::channel(0u64);
        let is_down = Arc::clone(&down);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    // Refused: closed at once, like a port nobody listens on.
                    drop(client);
                    continue;
                }
                let mut cuts = cut_rx.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        TcpProxy { addr, down, cut_tx }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut_tx.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// The server a `scheme://[user@]host[:port]/…` URL names (`default_port` when it names
    /// none; `localhost` as 127.0.0.1): what a test puts this proxy in front of.
    #[must_use]
    pub fn target_of(url: &str, default_port: u16) -> Option<SocketAddr> {
        let rest = &url[url.find("://")? + 3..];
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        let host = &authority[authority.rfind('@').map_or(0, |i| i + 1)..];
        let host = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:{default_port}")
        };
        host.replace("localhost", "127.0.0.1").parse().ok()
    }

    /// `url` (a `mysql://user@host:port/db` URL) pointed at this proxy instead.
    ///
    /// # Panics
    /// When `url` has no `host:port` authority.
    #[must_use]
    #[expect(clippy::expect_used, reason = "a test helper fails its test")]
    pub fn route(&self, url: &str) -> String {
        let start = url.find("://").expect("scheme") + 3;
        let rest = &url[start..];
        let end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..end];
        let host_start = authority.rfind('@').map_or(0, |i| i + 1);
        format!(
            "{}{}{}{}",
            &url[..start],
            &authority[..host_start],
            self.addr,
            &rest[end..]
        )
    }
}
