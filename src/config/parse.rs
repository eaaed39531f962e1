//! Reading `proxy.toml` into the raw structs (`raw.rs`), collecting every
//! problem with the keys themselves (syntax, unknown keys, wrong types) and
//! translating each into a `Problem` that names the dotted key and its line.

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::Problem;
use super::raw::RawConfig;

/// The key whose type errors must not echo the value.
const SECRET_KEY: &str = "credentials.client_secret";

/// What parsing found: the raw structs (every key that could not be read
/// left at its default), the problems with the keys themselves (unknown,
/// wrong type), the keys so dropped, and where each key is written.
pub(super) struct Parsed<'t> {
    pub(super) raw: RawConfig,
    pub(super) problems: Vec<Problem>,
    pub(super) dropped: Vec<String>,
    text: &'t str,
    doc: Spanned<DeTable<'t>>,
}

/// Parses `text` into the raw structs. A syntax error stops here (there is
/// no document to check). A key serde refuses (unknown, or of the wrong
/// type) is a problem; the key is then taken out and the document parsed
/// again, so that every such key is named and the rest is still validated.
pub(super) fn parse(text: &str) -> Result<Parsed<'_>, Vec<Problem>> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors
            .iter()
            .map(|e| located(text, doc.get_ref(), e, "invalid TOML: "))
            .collect());
    }
    let mut work = doc.clone();
    let mut problems = Vec::new();
    let mut dropped = Vec::new();
    loop {
        let err = match RawConfig::deserialize(toml::Deserializer::from(work.clone())) {
            Ok(raw) => {
                return Ok(Parsed {
                    raw,
                    problems,
                    dropped,
                    text,
                    doc,
                })
            }
            Err(err) => err,
        };
        let problem = located(text, doc.get_ref(), &err, "");
        // `deny_paths[1]` has the wrong type: the whole array goes.
        let key = problem.key.split('[').next().unwrap_or_default().to_owned();
        problems.push(problem);
        if key.is_empty() || !remove(work.get_mut(), &key) {
            return Err(problems);
        }
        dropped.push(key);
    }
}

impl Parsed<'_> {
    /// Whether a problem found later is about a key already reported (and
    /// dropped): its default would only add a second, misleading line.
    pub(super) fn about_dropped(&self, key: &str) -> bool {
        self.dropped.iter().any(|d| {
            key == d
                || key
                    .strip_prefix(d.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
                || d.strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// Line and column where the dotted `key` is written, if it is.
    pub(super) fn location_of(&self, key: &str) -> Option<(usize, usize)> {
        let mut table = self.doc.get_ref();
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            let (name, value) = table.get_key_value(part)?;
            if parts.peek().is_none() {
                return Some(line_col(self.text, name.span().start));
            }
            table = value.get_ref().as_table()?;
        }
        None
    }
}

/// Takes the dotted `key` out of `table`; false if it is not there.
fn remove(table: &mut DeTable<'_>, key: &str) -> bool {
    match key.split_once('.') {
        None => table.remove(key).is_some(),
        Some((head, rest)) => match table.get_mut(head).map(Spanned::get_mut) {
            Some(DeValue::Table(inner)) => remove(inner, rest),
            _ => false,
        },
    }
}

/// Names the key an error's span falls in, and rewrites serde's wording.
fn located(text: &str, doc: &DeTable<'_>, err: &toml::de::Error, prefix: &str) -> Problem {
    let span = err.span();
    let key = span
        .as_ref()
        .and_then(|s| key_at(doc, s.start))
        .unwrap_or_default();
    let message = if key == SECRET_KEY || key.starts_with("credentials.client_secret[") {
        "must be a string".to_owned()
    } else {
        format!("{prefix}{}", reword(err.message()))
    };
    Problem::new(&key, message).at(span.map(|s| line_col(text, s.start)))
}

/// serde's names for types, and the names a TOML file uses for them.
const TOML_WORDS: [(&str, &str); 5] = [
    ("expected i64", "expected an integer"),
    ("expected a sequence", "expected an array"),
    ("invalid type: map", "invalid type: table"),
    ("invalid type: sequence", "invalid type: array"),
    ("floating point", "float"),
];

/// serde says "unknown field `adr`, expected one of `addr`, `tls_cert`";
/// operators think in keys.
fn reword(message: &str) -> String {
    let message = message.trim_end();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return TOML_WORDS
            .iter()
            .fold(message.to_owned(), |m, (serde, toml)| {
                m.replace(serde, toml)
            });
    };
    let expected = rest
        .split_once("`, expected ")
        .map(|(_, expected)| expected.replace('`', ""));
    match expected {
        Some(expected) => format!("unknown key (expected {expected})"),
        None => "unknown key".to_owned(),
    }
}

/// The dotted path of the innermost key, or non-table value, whose span holds
/// `pos`. A table's own span is not trusted: it may cover only its header, or,
/// after a syntax error, whatever the parser's recovery made of it.
fn key_at(table: &DeTable<'_>, pos: usize) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let name = key.get_ref();
        if let Some(inner) = inner_key_at(value.get_ref(), pos) {
            return Some(format!("{name}{inner}"));
        }
        let in_value = !value.get_ref().is_table() && value.span().contains(&pos);
        (key.span().contains(&pos) || in_value).then(|| name.to_string())
    })
}

