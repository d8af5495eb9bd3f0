//! chatwire on smol: the [`driver::Runtime`] and [`driver::Server`] for smol
//! (async-executor, async-io, blocking), and its sockets. Everything else (the accept loop,
//! the binaries' wiring) is in `driver`, shared with the tokio runtime.
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Once;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use std::time::Instant;

use async_signal::{Signal, Signals};
use driver::{BoxFuture, Runtime, Server, Socket};
use hyper::upgrade::Upgraded;
use smol::net::{TcpListener, TcpStream};
use smol::stream::StreamExt;
use smol::{Async, Executor, Timer};
use smol_hyper::rt::FuturesIo;

/// The smol runtime behind the driver: tasks run on one executor thread per
/// core, blocking work on smol's thread pool, timers on async-io's reactor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

/// The process-wide executor, with its worker threads started on first use.
fn executor() -> &'static Executor<'static> {
    static EXECUTOR: Executor<'static> = Executor::new();
    static WORKERS: Once = Once::new();
    WORKERS.call_once(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        for i in 0..n {
            std::thread::Builder::new()
                .name(format!("chatwire-smol-{i}"))
                .spawn(|| smol::block_on(work(&EXECUTOR)))
                .expect("the OS can start the executor's threads at startup");
        }
    });
    &EXECUTOR
}

/// Tasks an executor thread runs between two looks for IO.
const IO_EVERY: usize = 64;

thread_local! {
    /// On an executor thread (in [`work`]): the tasks that yielded through
    /// [`Smol::yield_now`] since the thread last looked for IO, woken once
    /// it has. `None` elsewhere, where a yield wakes its task at once.
    static YIELDED: std::cell::RefCell<Option<Vec<std::task::Waker>>> =
        const { std::cell::RefCell::new(None) };
}

/// An executor thread's loop, under its `block_on`: runs the tasks that are
/// ready and, every [`IO_EVERY`] of them or as soon as a task yielded
/// through [`Smol::yield_now`] (a busy poll, or a pause in a sweep of
/// writes), yields to the `block_on`, which then looks for IO without
/// waiting; then wakes the tasks that yielded, so that they come after
/// what that IO woke (as tokio's yield does: it wakes the task after its
/// worker has polled its IO driver). With no task ready, it waits for one
/// (the `block_on` waits on IO meanwhile). A busy poll among other ready
/// tasks makes the thread look for IO once per turn of the polling task:
/// one `epoll_wait` that does not wait. `Executor::run` looks for IO only
/// every 200 tasks and wakes a yielding task at once, and so did this loop
/// until a yield had come twice in a row: a sweep of writes went on
/// before the node had taken in what arrived meanwhile (BENCHMARKS.md,
/// 2026-12-07, tenth session).
async fn work(ex: &Executor<'_>) {
    YIELDED.set(Some(Vec::new()));
    loop {
        let mut ran = 0;
        while ran < IO_EVERY && ex.try_tick() {
            ran += 1;
            if YIELDED.with_borrow(|y| y.as_ref().is_some_and(|y| !y.is_empty())) {
                break;
            }
        }
        if ran == 0 {
            ex.tick().await;
        }
        smol::future::yield_now().await;
        #[cfg(test)]
        tests::IO_LOOKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let woken = YIELDED.with_borrow_mut(|y| y.as_mut().map(std::mem::take));
        woken.into_iter().flatten().for_each(std::task::Waker::wake);
    }
}

/// Runs `fut` as one of the executor's tasks, blocking this thread until it
/// is done: a server's `main`, so that its accept loop runs on the thread
/// that runs the connections it spawns (with no other thread to wake for
/// each one).
pub fn run<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    smol::block_on(executor().spawn(fut))
}

impl Runtime for Smol {
    type Socket = SmolSocket;

    fn spawn(&self, fut: BoxFuture<()>) {
        executor().spawn(fut).detach();
    }

    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        smol::unblock(work).detach();
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(async move {
            Timer::at(deadline).await;
        })
    }

    fn yield_now(&self) -> BoxFuture<()> {
        let mut yielded = false;
        Box::pin(std::future::poll_fn(move |cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            // On an executor thread, `work` wakes this task once the thread
            // has looked for IO; elsewhere, at once.
            let waker = cx.waker().clone();
            if let Some(waker) = YIELDED.with_borrow_mut(|y| match y {
                Some(list) => {
                    list.push(waker);
                    None
                }
                None => Some(waker),
            }) {
                waker.wake();
            }
            Poll::Pending
        }))
    }

    fn socket(&self, io: Upgraded) -> Result<(SmolSocket, Bytes), Upgraded> {
        let parts = io.downcast::<driver::Edge<FuturesIo<TcpStream>, Smol>>()?;
        let (io, slot) = parts.io.into_parts();
        let stream: Arc<Async<std::net::TcpStream>> = io.into_inner().into();
        Ok((SmolSocket(stream, slot), parts.read_buf))
    }
}

