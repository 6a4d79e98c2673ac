//! `wxgate serve`: bind, serve until a signal (pruning the store meanwhile), shut down
//! gracefully. The store is opened by [`crate::store::open`].
//!
//! Shutdown order: stop accepting and let in-flight requests finish (axum's graceful
//! shutdown), then wait for handler tasks still working past their answers, then flush the
//! store. Nothing here reads the environment: the binary passes a validated [`Config`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::future::IntoFuture;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::console::Console;
use crate::gateway::{Gateway, GatewayBuilder};
use crate::store::housekeeping;

/// A gateway bound to its listening socket, not yet serving.
#[derive(Debug)]
pub struct Bound {
    /// The gateway (for adding nothing more: handlers are set before binding).
    pub gateway: Arc<Gateway>,
    listener: TcpListener,
    config: Config,
    /// The web console, when enabled.
    console: Option<ConsoleMount>,
}

/// The console of a bound gateway: its state, and its own listener when `[console]
/// listen` gives it a separate address.
#[derive(Debug)]
struct ConsoleMount {
    console: Arc<Console>,
    listener: Option<TcpListener>,
    /// Cancelled when shutdown begins, so that open event streams end.
    stop: CancellationToken,
}

impl Bound {
    /// Binds the configured address with a gateway built from the config and store.
    pub async fn bind(builder: GatewayBuilder, config: Config) -> std::io::Result<Bound> {
        let listener = TcpListener::bind(config.listen).await?;
        let gateway = Arc::new(builder.build());
        let console = match &config.console {
            Some(console_config) => {
                let own = match console_config.listen {
                    Some(addr) => Some(TcpListener::bind(addr).await?),
                    None => None,
                };
                let stop = CancellationToken::new();
                let console = Console::new(
                    Arc::clone(&gateway),
                    console_config,
                    listener.local_addr()?,
                    stop.clone(),
                );
                Some(ConsoleMount {
                    console,
                    listener: own,
                    stop,
                })
            }
            None => None,
        };
        Ok(Bound {
            gateway,
            listener,
            config,
            console,
        })
    }

    /// The console's address when it is enabled: its own, or the webhook's.
    pub fn console_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        let mount = self.console.as_ref()?;
        Some(match &mount.listener {
            Some(listener) => listener.local_addr(),
            None => self.listener.local_addr(),
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
        let mut router = self.gateway.router();
        let housekeeping_stop = CancellationToken::new();
        let housekeeping = housekeeping::spawn(
            Arc::clone(&self.gateway.store),
            Arc::clone(&self.gateway.clock),
            housekeeping_stop.clone(),
        );
        // The console: merged into the webhook's router, or served on its own address;
        // either way its event streams end when shutdown begins.
        let mut console_server = None;
        let shutdown = match self.console {
            Some(mount) => {
                match mount.listener {
                    Some(listener) => {
                        let stopped = mount.stop.clone();
                        console_server = Some(tokio::spawn(
                            axum::serve(listener, mount.console.router())
                                .with_graceful_shutdown(stopped.cancelled_owned())
                                .into_future(),
                        ));
                    }
                    None => router = router.merge(mount.console.router()),
                }
                let stop = mount.stop;
                futures::future::Either::Left(async move {
                    shutdown.await;
                    stop.cancel();
                })
            }
            None => futures::future::Either::Right(shutdown),
        };
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        if let Some(server) = console_server {
            match server.await {
                Ok(result) => result?,
                Err(e) => tracing::error!(error = %e, "the console server task failed"),
            }
        }
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
