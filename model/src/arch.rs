//! Model architectures: GPT-2 and Llama-family (Llama, Mistral, Qwen2) decoder-only transformers.
//!
//! Presets carry the published Hugging Face `config.json` values of each model; `--model-config`
//! reads any such file whose `model_type` is gpt2, llama, mistral or qwen2. Parameter counts follow
//! the modules Hugging Face `transformers` instantiates (GPT-2: `GPT2LMHeadModel` with Conv1D
//! layers, learned positions and a tied head; Llama: `LlamaForCausalLM` with RMSNorm, grouped-query
//! attention and SwiGLU, head tied only where the config says so).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use smallvec::{smallvec, SmallVec};
use std::path::Path;

/// Which block layout the model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// LayerNorm, fused QKV Conv1D with bias, tanh-GELU MLP, learned positions, tied LM head.
    Gpt2,
    /// RMSNorm, separate q/k/v/o, grouped-query attention, RoPE, SwiGLU MLP.
    Llama,
}

/// A resolved architecture. All sizes are element counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    pub family: Family,
    pub hidden: u64,
    pub layers: u32,
    pub heads: u64,
    pub kv_heads: u64,
    pub intermediate: u64,
    pub vocab: u64,
    pub max_positions: u64,
    pub tied_embeddings: bool,
    /// Bias on the q, k, v projections (GPT-2's fused c_attn, Qwen2).
    pub qkv_bias: bool,
    /// Bias on the other linear layers (GPT-2).
    pub other_bias: bool,
    /// Dropout probability of GPT-2's attention, residual and embedding dropouts (0 for Llama).
    pub dropout: f64,
    /// Mistral's `sliding_window`, positions: each query attends to the last this many keys.
    /// transformers 5.17 then builds a sliding-window causal mask (eager attention: five more
    /// small kernels, `graph::block`; SDPA from a sequence of this length on: an explicit mask
    /// that costsim does not model, `Workload::validate`). `None`: plain causal attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<u64>,
}

/// The role of a linear layer inside a block; LoRA and PaCA targets name these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum LinearRole {
    /// GPT-2's fused c_attn (d → 3d).
    Qkv,
    Q,
    K,
    V,
    /// Attention output projection (GPT-2 attn.c_proj, Llama o_proj).
    O,
    Gate,
    /// MLP up projection (GPT-2 mlp.c_fc, Llama up_proj).
    Up,
    /// MLP down projection (GPT-2 mlp.c_proj, Llama down_proj).
    Down,
}

/// A block's linear layers ([`ModelConfig::linears`]).
pub type Linears = SmallVec<[Linear; 7]>;

/// One linear layer of a block: y = x·Wᵀ (+ b), W is `out_features × in_features`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linear {
    pub role: LinearRole,
    /// Module path below the block, e.g. `self_attn.q_proj`.
    pub path: &'static str,
    pub in_features: u64,
    pub out_features: u64,
    pub bias: bool,
}

impl Linear {
    /// Parameters: n·k + n (bias).
    pub fn params(&self) -> u64 {
        self.in_features * self.out_features + if self.bias { self.out_features } else { 0 }
    }
}

impl ModelConfig {
    /// Per-head dimension d/h.
    pub fn head_dim(&self) -> u64 {
        self.hidden / self.heads
    }

    /// The block's linear layers in forward order (at most seven, kept inline: a sweep asks for
    /// them several times a point, and a heap list each time was measurable).
    pub fn linears(&self) -> Linears {
        let d = self.hidden;
        let kv = self.kv_heads * self.head_dim();
        let i = self.intermediate;
        match self.family {
            Family::Gpt2 => smallvec![
                lin(LinearRole::Qkv, "attn.c_attn", d, 3 * d, true),
                lin(LinearRole::O, "attn.c_proj", d, d, true),
                lin(LinearRole::Up, "mlp.c_fc", d, i, true),
                lin(LinearRole::Down, "mlp.c_proj", i, d, true),
            ],
            Family::Llama => smallvec![
                lin(LinearRole::Q, "self_attn.q_proj", d, d, self.qkv_bias),
                lin(LinearRole::K, "self_attn.k_proj", d, kv, self.qkv_bias),
                lin(LinearRole::V, "self_attn.v_proj", d, kv, self.qkv_bias),
                lin(LinearRole::O, "self_attn.o_proj", d, d, self.other_bias),
                lin(LinearRole::Gate, "mlp.gate_proj", d, i, self.other_bias),
                lin(LinearRole::Up, "mlp.up_proj", d, i, self.other_bias),
                lin(LinearRole::Down, "mlp.down_proj", i, d, self.other_bias),
            ],
        }
    }

    /// Norm parameters of one block: GPT-2 two LayerNorms (weight and bias), Llama two RMSNorms.
    pub fn block_norm_params(&self) -> u64 {
        match self.family {
            Family::Gpt2 => 4 * self.hidden,
            Family::Llama => 2 * self.hidden,
        }
    }

