//! Conditional writes (`If-Match`, `If-None-Match` on a kv write): the condition a client puts on
//! the value this node holds for the key, checked by the core at the moment it applies the write,
//! so no other write on this node comes between the check and the write.
//!
//! A per-node check, not a cluster-wide compare-and-set: two nodes may each accept a write
//! conditioned on the same ETag, and last-writer-wins then keeps one of them.

/// An ETag condition: `*` (any current value) or a list of entity tags, compared exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtagCondition {
    Any,
    OneOf(Vec<String>),
}

impl EtagCondition {
    /// Reads a header value: `*`, or comma-separated entity tags (`"..."`, `W/"..."`). Anything
    /// else in the list is kept as written and compared as it is, so it never matches a tag this
    /// node gives (which is quoted); an empty list matches nothing.
    pub fn parse(header: &str) -> EtagCondition {
        let header = header.trim();
        if header == "*" {
            return EtagCondition::Any;
        }
        let tags = header
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        EtagCondition::OneOf(tags)
    }

    /// Whether `current` matches by weak comparison (a `W/` prefix ignored), as `If-None-Match`
    /// on a read compares.
    pub fn matches_weakly(&self, current: &str) -> bool {
        match self {
            EtagCondition::Any => true,
            EtagCondition::OneOf(tags) => tags
                .iter()
                .any(|t| t.strip_prefix("W/").unwrap_or(t) == current),
        }
    }

    /// Whether the current ETag (`None`: no live value) matches. A weak tag (`W/"..."`) never
    /// matches: this node's tags are strong.
    fn matches(&self, current: Option<&str>) -> bool {
        match (self, current) {
            (_, None) => false,
            (EtagCondition::Any, Some(_)) => true,
            (EtagCondition::OneOf(tags), Some(tag)) => tags.iter().any(|t| t == tag),
        }
    }
}

/// The conditions on a write; the default has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Precondition {
    /// Write only if the current value matches (`*`: if there is one).
    pub if_match: Option<EtagCondition>,
    /// Write only if the current value does not match (`*`: if there is none).
    pub if_none_match: Option<EtagCondition>,
}

impl Precondition {
    pub fn is_none(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// Whether a write may go ahead when the key's live value has ETag `current` (`None`: no
    /// live value, never written or deleted).
    pub fn holds(&self, current: Option<&str>) -> bool {
        let matched = self.if_match.as_ref().is_none_or(|c| c.matches(current));
        let unmatched = self
            .if_none_match
            .as_ref()
            .is_none_or(|c| !c.matches(current));
        matched && unmatched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> EtagCondition {
        EtagCondition::parse(s)
    }

    #[test]
    fn headers_read_as_star_or_a_list_of_tags_kept_as_written() {
        assert_eq!(tags(" * "), EtagCondition::Any);
        assert_eq!(
            tags(r#""a", W/"b", c"#),
            EtagCondition::OneOf(vec![r#""a""#.into(), r#"W/"b""#.into(), "c".into()])
        );
        assert_eq!(tags(" , "), EtagCondition::OneOf(vec![]));
    }

    #[test]
    fn conditions_hold_as_http_says() {
        let current = Some(r#""1-n1""#);
        let if_match = |c: &str| Precondition {
            if_match: Some(tags(c)),
            ..Precondition::default()
        };
        let if_none_match = |c: &str| Precondition {
            if_none_match: Some(tags(c)),
            ..Precondition::default()
        };
        assert!(Precondition::default().holds(None));
        assert!(if_match(r#""0-n2", "1-n1""#).holds(current));
        assert!(!if_match(r#""0-n2""#).holds(current));
        assert!(!if_match(r#"W/"1-n1""#).holds(current));
        assert!(if_match("*").holds(current) && !if_match("*").holds(None));
        assert!(if_none_match("*").holds(None) && !if_none_match("*").holds(current));
        assert!(if_none_match(r#""0-n2""#).holds(current));
        assert!(!if_none_match(r#""1-n1""#).holds(current));
        assert!(tags(r#"W/"1-n1""#).matches_weakly(r#""1-n1""#));
        // Tags not written as HTTP writes them, or none at all, match nothing.
        for odd in ["1-n1", "", ","] {
            assert!(!if_match(odd).holds(current) && if_none_match(odd).holds(current));
        }
        assert!(!tags(r#""0-n1""#).matches_weakly(r#""1-n1""#));
    }
}
