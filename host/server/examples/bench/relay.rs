//! A TCP relay that holds every byte for a fixed time each way: the
//! bench's stand-in for the network between hosts that share one
//! process. Each direction is a reader thread and a writer thread (a
//! thread's sleep is precise to tens of µs; tokio's timer rounds to
//! milliseconds), so frames keep flowing while earlier ones wait.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Listens on a loopback port and relays each connection to `target`,
/// `delay` later each way; the address it listens on.
pub(crate) fn delaying(target: String, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the relay");
    let addr = listener.local_addr().expect("the relay's address").to_string();
    std::thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { continue };
            let Ok(outbound) = TcpStream::connect(&target) else { continue };
            for stream in [&inbound, &outbound] {
                stream.set_nodelay(true).ok();
            }
            let (Ok(inbound_too), Ok(outbound_too)) = (inbound.try_clone(), outbound.try_clone()) else { continue };
            pipe(inbound, outbound, delay);
            pipe(outbound_too, inbound_too, delay);
        }
    });
    addr
}

/// A loopback port free right now (for a listener that must be known
/// before it binds).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (chunks, due) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 << 10];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if chunks.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        while let Ok((at, bytes)) = due.recv() {
            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        to.shutdown(Shutdown::Write).ok();
    });
}
