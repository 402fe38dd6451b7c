//! Logging in with an API token, the session cookie, and CSRF checks.
//!
//! The cookie holds 256 random bits; the database keeps only their SHA-256,
//! with the token the operator logged in with (revoking it ends the session)
//! and a per-session CSRF token that every state-changing form carries.

use askama::Template;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use provisio_core::timefmt::to_millis;
use provisio_store::SessionRecord;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{Chrome, render, see_other};
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
    id_hash: [u8; 32],
}

impl Session {
    /// Checks a form's (or htmx request's) CSRF token against the session's.
    pub fn verify_csrf(&self, form_token: &str, headers: &HeaderMap) -> Result<(), Response> {
        let header_token = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let given = if form_token.is_empty() {
            header_token
        } else {
            form_token
        };
        let expected = self.csrf.as_bytes();
        let same = given.len() == expected.len()
            && given
                .bytes()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(super::error_page(
                StatusCode::FORBIDDEN,
                &self.csrf,
                "Form expired",
                "This form was not issued by this session (it may be stale). Go back, reload the page and try again.",
            ))
        }
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
            .map_err(super::internal)?;
        match found {
            Some(s) if s.expires_at_ms > to_millis(OffsetDateTime::now_utc()) => Ok(Session {
                csrf: s.csrf,
                id_hash,
            }),
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
struct LoginQuery {
    #[serde(default)]
    next: String,
    notice: Option<String>,
}

/// Only local paths are followed after login, never another site.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") {
        next
    } else {
        "/"
    }
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

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
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
            return refuse("This login form was posted from another site.");
        }
    }
    let token = form.token.trim();
    if token.is_empty() {
        return refuse("Enter an API token.");
    }
    let record = match crate::auth::authenticate(&state, token).await {
        Ok(record) => record,
        Err(_) => return refuse("That token is not valid, or it was revoked."),
    };
    let id = random_token();
    let ttl = state.config().session_ttl;
    let session = SessionRecord {
        token_id: record.id,
        csrf: random_token(),
        expires_at_ms: to_millis(OffsetDateTime::now_utc()) + ttl.as_millis() as i64,
    };
    if let Err(err) = state.store().create_session(&hash(&id), &session).await {
        return super::internal(err);
    }
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        ttl.as_secs()
    );
    let mut response = see_other(&next);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie.parse().expect("a valid cookie"));
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(page) = session.verify_csrf(&form.csrf, &headers) {
        return page;
    }
    if let Err(err) = state
        .store()
        .delete_session(&session.id_hash, to_millis(OffsetDateTime::now_utc()))
        .await
    {
        return super::internal(err);
    }
    let mut response = see_other("/login?notice=logged-out");
    let expired = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, expired.parse().expect("a valid cookie"));
    response.into_response()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}
