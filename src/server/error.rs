//! The JSON error body every route answers with: `{"error": {"code", "message", "field"?}}`.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An error answered to an API caller.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`invalid_json`, `unauthorized`, ...).
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// The offending field, as a dotted path, when one is to blame.
    pub field: Option<String>,
}

impl ApiError {
    /// An error without a field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 422 naming a field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_field",
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// 400 for a body that is not well-formed JSON.
    pub fn invalid_json(e: &serde_json::Error) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string())
    }

    /// 404.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 401.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
        )
    }

    /// 500/503 for a store failure; the details go to the log, not to the caller.
    pub fn store(e: crate::store::Error) -> ApiError {
        tracing::error!(error = %e, "store operation failed");
        match e {
            crate::store::Error::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            crate::store::Error::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store is unavailable; nothing was accepted",
            ),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the store failed; nothing was accepted",
            ),
        }
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        ApiError::store(e)
    }
}

/// The body of every error answer, as the OpenAPI document describes it (`Error`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`invalid_json`, `invalid_field`, `unauthorized`,
    /// `not_found`, `conflict`, `body_too_large`, `rate_limited`, `unavailable`...).
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// The offending field as a dotted path (`auth.password`, `[2].type`; empty for the whole
    /// body), when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Maps a body that could not be read: too large is 413, anything else 400.
pub fn body_error(rejection: BytesRejection) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
    while let Some(e) = source {
        if e.is::<super::limits::BodyTimeout>() {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", e.to_string());
        }
        source = e.source();
    }
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body exceeds server.max_body_bytes",
        )
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_body", rejection.body_text())
    }
}

/// Parses a JSON body: malformed JSON is 400, well-formed JSON of the wrong shape is 422
/// naming the field.
///
/// One pass straight into `T` (no intermediate `Value` tree, so [`Json`](crate::model::Json)
/// fields keep the text as sent). Only when that fails on the shape is the body scanned again,
/// to tell a malformed body (400, even when the shape went wrong before the syntax did) from a
/// well-formed one of the wrong shape.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => {
            de.end().map_err(|e| ApiError::invalid_json(&e))?;
            Ok(value)
        }
        Err(e) if e.inner().is_data() => {
            if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                return Err(ApiError::invalid_json(&syntax));
            }
            Err(field_error(e))
        }
        Err(e) => Err(ApiError::invalid_json(e.inner())),
    }
}

/// Deserialises a parsed JSON value, with 422 naming the field on failure.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(field_error)
}

/// 422 naming the field a deserialisation failed at.
fn field_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    // The root is "." in serde_path_to_error; the API names it with an empty field.
    let path = match e.path().to_string() {
        root if root == "." => String::new(),
        path => path,
    };
    let inner = e.into_inner().to_string();
    // For a missing field the path ends at its parent; serde names the field in its message.
    // (For an unknown field the path already ends with it.)
    let field = named_field(&inner)
        .map(|f| {
            if path.is_empty() {
                f
            } else {
                format!("{path}.{f}")
            }
        })
        .unwrap_or(path);
    ApiError::invalid_field(field, inner)
}

fn named_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewEvent;

    fn parse(body: &str) -> Result<NewEvent, (StatusCode, &'static str, Option<String>)> {
        parse_json::<NewEvent>(body.as_bytes()).map_err(|e| (e.status, e.code, e.field))
    }

    #[test]
    fn a_well_formed_body_of_the_right_shape_parses() {
        let event = parse(r#"{"type":"user.created","data":{"id":7,"name":"a"}}"#).unwrap();
        assert_eq!(event.event_type, "user.created");
        assert_eq!(event.data, serde_json::json!({"id": 7, "name": "a"}));
        // Kept as the text sent, key order and formatting included.
        let event = parse(r#"{"type":"t","data": {"z": 1.50, "a": [1, 2]} }"#).unwrap();
        assert_eq!(event.data.get(), r#"{"z": 1.50, "a": [1, 2]}"#);
        assert_eq!(event.context, None);
    }

    #[test]
    fn malformed_json_is_400_even_when_the_shape_is_also_wrong_before_the_syntax_error() {
        for body in [
            r#"{"type": "#,
            "not json",
            "",
            r#"{"type":"t","data":1}}"#,
            // The wrong type for `type` comes first; the missing `}` after it still makes the
            // body malformed, which is what the caller must hear about.
            r#"{"type": 5, "data": {}"#,
        ] {
            let (status, code, _) = parse(body).unwrap_err();
            assert_eq!(
                (status, code),
                (StatusCode::BAD_REQUEST, "invalid_json"),
                "{body}"
            );
        }
    }

    #[test]
    fn well_formed_json_of_the_wrong_shape_is_422_naming_the_field() {
        for (body, field) in [
            (r#"{"type": 5, "data": {}}"#, "type"),
            (r#"{"type": "t"}"#, "data"),
            (
                r#"{"type": "t", "data": {}, "occurred_at": "yesterday"}"#,
                "occurred_at",
            ),
            (r#""just a string""#, ""),
        ] {
            let (status, code, got) = parse(body).unwrap_err();
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(code, "invalid_field", "{body}");
            assert_eq!(got.as_deref(), Some(field), "{body}");
        }
    }
}