/// The rest of the path (`.key` or `[i]…`) below a value, if `pos` is inside it.
fn inner_key_at(value: &DeValue<'_>, pos: usize) -> Option<String> {
    match value {
        DeValue::Table(table) => key_at(table, pos).map(|k| format!(".{k}")),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let inner = inner_key_at(item.get_ref(), pos);
            match inner {
                Some(inner) => Some(format!("[{i}]{inner}")),
                None => item.span().contains(&pos).then(|| format!("[{i}]")),
            }
        }),
        _ => None,
    }
}

/// 1-based line and column (in characters) of byte offset `pos`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = floor_char_boundary(text, pos.min(text.len()));
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut pos: usize) -> usize {
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewords_unknown_fields() {
        let cases = [
            (
                "unknown field `adr`, expected one of `addr`, `allow`",
                "unknown key (expected one of addr, allow)",
            ),
            (
                "unknown field `port`, expected `addr`",
                "unknown key (expected addr)",
            ),
            ("unknown field `x`, there are no fields", "unknown key"),
            (
                "invalid type: integer `5`, expected a string\n",
                "invalid type: integer `5`, expected a string",
            ),
            (
                "invalid type: string \"x\", expected i64",
                "invalid type: string \"x\", expected an integer",
            ),
            (
                "invalid type: string \"x\", expected a sequence",
                "invalid type: string \"x\", expected an array",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(reword(input), want, "{input}");
        }
    }

    #[test]
    fn line_col_counts_characters() {
        let text = "a = 1\nbé = 2\n";
        let cases = [
            (0, (1, 1)),
            (4, (1, 5)),
            (6, (2, 1)),
            (9, (2, 3)),
            (99, (3, 1)),
        ];
        for (pos, want) in cases {
            assert_eq!(line_col(text, pos), want, "{pos}");
        }
    }

    #[test]
    fn errors_name_the_dotted_key() {
        let cases = [
            ("[listen]\nadr = 1", "listen.adr"),
            ("listen.adr = 1", "listen.adr"),
            (
                "[upstream]\ndeny_paths = [\"/a\", 5]",
                "upstream.deny_paths[1]",
            ),
            ("[rate_limit]\nburst = \"x\"", "rate_limit.burst"),
            ("colour = 1", "colour"),
        ];
        for (text, want) in cases {
            let problems = parse(text).map(|p| p.problems).unwrap_or_else(|p| p);
            assert_eq!(problems[0].key, want, "{text}: {problems:?}");
            assert!(problems[0].location.is_some(), "{text}");
        }
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_echoed() {
        let problems = parse("[credentials]\nclient_secret = 987654321")
            .map(|p| p.problems)
            .unwrap_or_else(|p| p);
        assert_eq!(problems[0].key, SECRET_KEY);
        assert!(!format!("{problems:?}").contains("987654321"));
    }
}
