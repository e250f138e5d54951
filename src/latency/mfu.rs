//! Model FLOPs and MFU from a Hugging Face `config.json` (seed 003's "model counters"): parameters
//! (total and active per token, MoE aware), FLOPs of a prefill and of one decode step, and MFU against
//! a GPU's peak dense FLOP/s.
//!
//! FLOPs per token = 2 × active parameters (one multiply-add per weight) + attention scores and
//! weighted sum: 2 × 2 × layers × heads × head_dim × (context length seen by the token). Prefill of `s`
//! tokens sees contexts 1..=s (causal), i.e. s(s+1)/2 in total; a decode step at context `c` sees `c`.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    pub hidden_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    #[serde(default)]
    pub num_key_value_heads: Option<u64>,
    #[serde(default)]
    pub head_dim: Option<u64>,
    pub intermediate_size: u64,
    pub vocab_size: u64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// MoE: routed experts, experts per token, their FFN width, shared experts (DeepSeek/Qwen names).
    #[serde(default, alias = "num_experts", alias = "num_local_experts")]
    pub n_routed_experts: Option<u64>,
    #[serde(default, alias = "num_experts_per_tok")]
    pub num_experts_per_token: Option<u64>,
    #[serde(default)]
    pub moe_intermediate_size: Option<u64>,
    #[serde(default)]
    pub n_shared_experts: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub total: u64,
    /// Parameters one token passes through (routed experts: only the chosen ones; no embedding lookup).
    pub active: u64,
}

impl ModelConfig {
    pub fn head_dim(&self) -> u64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn params(&self) -> Params {
        let h = self.hidden_size;
        let d = self.head_dim();
        let q = self.num_attention_heads * d;
        let kv = self.num_key_value_heads.unwrap_or(self.num_attention_heads) * d;
        let attention = h * q + 2 * h * kv + q * h;
        let norms = 2 * h;
        let dense_mlp = 3 * h * self.intermediate_size;
        let (mlp_total, mlp_active) = match (self.n_routed_experts, self.num_experts_per_token) {
            (Some(e), Some(k)) if e > 0 => {
                let width = self.moe_intermediate_size.unwrap_or(self.intermediate_size);
                let expert = 3 * h * width;
                let shared = self.n_shared_experts.unwrap_or(0) * expert;
                let router = h * e;
                (e * expert + shared + router, k * expert + shared + router)
            }
            _ => (dense_mlp, dense_mlp),
        };
        let layers = self.num_hidden_layers;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        let final_norm = h;
        Params {
            total: embed + head + final_norm + layers * (attention + norms + mlp_total),
            // The embedding is a lookup; the LM head is a real matmul (tied or not).
            active: embed + layers * (attention + norms + mlp_active),
        }
    }

    fn attention_flops_per_context_token(&self) -> f64 {
        // QKᵀ and the weighted sum of V: 2 matmuls × 2 FLOPs per multiply-add.
        4.0 * (self.num_hidden_layers * self.num_attention_heads * self.head_dim()) as f64
    }

    /// FLOPs to prefill `batch` prompts of `seq` tokens.
    pub fn prefill_flops(&self, batch: u64, seq: u64) -> f64 {
        let linear = 2.0 * self.params().active as f64 * seq as f64;
        let causal_pairs = (seq * (seq + 1) / 2) as f64;
        batch as f64 * (linear + self.attention_flops_per_context_token() * causal_pairs)
    }

    /// FLOPs of one decode step for `batch` sequences that each hold `context` tokens.
    pub fn decode_flops(&self, batch: u64, context: u64) -> f64 {
        let linear = 2.0 * self.params().active as f64;
        batch as f64 * (linear + self.attention_flops_per_context_token() * context as f64)
    }
}

/// Peak dense BF16 FLOP/s (no sparsity) per GPU, from the vendors' data sheets.
pub const PEAK_FLOPS: &[(&str, f64)] = &[
    ("A100", 312e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("B200", 2250e12),
    ("GB200", 2500e12),
    ("GB300", 2500e12),
];

pub fn peak_flops(gpu: &str) -> Option<f64> {
    PEAK_FLOPS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(gpu))
        .map(|(_, f)| *f)
}

/// Model FLOPs utilisation of `flops` done in `seconds` on `devices` devices of `peak` FLOP/s each.
pub fn mfu(flops: f64, seconds: f64, peak: f64, devices: u64) -> f64 {
    flops / (seconds * peak * devices.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelConfig {
        serde_json::from_str(
            r#"{"hidden_size":128,"num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":1,
                "head_dim":64,"intermediate_size":256,"vocab_size":2048,"tie_word_embeddings":false}"#,
        )
        .unwrap()
    }

    #[test]
    fn tiny_llama_parameters_match_its_safetensors() {
        // By hand: embed 2048·128 = 262144, head 262144; per layer q 16384 + k 8192 + v 8192 +
        // o 16384 + mlp 3·128·256 = 98304 + norms 256 = 147712; 2 layers; final norm 128.
        // The tiny model's safetensors hold 819840 values.
        let p = tiny().params();
        assert_eq!(p.total, 819_840);
        assert_eq!(p.active, 262_144 + 2 * 147_712);
    }

    #[test]
    fn flops_by_hand() {
        let m = tiny();
        let active = (262_144 + 2 * 147_712) as f64; // 557568
                                                     // Attention per context token: 4 · 2 layers · 2 heads · 64 = 1024.
                                                     // Prefill 1 × 4 tokens: 2·557568·4 + 1024·(1+2+3+4) = 4460544 + 10240.
        assert_eq!(m.prefill_flops(1, 4), 2.0 * active * 4.0 + 1024.0 * 10.0);
        assert_eq!(m.prefill_flops(3, 4), 3.0 * m.prefill_flops(1, 4));
        // Decode, 2 sequences at context 100: 2 · (2·557568 + 1024·100).
        assert_eq!(m.decode_flops(2, 100), 2.0 * (2.0 * active + 102_400.0));
    }

    #[test]
    fn moe_counts_only_chosen_experts_as_active() {
        // 1 layer, hidden 10, 2 heads × 5, vocab 100, tied; 8 experts of width 20, 2 per token, 1 shared.
        let m: ModelConfig = serde_json::from_str(
            r#"{"hidden_size":10,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":40,
                "vocab_size":100,"tie_word_embeddings":true,"n_routed_experts":8,
                "num_experts_per_tok":2,"moe_intermediate_size":20,"n_shared_experts":1}"#,
        )
        .unwrap();
        // attention 4·10·10 = 400; norms 20; expert 3·10·20 = 600; router 80.
        // total = embed 1000 + final norm 10 + (400 + 20 + 8·600 + 600 + 80) = 1010 + 5900.
        // active = embed 1000 + (400 + 20 + 2·600 + 600 + 80) = 1000 + 2300.
        let p = m.params();
        assert_eq!(p.total, 6910);
        assert_eq!(p.active, 3300);
    }

    #[test]
    fn mfu_against_the_peak_table() {
        // 989 TFLOP/s of work in one second on one H100 is 100 %; on two it is 50 %.
        let peak = peak_flops("h100").unwrap();
        assert!((mfu(989e12, 1.0, peak, 1) - 1.0).abs() < 1e-12);
        assert!((mfu(989e12, 1.0, peak, 2) - 0.5).abs() < 1e-12);
        assert_eq!(peak_flops("CPU"), None);
    }
}
