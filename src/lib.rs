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
//! - [`config`]: the configuration tree, its defaults and validation.
//! - [`domain`]: ids, tasks, acks; validation of everything a client sends.
//! - [`error`]: the error type and its one mapping to gRPC statuses.
//! - [`queue`]: the queue actor, owner of every accepted task: lines by
//!   priority, delays and retries, TTLs, dead letters, idempotency keys.
//! - [`session`]: one actor per worker session: credit, pushes, acks,
//!   leases and receipts, liveness and keepalives, resume.
//! - [`registry`]: the registry actor: connected workers and their status.
//! - [`service`]: the gRPC facades (Contact, Tasks, Admin).
//! - [`server`]: assembly, listeners and the shutdown sequence.
//! - [`metrics`]: metric names and the `/metrics` endpoint.
//! - [`telemetry`], [`shutdown`]: logging set-up and the stop signal.
//! - [`proto`]: generated code.
//! - [`client`]: the Rust worker and producer client (the other side of
//!   the wire, shipped with the server so both change together).

mod alarm;
pub mod client;
mod clock;
pub mod config;
pub mod domain;
pub mod error;
mod metrics;
pub mod proto;
mod queue;
mod registry;
mod rpc_layer;
pub mod server;
mod service;
mod session;
pub mod shutdown;
pub mod telemetry;

pub use config::Config;
pub use error::Error;
pub use server::{Listeners, RunningServer, start};
