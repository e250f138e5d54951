//! YAML text → typed spec, collecting every unknown key (not just the first) and the first type error
//! with its key path. Lines are filled in later from a `LineIndex`, only when something is reported.

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::violation::Violation;

/// Key paths known per section, for "did you mean" hints (see `schema::known_fields`).
pub type KnownFields = fn(&str) -> Option<&'static [&'static str]>;

/// Deepest flow nesting (`[`/`{`) a case file may have. Real files nest a few levels; the YAML
/// parser's time grows quickly with depth (100,000 `[` took over 20 s), so deeper input is refused
/// by a linear scan before parsing.
pub const MAX_NESTING: usize = 64;

/// One top-level section and a checker of it alone, so that a type error in one section does not
/// hide the errors of the others (`section::<T>` makes one).
pub type SectionCheck = (&'static str, fn(&str, Value, KnownFields) -> Vec<Violation>);

/// The spec (when it deserialized) and what was wrong. Unknown keys do not prevent deserializing,
/// so a file with only unknown keys still gets its semantic checks.
pub fn parse_spec<T: DeserializeOwned>(
    text: &str,
    known: KnownFields,
) -> (Option<T>, Vec<Violation>) {
    parse_spec_sections::<T>(text, known, &[])
}

/// `parse_spec`, and when the whole file fails to deserialize, each of `sections` is checked on its
/// own, so every section's violations are reported at once.
pub fn parse_spec_sections<T: DeserializeOwned>(
    text: &str,
    known: KnownFields,
    sections: &[SectionCheck],
) -> (Option<T>, Vec<Violation>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(v) = too_deep(text) {
        return (None, vec![v]);
    }
    let mut violations = Vec::new();
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path| unknown.push(ignored_path(&path));
    // Straight from the text in one pass (about 40% cheaper than building a `Value` first), unless
    // the file uses `<<` merge keys, which only the `Value` route applies.
    let result = if text.contains("<<") {
        let mut value: Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => return (None, vec![syntax_error(&e)]),
        };
        if let Some(v) = not_a_mapping(&value) {
            return (None, vec![v]);
        }
        if let Err(e) = value.apply_merge() {
            return (
                None,
                vec![Violation::error("", format!("invalid merge key: {e}"))],
            );
        }
        serde_path_to_error::deserialize::<_, T>(serde_ignored::Deserializer::new(
            value,
            &mut record,
        ))
    } else {
        if is_blank(text) {
            return (None, vec![Violation::error("", "file is empty")]);
        }
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, T>(serde_ignored::Deserializer::new(de, &mut record))
    };
    let spec = match result {
        Ok(spec) => Some(spec),
        Err(e) => {
            // Streaming, a type error can come before a syntax error further down; a malformed
            // document is reported as such (errors are rare, so parsing again costs nothing).
            match serde_yaml::from_str::<Value>(text) {
                Err(syntax) => violations.push(syntax_error(&syntax)),
                Ok(value) => {
                    if let Some(v) = not_a_mapping(&value) {
                        return (None, vec![v]);
                    }
                    let key = error_path(e.path());
                    violations.push(type_error(&key, e.inner()));
                    let mut value = value;
                    let _ = value.apply_merge();
                    violations.extend(other_sections(&value, &key, known, sections));
                }
            }
            None
        }
    };
    for path in unknown {
        violations.push(unknown_key(&path, known));
    }
    let mut seen = std::collections::HashSet::new();
    violations.retain(|v| seen.insert((v.key.clone(), v.reason.clone())));
    (spec, violations)
}

/// Deserializes one section's value as `S` (unknown keys and the first type error, under `name`).
pub fn section<S: DeserializeOwned>(
    name: &str,
    value: Value,
    known: KnownFields,
) -> Vec<Violation> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path| unknown.push(ignored_path(&path));
    let result = serde_path_to_error::deserialize::<_, S>(serde_ignored::Deserializer::new(
        value,
        &mut record,
    ));
    let join = |inner: String| {
        if inner.is_empty() {
            name.to_owned()
        } else {
            format!("{name}.{inner}")
        }
    };
    let mut out = Vec::new();
    if let Err(e) = result {
        out.push(type_error(&join(error_path(e.path())), e.inner()));
    }
    for path in unknown {
        out.push(unknown_key(&join(path), known));
    }
    out
}

/// The sections other than the one holding `failed_key`, each checked on its own.
fn other_sections(
    value: &Value,
    failed_key: &str,
    known: KnownFields,
    sections: &[SectionCheck],
) -> Vec<Violation> {
    let failed_section = failed_key.split('.').next().unwrap_or_default();
    let mut out = Vec::new();
    for (name, check) in sections {
        if *name == failed_section {
            continue;
        }
        if let Some(v) = value.get(*name) {
            out.extend(check(name, v.clone(), known));
        }
    }
    out
}

/// A serde error at `key` in the user's terms: out-of-range numbers say so instead of naming the
/// parser's internal integer type.
fn type_error(key: &str, e: &serde_yaml::Error) -> Violation {
    let message = strip_location(e);
    // serde_yaml prefixes its own path; the violation carries the key already.
    let reason = message
        .strip_prefix(&format!("{key}: "))
        .map_or(message.clone(), str::to_owned);
    Violation::error(key, out_of_range(&reason).unwrap_or(reason))
}