    /// Parameters of one block.
    pub fn block_params(&self) -> u64 {
        self.linears().iter().map(Linear::params).sum::<u64>() + self.block_norm_params()
    }

    /// Token embedding (V·d) plus GPT-2's learned positions (P·d).
    pub fn embedding_params(&self) -> u64 {
        let pos = match self.family {
            Family::Gpt2 => self.max_positions * self.hidden,
            Family::Llama => 0,
        };
        self.vocab * self.hidden + pos
    }

    /// Final norm parameters.
    pub fn final_norm_params(&self) -> u64 {
        match self.family {
            Family::Gpt2 => 2 * self.hidden,
            Family::Llama => self.hidden,
        }
    }

    /// LM head parameters (0 when tied to the embedding).
    pub fn head_params(&self) -> u64 {
        if self.tied_embeddings {
            0
        } else {
            self.vocab * self.hidden
        }
    }

    /// Total parameter count as Hugging Face reports it (tied weights counted once).
    pub fn total_params(&self) -> u64 {
        self.embedding_params()
            + u64::from(self.layers) * self.block_params()
            + self.final_norm_params()
            + self.head_params()
    }

    /// Check that the sizes are consistent (divisible heads and so on).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::InvalidModel {
                name: self.name.clone(),
                message: msg,
            })
        };
        if self.hidden == 0 || self.layers == 0 || self.heads == 0 || self.vocab == 0 {
            return bad("hidden size, layers, heads and vocabulary must all be positive".into());
        }
        if self.intermediate == 0 || self.max_positions == 0 {
            return bad("intermediate size and max positions must be positive".into());
        }
        if self.sliding_window == Some(0) {
            return bad(
                "a sliding window of 0 positions attends to nothing; give 1 or more".into(),
            );
        }
        // Bounds far above any real model keep every count inside u64.
        let limits = [
            ("hidden size", self.hidden, 1 << 20),
            ("layers", u64::from(self.layers), 1 << 12),
            ("intermediate size", self.intermediate, 1 << 22),
            ("vocabulary", self.vocab, 1 << 24),
            ("max positions", self.max_positions, 1 << 24),
            ("sliding window", self.sliding_window.unwrap_or(1), 1 << 24),
        ];
        for (what, v, max) in limits {
            if v > max {
                return bad(format!("{what} {v} is above the {max} costsim models"));
            }
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return bad(format!(
                "hidden size {} is not divisible by the {} attention heads",
                self.hidden, self.heads
            ));
        }
        if self.kv_heads == 0 {
            return bad("0 key/value heads: a model has at least one".into());
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "{} attention heads are not a multiple of {} key/value heads",
                self.heads, self.kv_heads
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "dropout {} is not in [0, 1)",
                crate::shown(self.dropout)
            ));
        }
        Ok(())
    }
}

fn lin(role: LinearRole, path: &'static str, k: u64, n: u64, bias: bool) -> Linear {
    Linear {
        role,
        path,
        in_features: k,
        out_features: n,
        bias,
    }
}

/// A built-in model and its published parameter total.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    /// Published parameter count (model card), for the 1% check.
    pub published_params: f64,
    build: fn() -> ModelConfig,
}

impl Preset {
    pub fn config(&self) -> ModelConfig {
        (self.build)()
    }
}

fn gpt2(name: &str, d: u64, layers: u32, heads: u64) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        family: Family::Gpt2,
        hidden: d,
        layers,
        heads,
        kv_heads: heads,
        intermediate: 4 * d,
        vocab: 50257,
        max_positions: 1024,
        tied_embeddings: true,
        qkv_bias: true,
        other_bias: true,
        dropout: 0.1,
        sliding_window: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn llama(
    name: &str,
    d: u64,
    layers: u32,
    heads: u64,
    kv: u64,
    inter: u64,
    vocab: u64,
    pos: u64,
) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        family: Family::Llama,
        hidden: d,
        layers,
        heads,
        kv_heads: kv,
        intermediate: inter,
        vocab,
        max_positions: pos,
        tied_embeddings: false,
        qkv_bias: false,
        other_bias: false,
        dropout: 0.0,
        sliding_window: None,
    }
}

