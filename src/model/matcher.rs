use regex::Regex;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MatcherError {
    #[error("invalid regular expression {pattern:?}: {source}")]
    Regex {
        pattern: String,
        #[source]
        source: regex::Error,
    },
}

/// How a matcher compares a label value.
#[derive(Debug, Clone)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Re(Regex),
    NotRe(Regex),
}

/// One label matcher. A missing label has the value `""`, so `{l=""}` matches series
/// without `l`, as in Prometheus.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

impl Matcher {
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
        }
    }

    pub fn not_equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::NotEqual,
            value: value.into(),
        }
    }

    /// Regex matchers are fully anchored and `.` matches newline (Prometheus 3).
    pub fn regex(
        name: impl Into<String>,
        pattern: &str,
        negate: bool,
    ) -> Result<Self, MatcherError> {
        let re =
            Regex::new(&format!("^(?s:{pattern})$")).map_err(|source| MatcherError::Regex {
                pattern: pattern.to_string(),
                source,
            })?;
        let op = if negate {
            MatchOp::NotRe(re)
        } else {
            MatchOp::Re(re)
        };
        Ok(Matcher {
            name: name.into(),
            op,
            value: pattern.to_string(),
        })
    }

    /// For a regex that is an alternation of literals (`a|b|c`, also `(a|b)` and with
    /// backslash-escaped punctuation, as Grafana's multi-value variables produce) the
    /// literals, so they can be looked up directly instead of testing every label value.
    pub fn literal_alternatives(&self) -> Option<Vec<String>> {
        if !matches!(self.op, MatchOp::Re(_)) {
            return None;
        }
        let p = self.value.as_str();
        let p = p
            .strip_prefix('(')
            .and_then(|x| x.strip_suffix(')'))
            .filter(|x| !x.contains(['(', ')']))
            .unwrap_or(p);
        let mut out = vec![String::new()];
        let mut chars = p.chars();
        while let Some(c) = chars.next() {
            match c {
                '|' => out.push(String::new()),
                '\\' => match chars.next() {
                    Some(n) if n.is_ascii_punctuation() => out.last_mut()?.push(n),
                    _ => return None,
                },
                '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '^' | '$' => {
                    return None;
                }
                c => out.last_mut()?.push(c),
            }
        }
        Some(out)
    }

    pub fn matches(&self, value: &str) -> bool {
        match &self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Re(re) => re.is_match(value),
            MatchOp::NotRe(re) => !re.is_match(value),
        }
    }

    /// Whether a series that lacks this label matches.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// The matcher `op_str` names (`=`, `!=`, `=~`, `!~`); `None` for another operator.
    pub fn from_op(
        name: impl Into<String>,
        op: &str,
        value: &str,
    ) -> Option<Result<Self, MatcherError>> {
        Some(match op {
            "=" => Ok(Matcher::equal(name, value)),
            "!=" => Ok(Matcher::not_equal(name, value)),
            "=~" | "!~" => Matcher::regex(name, value, op == "!~"),
            _ => return None,
        })
    }

    /// Operator as PromQL writes it.
    pub fn op_str(&self) -> &'static str {
        match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Re(_) => "=~",
            MatchOp::NotRe(_) => "!~",
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op_str(), self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_alternations_are_recognised_and_agree_with_the_regex() {
        let cases: [(&str, Option<&[&str]>); 8] = [
            ("a|b|c", Some(&["a", "b", "c"])),
            ("(web|db)", Some(&["web", "db"])),
            ("10\\.0\\.0\\.1|host", Some(&["10.0.0.1", "host"])),
            ("plain", Some(&["plain"])),
            ("a.*", None),
            ("(?i)a|b", None),
            ("(a)|(b)", None),
            ("a\\d", None),
        ];
        for (p, want) in cases {
            let m = Matcher::regex("l", p, false).unwrap();
            let got = m.literal_alternatives();
            assert_eq!(
                got.as_deref(),
                want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .as_deref(),
                "{p}"
            );
            // Whatever the literals are, the regex matches exactly them.
            for lit in got.unwrap_or_default() {
                assert!(m.matches(&lit), "{p} should match {lit}");
            }
            for other in ["", "x", "a b", "10x0x0x1", "web|db"] {
                let listed = want.is_some_and(|w| w.contains(&other));
                if want.is_some() {
                    assert_eq!(m.matches(other), listed, "{p} vs {other}");
                }
            }
        }
        assert!(
            Matcher::regex("l", "a|b", true)
                .unwrap()
                .literal_alternatives()
                .is_none()
        );
    }

    #[test]
    fn regex_is_anchored_and_dot_matches_newline() {
        let m = Matcher::regex("a", "fo.", false).unwrap();
        assert!(m.matches("foo"));
        assert!(!m.matches("xfoo"));
        assert!(!m.matches("food"));
        assert!(m.matches("fo\n"));
        assert!(Matcher::regex("a", "(", false).is_err());
    }

    #[test]
    fn empty_matching() {
        assert!(Matcher::equal("a", "").matches_empty());
        assert!(!Matcher::not_equal("a", "").matches_empty());
        assert!(Matcher::regex("a", "x|", false).unwrap().matches_empty());
    }
}
