//! The server loop over real sockets: slow and idle clients are closed by the server's
//! own (short) timeouts, the connection cap makes room for real requests, and the
//! shutdown drain keeps answering instead of refusing connections.
//!
//! The timeouts are set to 200-300 ms here, so the only real time these tests take is what
//! the server's deadlines require. No test asserts on a duration.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use wechat_proto::{Inbound, Reply};
use wxgate::config::{Config, Mode};
use wxgate::handler::{HandlerContext, HandlerError};
use wxgate::serve::Bound;
use wxgate::store::memory::MemoryStore;
use wxgate::store::{InboxQuery, Store};
use wxgate::GatewayBuilder;

/// A safety net for reads: far longer than any server deadline in these tests, so it only
/// fires when the server failed to act.
const NET: Duration = Duration::from_secs(10);

fn limited_config(limits: &str) -> Config {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nshutdown_grace_secs = 30\n[limits]\n{limits}\n[store]\nbackend = \"memory\"\n[[accounts]]\nname = \"plain\"\napp_id = \"{APP_ID}\"\ntoken = \"{TOKEN}\"\nmode = \"plaintext\"\nbudget_ms = 100\n[[accounts.rules]]\nkeyword = \"help\"\nreply = {{ type = \"text\", content = \"help\" }}\n"
    );
    Config::from_toml(&text, &BTreeMap::new()).unwrap()
}

struct Running {
    addr: std::net::SocketAddr,
    store: Arc<dyn Store>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(config: Config, build: impl FnOnce(GatewayBuilder) -> GatewayBuilder) -> Running {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Duration::from_secs(600)));
    let builder = build(GatewayBuilder::new(config.clone(), Arc::clone(&store)));
    let bound = Bound::bind(builder, config).await.unwrap();
    let addr = bound.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        store,
        stop: Some(stop),
        done,
    }
}

/// Reads until the server closes the connection; returns what it sent. A reset counts as
/// closed too.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(NET, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&received).into_owned()
}

/// One request on a fresh connection with `Connection: close`; the whole answer.
async fn request(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut bytes = head.replace('\n', "\r\n").into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await.unwrap();
    read_until_closed(&mut stream).await
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\nHost: t\nConnection: close\n\n"),
        b"",
    )
    .await
}

