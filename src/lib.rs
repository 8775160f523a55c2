//! contact-server: a push-task server for the gRPC Contact pattern.
//!
//! gRPC is request/response, so for the server to talk first a worker opens
//! a server stream (`getTask`) and the server pushes a message down it
//! whenever it has work. The worker acknowledges on `tellResult` and reports
//! status on the bidirectional `sendStatus`. Producers submit tasks through
//! `contact.v1.Tasks` and can wait for results.
//!
//! # Architecture
//!
//! Actors own all mutable state and talk through typed messages sent via
//! cloneable handles; the gRPC services are thin facades over those handles.
//!
//! ```text
//!  producers ──Tasks──▶ ┌──────────┐ ◀──lease/complete/release── ┌─────────┐ ──getTask stream──▶ worker
//!                       │  Queue   │ ───oneshot answers─────────▶ │ Session │ ◀──acks, receipts, extensions,
//!                       └──────────┘                              └─────────┘    credit (tellResult, sendStatus)
//!                                      ┌──────────┐ ◀── register/detached/closed ┘
//!  worker ──sendStatus──────────────▶  │ Registry │ ──writes──▶ SessionIndex (read by handlers)
//!                                      └──────────┘
//! ```
//!
//! # Layout
//!
//! Public, for the daemon, the tools, the tests and client users:
//!
//! - [`config`]: the configuration tree and its defaults (`mod.rs`),
//!   validation (`validate.rs`), listen addresses (`listen_addr.rs`).
//! - [`domain`]: ids, tasks, acks; validation of everything a client sends,
//!   and the quoting of bad values in error messages.
//! - [`error`]: the error type and its one mapping to gRPC statuses.
//! - [`auth`]: principals, roles and tokens; `access.rs` is the one table
//!   from method path to role, `layer.rs` the tower layer in front of every
//!   service that authenticates and authorizes each call.
//! - [`journal`]: durable storage under the queue: the segment format and
//!   records, the writer thread (group commit), recovery, compaction's
//!   bookkeeping, and the `Backend` seam for other logs.
//! - [`server`]: assembly, listeners and the shutdown sequence.
//! - [`telemetry`], [`shutdown`]: logging set-up and the stop signal.
//! - [`proto`]: generated code.
//! - [`clock`]: wall-clock (Unix ms) timestamps as the wire carries them.
//! - [`client`]: the Rust worker and producer client (the other side of
//!   the wire, shipped with the server so both change together): the
//!   builder, the worker and its handle, tasks, the connection's driver
//!   actor and the commands it takes, the producer, address forms.
//!
//! Private to the crate:
//!
//! - `queue`: the queue actor, owner of every accepted task. `mod.rs` is
//!   the handle and messages; `actor.rs` the loop, with `actor/leasing.rs`
//!   (dispatch and serving, a worker's queues in turn) and
//!   `actor/endings.rs` (acks, hand-backs, dead letters, cancel). The data
//!   it drives are plain types with their own tests: `entry.rs` (the task
//!   entry and the one readiness check), `backlog.rs` and `lines.rs`
//!   (pending tasks by target and priority, timers), `waiting.rs` (waiting
//!   sessions), `archive.rs` (finished tasks, dead letters, idempotency
//!   keys, broadcasts), `policy.rs` (limits, backoff, verdicts), `table.rs`.
//! - `session`: one actor per worker session (`actor.rs`, with
//!   `actor/resume.rs`), over `held.rs` (the held-task list, synchronous),
//!   `outbox.rs` (the stream to the worker), `rejection.rs` (refusals,
//!   explained with the queue's view), `end.rs` and `worker.rs`; and
//!   `registry.rs`, the registry actor where sessions register: connected
//!   workers, their status, and the session index request handlers read.
//! - `service`: the gRPC facades (Contact, Tasks, Admin) and the one reader
//!   of batches from a request stream.
//! - `metrics`: metric names, the `/metrics` endpoint, per-queue gauges,
//!   histograms, RPC error labels; `rpc_layer` counts failed calls.
//! - `transport`: the gRPC listener's connections: the accept loop and its
//!   limits, TLS and its reload, open calls per connection (idle close).
//! - `alarm`: a reusable timer for the actors' loops.
//!
//! Dependencies run one way: facades → session (with its registry) →
//! queue → config → auth → domain; nothing imports a facade.

mod alarm;
pub mod auth;
pub mod client;
pub mod clock;
pub mod config;
mod console;
pub mod domain;
pub mod error;
pub mod journal;
mod metrics;
pub mod proto;
mod queue;
mod rpc_layer;
pub mod server;
mod service;
mod session;
pub mod shutdown;
pub mod telemetry;
mod transport;

pub use config::Config;
pub use error::Error;
pub use server::{Listeners, RunningServer, start};
