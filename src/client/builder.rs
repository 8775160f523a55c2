//! The worker's settings: [`WorkerBuilder`] collects them, checks them, and
//! turns them into the registration metadata every connection sends;
//! [`WorkerBuilder::connect`] hands them to the driver.

use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};

use super::{ClientError, Credentials, Worker, driver};
use crate::domain::{CLIENT_ID_KEY, KEEPALIVE_MS_KEY, QUEUES_KEY, RECEIPTS_KEY};

/// The longest reconnect backoff a worker may ask for.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The settings of a [`Worker`]; [`WorkerBuilder::connect`] starts it.
#[derive(Clone, Debug)]
pub struct WorkerBuilder {
    pub(super) endpoint: String,
    pub(super) client_id: Option<String>,
    queues: Vec<String>,
    pub(super) max_in_flight: u32,
    receipts: bool,
    pub(super) keepalive: Option<Duration>,
    pub(super) backoff_initial: Duration,
    pub(super) backoff_max: Duration,
    token: Option<String>,
    pub(super) credentials: Credentials,
}

impl WorkerBuilder {
    /// A worker of the server at `endpoint`, in any form
    /// [`endpoint_url`](super::endpoint_url) accepts (e.g. `127.0.0.1:50051`
    /// or `http://127.0.0.1:50051`), on queue "default", with 8 tasks in flight, no receipts, no
    /// keepalives, reconnecting after 100 ms doubling up to 10 s.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            client_id: None,
            queues: Vec::new(),
            max_in_flight: 8,
            receipts: false,
            keepalive: None,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            token: None,
            credentials: Credentials::none(),
        }
    }

    /// The worker's id. Without one the server makes one up, and a dropped
    /// connection cannot resume: the tasks it held go to other workers (or
    /// back to it as new attempts), and their `Task`s are cancelled.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The queues to take tasks from (default: "default").
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// The credit: most tasks held unacknowledged at once.
    pub fn max_in_flight(mut self, max_in_flight: u32) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Ask for receipts: the server takes a task back unless its receipt
    /// comes within its receipt timeout. The worker confirms each task as
    /// it arrives, before your code sees it.
    pub fn receipts(mut self, on: bool) -> Self {
        self.receipts = on;
        self
    }

    /// Ask for keepalives when the stream is idle this long, so the server
    /// can expire the worker if it goes silent. The worker answers each,
    /// and sends a heartbeat of its own whenever it has sent nothing for
    /// that long: it is heard from at least this often even when no
    /// keepalive comes (a busy stream sends none).
    pub fn keepalive(mut self, every: Duration) -> Self {
        self.keepalive = Some(every);
        self
    }

    /// Reconnect waits: from `initial`, doubling up to `max`, each drawn at
    /// random from its upper half so a restarted fleet spreads out.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// The bearer token to send on every call (a server with
    /// authentication needs one with the worker role).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Speaks TLS and/or presents a client certificate, as `credentials`
    /// say (a token given with [`WorkerBuilder::token`] is added to them).
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Connects and registers. The first connection must succeed, so a
    /// refusal (a bad option, a duplicate id) is returned here; later ones
    /// are retried in the background.
    pub async fn connect(mut self) -> Result<Worker, ClientError> {
        let registration = self.registration()?;
        if let Some(token) = &self.token {
            self.credentials = self.credentials.clone().with_bearer(token)?;
        }
        driver::start(self, registration).await
    }

    /// Checks the options and builds the registration metadata that does
    /// not change between connections.
    fn registration(&self) -> Result<MetadataMap, ClientError> {
        let invalid = |what: &str| ClientError::InvalidOption(what.to_owned());
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight must be at least 1"));
        }
        if self.backoff_initial.is_zero()
            || self.backoff_max < self.backoff_initial
            || self.backoff_max > MAX_BACKOFF
        {
            return Err(invalid(
                "reconnect backoff: initial must be above zero, and max from initial to an hour",
            ));
        }
        let mut metadata = MetadataMap::new();
        let text = |value: &str, what: &str| {
            MetadataValue::try_from(value).map_err(|_| invalid(&format!("{what} must be ASCII")))
        };
        if let Some(id) = &self.client_id {
            metadata.insert(CLIENT_ID_KEY, text(id, "client_id")?);
        }
        if !self.queues.is_empty() {
            metadata.insert(QUEUES_KEY, text(&self.queues.join(","), "queues")?);
        }
        if self.receipts {
            metadata.insert(RECEIPTS_KEY, MetadataValue::from_static("true"));
        }
        if let Some(every) = self.keepalive {
            metadata.insert(
                KEEPALIVE_MS_KEY,
                MetadataValue::from(every.as_millis() as u64),
            );
        }
        Ok(metadata)
    }
}
