//! `wxgate serve`: open the store, bind, serve until a signal, shut down gracefully.
//!
//! Shutdown order: stop accepting and let in-flight requests finish (axum's graceful
//! shutdown), then wait for handler tasks still working past their answers, then flush the
//! store. Nothing here reads the environment: the binary passes a validated [`Config`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{Config, StoreConfig};
use crate::gateway::{Gateway, GatewayBuilder};
use crate::store::memory::MemoryStore;
use crate::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use crate::store::{Store, StoreError};

/// Opens the configured store.
pub async fn open_store(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    match config {
        StoreConfig::Memory { retention } => Ok(Arc::new(MemoryStore::new(*retention))),
        StoreConfig::Sqlite {
            path,
            retention,
            synchronous_full,
        } => {
            let options = SqliteOptions {
                retention: *retention,
                synchronous: if *synchronous_full {
                    Synchronous::Full
                } else {
                    Synchronous::Normal
                },
                ..SqliteOptions::default()
            };
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, options))
                .await
                .map_err(|e| StoreError::Backend(e.to_string()))??;
            Ok(Arc::new(store))
        }
    }
}

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
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
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
