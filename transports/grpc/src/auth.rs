//! Bearer tokens on the gRPC server: a tower layer in front of the service. A call that writes
//! (see [`crate::is_read_only`]) needs the write token when one is configured; a read
//! needs one of the tokens when a read token is configured. A missing or wrong token is
//! `UNAUTHENTICATED`, the read token on a writing call `PERMISSION_DENIED`; the call never
//! reaches the service, so nothing changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tributary_auth::{Access, Denied, Tokens};

/// The layer.
#[derive(Debug, Clone)]
pub struct GrpcAuthLayer {
    tokens: Arc<Tokens>,
}

impl GrpcAuthLayer {
    /// Checks calls against these tokens.
    pub fn new(tokens: Tokens) -> Self {
        GrpcAuthLayer {
            tokens: Arc::new(tokens),
        }
    }
}

impl<S> tower_layer::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service the layer makes.
#[derive(Debug, Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    tokens: Arc<Tokens>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower_service::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let access = if crate::is_read_only(req.uri().path()) {
            Access::Read
        } else {
            Access::Write
        };
        match self
            .tokens
            .check(tributary_auth::bearer(req.headers()), access)
        {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(d) => {
                let status = match d {
                    Denied::Unauthenticated => Status::unauthenticated(
                        "a valid bearer token is needed: authorization: Bearer <token>",
                    ),
                    Denied::ReadOnly => {
                        Status::permission_denied("the read-only token cannot change anything")
                    }
                };
                tracing::info!(code = 9, method = req.uri().path(), status = ?status.code(), "gRPC call refused: token");
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
