//! `wxgate serve`: bind, serve until a signal (pruning the store meanwhile), shut down
//! gracefully. The store is opened by [`crate::store::open`].
//!
//! Shutdown order: stop accepting and let in-flight requests finish (axum's graceful
//! shutdown), then wait for handler tasks still working past their answers, then flush the
//! store. Nothing here reads the environment: the binary passes a validated [`Config`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::gateway::{Gateway, GatewayBuilder};
use crate::store::housekeeping;

/// A gateway bound to its listening socket, not yet serving.
#[derive(Debug)]
pub struct Bound {
    /// The gateway (for adding nothing more: handlers are set before binding).
    pub gateway: Arc<Gateway>,
    listener: TcpListener,
    config: Config,
}

impl Bound {
    /// Binds the configured address with a gateway built from the config and store.
    pub async fn bind(builder: GatewayBuilder, config: Config) -> std::io::Result<Bound> {
        let listener = TcpListener::bind(config.listen).await?;
        Ok(Bound {
            gateway: Arc::new(builder.build()),
            listener,
            config,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.gateway.router();
        let housekeeping_stop = CancellationToken::new();
        let housekeeping = housekeeping::spawn(
            Arc::clone(&self.gateway.store),
            Arc::clone(&self.gateway.clock),
            housekeeping_stop.clone(),
        );
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        housekeeping_stop.cancel();
        if let Err(e) = housekeeping.await {
            tracing::error!(error = %e, "the store's housekeeping task failed");
        }
        tracing::info!("stopped accepting; waiting for running handlers");
        match self.gateway.shutdown(self.config.shutdown_grace).await {
            Ok(0) => tracing::info!("all handlers finished; store flushed"),
            Ok(unfinished) => tracing::warn!(
                unfinished,
                "grace period over with handlers still running; store flushed"
            ),
            Err(e) => tracing::error!(error = %e, "store flush failed at shutdown"),
        }
        Ok(())
    }
}
