//! `servetest cb run`: the seed's offline inference scripts (cb_spyre_inference.py, long_context.py)
//! by hand — prompts through vLLM's engine in-process, generated text printed, and with
//! `--compare-with-cpu` the tokens checked against transformers on CPU (tokens only, as the seed).

use std::path::PathBuf;

use clap::Args;

use servetest::cb::case::{CbSpec, Prompt};

#[derive(Args, Debug)]
pub struct CbRunArgs {
    /// `tiny` (models/tiny) or a model directory.
    #[arg(long, default_value = "tiny")]
    model: String,
    /// The engine's max_model_len (prompt + generated tokens per sequence).
    #[arg(long = "max_model_len", alias = "max-model-len", default_value_t = 256)]
    max_model_len: u64,
    /// The engine's max_num_seqs (sequences batched together).
    #[arg(long = "max_num_seqs", alias = "max-num-seqs", default_value_t = 4)]
    max_num_seqs: u64,
    /// Tensor parallelism; the CPU engine here runs in one process, so only 1.
    #[arg(long, default_value_t = 1)]
    tp: u64,
    /// How many prompts to run.
    #[arg(long = "num-prompts", default_value_t = 4)]
    num_prompts: u64,
    /// Tokens per sequence (ignored with --max_prompt_len, which fills up to max_model_len).
    #[arg(long = "max-tokens", default_value_t = 20)]
    max_tokens: u64,
    /// long_context mode: prompt lengths up to this; each generates until max_model_len.
    #[arg(long = "max_prompt_len", alias = "max-prompt-len")]
    max_prompt_len: Option<u64>,
    /// Compare the generated tokens with transformers on CPU.
    #[arg(long = "compare-with-CPU", alias = "compare-with-cpu")]
    compare_with_cpu: bool,
}

pub fn run(a: CbRunArgs) -> Result<bool, String> {
    if a.tp != 1 {
        return Err(format!(
            "--tp {}: the in-process CPU engine runs tensor parallel 1 only",
            a.tp
        ));
    }
    let prompts: Vec<Prompt> = (0..a.num_prompts)
        .map(|i| {
            // Lengths spread over the range, as the seed's scripts vary them.
            let (len, max_tokens) = match a.max_prompt_len {
                Some(max) => {
                    let len = (max / 2 + (i * 37) % (max / 2).max(1)).max(1);
                    (len, a.max_model_len.saturating_sub(len).max(1))
                }
                None => (16 + (i * 11) % 48, a.max_tokens),
            };
            Prompt {
                id: format!("p{i}"),
                text: None,
                len: Some(len),
                seed: i,
                max_tokens,
                add_step: 0,
                expect_error: None,
            }
        })
        .collect();
    for p in &prompts {
        if p.len.unwrap_or(0) + p.max_tokens > a.max_model_len {
            return Err(format!(
                "{}: prompt {} + max_tokens {} exceeds --max_model_len {}",
                p.id,
                p.len.unwrap_or(0),
                p.max_tokens,
                a.max_model_len
            ));
        }
    }
    let spec = CbSpec {
        description: None,
        model: a.model.clone(),
        max_model_len: a.max_model_len,
        max_num_seqs: a.max_num_seqs,
        block_size: 32,
        num_blocks: None,
        max_num_batched_tokens: None,
        prompts,
        steps: Vec::new(),
        logprobs: Some(1),
        rel_tol: None,
        abs_tol: None,
        prob_abs_tol: None,
        matrix: Default::default(),
    };
    let root = servetest::env::project_dir();
    let python = servetest::cb::engine(&root)?;
    let dir: PathBuf = servetest::cb::case_dir("cb-run");
    let (result, _) = servetest::cb::drive(&python, &root, &spec, "output", &dir)?;
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&result).map_err(|e| format!("{}: {e}", result.display()))?,
    )
    .map_err(|e| e.to_string())?;
    let mut all_same = true;
    for run in doc["runs"].as_array().into_iter().flatten() {
        let tokens = |side: &str| -> Vec<u64> {
            run[side]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["token"].as_u64())
                .collect()
        };
        println!(
            "{} (prompt {} tokens): {:?}",
            run["id"].as_str().unwrap_or("?"),
            run["prompt_len"],
            run["text"].as_str().unwrap_or("")
        );
        if a.compare_with_cpu {
            let (v, r) = (tokens("vllm"), tokens("reference"));
            match v.iter().zip(&r).position(|(x, y)| x != y) {
                None if v.len() == r.len() => {
                    println!("  same {} tokens as transformers on CPU", v.len())
                }
                pos => {
                    all_same = false;
                    println!(
                        "  DIFFERS from transformers on CPU at token {}: vLLM {:?} / CPU {:?}",
                        pos.unwrap_or(v.len().min(r.len())),
                        v,
                        r
                    );
                }
            }
        }
    }
    println!("results: {}", result.display());
    Ok(all_same)
}
