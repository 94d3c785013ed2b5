//! Errors as JSON: `{"error": "STREAM_NOT_FOUND", "message": "stream x not found", "field": ...}`
//! with the HTTP status of the error's class. A refused request changes nothing.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
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
/// `400 MALFORMED_JSON` naming the line, column and field when it does not parse, or when it
/// is not a JSON object (serde would read an array as a struct's fields in order).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                let name = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "BODY_TOO_LARGE"
                } else {
                    "BAD_BODY"
                };
                ApiError::new(e.status(), name, e.body_text())
            })?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "MALFORMED_JSON",
                "the body must be a JSON object",
            ));
        }
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok(JsonBody(v)),
            // JSON has one number type: `3.0` is the integer 3 to JSON Schema, and so here.
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .map(integral_floats)
                    .and_then(|v| serde_json::from_value(v).ok())
                    .map(JsonBody)
                    .ok_or_else(|| malformed(&e))
            }
            Err(e) => Err(malformed(&e)),
        }
    }
}

fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_JSON", e.to_string())
}

/// Every number with no fractional part written as a float (`3.0`) turned into an integer.
fn integral_floats(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let integer = if f.fract() != 0.0 {
                None
            } else if (0.0..u64::MAX as f64).contains(&f) {
                // `u64::MAX as f64` is 2^64, one past the largest u64.
                Some(serde_json::Number::from(f as u64))
            } else if (i64::MIN as f64..0.0).contains(&f) {
                Some(serde_json::Number::from(f as i64))
            } else {
                None
            };
            Value::Number(integer.unwrap_or(n))
        }
        Value::Array(a) => Value::Array(a.into_iter().map(integral_floats).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, integral_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integral_floats_become_integers_and_others_stay() {
        let v = serde_json::from_str(
            r#"{"a": 3.0, "b": [1.5, -2.0, 1e300, 18446744073709551616], "c": "4.0"}"#,
        )
        .expect("json");
        assert_eq!(
            integral_floats(v),
            json!({"a": 3, "b": [1.5, -2, 1e300, 18446744073709551616.0], "c": "4.0"})
        );
    }
}

/// A query string, refused with `400 INVALID_QUERY` (JSON, like every error) when it does not
/// parse into `T` (a negative or too large number, an unknown value).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID_QUERY", e.body_text())
            })
    }
}

/// Path parameters, refused with `400 INVALID_PATH` (JSON, like every error) when they cannot
/// be read (e.g. not UTF-8 once percent-decoded).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PATH", e.body_text())
            })
    }
}
