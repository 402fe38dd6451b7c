//! Logging in with an API token, the session cookie, and CSRF checks.
//!
//! The cookie holds 256 random bits; the database keeps only their SHA-256,
//! with the token the operator logged in with (revoking it ends the session)
//! and a per-session CSRF token that every state-changing form carries.

use askama::Template;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use bytes::Bytes;
use provisio_core::timefmt::to_millis;
use provisio_engine::OpError;
use provisio_store::SessionRecord;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{Chrome, PageError, PageResult, render, see_other};
use crate::AppState;

pub const COOKIE: &str = "provisio_session";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
}

/// A logged-in operator.
pub struct Session {
    pub csrf: String,
    /// The name of the API token the operator logged in with: who acts.
    pub token_name: String,
    /// The API token the operator logged in with: who did what a page does.
    pub token_id: i64,
    id_hash: [u8; 32],
}

impl Session {
    /// An error page for this operator (with the navigation).
    pub fn error(&self, status: StatusCode, heading: &str, message: &str) -> PageError {
        PageError::Page(Box::new(super::error_page(
            status, &self.csrf, heading, message,
        )))
    }

    /// `err` as a page, where "not found" is said in the page handler's words.
    pub fn not_found(&self, err: OpError, heading: &str, message: &str) -> PageError {
        match err {
            OpError::NotFound(_) => self.error(StatusCode::NOT_FOUND, heading, message),
            other => other.into(),
        }
    }
}

/// What a page handler starts from: the app and the operator's session.
pub struct Operator {
    pub state: AppState,
    pub session: Session,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let session = Session::from_request_parts(parts, state).await?;
        Ok(Operator {
            state: state.clone(),
            session,
        })
    }
}

/// The session's CSRF token, left in the request by the [`Session`]
/// extractor for [`Posted`] to check.
#[derive(Clone)]
struct SessionCsrf(String);

