//! Extractors that turn bad input into [`ApiError`]s of the documented shape:
//! malformed JSON is 400, JSON of the wrong shape is 422 naming the field, a body
//! over the limit is 413.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body parsed into `T`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The raw body, with the size limit mapped to 413.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|rejection: BytesRejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large("the request body is larger than the server accepts")
            } else {
                ApiError::malformed(rejection.body_text())
            }
        })
}

/// Parses JSON text into `T`, telling syntax errors (400) from shape errors
/// (422, keyed by the path of the offending field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        classify(&path, err.into_inner())
    })?;
    de.end().map_err(|e| classify(".", e))?;
    Ok(value)
}

fn classify(path: &str, err: serde_json::Error) -> ApiError {
    match err.classify() {
        serde_json::error::Category::Data => {
            let message = err.to_string();
            let (field, message) = field_of(path, strip_position(&message));
            ApiError::invalid_field(&field, message)
        }
        _ => ApiError::malformed(format!("the body is not valid JSON: {err}")),
    }
}

/// serde's data errors end with " at line L column C", which means nothing to a
/// caller once the field is named.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// Names the field an error is about. Unknown and missing fields are reported
/// by serde at the parent's path with the name in the message.
fn field_of(path: &str, message: &str) -> (String, String) {
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let parent = if path == "." { "" } else { path };
    // serde_path_to_error already ends the path with an unknown field's name.
    let join = |name: String| match parent {
        "" => name,
        p if p == name || p.ends_with(&format!(".{name}")) => p.to_owned(),
        p => format!("{p}.{name}"),
    };
    if let Some(name) = quoted("unknown field `") {
        return (join(name), "unknown field".into());
    }
    if let Some(name) = quoted("missing field `") {
        return (join(name), "is required".into());
    }
    let field = if parent.is_empty() {
        "body".to_owned()
    } else {
        parent.to_owned()
    };
    (field, message.to_owned())
}

/// A path parameter; one that does not parse (`/handlers/abc`) names nothing
/// that exists, so it is a 404 like any unknown id.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|_| ApiError::not_found(parts.uri.path().to_owned()))
    }
}

/// Query parameters parsed into `T`, with errors as 422.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|err| {
                let path = err.path().to_string();
                let message = err.into_inner().to_string();
                let (field, message) = field_of(&path, &message);
                let field = if field == "body" {
                    "query".to_owned()
                } else {
                    field
                };
                ApiError::invalid_field(&field, message)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Thing {
        name: String,
        priority: Option<i64>,
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_name_the_field() {
        let e = parse_json::<Thing>(b"{not json").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = parse_json::<Thing>(br#"{"name": "x", "priority": 1.5}"#).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.fields().get("priority").is_some(), "{e:?}");
        let e = parse_json::<Thing>(br#"{"name": "x", "colour": 1}"#).unwrap_err();
        assert_eq!(e.fields().get("colour"), Some("unknown field"));
        let e = parse_json::<Thing>(br#"{}"#).unwrap_err();
        assert_eq!(e.fields().get("name"), Some("is required"));
        let e = parse_json::<Thing>(br#"[]"#).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let e = parse_json::<Thing>(br#"{"name": "x"} trailing"#).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}
