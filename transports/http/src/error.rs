//! Errors as JSON: `{"error": "STREAM_NOT_FOUND", "message": "stream x not found", "field": ...}`
//! with the HTTP status of the error's class. A refused request changes nothing.

use axum::Json;
use axum::extract::FromRequest;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tributary_core::{Error, ErrorClass, InvalidInput};
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error's stable name, e.g. `STREAM_NOT_FOUND`, `MALFORMED_JSON`, `UNAUTHENTICATED`.
    pub error: String,
    /// What is wrong, for people.
    pub message: String,
    /// The field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error answer: a status and its JSON body.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with this status, name and message.
    pub fn new(status: StatusCode, error: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                message: message.into(),
                field: None,
            },
        }
    }

    /// Names the field at fault.
    pub fn field(mut self, field: impl Into<String>) -> ApiError {
        self.body.field = Some(field.into());
        self
    }

    /// A 400 for bad input in `field`.
    pub fn bad_request(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", message).field(field)
    }

    /// The engine's answer came in a form this transport did not expect.
    pub fn unexpected() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "unexpected reply from the engine",
        )
    }
}

/// The HTTP status of an error class.
pub fn status_of(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::InvalidArgument | ErrorClass::OutOfRange => StatusCode::BAD_REQUEST,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::AlreadyExists | ErrorClass::FailedPrecondition => StatusCode::CONFLICT,
        ErrorClass::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn field_of(i: &InvalidInput) -> &'static str {
    match i {
        InvalidInput::Length { field, .. }
        | InvalidInput::Pattern { field, .. }
        | InvalidInput::Range { field, .. }
        | InvalidInput::Conflict { field, .. } => field,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let mut a = ApiError::new(status_of(e.class()), e.reason(), e.to_string());
        if let Error::Invalid(i) = &e {
            a = a.field(field_of(i));
        }
        a
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> ApiError {
        ApiError::from(Error::Invalid(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// A JSON request body, read whatever its content type (so `curl -d` works), refused with
/// `400 MALFORMED_JSON` naming the line, column and field when it does not parse.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "BAD_BODY", e.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_JSON", e.to_string()))
    }
}
