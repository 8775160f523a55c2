//! Assembles a running server from a config and two bound listeners: starts
//! the actors, serves gRPC (Contact, Tasks, Admin, Health) and `/metrics`,
//! and runs the shutdown sequence.
//!
//! Listeners are bound by the caller ([`Listeners::bind`]) so that tests can
//! bind `127.0.0.1:0`, learn the ports, and have nothing to wait for.
//!
//! Shutdown, once [`RunningServer::shutdown`] is called:
//! 1. health turns NOT_SERVING; new getTask calls and submissions get UNAVAILABLE;
//! 2. every session is told to drain: it takes no new tasks and ends its
//!    stream once its worker has acknowledged everything it holds;
//! 3. after `drain_timeout_secs`, sessions still holding tasks hand them back
//!    to the queue and end;
//! 4. open calls end, the listeners close, and the actors stop once their
//!    last handles are gone. Step 4's waits are capped by [`STOP_GRACE`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{server::NamedService, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{error, info, warn};

use crate::{
    auth::layer::AuthLayer,
    config::{Config, StorageMode, StorageSync},
    journal::{Journal, JournalOptions, Recovered, SyncPolicy},
    proto::{
        contact_server::ContactServer,
        v1::{admin_server::AdminServer, tasks_server::TasksServer},
    },
    queue::{QueueHandle, QueuePolicy},
    rpc_layer::RpcLayer,
    service::{AdminService, ContactService, Core, TasksService},
    session::registry::{RegistryHandle, SessionIndex},
    session::{Notice, SessionTiming},
    transport::{ConnectionLimits, calls::CallsLayer, tls::Tls},
};

/// How long the last shutdown steps (closing calls, stopping actors) may take.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// How long a scrape waits for the queue to publish its gauges.
const GAUGE_REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// Server-wide notices buffered per session (drain, shutdown).
const NOTICE_CAPACITY: usize = 1024;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot bind the {what} listener on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The metrics endpoint failed.
    #[error("metrics endpoint failed: {0}")]
    Metrics(std::io::Error),
    /// A server task panicked or was cancelled.
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The reflection service could not read the descriptors built in.
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The TLS certificate, key or client CA could not be loaded.
    #[error("{0}")]
    Tls(String),
    /// The journal could not be opened or recovered.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The journal could not be written: the server stopped without
    /// draining, so its supervisor restarts it into recovery.
    #[error("journal write failed, the server stopped: {0}")]
    JournalWrite(String),
}

/// The server's two listeners, bound before the server starts.
#[derive(Debug)]
pub struct Listeners {
    grpc: TcpListener,
    metrics: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { what, addr, source })
        };
        Ok(Self {
            grpc: bind("gRPC", config.server.grpc_addr).await?,
            metrics: bind("metrics", config.server.metrics_addr).await?,
        })
    }
}

/// A server started by [`start`].
#[derive(Debug)]
pub struct RunningServer {
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    shutdown: CancellationToken,
    join: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Where gRPC is served.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Starts the shutdown sequence; [`RunningServer::wait`] sees it through.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A token that starts the shutdown sequence when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<(), ServerError> {
        self.join.await?
    }
}

/// Starts the server on `listeners`. Must be called inside a tokio runtime.
pub fn start(config: Config, listeners: Listeners) -> Result<RunningServer, ServerError> {
    let local = |listener: &TcpListener, what, addr| {
        listener
            .local_addr()
            .map_err(|source| ServerError::Bind { what, addr, source })
    };
    let grpc_addr = local(&listeners.grpc, "gRPC", config.server.grpc_addr)?;
    let metrics_addr = local(&listeners.metrics, "metrics", config.server.metrics_addr)?;
    let shutdown = CancellationToken::new();
    let fatal = CancellationToken::new();
    let tls = Tls::load(&config.tls).map_err(|e| ServerError::Tls(e.to_string()))?;
    let storage = open_storage(&config, fatal.clone())?;
    let join = tokio::spawn(run(
        config,
        listeners,
        tls,
        storage,
        shutdown.clone(),
        fatal,
    ));
    info!(%grpc_addr, %metrics_addr, "contact-server listening");
    Ok(RunningServer {
        grpc_addr,
        metrics_addr,
        shutdown,
        join,
    })
}

