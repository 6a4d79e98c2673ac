//! The floor of the HTTP benchmark (`bench/http.sh`): a bare axum handler that reads the
//! request body and answers the constant `success`, served the way `wxgate serve` serves
//! (the same tokio runtime and axum versions, HTTP/1.1 keep-alive, `TCP_NODELAY` as axum
//! sets it). The gateway's throughput is reported as a share of this one's, so whatever
//! the gateway costs above it is the protocol (signature, decryption, parsing, the reply's
//! encryption) and the durable inbox — not HTTP.
//!
//! Usage: `floor [ADDRESS]` (default `127.0.0.1:0`); prints `listening on http://…` once
//! bound and serves until interrupted.

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;

async fn success(Path(_account): Path<String>, _body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain")], "success")
}

fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&address).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let app = axum::Router::new().route("/wx/{account}", post(success));
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })
}
