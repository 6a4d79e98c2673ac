//! `wxgate serve`: open the store, bind, serve until a signal, shut down gracefully.
//!
//! Serving, the limits and the shutdown drain (keep answering while handlers finish, then
//! fast 503s, then close and flush the store) are [`crate::server`]'s. Nothing here reads
//! the environment: the binary passes a validated [`Config`].

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

    /// Serves until `shutdown` resolves, then drains and shuts down gracefully (see
    /// [`crate::server`]). Raises the open-file limit first and derives the connection cap
    /// from it.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let limits = self.config.limits;
        let files = crate::server::raise_file_limit();
        let cap = crate::server::connection_cap(limits.max_connections, files);
        match files {
            Some(files) => tracing::info!(
                soft_before = files.soft_before,
                soft = files.soft,
                hard = files.hard,
                max_connections = cap,
                "open-file limit"
            ),
            None => tracing::info!(max_connections = cap, "open-file limit unknown"),
        }
        crate::server::serve(self.gateway, self.listener, limits, cap, shutdown).await
    }
}
