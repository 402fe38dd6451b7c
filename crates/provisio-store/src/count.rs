//! How far a log list counted and searched: [`LogCount`], and its words.

use crate::{ExecutionFilter, LOG_COUNT_LIMIT, LOG_TEXT_WINDOW};

/// How many executions a log list matched, as far as it counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCount {
    /// The matches counted: all of them, or [`LOG_COUNT_LIMIT`].
    pub total: u64,
    /// False when more than `total` match.
    pub exact: bool,
    /// A text search read only this many of the newest executions.
    pub searched_newest: Option<u64>,
}

impl LogCount {
    /// Reads the count [`Store::list_executions`](crate::Store::list_executions)
    /// answered for `filter`.
    pub fn new(counted: u64, filter: &ExecutionFilter) -> Self {
        Self {
            total: counted.min(LOG_COUNT_LIMIT),
            exact: counted <= LOG_COUNT_LIMIT,
            searched_newest: filter.searches_text().then_some(LOG_TEXT_WINDOW),
        }
    }

    /// What the bounds mean, in a sentence; `None` when nothing was bounded.
    pub fn note(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.exact {
            parts.push(format!(
                "more than {} executions match; counting stops there",
                thousands(self.total)
            ));
        }
        if let Some(n) = self.searched_newest {
            parts.push(format!(
                "a text search reads {} executions back from the newest (or from Date To); set Date To earlier to search older ones",
                thousands(n)
            ));
        }
        (!parts.is_empty()).then(|| {
            let mut note = parts.join("; ");
            note[..1].make_ascii_uppercase();
            note.push('.');
            note
        })
    }
}

/// `100000` as `100,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_past_the_limit_says_more_than() {
        let plain = ExecutionFilter::default();
        let all = LogCount::new(LOG_COUNT_LIMIT, &plain);
        assert!(all.exact && all.note().is_none());
        let more = LogCount::new(LOG_COUNT_LIMIT + 1, &plain);
        assert_eq!((more.total, more.exact), (LOG_COUNT_LIMIT, false));
        assert_eq!(
            more.note().as_deref(),
            Some("More than 1,000 executions match; counting stops there.")
        );
    }

    #[test]
    fn a_text_search_says_how_far_back_it_read() {
        let search = ExecutionFilter {
            response: Some("locked".into()),
            ..ExecutionFilter::default()
        };
        let count = LogCount::new(3, &search);
        assert_eq!(count.searched_newest, Some(LOG_TEXT_WINDOW));
        assert!(count.note().unwrap().contains("100,000 executions back"));
        let blank = ExecutionFilter {
            data: Some(String::new()),
            ..ExecutionFilter::default()
        };
        assert_eq!(LogCount::new(3, &blank).searched_newest, None);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
