//! API tokens: generated as `pvo_<random>`, stored as SHA-256 hashes, checked on
//! every `/api` request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use provisio_store::{StoreResult, TokenHash, TokenRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

const TOKEN_PREFIX: &str = "pvo_";

/// A fresh API token: `pvo_` and 256 random bits.
pub fn generate_token() -> String {
    format!("{TOKEN_PREFIX}{}", random_secret())
}

/// 256 random bits, URL-safe base64: API tokens, session ids, CSRF tokens.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Tokens carry 256 random bits, so a plain SHA-256 is enough: there is nothing
/// for a slow password hash to protect against.
pub fn hash_token(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// Middleware: lets a request through only with a live bearer token, and
/// leaves the token's record in the request's extensions.
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(&req).ok_or_else(|| {
        ApiError::unauthorized("missing bearer token: send Authorization: Bearer <token>")
    })?;
    let record = authenticate(&state, token)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or revoked token"))?;
    req.extensions_mut().insert(record);
    Ok(next.run(req).await)
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The live token record for `token`; `None` when it is not a live token.
/// Both the API's token check and the web login ask this.
pub async fn authenticate(state: &AppState, token: &str) -> StoreResult<Option<TokenRecord>> {
    let hash = hash_token(token);
    if let Some(record) = state.tokens().get(&hash) {
        return Ok(Some(record));
    }
    match state.store().find_token(&hash).await? {
        Some(record) if record.hash.ct_eq(&hash) => {
            state.tokens().put(record.clone());
            Ok(Some(record))
        }
        _ => Ok(None),
    }
}

/// Tokens recently found valid. Every API call would otherwise cost a database
/// round trip; an entry lives [`TOKEN_CACHE_TTL`], so a token revoked from the
/// command line stops working within that time.
#[derive(Default)]
pub struct TokenCache(Mutex<HashMap<[u8; 32], (TokenRecord, Instant)>>);

pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(1);
/// A bound on memory: the cache is emptied when it would grow past this.
const TOKEN_CACHE_MAX: usize = 1024;

impl TokenCache {
    fn get(&self, hash: &TokenHash) -> Option<TokenRecord> {
        let map = self.0.lock().expect("token cache poisoned");
        let (record, at) = map.get(&hash.0)?;
        (at.elapsed() < TOKEN_CACHE_TTL && record.hash.ct_eq(hash)).then(|| record.clone())
    }

    fn put(&self, record: TokenRecord) {
        let mut map = self.0.lock().expect("token cache poisoned");
        if map.len() >= TOKEN_CACHE_MAX {
            map.clear();
        }
        map.insert(record.hash.0, (record, Instant::now()));
    }
}
