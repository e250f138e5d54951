//! The `latency` family (seed 003): forward-only prefill/decode latency over a `bsz;seq` grid, for
//! a model variant (full or N layers) under an engine configuration composed from layers
//! (`configs/latency/{base,deploy/…,backend/…,optional/…}.yaml`, later layers override).
//!
//! ```yaml
//! engine: vllm                 # vllm (runs here) | sglang (bench_one_batch; needs GPUs)
//! model: tiny                  # models/tiny, or a model directory
//! model_config: full           # full, or `<N>l`: the same model with N layers (dummy weights)
//! layers: [base.yaml, deploy/tp1.yaml, backend/cpu.yaml, optional/default.yaml]
//! grid: "{1,4};{32,64}"        # seed 003's bsz_seq.csv format: every bsz × every seq; or the path
//!                              # of such a file (one grid per line, `#` comments), e.g.
//!                              # configs/latency/bsz_seq.csv
//! output_len: 8                # decode steps measured per point
//! num_iters: 3
//! gpu: H200                    # for MFU (default $GPU_TYPE); no peak known → MFU left empty
//! profile: none                # prefill | decode | both: torch.profiler around that phase's
//!                              # forwards only; per-op tables per point (JSON and SQLite)
//! cross_check: true            # also run `vllm bench latency` on the first grid point
//! slurm: {partition: p, account: a, job_time: "00:20:00"}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::case::common::{parse_slurm_time, ScriptSlurm};
use crate::case::load::parse_spec;
use crate::case::violation::Violation;
use crate::family::Loaded;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LatencySpec {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "vllm")]
    pub engine: String,
    #[serde(default = "tiny")]
    pub model: String,
    #[serde(default = "full")]
    pub model_config: String,
    pub layers: Vec<String>,
    pub grid: String,
    #[serde(default = "eight")]
    pub output_len: u64,
    #[serde(default = "three")]
    pub num_iters: u64,
    #[serde(default)]
    pub gpu: Option<String>,
    #[serde(default)]
    pub profile: Profile,
    /// Run `vllm bench latency` on the first grid point and check the forward-only figures
    /// against its end-to-end latency.
    #[serde(default)]
    pub cross_check: bool,
    #[serde(default)]
    pub supported_gpus: Option<Vec<String>>,
    pub slurm: ScriptSlurm,
}

fn vllm() -> String {
    "vllm".into()
}
fn tiny() -> String {
    "tiny".into()
}
fn full() -> String {
    "full".into()
}
fn eight() -> u64 {
    8
}
fn three() -> u64 {
    3
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    #[default]
    None,
    Prefill,
    Decode,
    Both,
}

/// The grid's points in order: an inline `{…};{…}`, or a file of such lines (relative to `root`),
/// their points in file order without repeats.
pub fn grid_points(grid: &str, root: &Path) -> Result<Vec<(u64, u64)>, String> {
    let product = |(b, s): (Vec<u64>, Vec<u64>)| -> Vec<(u64, u64)> {
        b.iter()
            .flat_map(|b| s.iter().map(move |s| (*b, *s)))
            .collect()
    };
    if grid.trim_start().starts_with('{') {
        return parse_grid(grid).map(product);
    }
    let path = root.join(grid);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let grid = parse_grid(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        for p in product(grid) {
            if !points.contains(&p) {
                points.push(p);
            }
        }
    }
    if points.is_empty() {
        return Err(format!("{}: no `{{bsz,…}};{{seq,…}}` line", path.display()));
    }
    Ok(points)
}

/// `{1,8,32};{128,1024}` → ([1, 8, 32], [128, 1024]).
pub fn parse_grid(text: &str) -> Result<(Vec<u64>, Vec<u64>), String> {
    let (b, s) = text
        .trim()
        .split_once(';')
        .ok_or_else(|| format!("`{text}`: expected {{bsz,…}};{{seq,…}}"))?;
    let list = |part: &str, what: &str| -> Result<Vec<u64>, String> {
        let inner = part
            .trim()
            .strip_prefix('{')
            .and_then(|p| p.strip_suffix('}'))
            .ok_or_else(|| format!("`{part}`: the {what} list must be in braces"))?;
        inner
            .split(',')
            .map(|x| {
                x.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| format!("`{x}` in the {what} list is not a positive integer"))
            })
            .collect()
    };
    Ok((list(b, "batch size")?, list(s, "sequence length")?))
}

/// `full` → None; `2l` → Some(2).
pub fn layer_count(model_config: &str) -> Result<Option<u64>, String> {
    if model_config == "full" {
        return Ok(None);
    }
    model_config
        .strip_suffix('l')
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| format!("`{model_config}`: expected `full` or `<N>l` (e.g. `2l`)"))
}

/// The layered engine configuration: merged arguments, and one line per override.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Composed {
    pub args: BTreeMap<String, serde_yaml::Value>,
    pub overrides: Vec<String>,
}

pub fn layers_root(project_root: &Path) -> PathBuf {
    project_root.join("configs/latency")
}

