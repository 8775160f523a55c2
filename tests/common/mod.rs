//! The integration-test harness: the real server on `127.0.0.1:0`, real gRPC
//! clients, and `within` so every wait on the server has a timeout.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

pub mod browser;
pub mod certs;
pub mod daemon;
pub mod promtool;
pub mod proxy;
pub mod python;
pub mod raw;

use std::{future::Future, time::Duration};

use contact_server::{
    Config, Listeners, RunningServer,
    domain::{
        CLIENT_ID_KEY, KEEPALIVE_MS_KEY, MAX_IN_FLIGHT_KEY, QUEUES_KEY, RECEIPTS_KEY, RESUMED_KEY,
        SESSION_ID_KEY,
    },
    proto::{
        self, Outcome,
        contact_client::ContactClient,
        v1::{self, admin_client::AdminClient, tasks_client::TasksClient},
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Request, Status, Streaming,
    transport::{Channel, Endpoint},
};

/// How long any single wait on the server may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test with `what` if it takes longer than [`TIMEOUT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// How long [`eventually`] pauses between two looks.
const POLL_PAUSE: Duration = Duration::from_millis(10);

/// Looks at the server with `check` until it answers `Some`, pausing briefly
/// between looks, and fails the test with `what` after [`TIMEOUT`]. For
/// states the server reaches asynchronously and announces to no one (a
/// dropped stream noticed, a metric counted); anything with an event of its
/// own is awaited directly instead.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_explained(what, || {
        let look = check();
        async move { look.await.ok_or_else(String::new) }
    })
    .await
}

/// [`eventually`], for checks that can say what is still wrong: on timeout
/// the failure quotes the last look's explanation.
pub async fn eventually_explained<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    let found = tokio::time::timeout(TIMEOUT, async {
        loop {
            match check().await {
                Ok(found) => return found,
                Err(why) => last = why,
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
    })
    .await;
    match found {
        Ok(found) => found,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}\n{last}"),
    }
}

/// The value of one sample line of a Prometheus exposition (`name{labels}`
/// exactly), if present. The recorder is shared by every server in a test
/// process, so tests compare values before and after their own workload.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

