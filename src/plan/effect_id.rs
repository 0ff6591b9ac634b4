//! The effect ID rule: how an effect names its message (`json:/pointer`, `regex:(...)`,
//! `header:Name` or `body`). The same syntax serves the optional idempotency key. A plan's rules
//! are parsed once, when the plan is loaded (see [`super::Loaded`]); the sinks receive the parsed
//! rule and only apply it.

use regex::Regex;

/// A compiled rule that pulls an ID (or key) out of one effect.
#[derive(Debug, Clone)]
pub enum Extractor {
    /// A JSON pointer into the body, such as `/order_id`.
    JsonPointer(String),
    /// A regex over the body (or line); the first capture group, or the whole match.
    Regex(Regex),
    /// An HTTP header (case-insensitive).
    Header(String),
    /// The whole body, trimmed.
    Body,
    /// The Kafka record's key (`kafka-topic` sink).
    Key,
}

impl Extractor {
    /// Parses the plan syntax; the error says what to write instead.
    pub fn parse(spec: &str) -> Result<Extractor, String> {
        let fix = "write `json:/field`, `regex:id=(\\S+)`, `header:X-Message-Id` or `body`";
        if spec == "body" {
            return Ok(Extractor::Body);
        }
        if spec == "key" {
            return Ok(Extractor::Key);
        }
        if let Some(pointer) = spec.strip_prefix("json:") {
            if !pointer.starts_with('/') {
                return Err(format!(
                    "a JSON pointer starts with `/` (got `{pointer}`): e.g. `json:/order_id`"
                ));
            }
            return Ok(Extractor::JsonPointer(pointer.to_owned()));
        }
        if let Some(pattern) = spec.strip_prefix("regex:") {
            return Regex::new(pattern)
                .map(Extractor::Regex)
                .map_err(|e| format!("bad regex `{pattern}`: {e}"));
        }
        if let Some(name) = spec.strip_prefix("header:") {
            if name.is_empty() {
                return Err(format!("`header:` needs a header name: {fix}"));
            }
            return Ok(Extractor::Header(name.to_owned()));
        }
        Err(format!("cannot read `{spec}` as an ID rule: {fix}"))
    }

    /// The ID in an effect made of `headers` and `body`, if the rule finds one.
    pub fn extract(&self, headers: &[(String, String)], body: &str) -> Option<String> {
        self.extract_record(headers, None, body)
    }

    /// The ID in a record made of `headers`, a `key` (Kafka records) and `body`.
    pub fn extract_record(
        &self,
        headers: &[(String, String)],
        key: Option<&str>,
        body: &str,
    ) -> Option<String> {
        let found = match self {
            Extractor::Body => Some(body.trim().to_owned()),
            Extractor::Key => key.map(|k| k.trim().to_owned()),
            Extractor::JsonPointer(p) => {
                let value: serde_json::Value = serde_json::from_str(body).ok()?;
                match value.pointer(p)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }
            }
            Extractor::Regex(re) => {
                let caps = re.captures(body)?;
                caps.get(1)
                    .or_else(|| caps.get(0))
                    .map(|m| m.as_str().to_owned())
            }
            Extractor::Header(name) => headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned()),
        };
        found.filter(|id| !id.is_empty())
    }

    /// True when the rule reads headers (so it cannot apply to file or stdout lines).
    pub fn needs_headers(&self) -> bool {
        matches!(self, Extractor::Header(_))
    }

    /// True when the rule reads a Kafka record's key (the `kafka-topic` sink only).
    pub fn needs_key(&self) -> bool {
        matches!(self, Extractor::Key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &str, headers: &[(&str, &str)], body: &str, expect: Option<&str>) {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let got = Extractor::parse(spec).unwrap().extract(&headers, body);
        assert_eq!(got.as_deref(), expect, "{spec} on {body:?}");
    }

    #[test]
    fn each_rule_finds_the_id() {
        check("json:/order_id", &[], r#"{"order_id":"r-1"}"#, Some("r-1"));
        check("json:/a/b", &[], r#"{"a":{"b":7}}"#, Some("7"));
        check("regex:id=(\\S+)", &[], "sent id=r-2 ok", Some("r-2"));
        check(
            "header:Idempotency-Key",
            &[("idempotency-key", "k")],
            "",
            Some("k"),
        );
        check("body", &[], " r-3\n", Some("r-3"));
        let key = Extractor::parse("key").unwrap();
        assert_eq!(
            key.extract_record(&[], Some("r-4"), "{}").as_deref(),
            Some("r-4")
        );
        assert_eq!(
            key.extract(&[], "r-4"),
            None,
            "an effect without a key names none"
        );
    }

    #[test]
    fn unreadable_effects_give_no_id() {
        check("json:/order_id", &[], "not json", None);
        check("json:/order_id", &[], r#"{"other":1}"#, None);
        check("regex:id=(\\S+)", &[], "nothing here", None);
        check("body", &[], "  ", None);
    }

    #[test]
    fn bad_rules_are_rejected_with_a_fix() {
        assert!(Extractor::parse("json:order_id")
            .unwrap_err()
            .contains("`/`"));
        assert!(Extractor::parse("regex:(").is_err());
        assert!(Extractor::parse("xml:/a")
            .unwrap_err()
            .contains("json:/field"));
    }
}
