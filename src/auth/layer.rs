//! The tower layer in front of every service: it authenticates each call
//! by its bearer token, checks the method's access in [`super::access`],
//! keeps worker ids pinned to their principal, and hands the caller on to
//! the handlers. A refused call is answered here, UNAUTHENTICATED or
//! PERMISSION_DENIED, counted in `contact_auth_refusals_total{reason}` and
//! logged with the principal's name, never the token: at most one line a
//! second, with how many were not logged, so a stranger's flood of calls
//! cannot flood the log.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response};
use tonic::Status;
use tower::{Layer, Service};
use tracing::warn;

use super::{
    Caller, Principal, Principals, Role,
    access::{Access, access},
};
use crate::{
    domain::{CLIENT_ID_KEY, QUEUES_KEY, quote},
    transport::conn::ConnInfo,
};

/// The metadata key that carries the token: `authorization: Bearer <token>`.
pub const AUTHORIZATION_KEY: &str = "authorization";

/// Adds [`AuthService`] around the server's routes.
#[derive(Clone, Debug)]
pub(crate) struct AuthLayer {
    principals: Arc<Principals>,
    log: Arc<LogThrottle>,
}

impl AuthLayer {
    pub(crate) fn new(principals: Arc<Principals>) -> Self {
        Self {
            principals,
            log: Arc::new(LogThrottle::default()),
        }
    }
}

/// How often a refusal is logged at the most.
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Lets one refusal line a second through; counts the rest.
#[derive(Debug)]
struct LogThrottle {
    epoch: tokio::time::Instant,
    /// Milliseconds from `epoch` of the last line, plus one (0: never).
    last_ms: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self {
            epoch: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl LogThrottle {
    /// `Some(lines not logged since the last one)` when this one may be.
    fn admit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            principals: self.principals.clone(),
            log: self.log.clone(),
        }
    }
}

/// Lets through only the calls their caller may make.
#[derive(Clone, Debug)]
pub(crate) struct AuthService<S> {
    inner: S,
    principals: Arc<Principals>,
    log: Arc<LogThrottle>,
}

/// Why a call was refused: the metric's `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    MissingCredentials,
    BadCredentials,
    MissingRole,
    WorkerId,
    Queue,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::MissingCredentials => "missing_credentials",
            Reason::BadCredentials => "bad_credentials",
            Reason::MissingRole => "missing_role",
            Reason::WorkerId => "worker_id",
            Reason::Queue => "queue",
        }
    }

    /// Every label, for registering the series at zero.
    const ALL: [Reason; 5] = [
        Reason::MissingCredentials,
        Reason::BadCredentials,
        Reason::MissingRole,
        Reason::WorkerId,
        Reason::Queue,
    ];
}

/// Registers `contact_auth_refusals_total` at zero for every reason.
pub(crate) fn register_metrics() {
    for reason in Reason::ALL {
        metrics::counter!(crate::metrics::AUTH_REFUSALS, "reason" => reason.label()).absolute(0);
    }
}

struct Refusal {
    reason: Reason,
    principal: Option<String>,
    message: String,
}

impl Refusal {
    fn unauthenticated(reason: Reason, message: &str) -> Self {
        Self {
            reason,
            principal: None,
            message: message.to_owned(),
        }
    }

    fn denied(reason: Reason, principal: &Principal, message: String) -> Self {
        Self {
            reason,
            principal: Some(principal.name.to_string()),
            message,
        }
    }

    fn status(&self) -> Status {
        match self.reason {
            Reason::MissingCredentials | Reason::BadCredentials => {
                Status::unauthenticated(&self.message)
            }
            _ => Status::permission_denied(&self.message),
        }
    }
}

/// The token of `Authorization: Bearer <token>`, if sent.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION_KEY)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn header<'a>(headers: &'a http::HeaderMap, key: &str) -> Option<&'a str> {
    headers.get(key).and_then(|v| v.to_str().ok())
}