impl Server for Smol {
    type Listener = TcpListener;
    type Conn = FuturesIo<TcpStream>;

    fn bind(&self, addr: SocketAddr) -> BoxFuture<io::Result<TcpListener>> {
        Box::pin(async move { TcpListener::try_from(driver::listener(addr)?) })
    }

    fn local_addr(&self, listener: &TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn accept<'a>(
        &self,
        listener: &'a TcpListener,
    ) -> Pin<Box<dyn Future<Output = io::Result<(Self::Conn, SocketAddr)>> + Send + 'a>> {
        Box::pin(async move {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((FuturesIo::new(stream), peer))
        })
    }

    fn stop_signal(&self) -> BoxFuture<()> {
        // Without the handlers the default actions stop the process abruptly
        // (or, for PID 1 in a container, do nothing): installed now, not at
        // the first poll, so that a signal sent while the server starts counts.
        let Ok(mut signals) = Signals::new([Signal::Term, Signal::Int]) else {
            return Box::pin(std::future::pending());
        };
        Box::pin(async move {
            let _ = signals.next().await;
        })
    }
}

/// A smol TCP stream as the driver's WebSocket connections use it, holding
/// its place under the connection cap while it lives.
#[derive(Debug)]
pub struct SmolSocket(
    Arc<Async<std::net::TcpStream>>,
    #[expect(dead_code, reason = "held for its Drop: the place under the cap")] driver::ConnSlot,
);

impl Socket for SmolSocket {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_readable(cx)
    }

    fn try_read(&self, buf: &mut BytesMut) -> io::Result<usize> {
        // std reads into initialized memory: zero at most 64 KiB of the
        // spare capacity, not all of it (a big frame's buffer can be large).
        let start = buf.len();
        let room = (buf.capacity() - start).clamp(1, 64 << 10);
        buf.resize(start + room, 0);
        let r = self.0.get_ref().read(&mut buf[start..]);
        buf.truncate(start + *r.as_ref().unwrap_or(&0));
        r
    }

    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_writable(cx)
    }

    fn try_write(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.get_ref().write_vectored(bufs)
    }

    fn shutdown_write(&self) {
        let _ = self.0.get_ref().shutdown(std::net::Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// How many times an executor thread has been back to its `block_on`
    /// (and so looked for IO) in [`work`].
    pub(super) static IO_LOOKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    #[test]
    fn a_yield_resumes_only_after_the_thread_looked_for_io() {
        // Another task stays ready throughout, so that a yield that woke
        // its task at once would be run again before any look for IO.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinning = stop.clone();
        let spinner = executor().spawn(async move {
            while !spinning.load(std::sync::atomic::Ordering::Relaxed) {
                smol::future::yield_now().await;
            }
        });
        let looked = run(async move {
            let mut looked = Vec::new();
            for _ in 0..100 {
                let before = IO_LOOKS.load(std::sync::atomic::Ordering::SeqCst);
                Smol.yield_now().await;
                looked.push(IO_LOOKS.load(std::sync::atomic::Ordering::SeqCst) > before);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            looked
        });
        smol::block_on(spinner);
        assert!(looked.iter().all(|&l| l), "{looked:?}");
    }

    #[test]
    fn a_task_that_busy_polls_sees_io_and_the_others_run() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        let reader = Async::new(reader).unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.write_all(b"ping").unwrap();
            // kept open until the reader is done
            std::thread::sleep(Duration::from_secs(5));
        });
        // Another task, ready all along: the busy poll must not starve it.
        let other = executor().spawn(async { 7 });
        let (got, yields) = run(async move {
            let mut yields = 0u64;
            // The busy poll: never waits, only yields, until the socket's
            // readiness (which only the reactor can report) comes.
            while !std::future::poll_fn(|cx| Poll::Ready(reader.poll_readable(cx).is_ready())).await
            {
                Smol.yield_now().await;
                yields += 1;
            }
            let mut buf = [0u8; 4];
            let n = reader.get_ref().read(&mut buf).unwrap();
            (buf[..n].to_vec(), yields)
        });
        assert_eq!(got, b"ping");
        assert!(yields > 0, "it polled while it waited");
        assert_eq!(smol::block_on(other), 7);
    }
}
