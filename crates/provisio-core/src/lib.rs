//! provisio's domain, with no I/O: what an event, a handler and a delivery attempt
//! are, and the pure rules around them.
//!
//! # Layout
//!
//! - [`catalog`]: event type ids, the built-in catalog, and handler event patterns.
//! - [`handler`]: a handler's settings, their defaults and their validation.
//! - [`event`]: an emitted event, its object id and the exact payload receivers get.
//! - [`filter`]: handler filters in CEL, checked when saved, bounded when run.
//! - [`request`]: request templates (minijinja) for HTTP handlers, sandboxed.
//! - [`signing`]: Standard Webhooks secrets and signatures.
//! - [`replay`]: replay jobs' states and what they resend.
//! - [`retry`]: the retry schedule and the delay before the next attempt.
//! - [`timefmt`]: the one timestamp format provisio writes.
//! - [`FieldErrors`]: per-field validation messages, shared by every validator.

pub mod catalog;
pub mod event;
pub mod filter;
pub mod handler;
pub mod replay;
pub mod request;
pub mod retry;
pub mod signing;
pub mod timefmt;

use std::collections::BTreeMap;

/// Validation messages keyed by the field they are about, in the order a reader
/// scans a form. Every validator in provisio reports through this type so the API
/// and the web section show the same words next to the same fields.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the first message for `field`; later ones for the same field are
    /// dropped because one clear message per field reads better than a list.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_insert_with(|| message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// A one-line summary such as `name: must not be empty; priority: …`.
    pub fn summary(&self) -> String {
        self.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Declares a string-valued enum used on the wire and in storage, with the one
/// spelling both use.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "must be one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_enum;

/// Why text holding U+0000 is refused wherever it would be stored:
/// PostgreSQL's `text` cannot hold it, so it failed there with a server
/// error (and an emit failed the others committed with it), while SQLite
/// took it. Both backends now refuse it the same way, up front. (In an
/// address it can only come as `%00`, which the server refuses before
/// routing.)
pub const NUL_REFUSED: &str = "must not contain a NUL character (U+0000)";

/// True when `text` holds U+0000 ([`NUL_REFUSED`]).
pub fn has_nul(text: &str) -> bool {
    text.contains('\0')
}

/// An error and its causes on one line, joined by `: `, each said once: a
/// cause the line already ends with is left out, since many errors print
/// their source inside their own message (sqlx's failed migration, and
/// provisio's `migration failed: {0}` around it, printed the same cause
/// three times). For the CLI's last line and a failed call's log entry.
pub fn error_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// `text` with each U+0000 replaced by U+FFFD, for text the log keeps
/// whatever produced it (a reply, a script's output, a rendered request):
/// one such row in a batch PostgreSQL refuses would fail every commit of
/// the recorder's batch, and the recorder does not drop results.
pub fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if has_nul(text) {
        text.replace('\0', "\u{FFFD}").into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::error_line;

    /// A cause that its error's message already ends with is not repeated;
    /// one that adds something is.
    #[test]
    fn an_error_line_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open the database: {0}")]
        struct Context(#[source] Outer);
        #[derive(Debug, thiserror::Error)]
        #[error("migration failed: {0}")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("database or disk is full")]
        struct Inner;
        #[derive(Debug, thiserror::Error)]
        #[error("cannot connect")]
        struct Connect(#[source] std::io::Error);

        assert_eq!(
            error_line(&Context(Outer(Inner))),
            "cannot open the database: migration failed: database or disk is full"
        );
        assert_eq!(
            error_line(&Connect(std::io::Error::other("refused"))),
            "cannot connect: refused"
        );
    }
}