/// A fresh, empty directory under the build's temporary directory, removed
/// when the guard drops: a journal of its own for each server.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("journals")
            .join(format!("{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config for tests: every listener on an ephemeral loopback port, and
/// the default (journal) storage in a directory [`TestServer`] makes.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.server.metrics_addr = "127.0.0.1:0".parse().unwrap();
    // Tests that end with workers still holding tasks should not wait the
    // daemon's 30 s for them; drain tests set their own.
    config.server.drain_timeout_secs = 1;
    // A dropped worker's tasks are redelivered at once unless a test is about
    // resuming.
    config.workers.resume_grace_secs = 0;
    config
}

/// The real server, started in-process. Dropping it starts its shutdown, so
/// a failing test does not leave it running.
pub struct TestServer {
    server: Option<RunningServer>,
    pub grpc_addr: std::net::SocketAddr,
    pub metrics_addr: std::net::SocketAddr,
    /// The journal's directory, when the server made one for itself.
    data: Option<TempDir>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with_config(test_config()).await
    }

    /// Starts the server on `config`. A config that keeps the default
    /// journal directory gets a fresh one of its own, removed with the
    /// server; a test that names its own directory keeps it.
    pub async fn with_config(mut config: Config) -> Self {
        // Quiet unless RUST_LOG asks for more.
        contact_server::telemetry::init("error");
        let default_dir = Config::default().storage.dir;
        let data = (config.storage.dir == default_dir).then(|| {
            let dir = TempDir::new("server");
            config.storage.dir = dir.0.clone();
            dir
        });
        let listeners = Listeners::bind(&config).await.unwrap();
        let server = contact_server::start(config, listeners).unwrap();
        Self {
            grpc_addr: server.grpc_addr(),
            metrics_addr: server.metrics_addr(),
            server: Some(server),
            data,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// A new connection (its own HTTP/2 connection and peer address).
    pub async fn channel(&self) -> Channel {
        within(
            "connect",
            Endpoint::from_shared(self.url()).unwrap().connect(),
        )
        .await
        .unwrap()
    }

    pub async fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    /// Starts the shutdown sequence without waiting for it.
    pub fn begin_shutdown(&self) {
        if let Some(server) = &self.server {
            server.shutdown();
        }
    }

    /// Shuts down and asserts the server stops cleanly in time.
    pub async fn stop(mut self) {
        let server = self.server.take().unwrap();
        server.shutdown();
        within("server to stop", server.wait()).await.unwrap();
    }

    /// Waits for a server whose shutdown has begun to stop cleanly.
    pub async fn wait_stopped(mut self) {
        let server = self.server.take().unwrap();
        within("server to stop", server.wait()).await.unwrap();
    }

    /// Submits a text task to a queue and returns its id.
    pub async fn submit(&self, queue: &str, text: &str) -> String {
        let request = v1::SubmitRequest {
            queue: queue.into(),
            text: text.into(),
            ..Default::default()
        };
        let reply = within("submit", self.tasks().await.submit(request))
            .await
            .unwrap();
        reply.into_inner().task_id
    }

    pub async fn get(&self, task_id: &str) -> v1::TaskInfo {
        let request = v1::GetRequest {
            task_id: task_id.into(),
        };
        within("get", self.tasks().await.get(request))
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits (server-side) for a task to finish.
    pub async fn wait_finished(&self, task_id: &str) -> v1::TaskInfo {
        let request = v1::WaitRequest {
            task_id: task_id.into(),
            timeout_ms: TIMEOUT.as_millis() as u64,
        };
        within("wait", self.tasks().await.wait(request))
            .await
            .unwrap()
            .into_inner()
    }

    /// Starts a server-side Wait for a task in the background, so a test can
    /// make the task finish meanwhile. Resolves to the finished task.
    pub async fn spawn_wait(
        &self,
        task_id: &str,
    ) -> tokio::task::JoinHandle<Result<v1::TaskInfo, Status>> {
        let mut tasks = self.tasks().await;
        let request = v1::WaitRequest {
            task_id: task_id.into(),
            timeout_ms: TIMEOUT.as_millis() as u64,
        };
        tokio::spawn(async move { Ok(tasks.wait(request).await?.into_inner()) })
    }

    /// Begins the shutdown and waits until health reports NOT_SERVING
    /// (having seen SERVING first), through a grpc.health.v1 watch.
    pub async fn begin_shutdown_and_see_health_flip(&self) {
        use tonic_health::pb::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        };
        let request = HealthCheckRequest {
            service: String::new(),
        };
        let mut health = HealthClient::new(self.channel().await);
        let mut watch = within("health watch", health.watch(request))
            .await
            .unwrap()
            .into_inner();
        let first = within("health", watch.message()).await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::Serving);
        self.begin_shutdown();
        let next = within("health flip", watch.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.status(), ServingStatus::NotServing);
    }

    /// Scrapes `/metrics` with a minimal HTTP/1.1 GET; the body.
    pub async fn scrape(&self) -> String {
        let response = self.get_metrics(&[]).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        match response.split_once("\r\n\r\n") {
            Some((_, body)) => body.to_owned(),
            None => panic!("no body in {response}"),
        }
    }

    /// `GET /metrics` in plain HTTP with extra header lines; the whole
    /// response, status line first.
    pub async fn get_metrics(&self, headers: &[&str]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = within(
            "metrics connect",
            tokio::net::TcpStream::connect(self.metrics_addr),
        )
        .await
        .unwrap();
        stream
            .write_all(http_get_metrics(headers).as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        within("metrics read", stream.read_to_string(&mut response))
            .await
            .unwrap();
        response
    }
}

/// The request text of `GET /metrics` with extra header lines.
pub fn http_get_metrics(headers: &[&str]) -> String {
    let mut request = String::from("GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.shutdown();
        }
    }
}

/// Options for a test worker's registration; `None` sends no metadata key.
#[derive(Default, Clone)]
pub struct WorkerOptions {
    pub id: Option<String>,
    pub queues: Option<String>,
    pub max_in_flight: Option<u32>,
    pub receipts: bool,
    pub keepalive_ms: Option<u64>,
    /// Resume this session, claiming these (task id, attempt) pairs.
    pub resume: Option<(String, Vec<(String, u32)>)>,
    /// A bearer token, sent on every call of the worker.
    pub token: Option<String>,
}

impl WorkerOptions {
    pub fn id(id: &str) -> Self {
        Self {
            id: Some(id.into()),
            ..Default::default()
        }
    }

    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    pub fn queues(mut self, queues: &str) -> Self {
        self.queues = Some(queues.into());
        self
    }

    pub fn receipts(mut self) -> Self {
        self.receipts = true;
        self
    }

    pub fn keepalive_ms(mut self, ms: u64) -> Self {
        self.keepalive_ms = Some(ms);
        self
    }

    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn resume(mut self, session: &str, held: &[(&str, u32)]) -> Self {
        let held = held.iter().map(|(t, a)| (t.to_string(), *a)).collect();
        self.resume = Some((session.into(), held));
        self
    }
}

/// A principal for `[auth]`, known by the hash of `secret`.
pub fn principal(
    name: &str,
    secret: &str,
    roles: &[contact_server::auth::Role],
) -> contact_server::config::PrincipalConfig {
    use contact_server::auth::token;
    contact_server::config::PrincipalConfig {
        name: name.into(),
        token_sha256: token::hex(&token::sha256(secret.as_bytes())),
        roles: roles.to_vec(),
        queues: Vec::new(),
        client_id: None,
        tls_identity: None,
    }
}

/// Adds `authorization: Bearer <token>` to a request, if there is a token.
pub fn authorize<T>(request: &mut Request<T>, token: Option<&str>) {
    if let Some(token) = token {
        request.metadata_mut().insert(
            contact_server::auth::AUTHORIZATION_KEY,
            format!("Bearer {token}").parse().unwrap(),
        );
    }
}

/// A sendStatus call used as a control channel: one reply per message.
pub struct Control {
    tx: mpsc::Sender<proto::ClientMsg>,
    replies: Streaming<proto::Result>,
}

impl Control {
    pub async fn send(&mut self, message: proto::ClientMsg) -> proto::Result {
        within("queueing a control message", self.tx.send(message))
            .await
            .unwrap();
        within("a control reply", self.replies.message())
            .await
            .unwrap()
            .expect("sendStatus ended")
    }

    /// Sends without waiting for a reply (quiet messages may get none).
    pub async fn queue(&mut self, message: proto::ClientMsg) {
        within("queueing a control message", self.tx.send(message))
            .await
            .unwrap();
    }

    /// The next reply.
    pub async fn reply(&mut self) -> proto::Result {
        within("a control reply", self.replies.message())
            .await
            .unwrap()
            .expect("sendStatus ended")
    }

    pub async fn op(&mut self, op: proto::client_msg::Op) -> proto::Result {
        self.send(proto::ClientMsg {
            op: Some(op),
            ..Default::default()
        })
        .await
    }
}

/// A worker speaking the extended protocol: getTask with metadata and a
/// long-lived tellResult call on its own connection.
pub struct TestWorker {
    pub id: String,
    pub client: ContactClient<Channel>,
    pub stream: Streaming<proto::ServerMsg>,
    pub session_id: String,
    pub resumed: usize,
    token: Option<String>,
    acks: Option<mpsc::Sender<proto::Result>>,
    ack_call: tokio::task::JoinHandle<Result<tonic::Response<proto::Empty>, Status>>,
}

impl TestWorker {
    pub async fn connect(server: &TestServer, options: WorkerOptions) -> Self {
        Self::try_connect(server, options).await.unwrap()
    }

    pub async fn try_connect(server: &TestServer, options: WorkerOptions) -> Result<Self, Status> {
        let mut client = ContactClient::new(server.channel().await);
        let body = match &options.resume {
            None => proto::Empty::default(),
            Some((session, held)) => proto::Empty {
                resume_session_id: session.clone(),
                held: held
                    .iter()
                    .map(|(task_id, attempt)| proto::HeldTask {
                        task_id: task_id.clone(),
                        attempt: *attempt,
                    })
                    .collect(),
            },
        };
        let mut request = Request::new(body);
        if options.receipts {
            request
                .metadata_mut()
                .insert(RECEIPTS_KEY, "true".parse().unwrap());
        }
        if let Some(ms) = options.keepalive_ms {
            request
                .metadata_mut()
                .insert(KEEPALIVE_MS_KEY, ms.to_string().parse().unwrap());
        }
        if let Some(id) = &options.id {
            request
                .metadata_mut()
                .insert(CLIENT_ID_KEY, id.parse().unwrap());
        }
        if let Some(queues) = &options.queues {
            request
                .metadata_mut()
                .insert(QUEUES_KEY, queues.parse().unwrap());
        }
        if let Some(n) = options.max_in_flight {
            request
                .metadata_mut()
                .insert(MAX_IN_FLIGHT_KEY, n.to_string().parse().unwrap());
        }
        authorize(&mut request, options.token.as_deref());
        let response = within("getTask", client.get_task(request)).await?;
        let id = response
            .metadata()
            .get(CLIENT_ID_KEY)
            .expect("getTask answers with the client id")
            .to_str()
            .unwrap()
            .to_owned();
        let header = |key: &str| {
            response
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let session_id = header(SESSION_ID_KEY);
        let resumed = header(RESUMED_KEY).parse().unwrap_or(0);
        let stream = response.into_inner();
        let (acks, acks_rx) = mpsc::channel(1024);
        let mut ack_request = Request::new(ReceiverStream::new(acks_rx));
        ack_request
            .metadata_mut()
            .insert(CLIENT_ID_KEY, id.parse().unwrap());
        authorize(&mut ack_request, options.token.as_deref());
        let mut ack_client = client.clone();
        let ack_call = tokio::spawn(async move { ack_client.tell_result(ack_request).await });
        Ok(Self {
            id,
            client,
            stream,
            session_id,
            resumed,
            token: options.token.clone(),
            acks: Some(acks),
            ack_call,
        })
    }

    /// Opens a sendStatus control channel on this worker's connection.
    pub async fn control(&self) -> Control {
        let (tx, rx) = mpsc::channel(16);
        let mut request = Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert(CLIENT_ID_KEY, self.id.parse().unwrap());
        authorize(&mut request, self.token.as_deref());
        let replies = within("sendStatus", self.client.clone().send_status(request))
            .await
            .unwrap()
            .into_inner();
        Control { tx, replies }
    }

    /// The next pushed task.
    pub async fn next_task(&mut self) -> proto::ServerMsg {
        within("a pushed task", self.stream.message())
            .await
            .unwrap()
            .expect("getTask stream ended")
    }

    /// The stream's next event: a task, its end, or its error status.
    pub async fn next_event(&mut self) -> Result<Option<proto::ServerMsg>, Status> {
        within("a getTask stream event", self.stream.message()).await
    }

    pub async fn ack(&self, task_id: &str, outcome: Outcome, ret: &str) {
        self.send_ack(proto::Result {
            task_id: task_id.into(),
            outcome: outcome.into(),
            ret: ret.into(),
            error: if outcome == Outcome::Done {
                String::new()
            } else {
                format!("{ret} failed")
            },
            ..Default::default()
        })
        .await;
    }

    pub async fn send_ack(&self, message: proto::Result) {
        within("queueing an ack", self.acks.as_ref().unwrap().send(message))
            .await
            .unwrap();
    }

    /// How the server ends the tellResult call while the worker keeps it
    /// open (as a worker does during a drain).
    pub async fn ack_call_ends(mut self) -> Result<(), Status> {
        let outcome = within("tellResult to end", &mut self.ack_call).await;
        outcome.unwrap().map(|_| ())
    }

    /// Closes the tellResult call and returns how the server answered it.
    pub async fn finish_acks(mut self) -> Result<(), Status> {
        self.acks.take();
        within("tellResult to end", &mut self.ack_call)
            .await
            .unwrap()
            .map(|_| ())
    }
}

/// A sendStatus operation acknowledging attempt `attempt` of a task as done.
pub fn ack_op(task_id: &str, attempt: u32) -> proto::client_msg::Op {
    proto::client_msg::Op::Ack(proto::Result {
        task_id: task_id.into(),
        attempt,
        ..Default::default()
    })
}

/// A sendStatus operation confirming receipt of attempt `attempt` of a task.
pub fn receipt_op(task_id: &str, attempt: u32) -> proto::client_msg::Op {
    proto::client_msg::Op::Ack(proto::Result {
        task_id: task_id.into(),
        attempt,
        receipt: true,
        ..Default::default()
    })
}

/// Submits one request; the new task's id, or the refusal.
pub async fn submit_request(
    server: &TestServer,
    request: v1::SubmitRequest,
) -> Result<String, Status> {
    within("submit", server.tasks().await.submit(request))
        .await
        .map(|reply| reply.into_inner().task_id)
}

/// Connects `n` workers with the given in-flight limit.
pub async fn workers(server: &TestServer, n: usize, max_in_flight: u32) -> Vec<TestWorker> {
    let mut workers = Vec::with_capacity(n);
    for i in 0..n {
        let options = WorkerOptions::id(&format!("worker-{i}")).max_in_flight(max_in_flight);
        workers.push(TestWorker::connect(server, options).await);
    }
    workers
}

/// Opens one tellResult call, sends `acks`, and returns the call's status.
pub async fn tell_result_once(
    server: &TestServer,
    client_id: &str,
    acks: Vec<proto::Result>,
) -> Result<(), Status> {
    let mut client = ContactClient::new(server.channel().await);
    let mut request = Request::new(tokio_stream::iter(acks));
    request
        .metadata_mut()
        .insert(CLIENT_ID_KEY, client_id.parse().unwrap());
    within("tellResult", client.tell_result(request))
        .await
        .map(|_| ())
}

/// Waits until the server no longer lists worker `id` as connected: the
/// server notices a dropped stream asynchronously, and this is the event.
pub async fn until_disconnected(server: &TestServer, id: &str) {
    let admin = server.admin().await;
    eventually("worker to be seen as disconnected", || {
        let mut admin = admin.clone();
        async move {
            let workers = admin
                .list_workers(v1::ListWorkersRequest {})
                .await
                .unwrap()
                .into_inner()
                .workers;
            workers.iter().all(|w| w.client_id != id).then_some(())
        }
    })
    .await;
}
