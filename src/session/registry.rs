//! The registry: one actor that knows every connected worker, fed by getTask
//! registrations, sendStatus reports and (through each session's counters)
//! tellResult acknowledgements. The record and counters it keeps are the
//! session's types ([`WorkerRecord`], [`crate::session::WorkerStats`]):
//! sessions create and write them, the registry stores and reads them, so
//! the session module needs nothing from here but the handle.
//!
//! It is also the only writer of [`SessionIndex`], the lock-sharded map that
//! request handlers read to find the session a tellResult or sendStatus call
//! belongs to: by the `contact-client-id` the call names, or else by the
//! connection it arrived on (a seed client opens all its calls on one
//! channel). Readers clone a handle out and drop the map reference at once,
//! never holding it across an `.await`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use dashmap::DashMap;
use metrics::Gauge;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span};

use crate::{
    clock::unix_ms_now,
    domain::{ClientId, QueueName, SessionId, StatusReport},
    error::Error,
    session::{SessionHandle, WorkerRecord},
};

/// Capacity of the registry's inbox; status reports wait when it is full.
pub(crate) const REGISTRY_INBOX_CAPACITY: usize = 1024;

/// A connected worker, as operators see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WorkerInfo {
    /// The worker's id.
    pub(crate) client: ClientId,
    /// The connection's peer address.
    pub(crate) peer: Option<SocketAddr>,
    /// Its queues.
    pub(crate) queues: Vec<QueueName>,
    /// Its in-flight limit.
    pub(crate) max_in_flight: u32,
    /// Tasks it holds unacknowledged.
    pub(crate) in_flight: u32,
    /// When it connected (ms since the Unix epoch).
    pub(crate) connected_unix_ms: u64,
    /// Its last sendStatus text.
    pub(crate) last_status: String,
    /// The running count of its last status report.
    pub(crate) reported_running: u32,
    /// Its stream dropped and it may still resume.
    pub(crate) detached: bool,
    /// When it was last heard from on any call (ms since the Unix epoch).
    pub(crate) last_heard_unix_ms: u64,
}

/// Who is connected, readable by request handlers without a message round trip.
#[derive(Debug, Default)]
pub(crate) struct SessionIndex {
    by_client: DashMap<ClientId, SessionHandle>,
    by_peer: DashMap<SocketAddr, ClientId>,
}

impl SessionIndex {
    /// The session of the worker a call belongs to: the named client, or
    /// else the one registered from the same connection.
    pub(crate) fn resolve(
        &self,
        client: Option<&ClientId>,
        peer: Option<SocketAddr>,
    ) -> Option<SessionHandle> {
        let client = match client {
            Some(client) => client.clone(),
            None => self.by_peer.get(&peer?)?.value().clone(),
        };
        self.by_client.get(&client).map(|s| s.value().clone())
    }

    /// [`SessionIndex::resolve`] for a call by `owner` (the caller's
    /// principal, with authentication on): a session another principal
    /// registered is not the caller's to act on, even on a shared
    /// connection.
    pub(crate) fn resolve_for(
        &self,
        client: Option<&ClientId>,
        peer: Option<SocketAddr>,
        owner: Option<&str>,
    ) -> Option<SessionHandle> {
        self.resolve(client, peer)
            .filter(|session| session.owner() == owner)
    }

    /// Every session, as a copy: no map reference outlives the call, so a
    /// caller may await on them.
    pub(crate) fn sessions(&self) -> Vec<SessionHandle> {
        self.by_client.iter().map(|s| s.value().clone()).collect()
    }
}

// === Handle ===

/// Cloneable handle to the registry actor.
#[derive(Clone, Debug)]
pub(crate) struct RegistryHandle {
    tx: mpsc::Sender<RegistryMsg>,
}

impl RegistryHandle {
    /// Starts the registry actor on `tracker`; it writes `index`.
    pub(crate) fn spawn(index: Arc<SessionIndex>, tracker: &TaskTracker) -> Self {
        let (tx, rx) = mpsc::channel(REGISTRY_INBOX_CAPACITY);
        let actor = Registry {
            rx,
            index,
            workers: HashMap::new(),
            connected: crate::metrics::workers_connected(),
        };
        tracker.spawn(actor.run().instrument(info_span!("registry")));
        Self { tx }
    }