/// The built-in presets (values from each model's published config.json).
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "gpt2",
        published_params: 124e6,
        build: || gpt2("gpt2", 768, 12, 12),
    },
    Preset {
        name: "gpt2-medium",
        published_params: 355e6,
        build: || gpt2("gpt2-medium", 1024, 24, 16),
    },
    Preset {
        name: "gpt2-large",
        published_params: 774e6,
        build: || gpt2("gpt2-large", 1280, 36, 20),
    },
    Preset {
        name: "gpt2-xl",
        published_params: 1.56e9,
        build: || gpt2("gpt2-xl", 1600, 48, 25),
    },
    Preset {
        name: "tinyllama-1.1b",
        published_params: 1.10e9,
        build: || llama("tinyllama-1.1b", 2048, 22, 32, 4, 5632, 32000, 2048),
    },
    Preset {
        name: "llama2-7b",
        published_params: 6.74e9,
        build: || llama("llama2-7b", 4096, 32, 32, 32, 11008, 32000, 4096),
    },
    Preset {
        name: "llama2-13b",
        published_params: 13.0e9,
        build: || llama("llama2-13b", 5120, 40, 40, 40, 13824, 32000, 4096),
    },
    Preset {
        name: "llama2-70b",
        published_params: 69.0e9,
        build: || llama("llama2-70b", 8192, 80, 64, 8, 28672, 32000, 4096),
    },
    Preset {
        name: "llama3-8b",
        published_params: 8.03e9,
        build: || llama("llama3-8b", 4096, 32, 32, 8, 14336, 128256, 8192),
    },
    Preset {
        name: "mistral-7b",
        published_params: 7.24e9,
        build: || llama("mistral-7b", 4096, 32, 32, 8, 14336, 32000, 32768),
    },
];

/// Look up a preset by name (case-insensitive).
pub fn preset(name: &str) -> Result<ModelConfig> {
    let wanted = name.trim().to_ascii_lowercase();
    if let Some(p) = PRESETS.iter().find(|p| p.name == wanted) {
        return Ok(p.config());
    }
    let names: Vec<String> = PRESETS.iter().map(|p| p.name.to_string()).collect();
    Err(Error::UnknownModel {
        name: name.to_string(),
        hint: crate::nearest(&wanted, &names)
            .map(|n| format!(" (did you mean '{n}'?)"))
            .unwrap_or_default(),
        known: names.join(", "),
    })
}

/// The fields of a Hugging Face config.json that costsim reads. Other keys are ignored, since
/// real configs carry many that do not affect cost.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    // GPT-2 names
    n_embd: Option<u64>,
    n_layer: Option<u32>,
    n_head: Option<u64>,
    n_inner: Option<u64>,
    n_positions: Option<u64>,
    resid_pdrop: Option<f64>,
    embd_pdrop: Option<f64>,
    attn_pdrop: Option<f64>,
    activation_function: Option<String>,
    // Llama names
    hidden_size: Option<u64>,
    num_hidden_layers: Option<u32>,
    num_attention_heads: Option<u64>,
    num_key_value_heads: Option<u64>,
    intermediate_size: Option<u64>,
    max_position_embeddings: Option<u64>,
    attention_dropout: Option<f64>,
    hidden_act: Option<String>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    /// Mistral's and Qwen2's: absent (`None`), `null` (`Some(None)`) or a length.
    #[serde(default, deserialize_with = "present")]
    sliding_window: Option<Option<u64>>,
    use_sliding_window: Option<bool>,
    // both
    vocab_size: Option<u64>,
    head_dim: Option<u64>,
    /// The hub id or path the config was saved from (`save_pretrained` writes it).
    #[serde(rename = "_name_or_path")]
    name_or_path: Option<String>,
}

/// A key that is present, `null` or not: `Some(None)` for `null`, where a plain `Option` would
/// not tell it from an absent key (`#[serde(default)]` gives `None` for that).
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Read a Hugging Face `config.json`.
pub fn from_hf_config(path: &Path) -> Result<ModelConfig> {
    let text =
        costsim_hardware::input::read_text(path, "config.json").map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    parse_hf_config(&text, &path.display().to_string())
}

/// What to call a model read from config.json: its `_name_or_path` (the hub id it was saved from,
/// e.g. `meta-llama/Llama-2-7b-hf`) when set; else the file's own name without `.json` when it
/// is not plain `config.json` (`llama-7b.json`); else the folder holding it (hub snapshots and
/// `save_pretrained` put `config.json` in a folder named after the model); else "custom".
/// Control characters are dropped and the name is cut at 100 characters.
fn model_name(name_or_path: Option<&str>, origin: &str) -> String {
    let clean = |s: &str| -> Option<String> {
        let t: String = s.chars().filter(|c| !c.is_control()).take(100).collect();
        let t = t.trim().trim_end_matches('/').to_string();
        (!t.is_empty()).then_some(t)
    };
    if let Some(n) = name_or_path.and_then(clean) {
        return n;
    }
    let path = Path::new(origin);
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    if let Some(stem) = stem.filter(|s| s != "config").and_then(|s| clean(&s)) {
        return stem;
    }
    path.parent()
        .and_then(|p| p.file_name())
        // `file_name` is None for a parent ending in `..` or `.`, so neither becomes a name.
        .and_then(|s| clean(&s.to_string_lossy()))
        .unwrap_or_else(|| "custom".to_string())
}