/// A counter or gauge from `/metrics`, by its line prefix.
async fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    let page = get(addr, "/metrics").await;
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn post_text(addr: std::net::SocketAddr, msg_id: u64, content: &str) -> String {
    let signed = side(Mode::Plaintext).message(&text(msg_id, content), now(), "7", [1; 16]);
    request(
        addr,
        &format!(
            "POST /wx/plain?{} HTTP/1.1\nHost: t\nConnection: close\nContent-Length: {}\n\n",
            signed.query,
            signed.body.len()
        ),
        signed.body.as_bytes(),
    )
    .await
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_by_the_server() {
    let running = start(
        limited_config(
            "header_read_timeout_ms = 200\nbody_read_timeout_ms = 200\nidle_timeout_ms = 300",
        ),
        |b| b,
    )
    .await;
    let addr = running.addr;

    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, "");

    // Slowloris: a header dripped a byte at a time never completes, and dripping does not
    // extend the header deadline.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let drip = async {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if slow.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(NET, drip)
        .await
        .expect("the server kept the dripping connection open");
    assert_eq!(read_until_closed(&mut slow).await, "");

    // An idle keep-alive connection is served, then closed once idle.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");

    // A body that stops short gets 408 at the body deadline.
    let answer = request(
        addr,
        "POST /wx/plain?signature=x&timestamp=1&nonce=1 HTTP/1.1\nHost: t\nContent-Length: 1000\n\n",
        b"<xml><ToUserName>",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Through all that, real requests are answered.
    let answer = post_text(addr, 1, "help").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let closed = "wxgate_connections_closed_by_server_total{reason=";
    // The silent and the dripping connection, and at least the idle one (the 408's
    // connection may have idled out too by now).
    assert!(metric(addr, &format!("{closed}\"header_timeout\"}}")).await >= 2.0);
    assert!(metric(addr, &format!("{closed}\"idle_timeout\"}}")).await >= 1.0);
    assert!(
        answer.contains("<Content><![CDATA[help]]></Content>"),
        "{answer}"
    );
    running.stop.map(|s| s.send(()));
    running.done.await.unwrap().unwrap();
}

#[tokio::test]
async fn past_the_cap_idle_connections_make_room_for_a_real_request() {
    // Long header and idle deadlines: only the cap's eviction can make room here.
    let running = start(
        limited_config(
            "max_connections = 16\nheader_read_timeout_ms = 60000\nidle_timeout_ms = 60000",
        ),
        |b| b,
    )
    .await;
    let addr = running.addr;
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut slowloris = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHo")
            .await
            .unwrap();
        slowloris.push(stream);
    }
    let answer = get(addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = post_text(addr, 2, "help").await;
    assert!(
        answer.contains("<Content><![CDATA[help]]></Content>"),
        "{answer}"
    );
    // The oldest idle connections were the ones closed to make room: the 8 slowloris
    // connections and the GET each needed a slot (the POST then took the GET's, closed
    // after its answer), so the first nine silent ones are gone.
    for stream in silent.iter_mut().take(9) {
        assert_eq!(read_until_closed(stream).await, "");
    }
    let evicted = "wxgate_connections_closed_by_server_total{reason=\"evicted\"}";
    assert!(metric(addr, evicted).await >= 9.0);
    // Connections still waiting for a header would hold the shutdown for its bounded
    // wait; these clients go away first.
    drop((silent, slowloris));
    running.stop.map(|s| s.send(()));
    running.done.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_keeps_answering_then_answers_503_until_it_stops() {
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let mut running = start(limited_config("header_read_timeout_ms = 60000"), move |b| {
        b.handler("plain", move |_: HandlerContext, _: Inbound| {
            let gate = Arc::clone(&gate);
            async move {
                gate.notified().await;
                Ok::<_, HandlerError>(Some(Reply::Text {
                    content: "late".into(),
                }))
            }
        })
    })
    .await;
    let addr = running.addr;
    // A message whose handler is still running when the shutdown signal arrives: the
    // attempt is acknowledged at its 100 ms budget.
    let answer = post_text(addr, 10, "slow").await;
    assert!(answer.ends_with("success"), "{answer}");
    running.stop.take().map(|s| s.send(()));
    // The drain: /readyz says so, and new messages are still recorded and answered.
    let mut readiness = String::new();
    for _ in 0..1000 {
        readiness = get(addr, "/readyz").await;
        if readiness.ends_with("draining") {
            break;
        }
    }
    assert!(readiness.starts_with("HTTP/1.1 503"), "{readiness}");
    assert!(readiness.ends_with("draining"), "{readiness}");
    let answer = post_text(addr, 11, "help").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("<Content><![CDATA[help]]></Content>"),
        "{answer}"
    );
    // A connection in the middle of its header holds the closing phase open.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /readyz HTTP/1.1\r\n")
        .await
        .unwrap();
    // Connections are accepted in order: once a later one is answered, this one is in.
    let answer = get(addr, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The handlers finish: the drain is over, and new requests get a fast 503 while the
    // last connection finishes; the listener is still open.
    release.notify_waiters();
    // Until the drain notices, messages are still served; each try is a new message.
    let mut closing = String::new();
    let mut refused_id = 0;
    for msg_id in 100..1100 {
        closing = post_text(addr, msg_id, "help").await;
        if closing.ends_with("shutting down") {
            refused_id = msg_id;
            break;
        }
    }
    assert!(closing.starts_with("HTTP/1.1 503"), "{closing}");
    partial.write_all(b"Host: t\r\n\r\n").await.unwrap();
    let last = read_until_closed(&mut partial).await;
    assert!(last.starts_with("HTTP/1.1 503"), "{last}");
    running.done.await.unwrap().unwrap();
    // The messages before and during the drain were recorded; the one answered 503 was
    // not (WeChat retries it, and the next process records it).
    let recorded = running.store.list(&InboxQuery::default()).await.unwrap();
    let ids: Vec<String> = recorded.iter().map(|e| e.dedup_key.clone()).collect();
    let has = |id: u64| ids.iter().any(|key| key.ends_with(&format!(":{id}")));
    assert!(has(10) && has(11), "{ids:?}");
    assert!(!has(refused_id), "{ids:?}");
    // And the server is gone.
    assert!(TcpStream::connect(addr).await.is_err());
}