    /// Registers a worker; refused when a worker with the same id is
    /// connected. A worker whose earlier session is detached (its stream
    /// dropped, within the resume grace) replaces it: that session is
    /// returned, for the new one to take over from or to release.
    pub(crate) async fn register(
        &self,
        record: WorkerRecord,
        resume: Option<SessionId>,
    ) -> Result<Option<SessionHandle>, Error> {
        let (respond_to, response) = oneshot::channel();
        self.tx
            .send(RegistryMsg::Register {
                record,
                resume,
                respond_to,
            })
            .await?;
        response.await?
    }

    /// A session's stream dropped; it waits for a resume.
    pub(crate) async fn detached(&self, client: ClientId, session: SessionId) -> Result<(), Error> {
        Ok(self
            .tx
            .send(RegistryMsg::Detached { client, session })
            .await?)
    }

    /// A session ended.
    pub(crate) async fn session_closed(
        &self,
        client: ClientId,
        session: SessionId,
    ) -> Result<(), Error> {
        Ok(self
            .tx
            .send(RegistryMsg::SessionClosed { client, session })
            .await?)
    }

    /// A worker reported its status on sendStatus.
    pub(crate) async fn status_reported(
        &self,
        client: ClientId,
        status: StatusReport,
    ) -> Result<(), Error> {
        Ok(self
            .tx
            .send(RegistryMsg::StatusReported { client, status })
            .await?)
    }

    /// Every connected worker, ordered by id.
    pub(crate) async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        let (respond_to, response) = oneshot::channel();
        self.tx.send(RegistryMsg::Snapshot { respond_to }).await?;
        Ok(response.await?)
    }
}

// === Messages ===

#[derive(Debug)]
enum RegistryMsg {
    /// A getTask stream opened.
    Register {
        record: WorkerRecord,
        resume: Option<SessionId>,
        respond_to: oneshot::Sender<Result<Option<SessionHandle>, Error>>,
    },
    /// A session's stream dropped; it waits for a resume.
    Detached {
        client: ClientId,
        session: SessionId,
    },
    /// A getTask stream ended.
    SessionClosed {
        client: ClientId,
        session: SessionId,
    },
    /// A sendStatus message arrived.
    StatusReported {
        client: ClientId,
        status: StatusReport,
    },
    /// List the workers.
    Snapshot {
        respond_to: oneshot::Sender<Vec<WorkerInfo>>,
    },
}

// === Actor ===

#[derive(Debug)]
struct Worker {
    record: WorkerRecord,
    connected_unix_ms: u64,
    last_status: String,
    reported_running: u32,
    last_status_unix_ms: u64,
    /// Its stream dropped; it may resume within the grace period.
    detached: bool,
}

#[derive(Debug)]
struct Registry {
    rx: mpsc::Receiver<RegistryMsg>,
    index: Arc<SessionIndex>,
    workers: HashMap<ClientId, Worker>,
    connected: Gauge,
}

impl Registry {
    async fn run(mut self) {
        while let Some(msg) = self.rx.recv().await {
            match msg {
                RegistryMsg::Register {
                    record,
                    resume,
                    respond_to,
                } => {
                    let _ = respond_to.send(self.handle_register(record, resume));
                }
                RegistryMsg::Detached { client, session } => self.handle_detached(&client, session),
                RegistryMsg::SessionClosed { client, session } => {
                    self.handle_session_closed(&client, session)
                }
                RegistryMsg::StatusReported { client, status } => {
                    if let Some(worker) = self.workers.get_mut(&client) {
                        // An empty report is a heartbeat: it keeps the text.
                        if !status.text.is_empty() {
                            worker.last_status = status.text;
                        }
                        worker.reported_running = status.running;
                        worker.last_status_unix_ms = unix_ms_now();
                    }
                }
                RegistryMsg::Snapshot { respond_to } => {
                    let _ = respond_to.send(self.snapshot());
                }
            }
            self.connected.set(self.workers.len() as f64);
        }
        debug!("registry stopped");
    }