/// serde's message for a config.json that does not parse, in config.json's words: a value of
/// the wrong type names its key (`"n_embd" must be a whole number, not floating point
/// `512.0``), and a file that is not an object says so; syntax errors stay serde's.
fn config_error_message(text: &str, e: &serde_json::Error) -> String {
    let plain = e.to_string();
    if e.classify() != serde_json::error::Category::Data {
        return plain;
    }
    // serde: "invalid type: floating point `512.0`, expected u64 at line 1 column 38".
    let body = plain
        .rsplit_once(" at line ")
        .map_or(plain.as_str(), |(b, _)| b);
    if body.contains("struct HfConfig") {
        return "the file is not a JSON object of config.json keys ({...})".into();
    }
    let Some((got, expected)) = body
        .strip_prefix("invalid type: ")
        .and_then(|b| b.split_once(", expected "))
    else {
        return plain;
    };
    let expected = match expected {
        "u64" | "u32" | "usize" => "a whole number",
        "f64" | "f32" => "a number",
        "a boolean" => "true or false",
        "a string" => "a string",
        other => other,
    };
    // The key whose value starts where serde stopped: the last `"key":` before that point.
    let upto: usize = text
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum::<usize>()
        + e.column();
    // (A column inside a multi-byte character is taken back to the character's start.)
    let mut upto = upto.min(text.len());
    while !text.is_char_boundary(upto) {
        upto -= 1;
    }
    let before = &text[..upto];
    let key = before.rfind(':').and_then(|colon| {
        let k = before[..colon].trim_end().strip_suffix('"')?;
        let start = k.rfind('"')?;
        Some(&k[start + 1..])
    });
    match key {
        Some(k) => format!("\"{k}\" must be {expected}, not {got}"),
        None => format!("a value must be {expected}, not {got}"),
    }
}

