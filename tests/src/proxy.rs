//! A TCP proxy that holds replies, cuts or severs connections: partitions
//! between a worker and etcd, made on demand.

/// A TCP proxy on loopback whose replies can be held: while held, bytes from
/// the target to clients wait (requests still go through). A claim sent then
/// commits in etcd while its answer never reaches the worker in time: the
/// "answer lost" half of a partition, made on demand. A partition holds the
/// requests too: nothing the client sends reaches etcd (not even lease
/// renewals) until it ends. Severing closes every connection and refuses new
/// ones until it ends: requests in flight fail for good.
pub struct ReplyHoldProxy {
    /// `http://127.0.0.1:{port}`, for a client's endpoint list.
    pub url: String,
    held: tokio::sync::watch::Sender<bool>,
    cut: tokio::sync::watch::Sender<bool>,
    severed: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl ReplyHoldProxy {
    /// Proxies to `target` (`host:port`).
    pub async fn start(target: &str) -> anyhow::Result<ReplyHoldProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (held, _) = tokio::sync::watch::channel(false);
        let (cut, _) = tokio::sync::watch::channel(false);
        let (severed, _) = tokio::sync::watch::channel(false);
        let target = target.to_string();
        let held_rx = held.subscribe();
        let cut_rx = cut.subscribe();
        let severed_rx = severed.subscribe();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *severed_rx.borrow() {
                    continue;
                }
                let target = target.clone();
                let held = held_rx.clone();
                let cut = cut_rx.clone();
                let mut severed = severed_rx.clone();
                tokio::spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(&target).await {
                        tokio::select! {
                            _ = proxy_connection(client, server, held, cut) => {}
                            _ = severed.wait_for(|s| *s) => {}
                        }
                    }
                });
            }
        });
        Ok(ReplyHoldProxy {
            url,
            held,
            cut,
            severed,
            accept,
        })
    }

    /// Holds (true) or releases (false) every reply.
    pub fn hold(&self, on: bool) {
        self.held.send_replace(on);
    }

    /// Closes every connection and refuses new ones (true), or accepts
    /// them again (false).
    pub fn sever(&self, on: bool) {
        self.severed.send_replace(on);
    }

    /// Starts (true) or ends (false) a partition: requests and replies both
    /// wait.
    pub fn partition(&self, on: bool) {
        self.cut.send_replace(on);
        self.held.send_replace(on);
    }
}

impl Drop for ReplyHoldProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn proxy_connection(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    held: tokio::sync::watch::Receiver<bool>,
    cut: tokio::sync::watch::Receiver<bool>,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = copy_unless_held(client_read, server_write, cut) => {}
        _ = copy_unless_held(server_read, client_write, held) => {}
    }
}

/// Copies bytes from `from` to `to`, waiting while `held` is true (bytes
/// read just before a hold wait for its end too).
async fn copy_unless_held(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut held: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if held.wait_for(|h| !*h).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if held.wait_for(|h| !*h).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