/// A state-changing form, taken only when the CSRF token it came with (its
/// `csrf` field, or from htmx the `x-csrf-token` header) is the session's.
/// The handler takes the session (or [`Operator`]) before it.
pub struct Posted<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let Some(SessionCsrf(expected)) = req.extensions().get::<SessionCsrf>().cloned() else {
            tracing::error!("a form handler does not take the session before the form");
            return Err(super::internal_error());
        };
        let header_token = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut again = Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone());
        if let Some(headers) = again.headers_mut() {
            *headers = req.headers().clone();
        }
        // Read once within the body limit, then parsed by axum's `Form`, so a
        // form that does not parse is refused as `Form` refuses it.
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let field_token = form_urlencoded::parse(&body)
            .find(|(name, _)| name == "csrf")
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        let again = again
            .body(Body::from(body))
            .map_err(|_| super::internal_error())?;
        let Form(form) = Form::<T>::from_request(again, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let given = if field_token.is_empty() {
            header_token
        } else {
            field_token
        };
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.as_bytes()).into();
        if !same {
            return Err(super::error_page(
                StatusCode::FORBIDDEN,
                &expected,
                "Form expired",
                "This form was not issued by this session (it may be stale). Go back, reload the page and try again.",
            ));
        }
        Ok(Posted(form))
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let to_login = |expired: bool| {
            let mut pairs = vec![("next", next)];
            if expired {
                pairs.push(("notice", "expired"));
            }
            see_other(&super::with_query("/login", &pairs))
        };
        let Some(id) = cookie_value(&parts.headers) else {
            return Err(to_login(false));
        };
        let id_hash = hash(&id);
        let found = state
            .store()
            .find_session(&id_hash)
            .await
            .map_err(super::failed)?;
        match found {
            Some(s) if s.expires_at_ms > to_millis(OffsetDateTime::now_utc()) => {
                parts.extensions.insert(SessionCsrf(s.csrf.clone()));
                Ok(Session {
                    csrf: s.csrf,
                    token_name: s.token_name,
                    token_id: s.token_id,
                    id_hash,
                })
            }
            Some(_) => Err(to_login(true)),
            None => Err(to_login(false)),
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginQuery {
    next: String,
    notice: Option<String>,
}

/// Only a path on this site is followed after login, never another site:
/// anything else leads to `/`. Browsers read `//host`, `/\\host`, and a `/`
/// followed by a tab or newline (which they strip) as another host, so the
/// value must start with exactly one `/` and hold no backslash, whitespace or
/// control character; its path (before `?` or `#`) must pass the same check
/// after each round of percent-decoding. The query may hold escapes such as
/// `%20`: nothing decodes them before the browser has chosen the host.
fn safe_next(next: &str) -> &str {
    let local = |path: &str| {
        path.starts_with('/')
            && !path.starts_with("//")
            && !path
                .chars()
                .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    };
    if !local(next) {
        return "/";
    }
    let mut path = next.split(['?', '#']).next().unwrap_or_default().to_owned();
    loop {
        let decoded = percent_decoded(&path);
        if decoded == path {
            return next;
        }
        if !local(&decoded) {
            return "/";
        }
        // Each round removes at least two characters, so this ends.
        path = decoded;
    }
}

/// `text` with its `%XX` escapes decoded; a `%` without two hex digits stays.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            }
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn login_page(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    let chrome = Chrome {
        csrf: String::new(),
        section: "login",
        notice: q
            .notice
            .as_deref()
            .and_then(super::notice_text)
            .map(str::to_owned),
    };
    render(
        StatusCode::OK,
        &LoginPage {
            chrome,
            next: safe_next(&q.next).to_owned(),
            error: None,
        },
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginForm {
    token: String,
    next: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> PageResult {
    let next = safe_next(&form.next).to_owned();
    let refuse = |message: &str| {
        let chrome = Chrome {
            csrf: String::new(),
            section: "login",
            notice: None,
        };
        render(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                chrome,
                next: next.clone(),
                error: Some(message.to_owned()),
            },
        )
    };
    // A login form posted from another site is refused (login CSRF).
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split("://").nth(1).unwrap_or("");
        if origin != "null" && origin_host != host {
            return Ok(refuse("This login form was posted from another site."));
        }
    }
    let token = form.token.trim();
    if token.is_empty() {
        return Ok(refuse("Enter an API token."));
    }
    // Only a refused token is the operator's mistake; a database that cannot
    // be reached must not read as a wrong token (`?` shows it as a failure).
    let Some(record) = crate::auth::authenticate(&state, token).await? else {
        return Ok(refuse("That token is not valid, or it was revoked."));
    };
    let id = crate::auth::random_secret();
    let ttl = state.config().session_ttl;
    let session = SessionRecord {
        token_id: record.id,
        token_name: record.name.clone(),
        csrf: crate::auth::random_secret(),
        expires_at_ms: to_millis(OffsetDateTime::now_utc()) + ttl.as_millis() as i64,
    };
    state.store().create_session(&hash(&id), &session).await?;
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        ttl.as_secs()
    );
    let mut response = see_other(&next);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie.parse().expect("a valid cookie"));
    Ok(response)
}

/// A form with no field but its CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {}

async fn logout(
    Operator { state, session }: Operator,
    Posted(CsrfForm {}): Posted<CsrfForm>,
) -> PageResult {
    state
        .store()
        .delete_session(&session.id_hash, to_millis(OffsetDateTime::now_utc()))
        .await?;
    let mut response = see_other("/login?notice=logged-out");
    let expired = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, expired.parse().expect("a valid cookie"));
    Ok(response)
}

/// Pages say `Cache-Control: no-store`: they show request bodies, secrets and
/// the CSRF token, and after Log out the browser's Back button must ask the
/// server again (and be sent to the login page) instead of showing a copy.
/// A response that chose its own caching (the assets) keeps it.
pub async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(header::HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_paths_are_followed_after_login() {
        for local in [
            "/",
            "/handlers",
            "/executions?status=fail&page=2",
            "/handlers/3/edit",
            "/executions?data=a%20b",
        ] {
            assert_eq!(safe_next(local), local, "{local:?}");
        }
        for hostile in [
            "",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example/x",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/ /evil.example",
            "/\u{a0}/evil.example",
            "/%09/evil.example",
            "/%0a/evil.example",
            "/%2F/evil.example",
            "/%2f%2fevil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/%252F%252Fevil.example",
            "%2F%2Fevil.example",
            "https://evil.example",
            "http:evil.example",
            "javascript:alert(1)",
            "evil.example",
            "/\u{0}/evil.example",
            "/%00/evil.example",
        ] {
            assert_eq!(safe_next(hostile), "/", "{hostile:?}");
        }
    }
}