/// Parse config.json text; `origin` names it in errors.
pub fn parse_hf_config(text: &str, origin: &str) -> Result<ModelConfig> {
    let cfg: HfConfig = serde_json::from_str(text).map_err(|e| Error::ConfigParse {
        path: origin.to_string(),
        line: e.line(),
        message: config_error_message(text, &e),
    })?;
    let missing = |field: &str| Error::ConfigField {
        path: origin.to_string(),
        message: format!("required field \"{field}\" is missing"),
    };
    let name = model_name(cfg.name_or_path.as_deref(), origin);
    let model_type = cfg
        .model_type
        .clone()
        .ok_or_else(|| missing("model_type"))?;
    let field = |message: String| Error::ConfigField {
        path: origin.to_string(),
        message,
    };
    let probability = |key: &str, p: Option<f64>| -> Result<()> {
        match p {
            Some(p) if !(0.0..1.0).contains(&p) => Err(field(format!(
                "\"{key}\" is {}: a dropout probability is in [0, 1)",
                crate::shown(p)
            ))),
            _ => Ok(()),
        }
    };
    // The activation each family's block recipe launches (`graph::block`): GPT-2's gelu_new
    // (tanh approximation written out as elementwise ops, eager), Llama's SiLU. Another one
    // would launch other kernels, so it is refused rather than costed as these.
    let activation = |key: &str, got: &Option<String>, modelled: &[&str]| -> Result<()> {
        match got.as_deref() {
            Some(a) if !modelled.contains(&a) => Err(field(format!(
                "\"{key}\" is \"{a}\": costsim models this family's MLP with {} (the \
                 released configs'); another activation launches other kernels, so it is not \
                 costed as that one",
                modelled[0]
            ))),
            _ => Ok(()),
        }
    };
    let config = match model_type.as_str() {
        "gpt2" => {
            activation(
                "activation_function",
                &cfg.activation_function,
                &["gelu_new"],
            )?;
            let d = cfg.n_embd.ok_or_else(|| missing("n_embd"))?;
            // costsim models one probability for GPT-2's embedding, attention and residual
            // dropouts (the three are 0.1 in every released GPT-2 config).
            let resid = cfg.resid_pdrop.unwrap_or(0.1);
            for (key, p) in [
                ("resid_pdrop", cfg.resid_pdrop),
                ("embd_pdrop", cfg.embd_pdrop),
                ("attn_pdrop", cfg.attn_pdrop),
            ] {
                probability(key, p)?;
                if let Some(p) = p.filter(|p| *p != resid) {
                    return Err(field(format!(
                        "\"{key}\" is {p} and \"resid_pdrop\" {resid}: costsim models one dropout \
                         probability for GPT-2's embedding, attention and residual dropouts; set \
                         them equal (or leave {key} out)"
                    )));
                }
            }
            ModelConfig {
                name,
                family: Family::Gpt2,
                hidden: d,
                layers: cfg.n_layer.ok_or_else(|| missing("n_layer"))?,
                heads: cfg.n_head.ok_or_else(|| missing("n_head"))?,
                kv_heads: cfg.n_head.ok_or_else(|| missing("n_head"))?,
                // Saturating: an absurd n_embd is then refused by `validate`, not wrapped.
                intermediate: cfg.n_inner.unwrap_or(d.saturating_mul(4)),
                vocab: cfg.vocab_size.ok_or_else(|| missing("vocab_size"))?,
                max_positions: cfg.n_positions.ok_or_else(|| missing("n_positions"))?,
                tied_embeddings: cfg.tie_word_embeddings.unwrap_or(true),
                qkv_bias: true,
                other_bias: true,
                dropout: resid,
                sliding_window: None,
            }
        }
        "llama" | "mistral" | "qwen2" => {
            // transformers maps "swish" to the same SiLU module.
            activation("hidden_act", &cfg.hidden_act, &["silu", "swish"])?;
            probability("attention_dropout", cfg.attention_dropout)?;
            if let Some(p) = cfg.attention_dropout.filter(|p| *p > 0.0) {
                return Err(field(format!(
                    "\"attention_dropout\" is {p}: costsim models Llama-family attention without \
                     dropout (the released configs' 0.0); set it to 0"
                )));
            }
            let heads = cfg
                .num_attention_heads
                .ok_or_else(|| missing("num_attention_heads"))?;
            let hidden = cfg.hidden_size.ok_or_else(|| missing("hidden_size"))?;
            if let Some(hd) = cfg.head_dim {
                if hd.checked_mul(heads) != Some(hidden) {
                    return Err(Error::ConfigField {
                        path: origin.to_string(),
                        message: format!(
                            "head_dim {hd} × {heads} heads ≠ hidden_size {hidden}; costsim models \
                             only head_dim = hidden_size / num_attention_heads"
                        ),
                    });
                }
            }
            // transformers 5.17: MistralConfig's `sliding_window` is 4096 when the key is absent
            // and off when null (v0.2 on); Qwen2Config windows only with `use_sliding_window`,
            // and then only the layers from `max_window_layers` on, which costsim does not
            // model; LlamaConfig has no window.
            let sliding_window =
                match model_type.as_str() {
                    "mistral" => cfg.sliding_window.unwrap_or(Some(4096)),
                    "qwen2" if cfg.use_sliding_window == Some(true) => return Err(field(
                        "\"use_sliding_window\" is true: costsim does not model Qwen2's sliding \
                         window on the upper layers (the released configs' false); set it to false"
                            .into(),
                    )),
                    _ => None,
                };
            ModelConfig {
                name,
                family: Family::Llama,
                hidden,
                layers: cfg
                    .num_hidden_layers
                    .ok_or_else(|| missing("num_hidden_layers"))?,
                heads,
                kv_heads: cfg.num_key_value_heads.unwrap_or(heads),
                intermediate: cfg
                    .intermediate_size
                    .ok_or_else(|| missing("intermediate_size"))?,
                vocab: cfg.vocab_size.ok_or_else(|| missing("vocab_size"))?,
                max_positions: cfg
                    .max_position_embeddings
                    .ok_or_else(|| missing("max_position_embeddings"))?,
                tied_embeddings: cfg.tie_word_embeddings.unwrap_or(false),
                qkv_bias: model_type == "qwen2" || cfg.attention_bias.unwrap_or(false),
                other_bias: cfg.mlp_bias.unwrap_or(false),
                dropout: 0.0,
                sliding_window,
            }
        }
        other => {
            return Err(Error::ConfigField {
                path: origin.to_string(),
                message: format!(
                    "model_type {other:?} is not supported; costsim models gpt2, llama, mistral \
                     and qwen2 (use a preset or convert the config)"
                ),
            })
        }
    };
    config.validate().map_err(|e| Error::ConfigField {
        path: origin.to_string(),
        message: format!("{e}; correct the file's sizes (or use a preset: costsim models)"),
    })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_json_model_is_named_from_its_name_or_path_file_or_folder() {
        assert_eq!(
            model_name(Some("meta-llama/Llama-2-7b-hf"), "x/config.json"),
            "meta-llama/Llama-2-7b-hf"
        );
        assert_eq!(model_name(Some(" \n"), "models/llama-7b.json"), "llama-7b");
        assert_eq!(
            model_name(None, "models/tinyllama/config.json"),
            "tinyllama"
        );
        assert_eq!(model_name(None, "config.json"), "custom");
        assert_eq!(model_name(None, "./config.json"), "custom");
        assert_eq!(model_name(Some(&"x".repeat(300)), "config.json").len(), 100);
        // Through the parser: the field is read from the JSON.
        let text = r#"{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
            "vocab_size": 256, "n_positions": 128, "_name_or_path": "openai-community/gpt2"}"#;
        let m = parse_hf_config(text, "somewhere/config.json").expect("parses");
        assert_eq!(m.name, "openai-community/gpt2");
    }

    #[test]
    fn every_preset_matches_its_published_total_within_one_percent() {
        for p in PRESETS {
            let cfg = p.config();
            cfg.validate().unwrap();
            let total = cfg.total_params() as f64;
            let err = (total - p.published_params).abs() / p.published_params;
            assert!(
                err < 0.01,
                "{}: {} vs {} ({:.2}%)",
                p.name,
                total,
                p.published_params,
                err * 100.0
            );
        }
    }

    #[test]
    fn exact_counts_known_from_transformers() {
        // Values printed by `sum(p.numel() for p in model.parameters())` in transformers.
        assert_eq!(preset("gpt2").unwrap().total_params(), 124_439_808);
        assert_eq!(preset("llama2-7b").unwrap().total_params(), 6_738_415_616);
    }

    #[test]
    fn hf_config_llama_roundtrip() {
        let text = r#"{"model_type":"llama","hidden_size":4096,"num_hidden_layers":32,
            "num_attention_heads":32,"num_key_value_heads":32,"intermediate_size":11008,
            "vocab_size":32000,"max_position_embeddings":4096,"rms_norm_eps":1e-5}"#;
        let cfg = parse_hf_config(text, "cfg/llama/config.json").unwrap();
        assert_eq!(
            cfg.total_params(),
            preset("llama2-7b").unwrap().total_params()
        );
        assert_eq!(cfg.name, "llama");
    }

    /// Mistral's `sliding_window` as transformers 5.17's MistralConfig reads it: absent is its
    /// default 4096, `null` no window (Mistral v0.2 on), a length that length; 0 is refused.
    /// Llama has no window whatever the file says; Qwen2 windows only with `use_sliding_window`
    /// (and then only its upper layers), which is refused rather than costed as a full window.
    #[test]
    fn sliding_windows_are_read_as_transformers_reads_them() {
        let cfg = |model_type: &str, extra: &str| {
            format!(
                r#"{{"model_type": "{model_type}", "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 256,
                "max_position_embeddings": 128{extra}}}"#
            )
        };
        let window = |text: String| parse_hf_config(&text, "c.json").map(|m| m.sliding_window);
        assert_eq!(window(cfg("mistral", "")).unwrap(), Some(4096));
        assert_eq!(
            window(cfg("mistral", r#", "sliding_window": null"#)).unwrap(),
            None
        );
        assert_eq!(
            window(cfg("mistral", r#", "sliding_window": 16"#)).unwrap(),
            Some(16)
        );
        assert_eq!(
            window(cfg("llama", r#", "sliding_window": 16"#)).unwrap(),
            None
        );
        assert_eq!(
            window(cfg(
                "qwen2",
                r#", "sliding_window": 16, "use_sliding_window": false"#
            ))
            .unwrap(),
            None
        );
        for (extra, key) in [
            (r#", "sliding_window": 0"#, "sliding window of 0"),
            (
                r#", "sliding_window": 33554432"#,
                "sliding window 33554432 is above",
            ),
            (r#", "sliding_window": -1"#, "invalid value"),
        ] {
            let e = window(cfg("mistral", extra)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("c.json"), "{e}");
        }
        let e = window(cfg("qwen2", r#", "use_sliding_window": true"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"use_sliding_window\" is true"), "{e}");
        // A preset carries no window, and its JSON no key for it.
        let m = preset("mistral-7b").unwrap();
        assert_eq!(m.sliding_window, None);
        assert!(!serde_json::to_string(&m).unwrap().contains("sliding"));
    }

    /// The MLP's activation: GPT-2's gelu_new and Llama's SiLU (absent: those) are read; another
    /// is refused naming the key, not costed as the modelled one (an audit found `relu` costed
    /// as gelu_new's eight kernels, 2026-11-30).
    #[test]
    fn an_activation_other_than_the_modelled_one_is_refused() {
        let gpt2 = |extra: &str| {
            format!(
                r#"{{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
                "vocab_size": 256, "n_positions": 128{extra}}}"#
            )
        };
        let llama = |extra: &str| {
            format!(
                r#"{{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 256,
                "max_position_embeddings": 128{extra}}}"#
            )
        };
        for ok in [gpt2(""), gpt2(r#", "activation_function": "gelu_new""#)] {
            assert!(parse_hf_config(&ok, "c.json").is_ok(), "{ok}");
        }
        for ok in [
            llama(""),
            llama(r#", "hidden_act": "silu""#),
            llama(r#", "hidden_act": "swish""#),
        ] {
            assert!(parse_hf_config(&ok, "c.json").is_ok(), "{ok}");
        }
        for (bad, key) in [
            (
                gpt2(r#", "activation_function": "relu""#),
                "\"activation_function\" is \"relu\"",
            ),
            (
                llama(r#", "hidden_act": "gelu""#),
                "\"hidden_act\" is \"gelu\"",
            ),
        ] {
            let e = parse_hf_config(&bad, "c.json").unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("c.json"), "{e}");
        }
    }

    /// GPT-2's three dropout probabilities are read and checked by name; costsim models one, so
    /// they must agree. Llama's attention_dropout must be 0 (costsim models none).
    #[test]
    fn dropout_fields_are_read_checked_and_named() {
        let gpt2 = |extra: &str| {
            format!(
                r#"{{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
                "vocab_size": 256, "n_positions": 128{extra}}}"#
            )
        };
        let m = parse_hf_config(&gpt2(""), "c.json").unwrap();
        assert_eq!(m.dropout, 0.1);
        let m = parse_hf_config(
            &gpt2(r#", "resid_pdrop": 0.2, "embd_pdrop": 0.2, "attn_pdrop": 0.2"#),
            "c.json",
        )
        .unwrap();
        assert_eq!(m.dropout, 0.2);
        for (extra, want) in [
            (
                r#", "resid_pdrop": 1.5"#,
                "\"resid_pdrop\" is 1.5: a dropout probability",
            ),
            (
                r#", "attn_pdrop": -1"#,
                "\"attn_pdrop\" is -1: a dropout probability",
            ),
            (
                r#", "embd_pdrop": 0.0"#,
                "\"embd_pdrop\" is 0 and \"resid_pdrop\" 0.1",
            ),
            (
                r#", "resid_pdrop": 0.0, "attn_pdrop": 0.1"#,
                "\"attn_pdrop\" is 0.1 and \"resid_pdrop\" 0",
            ),
        ] {
            let err = parse_hf_config(&gpt2(extra), "c.json")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("c.json") && err.contains(want),
                "{extra}: {err}"
            );
        }
        // A string where a number belongs is a parse error, not ignored.
        assert!(parse_hf_config(&gpt2(r#", "embd_pdrop": "x""#), "c.json").is_err());
        let llama = |extra: &str| {
            format!(
                r#"{{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,
                "num_attention_heads":4,"intermediate_size":128,"vocab_size":256,
                "max_position_embeddings":128{extra}}}"#
            )
        };
        parse_hf_config(&llama(r#","attention_dropout":0.0"#), "c.json").unwrap();
        let err = parse_hf_config(&llama(r#","attention_dropout":0.5"#), "c.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"attention_dropout\" is 0.5"), "{err}");
    }

    #[test]
    fn qwen2_has_qkv_bias() {
        let text = r#"{"model_type":"qwen2","hidden_size":896,"num_hidden_layers":24,
            "num_attention_heads":14,"num_key_value_heads":2,"intermediate_size":4864,
            "vocab_size":151936,"max_position_embeddings":32768,"tie_word_embeddings":true}"#;
        let cfg = parse_hf_config(text, "config.json").unwrap();
        assert!(cfg.qkv_bias);
        // Qwen2-0.5B: 494,032,768 parameters (model card: 0.49B).
        assert_eq!(cfg.total_params(), 494_032_768);
    }

    #[test]
    fn absurd_sizes_are_rejected_not_overflowed() {
        let text = r#"{"model_type":"llama","hidden_size":4294967296,"num_hidden_layers":2,
            "num_attention_heads":1,"intermediate_size":8,"vocab_size":8,
            "max_position_embeddings":8}"#;
        let err = parse_hf_config(text, "c.json").unwrap_err().to_string();
        assert!(err.contains("hidden size 4294967296 is above"), "{err}");
    }

    #[test]
    fn head_dim_times_heads_does_not_wrap() {
        // 2^32 × 2^32 wraps to 0 in 64 bits; with hidden_size 0 a wrapped product would match.
        let text = r#"{"model_type":"llama","hidden_size":0,"num_hidden_layers":2,
            "num_attention_heads":4294967296,"head_dim":4294967296,"intermediate_size":8,
            "vocab_size":8,"max_position_embeddings":8}"#;
        let err = parse_hf_config(text, "c.json").unwrap_err().to_string();
        assert!(
            err.contains("head_dim 4294967296 × 4294967296 heads"),
            "{err}"
        );
    }

    #[test]
    fn gpt2_default_ffn_of_a_huge_width_is_refused_not_wrapped() {
        let text = r#"{"model_type":"gpt2","n_embd":9223372036854775807,"n_layer":1,"n_head":1,
            "vocab_size":8,"n_positions":8}"#;
        let err = parse_hf_config(text, "c.json").unwrap_err().to_string();
        assert!(
            err.contains("hidden size 9223372036854775807 is above"),
            "{err}"
        );
    }

    /// Minimised from the fuzz harness's findings on the code before issue 9 (docs/reliability.md):
    /// `unwrap_or(4 * d)` multiplied even when n_inner was given, and head_dim × heads wrapped.
    #[test]
    fn fuzz_findings_width_and_head_dim_products() {
        for (text, want) in [
            (
                r#"{"model_type":"gpt2","n_embd":9223372036854775807,"n_layer":2,"n_head":4,
                "n_inner":1,"vocab_size":1000,"n_positions":128}"#,
                "hidden size 9223372036854775807 is above",
            ),
            (
                r#"{"model_type":"llama","hidden_size":256,"num_hidden_layers":2,
                "num_attention_heads":8,"intermediate_size":688,"vocab_size":1000,
                "max_position_embeddings":256,"head_dim":9223372036854775807}"#,
                "head_dim 9223372036854775807 × 8 heads ≠ hidden_size 256",
            ),
        ] {
            let err = parse_hf_config(text, "c.json").unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn zero_layers_heads_and_indivisible_heads_are_refused() {
        let base = r#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,
            "num_attention_heads":4,"intermediate_size":8,"vocab_size":8,
            "max_position_embeddings":8}"#;
        assert!(parse_hf_config(base, "c.json").is_ok());
        for (from, to, want) in [
            (
                "\"num_hidden_layers\":2",
                "\"num_hidden_layers\":0",
                "must all be positive",
            ),
            (
                "\"num_attention_heads\":4",
                "\"num_attention_heads\":0",
                "must all be positive",
            ),
            (
                "\"num_attention_heads\":4",
                "\"num_attention_heads\":5",
                "not divisible",
            ),
        ] {
            let text = base.replace(from, to);
            assert_ne!(text, base);
            let err = parse_hf_config(&text, "c.json").unwrap_err().to_string();
            assert!(err.contains(want), "{to}: {err}");
        }
    }

    /// Every bound of `validate`, one field at a time on a valid model: zero is refused, each
    /// size limit is allowed and one above it refused, and key/value heads must divide the heads.
    #[test]
    fn each_bound_of_validate_holds_alone() {
        let ok = preset("llama2-7b").unwrap();
        ok.validate().unwrap();
        let refused = |f: &dyn Fn(&mut ModelConfig), want: &str| {
            let mut c = ok.clone();
            f(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        };
        refused(&|c| c.hidden = 0, "must all be positive");
        refused(&|c| c.layers = 0, "must all be positive");
        refused(&|c| c.heads = 0, "must all be positive");
        refused(&|c| c.vocab = 0, "must all be positive");
        refused(&|c| c.intermediate = 0, "must be positive");
        refused(&|c| c.max_positions = 0, "must be positive");
        refused(&|c| c.kv_heads = 0, "key/value heads");
        refused(&|c| c.kv_heads = 5, "not a multiple of 5 key/value heads");
        refused(&|c| c.dropout = 1.0, "not in [0, 1)");
        // At each limit: allowed; one above: refused.
        type Set = fn(&mut ModelConfig, u64);
        let limits: [(&str, Set, u64); 5] = [
            ("hidden size", |c, v| c.hidden = v, 1 << 20),
            ("layers", |c, v| c.layers = v as u32, 1 << 12),
            ("intermediate size", |c, v| c.intermediate = v, 1 << 22),
            ("vocabulary", |c, v| c.vocab = v, 1 << 24),
            ("max positions", |c, v| c.max_positions = v, 1 << 24),
        ];
        for (what, set, max) in limits {
            let mut c = ok.clone();
            set(&mut c, max);
            c.validate()
                .unwrap_or_else(|e| panic!("{what} at {max}: {e}"));
            set(&mut c, max + 1);
            let err = c.validate().unwrap_err().to_string();
            assert!(
                err.contains(&format!("{what} {} is above", max + 1)),
                "{err}"
            );
        }
    }

    #[test]
    fn unsupported_model_type_is_a_clear_error() {
        let err = parse_hf_config(r#"{"model_type":"bert"}"#, "c.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"bert\" is not supported"), "{err}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let err = |text: &str| parse_hf_config(text, "c.json").unwrap_err().to_string();
        let e = err(r#"{"model_type": "gpt2", "n_embd": 512.0, "n_layer": 2}"#);
        assert!(
            e.contains(r#""n_embd" must be a whole number, not floating point `512.0`"#),
            "{e}"
        );
        let e = err("{\"model_type\": \"gpt2\",\n \"n_layer\": \"ünf\", \"n_embd\": 64}");
        assert!(e.contains("c.json line 2") && e.contains(r#""n_layer" must be a whole number"#));
        let e = err(r#"{"model_type": "gpt2", "tie_word_embeddings": "yes"}"#);
        assert!(
            e.contains(r#""tie_word_embeddings" must be true or false"#),
            "{e}"
        );
        let e = err("[]");
        assert!(e.contains("not a JSON object"), "{e}");
        // Syntax errors stay serde's, with their position.
        let e = err(r#"{"model_type": "gpt2",, }"#);
        assert!(e.contains("at line 1 column"), "{e}");
    }

    #[test]
    fn an_unsupported_model_type_is_printed_escaped() {
        // A terminal's escape sequence in the name reaches the message escaped, not raw.
        let err = parse_hf_config("{\"model_type\":\"\\u001b[31mllama\"}", "c.json")
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\u{1b}'), "{err:?}");
        assert!(err.contains("\\u{1b}[31mllama"), "{err}");
    }

    #[test]
    fn malformed_json_names_line() {
        let err = parse_hf_config("{\n\"model_type\": \"llama\",\n oops}", "c.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.json line 3"), "{err}");
    }

    #[test]
    fn unknown_preset_suggests_nearest() {
        let err = preset("llama2-7").unwrap_err().to_string();
        assert!(err.contains("did you mean 'llama2-7b'"), "{err}");
    }
}
