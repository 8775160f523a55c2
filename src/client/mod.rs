//! A Rust client for contact-server, for the two sides that talk to it.
//!
//! A [`Worker`] registers through `getTask` and hands the tasks pushed to it
//! to your code as [`Task`]s, which you finish with `done`, `fail`,
//! `retry_after` (or extend while you work). Everything the protocol asks of
//! a worker besides the work happens in one background task: receipts are
//! confirmed and keepalives answered as messages arrive (with keepalives
//! on, a heartbeat also goes out whenever the worker was quiet for the
//! interval), a dropped
//! connection is redialled with backoff and jitter and the session resumed
//! with the tasks still held, and a drain stops new work, waits for what is
//! held, and closes.
//!
//! ```no_run
//! # async fn worker() -> Result<(), contact_server::client::ClientError> {
//! use contact_server::client::WorkerBuilder;
//!
//! let mut worker = WorkerBuilder::new("127.0.0.1:50051")
//!     .client_id("resizer-1")
//!     .queues(["images"])
//!     .max_in_flight(4)
//!     .connect()
//!     .await?;
//! while let Some(task) = worker.next_task().await {
//!     let size = task.payload.len();
//!     task.done(format!("resized {size} bytes")).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! A [`Producer`] submits tasks (one by one or pipelined), waits for
//! results, cancels and broadcasts.
//!
//! ```no_run
//! # async fn producer() -> Result<(), contact_server::client::ClientError> {
//! use std::time::Duration;
//! use contact_server::client::{Producer, Submission};
//!
//! let mut producer = Producer::connect("127.0.0.1:50051").await?;
//! let id = producer.submit(Submission::to_queue("images").text("resize 7")).await?;
//! let info = producer.wait(&id, Duration::from_secs(30)).await?;
//! println!("{}: {}", info.task_id, info.ret);
//! # Ok(()) }
//! ```
//!
//! Both take the server's address as `host:port`, `http://host:port`,
//! `https://host:port` or a bare host (port 50051): see [`endpoint_url`].
//! On a server with authentication, give the token: `WorkerBuilder::token`,
//! `Producer::connect_with(address, Credentials::bearer(token)?)`.

/// The largest message the client accepts from the server: the most
/// `server.max_message_bytes` may be, so that no task the server accepts
/// is too big for the library's workers (tonic's own default is 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = crate::config::MAX_MESSAGE_BYTES_LIMIT;

mod address;
mod builder;
mod command;
mod credentials;
mod driver;
mod producer;
mod task;
mod worker;

pub use address::{dial, endpoint, endpoint_url};
pub use builder::WorkerBuilder;
pub use credentials::{AuthChannel, Credentials};
pub use producer::{Producer, Submission};
pub use task::Task;
pub use worker::{Worker, WorkerHandle, WorkerState};

/// What can go wrong for a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address is not one of the forms [`endpoint_url`]
    /// accepts.
    #[error(
        "{address:?} is not a server address ({reason}); \
         give host:port, http://host:port or https://host:port"
    )]
    Address {
        /// The address given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// tonic refused the server address.
    #[error("{endpoint:?} is not a valid server address: {source}")]
    Endpoint {
        /// The address given.
        endpoint: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// A call failed.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The server answered an operation on the control channel with a
    /// refusal (a stale or unknown task, a credit over the cap, ...).
    #[error("refused ({code}): {message}")]
    Refused {
        /// The gRPC code of why.
        code: tonic::Code,
        /// The server's explanation.
        message: String,
    },
    /// The connection dropped before the server answered; sent again on
    /// the next one, the task was no longer held: the first copy was
    /// applied, or the task went back to the queue. Which, the server's
    /// record of the task tells (`Producer::get`).
    #[error("unconfirmed ({code}): {message}")]
    Unconfirmed {
        /// The gRPC code of the second answer.
        code: tonic::Code,
        /// The server's explanation.
        message: String,
    },
    /// The worker has stopped (drained, closed, or disconnected by an
    /// operator) and can take no more operations.
    #[error("the worker has stopped")]
    Stopped,
    /// A builder option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}
