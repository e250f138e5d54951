//! Seed 000's inference checks, as upstream's `api_client.py` makes them: text cases
//! (`{question, keywords}`) with its system prompt, single-image cases (`{picture_url, keywords}`)
//! sent as data URLs, `max_completion_tokens` 256, the model id the server lists; a case is correct
//! when one keyword is in the answer (case-insensitive). One row per model in
//! `inference_results.csv` (`Model, Correct Ratio, Stage, Reason, Model Path`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Upstream's system message for text cases (facts of its request, so answers are comparable).
const SYSTEM: &str =
    "You must answer as concisely as possible. Any extra information is unnecessary.";
/// The question asked of every image.
const IMAGE_QUESTION: &str = "What's in this image?";
const MAX_COMPLETION_TOKENS: u64 = 256;
/// What a crashed engine answers; upstream fails the model on it.
const ENGINE_DEAD: &str = "EngineCore encountered an issue";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextCase {
    pub question: String,
    #[serde(default)]
    pub keywords: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageCase {
    pub picture_url: String,
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// Where a model's inference ended (upstream's stages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Stage {
    Init,
    StartingServer,
    Inferencing,
    NormalEnd,
}

/// One row of `inference_results.csv`, upstream's columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultRow {
    #[serde(rename = "Model")]
    pub model: String,
    #[serde(rename = "Correct Ratio")]
    pub correct_ratio: String,
    #[serde(rename = "Stage")]
    pub stage: Stage,
    #[serde(rename = "Reason")]
    pub reason: String,
    #[serde(rename = "Model Path")]
    pub model_path: String,
}

impl ResultRow {
    pub fn new(model: &str, ratio: Option<f64>, stage: Stage, reason: &str, path: &str) -> Self {
        ResultRow {
            model: model.to_owned(),
            correct_ratio: ratio.map_or("0%".into(), percent),
            stage,
            reason: reason.to_owned(),
            model_path: path.to_owned(),
        }
    }
}

/// Python's `str(ratio * 100) + "%"`: `100.0%`, `66.66666666666666%`, `0.0%`.
pub fn percent(ratio: f64) -> String {
    format!("{:?}%", ratio * 100.0)
}

/// A keyword (case-insensitive) in the answer.
pub fn correct(answer: &str, keywords: &[String]) -> bool {
    let answer = answer.to_lowercase();
    keywords.iter().any(|k| answer.contains(&k.to_lowercase()))
}

pub fn read_cases<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cases: Vec<T> =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if cases.is_empty() {
        return Err(format!("{}: no cases", path.display()));
    }
    Ok(cases)
}

/// A picture as the server gets it: http(s) URLs unchanged (the server fetches them), a file as a
/// `data:` URL (relative to `base`).
pub fn image_url(picture: &str, base: &Path) -> Result<String, String> {
    if picture.starts_with("http://")
        || picture.starts_with("https://")
        || picture.starts_with("data:")
    {
        return Ok(picture.to_owned());
    }
    let path = base.join(picture);
    let bytes = std::fs::read(&path).map_err(|e| format!("image {}: {e}", path.display()))?;
    let mime = match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_lowercase)
        .as_deref()
    {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("bmp") => "image/bmp",
        _ => "image/png",
    };
    use base64::Engine;
    Ok(format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The model id the server serves (upstream asks `/v1/models` and takes the first).
pub async fn served_model(http: &reqwest::Client, base: &str) -> Result<String, String> {
    let json: serde_json::Value = http
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .map_err(|e| format!("GET /v1/models: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET /v1/models: {e}"))?;
    json["data"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("GET /v1/models lists no model: {json}"))
}

/// What one model's cases gave.
#[derive(Debug)]
pub struct Outcome {
    pub correct: usize,
    pub total: usize,
}

impl Outcome {
    pub fn ratio(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
}

/// One request per case, answers appended to `log` as upstream writes them. An HTTP failure or a
/// dead engine ends the model with stage INFERENCING (upstream records a failed image request as
/// its answer and goes on; servetest fails it, so a server that cannot take images never passes).
pub async fn run(
    kind: &str,
    label: &str,
    cases: &Cases,
    http: &reqwest::Client,
    base: &str,
    log: &Path,
) -> Result<Outcome, String> {
    use std::io::Write;
    let model = served_model(http, base).await?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut outcome = Outcome {
        correct: 0,
        total: 0,
    };
    for (i, (shown, messages, keywords)) in cases.requests(kind)?.into_iter().enumerate() {
        let body = serde_json::json!({
            "model": model,
            "messages": messages,
            "max_completion_tokens": MAX_COMPLETION_TOKENS,
        });
        let resp = http
            .post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("{kind} case {i}: {e}"))?;
        let status = resp.status();
        let json: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("{kind} case {i}: HTTP {status}: {e}"))?;
        let answer = json["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let _ = write!(
            file,
            "[{label}] {shown}\n[{label}] Response:\n{answer}\n{}\n",
            "-".repeat(40)
        );
        if !status.is_success() {
            return Err(format!("{kind} case {i}: HTTP {status}: {json}"));
        }
        if answer.contains(ENGINE_DEAD) {
            return Err(format!("{kind} case {i}: {ENGINE_DEAD}"));
        }
        outcome.total += 1;
        if correct(&answer, keywords) {
            outcome.correct += 1;
        }
    }
    Ok(outcome)
}