/// Merges the layer files in order; a key set again with a different value is an override, reported.
pub fn compose(root: &Path, layers: &[String]) -> Result<Composed, String> {
    let mut out = Composed::default();
    let mut from: BTreeMap<String, String> = BTreeMap::new();
    for layer in layers {
        let path = root.join(layer);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("layers: {}: {e}", path.display()))?;
        let map: BTreeMap<String, serde_yaml::Value> = match serde_yaml::from_str(&text) {
            Ok(serde_yaml::Value::Null) => BTreeMap::new(),
            Ok(v) => serde_yaml::from_value(v).map_err(|e| {
                format!(
                    "layers: {}: not a mapping of arguments: {e}",
                    path.display()
                )
            })?,
            Err(e) => return Err(format!("layers: {}: {e}", path.display())),
        };
        for (key, value) in map {
            if let Some(old) = out.args.get(&key) {
                if *old != value {
                    out.overrides.push(format!(
                        "{key}: {} ({}) -> {} ({layer})",
                        serde_json::to_string(old).unwrap_or_default(),
                        from.get(&key).map(String::as_str).unwrap_or("?"),
                        serde_json::to_string(&value).unwrap_or_default()
                    ));
                }
            }
            from.insert(key.clone(), layer.clone());
            out.args.insert(key, value);
        }
    }
    Ok(out)
}

fn known_fields(path: &str) -> Option<&'static [&'static str]> {
    use serde_aux::serde_introspection::serde_introspect as fields;
    Some(match path {
        "" => fields::<LatencySpec>(),
        "slurm" => fields::<ScriptSlurm>(),
        _ => return None,
    })
}

pub fn load(text: &str, _category: &str, _stem: &str) -> Loaded {
    let (spec, mut violations) = parse_spec::<LatencySpec>(text, known_fields);
    let Some(spec) = spec else {
        return (None, violations);
    };
    if let Err(e) = grid_points(&spec.grid, &crate::env::project_dir()) {
        violations.push(Violation::error("grid", e).with_value(&spec.grid));
    }
    if spec.cross_check && spec.engine != "vllm" {
        violations.push(Violation::error(
            "cross_check",
            "runs `vllm bench latency`: for engine vllm only",
        ));
    }
    if let Err(e) = layer_count(&spec.model_config) {
        violations.push(Violation::error("model_config", e).with_value(&spec.model_config));
    }
    if !["vllm", "sglang"].contains(&spec.engine.as_str()) {
        violations
            .push(Violation::error("engine", "expected vllm or sglang").with_value(&spec.engine));
    }
    if spec.layers.is_empty() {
        violations.push(Violation::error("layers", "needs at least the base layer"));
    }
    if spec.output_len < 2 {
        violations.push(Violation::error(
            "output_len",
            "needs at least 2 (one prefill step, then decode steps)",
        ));
    }
    if spec.num_iters == 0 {
        violations.push(Violation::error("num_iters", "must be at least 1"));
    }
    spec.slurm.refuse_nodes("latency", &mut violations);
    if let Err(reason) = parse_slurm_time(&spec.slurm.job_time) {
        violations
            .push(Violation::error("slurm.job_time", reason).with_value(&spec.slurm.job_time));
    }
    // Layer files are checked when the case runs (they live outside test_configs/ and may be
    // overridden per cluster); a missing one fails the trial naming it.
    (Some(std::sync::Arc::new(spec)), violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_parse_in_the_seeds_format_and_bad_ones_say_why() {
        assert_eq!(
            parse_grid("{1,8,32};{128,1024}").unwrap(),
            (vec![1, 8, 32], vec![128, 1024])
        );
        assert_eq!(parse_grid(" {4};{64} ").unwrap(), (vec![4], vec![64]));
        assert!(parse_grid("1,8;128").unwrap_err().contains("braces"));
        assert!(parse_grid("{1,x};{2}")
            .unwrap_err()
            .contains("`x` in the batch size list"));
        assert!(parse_grid("{1}").unwrap_err().contains("expected"));
        assert_eq!(layer_count("full").unwrap(), None);
        assert_eq!(layer_count("2l").unwrap(), Some(2));
        assert!(layer_count("two").is_err());
    }

    #[test]
    fn layers_compose_in_order_and_overrides_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.yaml"),
            "dtype: float32\nmax_model_len: 512\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("optional")).unwrap();
        std::fs::write(
            dir.path().join("optional/x.yaml"),
            "max_model_len: 256\ndtype: float32\nmax_num_seqs: 8\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("optional/empty.yaml"), "{}\n").unwrap();
        let c = compose(
            dir.path(),
            &[
                "base.yaml".into(),
                "optional/x.yaml".into(),
                "optional/empty.yaml".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.args["max_model_len"], serde_yaml::Value::from(256));
        assert_eq!(c.args["max_num_seqs"], serde_yaml::Value::from(8));
        assert_eq!(
            c.overrides,
            ["max_model_len: 512 (base.yaml) -> 256 (optional/x.yaml)"]
        );
        let e = compose(dir.path(), &["nope.yaml".into()]).unwrap_err();
        assert!(e.contains("nope.yaml"), "{e}");
    }
}