    fn handle_register(
        &mut self,
        record: WorkerRecord,
        resume: Option<SessionId>,
    ) -> Result<Option<SessionHandle>, Error> {
        if let Some(existing) = self.workers.get(&record.client)
            && existing.record.session.owner() != record.session.owner()
        {
            // Another principal's worker, connected or in its resume grace.
            return Err(Error::PermissionDenied(format!(
                "worker id {} is registered by another principal",
                record.client
            )));
        }
        let previous = match self.workers.get(&record.client) {
            // A detached session waits for its worker; a worker that names
            // its session proves it owns it, even if the old stream has not
            // been seen to drop yet (a half-open connection).
            Some(existing) if existing.detached || resume == Some(existing.record.session.id()) => {
                let previous = existing.record.session.clone();
                self.workers.remove(&record.client);
                Some(previous)
            }
            Some(_) => {
                return Err(Error::AlreadyExists(format!(
                    "a worker with client id {} is already connected",
                    record.client
                )));
            }
            None => None,
        };
        // Calls without contact-client-id are linked to a worker by their
        // connection, so one connection may carry one such link only.
        let link_peer = match record.peer {
            Some(peer) => match self.index.by_peer.get(&peer) {
                Some(existing) if record.generated_id => {
                    return Err(Error::FailedPrecondition(format!(
                        "worker {} is already registered on this connection; a second worker \
                         on one connection must set contact-client-id",
                        existing.value()
                    )));
                }
                // A named worker is found by its id; the first link stays.
                Some(_) => None,
                None => Some(peer),
            },
            None => None,
        };
        info!(
            client.id = %record.client,
            peer = ?record.peer,
            max_in_flight = record.stats.max_in_flight.load(Ordering::Relaxed),
            resuming = resume.is_some(),
            "worker registered"
        );
        self.index
            .by_client
            .insert(record.client.clone(), record.session.clone());
        if let Some(peer) = link_peer {
            self.index.by_peer.insert(peer, record.client.clone());
        }
        let now = unix_ms_now();
        self.workers.insert(
            record.client.clone(),
            Worker {
                record,
                connected_unix_ms: now,
                last_status: String::new(),
                reported_running: 0,
                last_status_unix_ms: now,
                detached: false,
            },
        );
        Ok(previous)
    }

    fn handle_detached(&mut self, client: &ClientId, session: SessionId) {
        let Some(worker) = self.workers.get_mut(client) else {
            return;
        };
        if worker.record.session.id() != session {
            return;
        }
        worker.detached = true;
        // The connection is gone, and with it the link of id-less calls.
        if let Some(peer) = worker.record.peer {
            self.index.by_peer.remove_if(&peer, |_, c| c == client);
        }
    }

    fn handle_session_closed(&mut self, client: &ClientId, session: SessionId) {
        let Some(worker) = self.workers.get(client) else {
            return;
        };
        if worker.record.session.id() != session {
            return;
        }
        info!(client.id = %client, "worker disconnected");
        if let Some(worker) = self.workers.remove(client) {
            self.index.by_client.remove(client);
            if let Some(peer) = worker.record.peer {
                self.index.by_peer.remove_if(&peer, |_, c| c == client);
            }
        }
    }

    fn snapshot(&self) -> Vec<WorkerInfo> {
        let mut workers: Vec<WorkerInfo> = self
            .workers
            .values()
            .map(|w| {
                let stats = &w.record.stats;
                WorkerInfo {
                    client: w.record.client.clone(),
                    peer: w.record.peer,
                    queues: w.record.queues.to_vec(),
                    max_in_flight: stats.max_in_flight.load(Ordering::Relaxed),
                    in_flight: stats.in_flight.load(Ordering::Relaxed),
                    connected_unix_ms: w.connected_unix_ms,
                    last_status: w.last_status.clone(),
                    reported_running: w.reported_running,
                    detached: w.detached,
                    last_heard_unix_ms: w
                        .last_status_unix_ms
                        .max(stats.last_ack_unix_ms.load(Ordering::Relaxed)),
                }
            })
            .collect();
        workers.sort_by(|a, b| a.client.cmp(&b.client));
        workers
    }
}
