//! Who may call what: principals (configured by the SHA-256 hash of their
//! bearer token), the roles they hold, and the queues and worker id they
//! are scoped to. One tower layer ([`layer::AuthLayer`]) in front of every
//! service authenticates each call and checks it against one table from
//! method path to role ([`access`]); handlers see the caller as a
//! [`Caller`] in the request's extensions for the checks only the request
//! body allows (the queue of a submit).
//!
//! With no principal configured, authentication is off and every call is
//! let through; protected mode (in the config's validation) then keeps
//! the listeners on loopback.

use std::{collections::HashMap, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{
    domain::{Target, TaskInfo, quote},
    error::Error,
};

pub(crate) mod access;
pub(crate) mod layer;
pub mod token;

pub use layer::AUTHORIZATION_KEY;

/// What a principal may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The Contact service: register, take tasks, acknowledge.
    Worker,
    /// Submitting and reading tasks, broadcasts.
    Producer,
    /// The Admin service, dead letters, requeue, purge.
    Admin,
}

impl Role {
    /// The role's name, as the config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Producer => "producer",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Principal {
    /// Its configured name: what logs show instead of the token.
    pub(crate) name: Arc<str>,
    pub(crate) roles: Vec<Role>,
    /// The queues it may submit to or take tasks from; `None`: every queue.
    pub(crate) queues: Option<Vec<String>>,
    /// The only worker id it may register and act as.
    pub(crate) client_id: Option<String>,
}

impl Principal {
    /// Whether it may use `queue`.
    pub(crate) fn may_use_queue(&self, queue: &str) -> bool {
        self.queues
            .as_ref()
            .is_none_or(|queues| queues.iter().any(|q| q == queue))
    }
}

/// The caller of a request, as handlers find it in its extensions: absent
/// when authentication is off.
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub(crate) Arc<Principal>);

/// The name of the principal a call comes from; `None` with
/// authentication off. Worker sessions belong to it.
pub(crate) fn owner_of(extensions: &http::Extensions) -> Option<Arc<str>> {
    extensions
        .get::<Caller>()
        .map(|caller| caller.0.name.clone())
}

/// What a producer's call may touch: everything, or its principal's
/// queues.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope(Option<Arc<Principal>>);

impl Scope {
    /// The scope of the call `extensions` belong to.
    pub(crate) fn of(extensions: &http::Extensions) -> Self {
        Self(extensions.get::<Caller>().map(|caller| caller.0.clone()))
    }

    /// A submission to `target` is allowed: a scoped producer submits only
    /// to its queues, never to one worker by id (a worker is not a queue).
    pub(crate) fn check_target(&self, target: &Target) -> Result<(), Error> {
        let Some(principal) = self.scoped() else {
            return Ok(());
        };
        let refused = |message: String| {
            count_scope_refusal();
            Err(Error::PermissionDenied(message))
        };
        match target {
            Target::Queue(queue) if principal.may_use_queue(queue.as_str()) => Ok(()),
            Target::Queue(queue) => refused(format!(
                "principal {:?} may not submit to queue {}",
                principal.name,
                quote(queue.as_str())
            )),
            Target::Client(_) => refused(format!(
                "principal {:?} is scoped to queues and may not submit to a worker by id",
                principal.name
            )),
        }
    }

    /// A task read or cancelled is in scope; out of scope it does not
    /// exist, as far as this caller can tell.
    pub(crate) fn check_task(&self, info: &TaskInfo) -> Result<(), Error> {
        match self.check_target(&info.target) {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::NotFound {
                what: "task",
                id: info.id.to_string(),
            }),
        }
    }

    /// Broadcasts reach every worker: only an unscoped producer sends them.
    pub(crate) fn check_broadcast(&self) -> Result<(), Error> {
        match self.scoped() {
            None => Ok(()),
            Some(principal) => {
                count_scope_refusal();
                Err(Error::PermissionDenied(format!(
                    "principal {:?} is scoped to queues and may not broadcast",
                    principal.name
                )))
            }
        }
    }

    /// True when the caller is limited to some queues: reads must check
    /// the task's queue first.
    pub(crate) fn is_limited(&self) -> bool {
        self.scoped().is_some()
    }

    fn scoped(&self) -> Option<&Principal> {
        self.0.as_deref().filter(|p| p.queues.is_some())
    }
}

/// A call refused for its queue scope, in the handler: counted with the
/// layer's refusals.
fn count_scope_refusal() {
    metrics::counter!(crate::metrics::AUTH_REFUSALS, "reason" => "queue").increment(1);
}

/// The configured principals, found by token.
#[derive(Debug, Default)]
pub(crate) struct Principals {
    by_hash: Vec<([u8; 32], Arc<Principal>)>,
    /// By the name their TLS client certificate proves.
    by_identity: HashMap<String, Arc<Principal>>,
    count: usize,
    /// Worker ids pinned to a principal: no other may act as them.
    pinned: HashMap<String, String>,
}

impl Principals {
    /// From the config's `[[auth.principals]]`, already validated.
    pub(crate) fn new(
        principals: impl IntoIterator<Item = (Option<[u8; 32]>, Option<String>, Principal)>,
    ) -> Self {
        let mut all = Self::default();
        for (hash, identity, principal) in principals {
            if let Some(id) = &principal.client_id {
                all.pinned.insert(id.clone(), principal.name.to_string());
            }
            let principal = Arc::new(principal);
            if let Some(hash) = hash {
                all.by_hash.push((hash, principal.clone()));
            }
            if let Some(identity) = identity {
                all.by_identity.insert(identity, principal);
            }
            all.count += 1;
        }
        all
    }

    /// True when there is something to authenticate against.
    pub(crate) fn enabled(&self) -> bool {
        self.count > 0
    }

    /// The principal one of a client certificate's names belongs to.
    pub(crate) fn by_certificate(&self, names: &[String]) -> Option<Arc<Principal>> {
        names
            .iter()
            .find_map(|name| self.by_identity.get(name).cloned())
    }

    /// The principal whose token this is. Every configured hash is
    /// compared, in constant time, whatever matches: the time taken says
    /// nothing about which token, or how much of one, was right.
    pub(crate) fn authenticate(&self, token: &str) -> Option<Arc<Principal>> {
        let presented = token::sha256(token.as_bytes());
        let mut found = None;
        for (hash, principal) in &self.by_hash {
            if token::equal(hash, &presented) {
                found = Some(principal.clone());
            }
        }
        found
    }

    /// The principal a worker id is pinned to, if any.
    pub(crate) fn pinned_to(&self, client_id: &str) -> Option<&str> {
        self.pinned.get(client_id).map(String::as_str)
    }
}
