//! Counts the calls open on each connection, for the idle timeout: a call
//! is open from its request until its response body has ended (a stream's
//! trailers) or been dropped. With authentication on, only authenticated
//! calls count: a stranger's health watch does not keep a connection (and
//! its slot) busy. The layer sits inside the auth layer to see the caller.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use super::conn::{CallGuard, ConnInfo};

/// Adds [`CallsService`] around the server's routes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CallsLayer {
    /// Calls count only with a caller (authentication is on).
    authenticated_only: bool,
}

impl CallsLayer {
    pub(crate) fn new(authenticated_only: bool) -> Self {
        Self { authenticated_only }
    }
}

impl<S> Layer<S> for CallsLayer {
    type Service = CallsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallsService {
            inner,
            authenticated_only: self.authenticated_only,
        }
    }
}

/// Keeps a [`CallGuard`] with each call's response body.
#[derive(Clone, Debug)]
pub(crate) struct CallsService<S> {
    inner: S,
    authenticated_only: bool,
}

impl<S, B, R> Service<Request<B>> for CallsService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<Tracked<R>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let extensions = request.extensions();
        let counts = !self.authenticated_only || extensions.get::<crate::auth::Caller>().is_some();
        let guard = extensions
            .get::<ConnInfo>()
            .filter(|_| counts)
            .map(|info| info.activity.call_started());
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| Tracked {
                body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that holds its call open.
#[derive(Debug)]
pub(crate) struct Tracked<B> {
    body: B,
    _guard: Option<CallGuard>,
}

/// A call's response dropped before its end: its stream was reset, by the
/// client or by the server (as the "MadeYouReset" attack provokes), or
/// its connection went.
impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if self._guard.is_some() {
            metrics::counter!(crate::metrics::CALLS_RESET).increment(1);
        }
    }
}

/// An empty body holding no call open: what a refusal in front of the
/// layer answers with.
impl<B: Default> Default for Tracked<B> {
    fn default() -> Self {
        Self {
            body: B::default(),
            _guard: None,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            // The call has ended: it no longer keeps the connection busy.
            self._guard = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