/// The queue's journal and what it recovered, as `[storage]` says.
fn open_storage(
    config: &Config,
    fatal: CancellationToken,
) -> Result<(Journal, Option<Recovered>), ServerError> {
    let storage = &config.storage;
    if storage.mode == StorageMode::Memory {
        return Ok((Journal::memory(), None));
    }
    let started = tokio::time::Instant::now();
    let options = JournalOptions {
        dir: storage.dir.clone(),
        sync: match storage.sync {
            StorageSync::Write => SyncPolicy::Write,
            StorageSync::Fsync => SyncPolicy::Fsync,
        },
        segment_bytes: storage.segment_bytes,
    };
    let (journal, recovered) = Journal::open(&options, fatal)?;
    metrics::gauge!(crate::metrics::JOURNAL_RECOVERY_SECONDS).set(started.elapsed().as_secs_f64());
    Ok((journal, Some(recovered)))
}

async fn run(
    config: Config,
    listeners: Listeners,
    tls: Option<Arc<Tls>>,
    (journal, recovered): (Journal, Option<Recovered>),
    shutdown: CancellationToken,
    fatal: CancellationToken,
) -> Result<(), ServerError> {
    // The recorder must exist before the actors resolve their metric handles.
    let prometheus = crate::metrics::install();
    let actors = TaskTracker::new();
    let sessions = TaskTracker::new();
    let index = Arc::new(SessionIndex::default());
    let queue = QueueHandle::spawn(
        QueuePolicy::from_config(&config),
        journal,
        recovered,
        &actors,
    );
    let registry = RegistryHandle::spawn(index.clone(), &actors);
    let (mut notice_tx, notice_rx) = async_broadcast::broadcast(NOTICE_CAPACITY);
    // No notice is ever dropped: a broadcaster waits for a session that is
    // this far behind (sessions read notices before anything else). Nor does
    // it wait for a session to exist.
    notice_tx.set_overflow(false);
    notice_tx.set_await_active(false);
    let draining = CancellationToken::new();
    let stopping = CancellationToken::new();
    let core = Core {
        queue: queue.clone(),
        registry,
        index,
        notices: notice_rx.deactivate(),
        draining: draining.clone(),
        stopping: stopping.clone(),
        sessions: sessions.clone(),
        calls: TaskTracker::new(),
        workers: config.workers.registration_limits(),
        submit_limits: config.submit_limits(),
        timing: SessionTiming {
            receipt_timeout: Duration::from_millis(config.workers.receipt_timeout_ms),
            liveness_timeout: Duration::from_secs(config.workers.liveness_timeout_secs),
            resume_grace: Duration::from_secs(config.workers.resume_grace_secs),
            max_lease: Duration::from_secs(config.tasks.max_lease_secs),
        },
    };

    let (mut health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    let max = config.server.max_message_bytes;
    let contact = ContactServer::new(ContactService::new(core.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let tasks = TasksServer::new(TasksService::new(core.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let admin = AdminServer::new(AdminService::new(core.clone()));
    // Reflection lets grpcurl and friends list and call every service,
    // the seed's package-less Contact included; both protocol versions,
    // since tools differ in which they ask for.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let calls = core.calls.clone();
    let principals = Arc::new(config.auth.principals());
    let console = crate::console::Console::new(
        core.clone(),
        principals.clone(),
        tls.as_ref().is_some_and(|tls| tls.covers_http()),
        stopping.clone(),
    );
    drop(core);

    let keepalive = match config.server.http2_keepalive_secs {
        0 => None,
        secs => Some(Duration::from_secs(secs)),
    };
    let server = &config.server;
    let incoming = crate::transport::incoming(
        listeners.grpc,
        ConnectionLimits {
            max_connections: server.max_connections,
            handshake_timeout: Duration::from_secs(server.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(server.idle_timeout_secs),
        },
        tls.clone(),
        stopping.clone(),
    );
    tokio::spawn(reload_on_hangup(tls.clone(), stopping.clone()));
    let mut grpc = tokio::spawn(
        Server::builder()
            .http2_keepalive_interval(keepalive)
            .http2_keepalive_timeout(keepalive)
            .max_concurrent_streams(server.max_concurrent_streams)
            .http2_max_local_error_reset_streams(Some(server.max_local_reset_streams))
            .layer(RpcLayer)
            .layer(AuthLayer::new(principals.clone()))
            .layer(CallsLayer::new(principals.enabled()))
            .add_service(health_service)
            .add_service(contact)
            .add_service(tasks)
            .add_service(admin)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, stopping.clone().cancelled_owned()),
    );
    let gauges_from = queue.clone();
    let refresh = move || {
        let queue = gauges_from.clone();
        async move {
            // A queue too busy to answer in time leaves the last values.
            let _ = tokio::time::timeout(GAUGE_REFRESH_TIMEOUT, queue.publish_gauges()).await;
        }
    };
    let http_access = crate::metrics::HttpAccess {
        token_sha256: config.auth.metrics_token(),
        tls: tls.clone().filter(|tls| tls.covers_http()),
        timeout: Duration::from_secs(config.server.handshake_timeout_secs),
    };
    let mut metrics = tokio::spawn(crate::metrics::serve(
        listeners.metrics,
        prometheus,
        refresh,
        http_access,
        console.router(),
        stopping.clone(),
    ));

    tokio::select! {
        () = shutdown.cancelled() => {}
        () = fatal.cancelled() => {
            // The journal cannot be written: nothing more may be answered
            // as recorded. Stop at once, without draining.
            stopping.cancel();
            grpc.abort();
            metrics.abort();
            return Err(ServerError::JournalWrite(
                "see the log for the journal writer's error".into(),
            ));
        }
        finished = &mut grpc => {
            // The gRPC server stopped on its own: an error; stop the rest.
            stopping.cancel();
            let _ = metrics.await;
            return finished?.map_err(ServerError::from);
        }
    }

    info!("shutdown requested; draining");
    set_health(&health, ServingStatus::NotServing).await;
    draining.cancel();
    let _ = queue.drain().await;
    let _ = notice_tx.broadcast(Notice::Drain).await;
    sessions.close();
    let drain_timeout = config.drain_timeout();
    if tokio::time::timeout(drain_timeout, sessions.wait())
        .await
        .is_err()
    {
        warn!(
            timeout_secs = drain_timeout.as_secs(),
            "drain timeout: workers still hold tasks; handing them back to the queue"
        );
        let _ = notice_tx.broadcast(Notice::ShutdownNow).await;
        if tokio::time::timeout(STOP_GRACE, sessions.wait())
            .await
            .is_err()
        {
            warn!("sessions did not stop within the grace period");
        }
    }

    // Health watchers have seen NOT_SERVING; clearing the statuses ends
    // their streams, which would otherwise keep connections open.
    clear_health(&mut health).await;
    stopping.cancel();
    let grpc_result = match tokio::time::timeout(STOP_GRACE, &mut grpc).await {
        Ok(joined) => joined?.map_err(ServerError::from),
        Err(_) => {
            warn!("open connections did not close within the grace period");
            grpc.abort();
            Ok(())
        }
    };
    calls.close();
    if tokio::time::timeout(STOP_GRACE, calls.wait())
        .await
        .is_err()
    {
        warn!("streaming calls did not end within the grace period");
    }
    let metrics_result = match tokio::time::timeout(STOP_GRACE, &mut metrics).await {
        Ok(joined) => joined?.map_err(ServerError::Metrics),
        Err(_) => {
            // A scrape still open: its handler holds a queue handle.
            metrics.abort();
            Ok(())
        }
    };
    // The services (and their actor handles) are gone with the gRPC server,
    // so the actors now drain their inboxes and stop.
    drop(queue);
    actors.close();
    if tokio::time::timeout(STOP_GRACE, actors.wait())
        .await
        .is_err()
    {
        warn!("actors did not stop within the grace period");
    }
    info!("contact-server stopped");
    grpc_result.and(metrics_result)
}

/// The names health reports on: "" is the whole server, which is what most
/// probes ask about, then each service.
const HEALTH_SERVICES: [&str; 4] = [
    "",
    <ContactServer<ContactService> as NamedService>::NAME,
    <TasksServer<TasksService> as NamedService>::NAME,
    <AdminServer<AdminService> as NamedService>::NAME,
];

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        health.set_service_status(service, status).await;
    }
}

async fn clear_health(health: &mut HealthReporter) {
    for service in HEALTH_SERVICES {
        health.clear_service_status(service).await;
    }
}

/// SIGHUP reads the TLS files again: new connections get the new
/// certificate, established ones keep theirs. A file that does not load
/// leaves the old configuration, with an error in the log.
async fn reload_on_hangup(tls: Option<Arc<Tls>>, stopping: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP; TLS files will not be reloaded");
        return;
    };
    loop {
        tokio::select! {
            received = hangups.recv() => {
                if received.is_none() {
                    return;
                }
            }
            () = stopping.cancelled() => return,
        }
        match &tls {
            None => info!("SIGHUP: no TLS configured, nothing to reload"),
            Some(tls) => match tls.reload() {
                Ok(()) => info!("SIGHUP: TLS certificate, key and client CA reloaded"),
                Err(error) => error!(%error, "SIGHUP: TLS reload failed; keeping the old files"),
            },
        }
    }
}
