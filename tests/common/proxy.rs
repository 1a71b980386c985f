//! A TCP fault proxy for one link between sites: it forwards bytes both ways until told to
//! drop them silently (a blackhole: connections stay open, nothing arrives), to reset every
//! connection (and refuse new ones), or to delay each chunk. Point a site at [`FaultProxy::url`]
//! instead of at its peer, then change the [`Fault`] while the test runs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the link does to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Nothing arrives and nothing says so: connections stay open and stall (what a
    /// dropped route or a firewall's DROP does to TCP).
    Blackhole,
    /// Reset every open connection and every new one.
    Reset,
    /// Forward every chunk after this long.
    Delay(Duration),
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `target`.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (fault, watching) = watch::channel(Fault::None);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let fault = watching.clone();
                tokio::spawn(link(client, target, fault));
            }
        });
        FaultProxy { addr, fault, task }
    }

    /// The URL a site should use for the peer behind this proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn link(client: TcpStream, target: SocketAddr, fault: watch::Receiver<Fault>) {
    if *fault.borrow() == Fault::Reset {
        reset(client);
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        reset(client);
        return;
    };
    // Closing with a reset, not an orderly shutdown: what a fault looks like to the sites
    // (and the proxy carries gRPC, which never half-closes a connection it still needs).
    for s in [&client, &server] {
        let _ = s.set_nodelay(true);
        abortive(s);
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, fault.clone());
    let down = pump(server_read, client_write, fault);
    // When either direction ends, both do: the halves drop, and with them the sockets.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Copies `from` to `to` under the current fault; ends on EOF, an error or a reset. A
/// blackhole stalls the copy (bytes wait, as TCP's would in retransmission, and flow again
/// if the link heals before either side gives up), rather than dropping bytes from the
/// middle of a stream, which no real network does.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if !passable(&mut fault).await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = fault.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        if !passable(&mut fault).await {
            return;
        }
        let delay = match *fault.borrow() {
            Fault::Delay(d) => Some(d),
            _ => None,
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits out a blackhole; false once the link is reset (or the proxy is gone).
async fn passable(fault: &mut watch::Receiver<Fault>) -> bool {
    loop {
        let now = *fault.borrow_and_update();
        match now {
            Fault::Reset => return false,
            Fault::Blackhole => {
                if fault.changed().await.is_err() {
                    return false;
                }
            }
            Fault::None | Fault::Delay(_) => return true,
        }
    }
}

/// Closes `stream` with a reset rather than an orderly shutdown.
fn reset(stream: TcpStream) {
    abortive(&stream);
    drop(stream);
}

/// Makes closing `stream` send a reset. A zero linger never blocks on drop (tokio deprecates
/// `set_linger` for the non-zero case, which does).
#[allow(deprecated)]
fn abortive(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}
