//! Values and sections shared by several families: SLURM time limits, `NAME=VALUE` environment
//! strings, custom metric patterns, and the `slurm:` section of servetest's own families.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::violation::Violation;

/// Seconds in a SLURM `--time` value: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`;
/// `None` for UNLIMITED/INFINITE. Errors say what form was expected.
pub fn parse_slurm_time(text: &str) -> Result<Option<u64>, String> {
    static FORM: LazyLock<Regex> = LazyLock::new(|| {
        // ASCII digits only: `\d` would also match e.g. Thai digits, which do not parse as numbers.
        Regex::new(r"^(?:(?P<d>[0-9]+)-(?P<dh>[0-9]+)(?::(?P<dm>[0-9]+)(?::(?P<ds>[0-9]+))?)?|(?P<a>[0-9]+)(?::(?P<b>[0-9]+)(?::(?P<c>[0-9]+))?)?)$")
            .expect("slurm time regex")
    });
    let t = text.trim();
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return Ok(None);
    }
    let bad = || {
        format!(
            "`{text}` is not a SLURM time (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED)"
        )
    };
    let caps = FORM.captures(t).ok_or_else(bad)?;
    let n = |name: &str| {
        caps.name(name)
            .map(|m| m.as_str().parse::<u64>().unwrap_or(u64::MAX))
    };
    let sixty = |v: Option<u64>| match v {
        Some(x) if x >= 60 => Err(format!("`{text}`: minutes and seconds must be below 60")),
        other => Ok(other.unwrap_or(0)),
    };
    let too_long = || format!("`{text}` is too long a time limit");
    // Checked: a 20-digit count must be an error, not an overflow.
    let total = |parts: &[(u64, u64)]| -> Result<u64, String> {
        parts.iter().try_fold(0u64, |acc, (v, unit)| {
            v.checked_mul(*unit)
                .and_then(|x| acc.checked_add(x))
                .ok_or_else(too_long)
        })
    };
    let secs = if let Some(days) = n("d") {
        let hours = n("dh").unwrap_or(0);
        if hours >= 24 {
            return Err(format!(
                "`{text}`: hours must be below 24 after a day count"
            ));
        }
        total(&[
            (days, 86_400),
            (hours, 3600),
            (sixty(n("dm"))?, 60),
            (sixty(n("ds"))?, 1),
        ])?
    } else {
        match (n("a"), n("b"), n("c")) {
            (Some(m), None, None) => total(&[(m, 60)])?,
            (Some(m), Some(s), None) => total(&[(m, 60), (sixty(Some(s))?, 1)])?,
            (Some(h), Some(m), Some(s)) => {
                total(&[(h, 3600), (sixty(Some(m))?, 60), (sixty(Some(s))?, 1)])?
            }
            _ => return Err(bad()),
        }
    };
    if secs == 0 {
        return Err(format!("`{text}` is a zero time limit"));
    }
    Ok(Some(secs))
}

/// A shell/environment variable name.
pub static NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("env name regex"));

/// Parses `"K=V K=V"` (shell-quoted values allowed) into pairs.
pub fn parse_env_assignments(text: &str) -> Result<Vec<(String, String)>, String> {
    let words = shell_words::split(text).map_err(|e| format!("cannot split `{text}`: {e}"))?;
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if NAME_RE.is_match(k) => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!("`{w}` is not a NAME=VALUE assignment")),
        })
        .collect()
}

/// The pattern rules shared by every family that lets a case bring its own metric pattern.
pub fn check_metrics_pattern(
    base: &str,
    pattern: Option<&str>,
    names: Option<&[String]>,
) -> Option<Violation> {
    let pattern = pattern?;
    let key = format!("{base}.extractor_pattern");
    let re = match crate::check::logparse::compile_custom(pattern) {
        Err(e) => {
            return Some(
                Violation::error(
                    key,
                    format!("does not compile: {}", one_line(&e.to_string())),
                )
                .with_value(pattern),
            )
        }
        Ok(re) => re,
    };
    let Some(names) = names else {
        return Some(Violation::error(
            format!("{base}.metric_names"),
            "is required with a custom extractor_pattern (one name per capture group)",
        ));
    };
    let (groups, n) = (re.captures_len() - 1, names.len());
    (groups != n && groups != n + 1).then(|| {
        Violation::error(
            key,
            format!(
                "has {groups} capture groups but metric_names has {n} names \
                 (expected {n}, or {} with a trailing concurrency capture)",
                n + 1
            ),
        )
        .with_value(pattern)
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Clone, Deserialize, Serialize)]
/// The `slurm:` section of servetest's own families (script, latency, aggregated).
pub struct ScriptSlurm {
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    pub job_time: String,
    #[serde(default)]
    pub extra_args: Option<String>,
    /// Nodes the job allocates (`--nodes`, default 1); steps pick theirs with `node`/`nodes`.
    /// Script cases only: the other families that share this section size their own jobs.
    #[serde(default)]
    pub nodes: Option<u64>,
}

impl ScriptSlurm {
    pub fn nodes(&self) -> u64 {
        self.nodes.unwrap_or(1)
    }

    /// For families whose node count comes from the case itself (`family`), a `nodes` key is
    /// refused rather than ignored.
    pub fn refuse_nodes(&self, family: &str, violations: &mut Vec<Violation>) {
        if self.nodes.is_some() {
            violations.push(Violation::error(
                "slurm.nodes",
                format!("the {family} family sizes its job itself; `nodes` is for script cases"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_time_forms() {
        // Found by tests/props.rs: non-ASCII digits and huge counts once overflowed (a panic).
        assert!(parse_slurm_time("๐")
            .unwrap_err()
            .contains("is not a SLURM time"));
        assert!(parse_slurm_time("99999999999999999999")
            .unwrap_err()
            .contains("too long"));
        assert!(parse_slurm_time("999999999999999-0")
            .unwrap_err()
            .contains("too long"));
        assert_eq!(parse_slurm_time("30"), Ok(Some(1800)));
        assert_eq!(parse_slurm_time("30:15"), Ok(Some(1815)));
        assert_eq!(parse_slurm_time("02:00:00"), Ok(Some(7200)));
        assert_eq!(parse_slurm_time("1-02"), Ok(Some(93_600)));
        assert_eq!(parse_slurm_time("1-02:30"), Ok(Some(95_400)));
        assert_eq!(parse_slurm_time("1-02:30:05"), Ok(Some(95_405)));
        assert_eq!(parse_slurm_time("UNLIMITED"), Ok(None));
        for bad in ["", "2h", "1:2:3:4", "01:60:00", "0", "1-25", "-1"] {
            assert!(parse_slurm_time(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn env_assignments() {
        assert_eq!(
            parse_env_assignments("A=1 B_2='x y' C=").unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("B_2".into(), "x y".into()),
                ("C".into(), "".into())
            ]
        );
        assert!(parse_env_assignments("A=1 oops").is_err());
        assert!(parse_env_assignments("1A=2").is_err());
        assert!(parse_env_assignments("A='unclosed").is_err());
    }
}