impl Principals {
    /// Checks one call; the caller to hand on, or why it is refused. May
    /// add the pinned worker id to a worker's call that names none.
    fn admit<B>(&self, request: &mut Request<B>) -> Result<Option<Caller>, Refusal> {
        let path = request.uri().path();
        let access = access(path);
        if access == Access::Open {
            return Ok(None);
        }
        let principal = match bearer(request.headers()) {
            Some(token) => self.authenticate(token).ok_or_else(|| {
                Refusal::unauthenticated(
                    Reason::BadCredentials,
                    "the token is not one this server knows",
                )
            })?,
            None => {
                let names = request
                    .extensions()
                    .get::<ConnInfo>()
                    .map(|info| info.identities.clone())
                    .unwrap_or_default();
                match self.by_certificate(&names) {
                    Some(principal) => principal,
                    None if names.is_empty() => {
                        return Err(Refusal::unauthenticated(
                            Reason::MissingCredentials,
                            "this server needs credentials: send `authorization: Bearer <token>` \
                             (or a client certificate a principal names)",
                        ));
                    }
                    None => {
                        return Err(Refusal::unauthenticated(
                            Reason::BadCredentials,
                            "no principal has this client certificate's names as tls_identity",
                        ));
                    }
                }
            }
        };
        if let Access::Role(role) = access {
            if !principal.roles.contains(&role) {
                return Err(Refusal::denied(
                    Reason::MissingRole,
                    &principal,
                    format!(
                        "principal {:?} lacks the {} role that {path} needs",
                        principal.name,
                        role.as_str()
                    ),
                ));
            }
            if role == Role::Worker {
                self.check_worker(request, &principal)?;
            }
        }
        Ok(Some(Caller(principal)))
    }

    /// A worker acts only as its pinned id, no one else as a pinned id,
    /// and registers only for its queues.
    fn check_worker<B>(
        &self,
        request: &mut Request<B>,
        principal: &Principal,
    ) -> Result<(), Refusal> {
        let headers = request.headers();
        match (&principal.client_id, header(headers, CLIENT_ID_KEY)) {
            (Some(pinned), None) => {
                if let Ok(value) = HeaderValue::from_str(pinned) {
                    request.headers_mut().insert(CLIENT_ID_KEY, value);
                }
            }
            (Some(pinned), Some(id)) if id != pinned => {
                return Err(Refusal::denied(
                    Reason::WorkerId,
                    principal,
                    format!(
                        "principal {:?} may act only as worker {pinned:?}, not {}",
                        principal.name,
                        quote(id)
                    ),
                ));
            }
            (None, Some(id)) if self.pinned_to(id).is_some() => {
                return Err(Refusal::denied(
                    Reason::WorkerId,
                    principal,
                    format!("worker id {} belongs to another principal", quote(id)),
                ));
            }
            _ => {}
        }
        if request.uri().path() == "/Contact/getTask" && principal.queues.is_some() {
            let listed = header(request.headers(), QUEUES_KEY).unwrap_or("default");
            if let Some(queue) = listed
                .split(',')
                .map(str::trim)
                .find(|q| !principal.may_use_queue(q))
            {
                return Err(Refusal::denied(
                    Reason::Queue,
                    principal,
                    format!(
                        "principal {:?} may not take tasks from queue {}",
                        principal.name,
                        quote(queue)
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl<S, B, R> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if !self.principals.enabled() {
            return Box::pin(self.inner.call(request));
        }
        match self.principals.admit(&mut request) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Box::pin(self.inner.call(request))
            }
            Err(refusal) => {
                metrics::counter!(
                    crate::metrics::AUTH_REFUSALS,
                    "reason" => refusal.reason.label()
                )
                .increment(1);
                if let Some(not_logged) = self.log.admit() {
                    warn!(
                        rpc.method = crate::metrics::rpc_errors::method_label(request.uri().path()),
                        reason = refusal.reason.label(),
                        principal = refusal.principal.as_deref().unwrap_or("(none)"),
                        refusals_not_logged = not_logged,
                        "call refused"
                    );
                }
                let response = refusal.status().into_http();
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line a second; the next one says how many were not logged.
    #[tokio::test(start_paused = true)]
    async fn refusals_are_logged_at_most_once_a_second() {
        let throttle = LogThrottle::default();
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), None);
        assert_eq!(throttle.admit(), None);
        tokio::time::advance(LOG_EVERY).await;
        assert_eq!(throttle.admit(), Some(2));
        assert_eq!(throttle.admit(), None);
    }
}
