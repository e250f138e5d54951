//! Workloads: `random` (token ids from the model's own tokenizer, so prompt lengths are exact, like
//! vLLM's random dataset), a ShareGPT-format JSON file, or a file of fixed prompts (one per line).

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokenizers::Tokenizer;

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub prompt: String,
    /// Prompt tokens including the special tokens the tokenizer adds (BOS); the server's usage
    /// report replaces it when present.
    pub prompt_len: usize,
    pub output_len: usize,
}

#[derive(Debug, Clone)]
pub enum DatasetSpec {
    Random {
        input_len: usize,
        output_len: usize,
        /// Lengths are uniform in [L·(1−r), L·(1+r)].
        range_ratio: f64,
    },
    ShareGpt {
        path: PathBuf,
        /// Overrides the conversation's answer length.
        output_len: Option<usize>,
    },
    Prompts {
        path: PathBuf,
        output_len: usize,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("failed to load the tokenizer {path}: {reason}")]
    Tokenizer { path: String, reason: String },
    #[error("failed to read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// The model directory's `tokenizer.json`.
pub fn load_tokenizer(model_dir: &Path) -> Result<Tokenizer, DatasetError> {
    let path = model_dir.join("tokenizer.json");
    Tokenizer::from_file(&path).map_err(|e| DatasetError::Tokenizer {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

pub fn count_tokens(tok: &Tokenizer, text: &str, special: bool) -> usize {
    tok.encode(text, special).map(|e| e.len()).unwrap_or(0)
}

pub fn build(
    spec: &DatasetSpec,
    tok: &Tokenizer,
    n: usize,
    seed: u64,
) -> Result<Vec<Request>, DatasetError> {
    let mut rng = StdRng::seed_from_u64(seed);
    match spec {
        DatasetSpec::Random {
            input_len,
            output_len,
            range_ratio,
        } => random(tok, n, *input_len, *output_len, *range_ratio, &mut rng),
        DatasetSpec::ShareGpt { path, output_len } => sharegpt(tok, path, n, *output_len),
        DatasetSpec::Prompts { path, output_len } => {
            let text = std::fs::read_to_string(path).map_err(|e| DatasetError::Read {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let prompts: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            if prompts.is_empty() {
                return Err(DatasetError::Invalid(format!(
                    "{} has no prompts",
                    path.display()
                )));
            }
            Ok((0..n)
                .map(|i| {
                    let p = prompts[i % prompts.len()];
                    Request {
                        prompt: p.to_owned(),
                        prompt_len: count_tokens(tok, p, true),
                        output_len: *output_len,
                    }
                })
                .collect())
        }
    }
}

fn uniform_len(len: usize, ratio: f64, rng: &mut StdRng) -> usize {
    if ratio <= 0.0 {
        return len;
    }
    let lo = ((len as f64) * (1.0 - ratio)).floor().max(1.0) as usize;
    let hi = ((len as f64) * (1.0 + ratio)).ceil() as usize;
    rng.random_range(lo..=hi.max(lo))
}

fn random(
    tok: &Tokenizer,
    n: usize,
    input_len: usize,
    output_len: usize,
    ratio: f64,
    rng: &mut StdRng,
) -> Result<Vec<Request>, DatasetError> {
    if !(0.0..1.0).contains(&ratio) {
        return Err(DatasetError::Invalid(format!(
            "range ratio {ratio} must be in [0, 1)"
        )));
    }
    let special: Vec<u32> = tok
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| id)
        .collect();
    let allowed: Vec<u32> = (0..tok.get_vocab_size(true) as u32)
        .filter(|id| !special.contains(id))
        .collect();
    if allowed.is_empty() {
        return Err(DatasetError::Invalid(
            "the tokenizer has no ordinary tokens".into(),
        ));
    }
    // Random byte-level tokens merge across their boundaries once decoded, so prompts drift off the
    // target length. Tokens of the form " word" (one leading space, no other whitespace, encoding
    // back to themselves) stay separate: sample from those when the vocabulary has enough.
    let stable: Vec<u32> = allowed
        .iter()
        .copied()
        .filter(|&id| {
            let Ok(text) = tok.decode(&[id], false) else {
                return false;
            };
            text.len() > 1
                && text.starts_with(' ')
                && !text[1..].contains(char::is_whitespace)
                && !text.contains('\u{FFFD}')
                && tok
                    .encode(text.as_str(), false)
                    .is_ok_and(|e| e.get_ids() == [id])
        })
        .collect();
    let allowed = if stable.len() >= 100 { stable } else { allowed };
    // Special tokens the tokenizer adds (BOS) count towards the input length, as in vLLM.
    let num_special = count_tokens(tok, "", true);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let target = uniform_len(input_len, ratio, rng)
            .saturating_sub(num_special)
            .max(1);
        let mut ids: Vec<u32> = (0..target)
            .map(|_| allowed[rng.random_range(0..allowed.len())])
            .collect();
        // Decoding and re-encoding can merge or split tokens: re-encode, truncate or pad, repeat
        // until the prompt tokenizes to exactly `target` tokens (or give the closest).
        let mut prompt = String::new();
        for _ in 0..10 {
            prompt = tok
                .decode(&ids, false)
                .map_err(|e| DatasetError::Invalid(e.to_string()))?;
            let enc = tok
                .encode(prompt.as_str(), false)
                .map_err(|e| DatasetError::Invalid(e.to_string()))?;
            let got = enc.get_ids().to_vec();
            if got.len() == target {
                break;
            }
            ids = got;
            ids.truncate(target);
            while ids.len() < target {
                ids.push(allowed[rng.random_range(0..allowed.len())]);
            }
        }
        let prompt_len = count_tokens(tok, &prompt, true);
        out.push(Request {
            prompt,
            prompt_len,
            output_len: uniform_len(output_len, ratio, rng),
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Conversation {
    conversations: Vec<Turn>,
}

#[derive(Deserialize)]
struct Turn {
    value: String,
}

/// ShareGPT: the first turn is the prompt, the second's length the output length (like vLLM).
fn sharegpt(
    tok: &Tokenizer,
    path: &Path,
    n: usize,
    output_len: Option<usize>,
) -> Result<Vec<Request>, DatasetError> {
    let read_err = |reason: String| DatasetError::Read {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
    let data: Vec<Conversation> =
        serde_json::from_str(&text).map_err(|e| read_err(e.to_string()))?;
    let mut out = Vec::new();
    for c in data.iter().filter(|c| c.conversations.len() >= 2) {
        let prompt = &c.conversations[0].value;
        let answer = count_tokens(tok, &c.conversations[1].value, false);
        let out_len = output_len.unwrap_or(answer);
        let prompt_len = count_tokens(tok, prompt, true);
        // vLLM skips conversations too short or long to be meaningful.
        if prompt_len < 4 || out_len < 4 && output_len.is_none() {
            continue;
        }
        out.push(Request {
            prompt: prompt.clone(),
            prompt_len,
            output_len: out_len.max(1),
        });
        if out.len() == n {
            break;
        }
    }
    if out.is_empty() {
        return Err(DatasetError::Invalid(format!(
            "{} has no usable conversations",
            path.display()
        )));
    }
    // Fewer conversations than requests: cycle.
    let base = out.len();
    while out.len() < n {
        out.push(out[out.len() % base].clone());
    }
    Ok(out)
}
