//! Bearer tokens on the HTTP API (the rule is `tributary-auth`'s): `/health*`, `/metrics` and
//! `/openapi.json` stay open (probes and scrapers). A missing or wrong token is 401; the read
//! token on a mutating request is 403.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use tributary_auth::{Access, Denied, Tokens, bearer};

/// The middleware in front of `/api`.
pub(crate) async fn require(
    State(tokens): State<Arc<Tokens>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let access = if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        Access::Read
    } else {
        Access::Write
    };
    match tokens.check(bearer(req.headers()), access) {
        Ok(()) => Ok(next.run(req).await),
        Err(Denied::Unauthenticated) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "a valid bearer token is needed: Authorization: Bearer <token>",
        )),
        Err(Denied::ReadOnly) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "the read-only token cannot change anything",
        )),
    }
}
