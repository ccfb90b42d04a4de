//! A TCP proxy between atrest and etcd that injects faults for real: it cuts every open
//! connection at random moments, or stalls (stops forwarding without closing), optionally once
//! a number of bytes have gone from etcd to the client.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::free_port;

#[derive(Default)]
struct State {
    /// Set on drop: every thread stops.
    closed: AtomicBool,
    /// While set, no byte is forwarded (connections stay open).
    stalled: AtomicBool,
    /// Stall once this many bytes went from etcd to the client (0: never).
    stall_after: AtomicU64,
    /// Bytes forwarded from etcd to the client.
    downstream: AtomicU64,
    /// Connections cut so far.
    cuts: AtomicU64,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// Open sockets (both sides), for cutting.
    open: Mutex<Vec<TcpStream>>,
}

/// A running proxy to one etcd endpoint; stops (and closes every connection) on drop.
pub struct TcpProxy {
    /// `http://127.0.0.1:PORT`: give this to atrest instead of etcd's endpoint.
    pub endpoint: String,
    state: Arc<State>,
}

impl TcpProxy {
    /// Starts a proxy to `target` (`http://127.0.0.1:PORT`).
    pub fn start(target: &str) -> TcpProxy {
        let upstream = target
            .rsplit("//")
            .next()
            .expect("endpoint has a host")
            .to_owned();
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let state = Arc::new(State::default());
        let s = state.clone();
        thread::spawn(move || {
            while !s.closed.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        s.accepted.fetch_add(1, Ordering::Relaxed);
                        pipe(&s, client, server);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TcpProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            state,
        }
    }

    /// Cuts every open connection (both directions, at once).
    pub fn cut_all(&self) -> u64 {
        cut_all(&self.state)
    }

    /// Cuts every open connection at pseudo-random moments, every `min_ms..max_ms`
    /// milliseconds (xorshift from `seed`), until the proxy is dropped.
    pub fn cut_randomly(&self, seed: u64, min_ms: u64, max_ms: u64) {
        let state = self.state.clone();
        thread::spawn(move || {
            let mut x = seed | 1;
            while !state.closed.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let wait = min_ms + x % (max_ms - min_ms).max(1);
                thread::sleep(Duration::from_millis(wait));
                if !state.closed.load(Ordering::Relaxed) {
                    cut_all(&state);
                }
            }
        });
    }

    /// Stops or resumes forwarding (open connections stay open: requests hang).
    pub fn set_stalled(&self, stalled: bool) {
        self.state.stalled.store(stalled, Ordering::Relaxed);
    }

    /// Whether the proxy is stalled now.
    pub fn is_stalled(&self) -> bool {
        self.state.stalled.load(Ordering::Relaxed)
    }

    /// Stalls once `bytes` more bytes have gone from etcd to the client.
    pub fn stall_after(&self, bytes: u64) {
        let at = self.state.downstream.load(Ordering::Relaxed) + bytes;
        self.state.stall_after.store(at, Ordering::Relaxed);
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::Relaxed);
        self.state.stalled.store(false, Ordering::Relaxed);
        for s in std::mem::take(&mut *self.state.open.lock().unwrap()) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn cut_all(state: &State) -> u64 {
    let open: Vec<TcpStream> = std::mem::take(&mut *state.open.lock().unwrap());
    let n = open.len() as u64 / 2;
    for s in open {
        let _ = s.shutdown(Shutdown::Both);
    }
    state.cuts.fetch_add(n, Ordering::Relaxed);
    n
}

/// Forwards both directions of one connection on two threads.
fn pipe(state: &Arc<State>, client: TcpStream, server: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut open = state.open.lock().unwrap();
        if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
            open.push(c);
            open.push(s);
        }
    }
    let (c2, s2) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let up = state.clone();
    thread::spawn(move || copy(&up, client, server, false));
    let down = state.clone();
    thread::spawn(move || copy(&down, s2, c2, true));
}

fn copy(state: &State, mut from: TcpStream, mut to: TcpStream, downstream: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while state.stalled.load(Ordering::Relaxed) && !state.closed.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(5));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if downstream {
            let total = state.downstream.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            let at = state.stall_after.load(Ordering::Relaxed);
            if at != 0 && total >= at {
                state.stall_after.store(0, Ordering::Relaxed);
                state.stalled.store(true, Ordering::Relaxed);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