/// The case files of a run, read once.
pub struct Cases {
    pub text: Result<Vec<TextCase>, String>,
    pub image: Result<Vec<ImageCase>, String>,
    /// Relative picture paths resolve against the first of these holding them (the image case
    /// file's directory, then the project root, where upstream's tool directory keeps `assets/`).
    pub image_bases: Vec<PathBuf>,
}

type Request<'a> = (String, serde_json::Value, &'a [String]);

impl Cases {
    fn requests(&self, kind: &str) -> Result<Vec<Request<'_>>, String> {
        match kind {
            "text-only" => Ok(self
                .text
                .as_ref()
                .map_err(Clone::clone)?
                .iter()
                .map(|c| {
                    (
                        format!("Question: {}", c.question),
                        serde_json::json!([
                            {"role": "system", "content": SYSTEM},
                            {"role": "user", "content": c.question},
                        ]),
                        c.keywords.as_slice(),
                    )
                })
                .collect()),
            "single-image" => self
                .image
                .as_ref()
                .map_err(Clone::clone)?
                .iter()
                .map(|c| {
                    let base = self
                        .image_bases
                        .iter()
                        .find(|b| b.join(&c.picture_url).exists())
                        .or(self.image_bases.first())
                        .cloned()
                        .unwrap_or_default();
                    let url = image_url(&c.picture_url, &base)?;
                    Ok((
                        format!("Image URL: {}", c.picture_url),
                        serde_json::json!([{"role": "user", "content": [
                            {"type": "text", "text": IMAGE_QUESTION},
                            {"type": "image_url", "image_url": {"url": url}},
                        ]}]),
                        c.keywords.as_slice(),
                    ))
                })
                .collect(),
            other => Err(format!("`{other}` is not supported")),
        }
    }
}

/// Models an earlier `inference_results.csv` finished: every row of theirs at NORMAL_END
/// (upstream's `--resume-csv` rule, which does not look at the ratio). Stages this version does not
/// write (a later upstream's ACCURACY_FAILED, TIMEOUT, …) count as not finished.
pub fn finished_models(path: &Path) -> Result<HashSet<String>, String> {
    #[derive(Deserialize)]
    struct Row {
        #[serde(rename = "Model")]
        model: String,
        #[serde(rename = "Stage")]
        stage: String,
    }
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut all_done: HashMap<String, bool> = HashMap::new();
    for row in reader.deserialize::<Row>() {
        let row = row.map_err(|e| format!("{}: {e}", path.display()))?;
        let done = all_done.entry(row.model.trim().to_owned()).or_insert(true);
        *done &= row.stage.trim() == "NORMAL_END";
    }
    Ok(all_done
        .into_iter()
        .filter(|(_, d)| *d)
        .map(|(m, _)| m)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_print_as_python_and_keywords_ignore_case() {
        assert_eq!(percent(1.0), "100.0%");
        assert_eq!(percent(2.0 / 3.0), "66.66666666666666%");
        assert_eq!(percent(0.0), "0.0%");
        assert_eq!(percent(0.6), "60.0%");
        assert!(correct("It is BEIJING.", &["Beijing".into()]));
        assert!(!correct("Paris", &["Beijing".into(), "北京".into()]));
        assert!(!correct("anything", &[]));
    }

    #[test]
    fn resume_skips_models_whose_rows_all_ended_normally() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("inference_results.csv");
        std::fs::write(
            &p,
            "Model,Correct Ratio,Stage,Reason,Model Path\n\
             a[tp1pp1dp1],0.0%,NORMAL_END,,/m/a\n\
             b[tp1pp1dp1],0%,STARTING_SERVER,timeout,/m/b\n\
             c[tp1pp1dp1],100.0%,NORMAL_END,,/m/c\n\
             c[tp1pp1dp1],0%,INFERENCING,HTTP 500,/m/c\n\
             d[tp1pp1dp1],50%,ACCURACY_FAILED,,/m/d\n",
        )
        .unwrap();
        let done = finished_models(&p).unwrap();
        assert_eq!(done, HashSet::from(["a[tp1pp1dp1]".to_owned()]));
    }

    #[test]
    fn local_pictures_become_data_urls_and_remote_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.jpg"), [1u8, 2, 3]).unwrap();
        assert_eq!(
            image_url("x.jpg", dir.path()).unwrap(),
            "data:image/jpeg;base64,AQID"
        );
        assert_eq!(
            image_url("https://example.invalid/a.png", dir.path()).unwrap(),
            "https://example.invalid/a.png"
        );
        assert!(image_url("missing.png", dir.path())
            .unwrap_err()
            .contains("missing.png"));
    }
}
