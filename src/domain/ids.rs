//! Ids: who and what the server talks about. Client ids and queue names are
//! chosen by clients and validated; task, session and broadcast ids are
//! UUIDs the server makes.

use std::{fmt, sync::Arc};

use uuid::Uuid;

use super::{DEFAULT_QUEUE, check_name, quote};
use crate::error::Error;

/// A worker's id: chosen by the worker, or a fresh UUID when it names none.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    /// Validates a client-supplied id.
    pub fn parse(id: &str) -> Result<Self, Error> {
        check_name("client id", id)?;
        Ok(Self(id.into()))
    }

    /// A fresh random id for a worker that did not name itself.
    pub fn generate() -> Self {
        Self(Uuid::new_v4().to_string().into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A queue's name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(Arc<str>);

impl QueueName {
    /// Validates a client-supplied queue name.
    pub fn parse(name: &str) -> Result<Self, Error> {
        check_name("queue name", name)?;
        Ok(Self(name.into()))
    }

    /// The queue "default".
    pub fn default_queue() -> Self {
        Self(DEFAULT_QUEUE.into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task's id, assigned by the server at submit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(Uuid);

impl TaskId {
    /// A fresh id for a newly accepted task: a version-4 UUID from a fast
    /// thread-local generator. Task ids name tasks; they are not secrets (any
    /// producer may read any task), so they need no system randomness, whose
    /// syscall per task showed up in profiles.
    pub fn generate() -> Self {
        let bytes = fastrand::u128(..).to_le_bytes();
        Self(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// The id's 16 bytes, as the journal keeps it.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The id from the journal's 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Uuid::from_slice(bytes).ok().map(Self)
    }

    /// Parses a client-supplied task id.
    pub fn parse(id: &str) -> Result<Self, Error> {
        parse_uuid("task id", id).map(Self)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One getTask stream's identity; a worker that reconnects gets a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A fresh session id.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl SessionId {
    /// The id's 16 bytes, as the journal keeps it.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The id from the journal's 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Uuid::from_slice(bytes).ok().map(Self)
    }

    /// Parses a session id a resuming worker presents.
    pub fn parse(id: &str) -> Result<Self, Error> {
        parse_uuid("session id", id).map(Self)
    }
}

/// A broadcast's id: the copies sent to each worker share it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BroadcastId(Uuid);

impl BroadcastId {
    /// A fresh broadcast id.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    /// The id's 16 bytes, as the journal keeps it.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The id from the journal's 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Uuid::from_slice(bytes).ok().map(Self)
    }

    /// Parses a client-supplied broadcast id.
    pub fn parse(id: &str) -> Result<Self, Error> {
        parse_uuid("broadcast id", id).map(Self)
    }
}

impl fmt::Display for BroadcastId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses one of the server's UUID ids, quoting at most a prefix of a bad one.
fn parse_uuid(kind: &str, id: &str) -> Result<Uuid, Error> {
    Uuid::try_parse(id)
        .map_err(|_| Error::InvalidArgument(format!("{kind} {} is not a valid UUID", quote(id))))
}