/// `invalid type: integer `N` as u128, expected …` → "integer N is out of range …".
fn out_of_range(reason: &str) -> Option<String> {
    static WIDE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        // Up to 38 digits the parser reads a 128-bit integer; beyond, a float `N.0`.
        regex::Regex::new(
            r"integer `(-?\d+)` as [ui]128|floating point `(-?\d{19,})\.0`, expected [ui]\d+",
        )
        .expect("static regex")
    });
    let caps = WIDE.captures(reason)?;
    let n = caps.get(1).or_else(|| caps.get(2))?.as_str().to_owned();
    Some(format!(
        "integer {n} is out of range (integers here are between {} and {})",
        i64::MIN,
        u64::MAX
    ))
}

/// A document that is not a mapping of sections (a list, a scalar, `null`).
fn not_a_mapping(value: &Value) -> Option<Violation> {
    let found = match value {
        Value::Mapping(_) => return None,
        Value::Tagged(t) if matches!(t.value, Value::Mapping(_)) => return None,
        Value::Null => "an empty document (null)",
        Value::Sequence(_) => "a list",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Tagged(_) => "a tagged value",
    };
    let mut v = Violation::error(
        "",
        format!("the file must be a mapping of sections (`key: value` lines); found {found}"),
    );
    v.line = Some(1);
    Some(v)
}

/// Refuses flow nesting deeper than `MAX_NESTING` in linear time, before the YAML parser sees it.
/// A bracket counts when it opens a flow node (after whitespace, `:`, `,`, `-` or another bracket),
/// never inside quotes (`''` and `\"` escapes honoured), comments or block scalars (`|`, `>`).
fn too_deep(text: &str) -> Option<Violation> {
    let opens_node =
        |prev: char| prev.is_whitespace() || matches!(prev, ':' | ',' | '-' | '[' | '{');
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut block_indent: Option<usize> = None;
    for (index, line) in text.split('\n').enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block_indent {
            if line.trim().is_empty() || indent > parent {
                continue;
            }
            block_indent = None;
        }
        let mut chars = line.chars().peekable();
        let (mut prev, mut escaped) = (' ', false);
        while let Some(c) = chars.next() {
            match quote {
                Some('"') => {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        quote = None;
                    }
                }
                Some(_) => {
                    // In single quotes a quote is escaped by doubling it.
                    if c == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            quote = None;
                        }
                    }
                }
                None => match c {
                    '#' if prev.is_whitespace() => break,
                    '\'' | '"' if opens_node(prev) => quote = Some(c),
                    '[' | '{' if depth > 0 || opens_node(prev) => {
                        depth += 1;
                        if depth > MAX_NESTING {
                            let mut v = Violation::error(
                                "",
                                format!("nesting deeper than {MAX_NESTING} levels (`[`/`{{`); refused before parsing"),
                            );
                            v.line = Some(index + 1);
                            return Some(v);
                        }
                    }
                    ']' | '}' if depth > 0 => depth -= 1,
                    _ => {}
                },
            }
            prev = c;
        }
        // `key: |`, `- >-`: the lines indented deeper than this one are the scalar's text.
        if quote.is_none() && depth == 0 {
            let code = line.split(" #").next().unwrap_or(line).trim_end();
            let indicator =
                code.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '+');
            if (indicator.ends_with(" |")
                || indicator.ends_with(" >")
                || indicator == "|"
                || indicator == ">")
                && code.len() - indicator.len() <= 2
            {
                block_indent = Some(indent);
            }
        }
    }
    None
}

fn syntax_error(e: &serde_yaml::Error) -> Violation {
    let message = strip_location(e);
    // A number wider than 64 bits fails even as a generic YAML value: say so, under its key.
    if let (Some(reason), Some((key, _))) = (
        out_of_range(&message),
        message.split_once(": ").filter(|(k, _)| !k.contains(' ')),
    ) {
        let mut v = Violation::error(key, reason);
        v.line = e.location().map(|l| l.line());
        return v;
    }
    let mut v = Violation::error("", format!("invalid YAML: {message}"));
    v.line = e.location().map(|l| l.line());
    v
}

fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

fn unknown_key(path: &str, known: KnownFields) -> Violation {
    let (parent, key) = match path.rfind('.') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    };
    let mut reason = "unknown key".to_owned();
    if let Some(fields) = known(parent) {
        if let Some(best) = suggest(key, fields) {
            reason.push_str(&format!("; did you mean `{best}`?"));
        }
        let section = if parent.is_empty() {
            "the top level"
        } else {
            parent
        };
        reason.push_str(&format!(" (known in {section}: {})", fields.join(", ")));
    }
    Violation::error(path, reason)
}

/// The closest known name, if any is close enough to be a plausible typo.
pub fn suggest<'a>(typo: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(typo, c), *c))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn ignored_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    fn walk(path: &Path, out: &mut Vec<String>) {
        match path {
            Path::Root => {}
            Path::Seq { parent, index } => {
                walk(parent, out);
                out.push(index.to_string());
            }
            Path::Map { parent, key } => {
                walk(parent, out);
                out.push(key.clone());
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut parts = Vec::new();
    walk(path, &mut parts);
    parts.join(".")
}

fn error_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|seg| match seg {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// serde_yaml appends " at line N column M"; the violation carries the line itself.
fn strip_location(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}
