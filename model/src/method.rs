//! Fine-tuning methods and which parameters they train.
//!
//! - Full fine-tuning: every parameter of the trained layers (plus embedding, final norm and head).
//! - LoRA (Hu et al.; Hugging Face peft `tuners/lora/layer.py`): frozen W plus B·A of rank r on
//!   each targeted linear, r·(k + n) trainable parameters per module.
//! - PaCA (Woo et al., arXiv 2503.01905, reference `peft/tuners/paca/layer.py`): r randomly chosen
//!   input columns of each targeted W train in place, n·r trainable parameters per module.
//! - Layer-selective training (the paper's "Upper Half" / "Three Quarters" PaCA): only a contiguous
//!   range of upper layers trains; nothing below it records a graph.
//!
//! Parameter matching follows `paper.md` (docs/sources.md): LoRA rank r ↔ PaCA rank 2r; upper-half
//! PaCA doubles it again (4r); three-quarters PaCA uses 3r (24 at LoRA rank 8).

use crate::arch::{LinearRole, ModelConfig};
use crate::workload::{DType, Precision};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a method does to a targeted linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodKind {
    Full,
    Lora,
    Paca,
}

/// The method names the CLI accepts, presets included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodName {
    Full,
    Lora,
    Paca,
    PacaUpperHalf,
    PacaThreeQuarters,
}

impl MethodName {
    pub const ALL: [MethodName; 5] = [
        Self::Full,
        Self::Lora,
        Self::Paca,
        Self::PacaUpperHalf,
        Self::PacaThreeQuarters,
    ];

    /// PaCA's column count per LoRA rank in the paper's matching (2r, upper half 4r, three
    /// quarters 3r); 1 for full fine-tuning and LoRA.
    pub fn matched_factor(self) -> u64 {
        match self {
            MethodName::Full | MethodName::Lora => 1,
            MethodName::Paca => 2,
            MethodName::PacaUpperHalf => 4,
            MethodName::PacaThreeQuarters => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Lora => "lora",
            Self::Paca => "paca",
            Self::PacaUpperHalf => "paca-upper-half",
            Self::PacaThreeQuarters => "paca-three-quarters",
        }
    }
}

impl fmt::Display for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MethodName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| Error::InvalidArgument {
                what: "--method".into(),
                message: format!(
                    "unknown method '{s}'; known: full, lora, paca, paca-upper-half, \
                     paca-three-quarters, all"
                ),
            })
    }
}

/// Which layers train.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum LayerSelection {
    All,
    /// The upper fraction of the layers (`upper:0.5` = upper half).
    Upper {
        fraction: f64,
    },
    /// The last K layers.
    Last {
        count: u32,
    },
    /// Layers `start..=end` (0-based, inclusive).
    Range {
        start: u32,
        end: u32,
    },
}

impl LayerSelection {
    /// The trained layer range `[lo, hi]` for a model with `layers` blocks.
    pub fn resolve(&self, layers: u32) -> Result<(u32, u32)> {
        let err = |m: String| Error::InvalidArgument {
            what: "--train-layers".into(),
            message: m,
        };
        let Some(top) = layers.checked_sub(1) else {
            return Err(err(
                "the model has no layers; give it at least one (num_hidden_layers ≥ 1)".into(),
            ));
        };
        match *self {
            Self::All => Ok((0, top)),
            Self::Upper { fraction } => {
                if !(fraction > 0.0 && fraction <= 1.0) {
                    return Err(err(format!(
                        "upper:{} must be a fraction in (0, 1]",
                        crate::shown(fraction)
                    )));
                }
                let count = ((f64::from(layers) * fraction).round() as u32).clamp(1, layers);
                Ok((layers - count, top))
            }
            Self::Last { count } => {
                if count == 0 || count > layers {
                    return Err(err(format!(
                        "last:{count} must train between 1 and {layers} layers (the model's depth)"
                    )));
                }
                Ok((layers - count, top))
            }
            Self::Range { start, end } => {
                if start > end || end >= layers {
                    return Err(err(format!(
                        "range {start}..{end} must satisfy start ≤ end < {layers} (layers are \
                         numbered from 0)"
                    )));
                }
                Ok((start, end))
            }
        }
    }
}

impl fmt::Display for LayerSelection {
    /// The form `--train-layers` reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::All => f.write_str("all"),
            Self::Upper { fraction } => write!(f, "upper:{fraction}"),
            Self::Last { count } => write!(f, "last:{count}"),
            Self::Range { start, end } => write!(f, "{start}..{end}"),
        }
    }
}

impl FromStr for LayerSelection {
    type Err = Error;
    /// `all`, `upper:F`, `last:K`, `A..B` or `A-B` (inclusive).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let err = || {
            Error::InvalidArgument {
            what: "--train-layers".into(),
            message: format!(
                "cannot read '{s}'; use all, upper:0.5, upper:0.75, last:K or a range such as 16..31"
            ),
        }
        };
        if s == "all" {
            return Ok(Self::All);
        }
        if let Some(f) = s.strip_prefix("upper:") {
            return f
                .parse()
                .map(|fraction| Self::Upper { fraction })
                .map_err(|_| err());
        }
        if let Some(k) = s.strip_prefix("last:") {
            return k
                .parse()
                .map(|count| Self::Last { count })
                .map_err(|_| err());
        }
        let (a, b) = s
            .split_once("..")
            .or_else(|| s.split_once('-'))
            .ok_or_else(err)?;
        let start = a.trim().parse().map_err(|_| err())?;
        let end = b
            .trim_start_matches('=')
            .trim()
            .parse()
            .map_err(|_| err())?;
        Ok(Self::Range { start, end })
    }
}

/// Which linear layers an adapter method targets: a set of [`LinearRole`]s, one bit each (the
/// enum is closed and has eight variants), so that a resolved method is `Copy`-cheap to build
/// and a membership test is a mask (a sweep resolves its method at every point). Serialized as
/// the list of roles in declaration order, as the `BTreeSet` it replaced was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets(u8);

impl Targets {
    /// Every role, in declaration order (the serialized order).
    const ROLES: [LinearRole; 8] = {
        use LinearRole::*;
        [Qkv, Q, K, V, O, Gate, Up, Down]
    };

    fn bit(role: LinearRole) -> u8 {
        1 << (role as u8)
    }

    /// The set of `roles`.
    pub fn of(roles: &[LinearRole]) -> Self {
        Self(roles.iter().fold(0, |m, &r| m | Self::bit(r)))
    }

    /// Every linear projection of the blocks (peft's "all-linear" minus the LM head).
    pub fn all() -> Self {
        Self::of(&Self::ROLES)
    }

    pub fn contains(&self, role: LinearRole) -> bool {
        self.0 & Self::bit(role) != 0
    }

    /// The targeted roles in declaration order.
    pub fn roles(&self) -> impl Iterator<Item = LinearRole> + '_ {
        Self::ROLES.into_iter().filter(|&r| self.contains(r))
    }

    /// Parse `all`, `attn`, `mlp` or a comma list of q,k,v,o,gate,up,down (GPT-2 names c_attn,
    /// c_proj, c_fc and mlp.c_proj are accepted too). On GPT-2 any of q, k, v selects the fused
    /// c_attn, since peft adapts that module whole.
    pub fn parse(s: &str) -> Result<Self> {
        use LinearRole::*;
        let mut set = Self(0);
        for item in s.split(',').map(|t| t.trim().to_ascii_lowercase()) {
            let roles: &[LinearRole] = match item.as_str() {
                "all" | "all-linear" => &[Qkv, Q, K, V, O, Gate, Up, Down],
                "attn" | "attention" => &[Qkv, Q, K, V, O],
                "mlp" => &[Gate, Up, Down],
                "q" | "q_proj" => &[Q, Qkv],
                "k" | "k_proj" => &[K, Qkv],
                "v" | "v_proj" => &[V, Qkv],
                "qkv" | "c_attn" => &[Qkv, Q, K, V],
                "o" | "o_proj" | "c_proj" | "attn.c_proj" => &[O],
                "gate" | "gate_proj" => &[Gate],
                "up" | "up_proj" | "c_fc" => &[Up],
                "down" | "down_proj" | "mlp.c_proj" => &[Down],
                _ => {
                    return Err(Error::InvalidArgument {
                        what: "--targets".into(),
                        message: format!(
                            "unknown target '{item}'; use all, attn, mlp or a list of \
                             q,k,v,o,gate,up,down"
                        ),
                    })
                }
            };
            set.0 |= Self::of(roles).0;
        }
        Ok(set)
    }

    /// Names of the targeted modules of a model, for display.
    pub fn describe(&self, model: &ModelConfig) -> String {
        let names: Vec<&str> = model
            .linears()
            .iter()
            .filter(|l| self.contains(l.role))
            .map(|l| l.path.rsplit('.').next().unwrap_or(l.path))
            .collect();
        names.join(",")
    }
}

impl Serialize for Targets {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.roles())
    }
}

/// Dtype of LoRA adapter weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterDtype {
    /// peft's default `autocast_adapter_dtype=True`: adapters kept in fp32.
    Fp32,
    /// Adapters in the base model's dtype.
    Base,
}

/// A fully resolved method: what trains, where, with which hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodSpec {
    pub name: MethodName,
    pub kind: MethodKind,
    /// LoRA rank or PaCA column count (0 for full).
    pub rank: u64,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Targets,
    pub adapter_dtype: AdapterDtype,
    pub layers: LayerSelection,
}

/// What the user asked for; `None` means the method's default.
#[derive(Debug, Clone, Default)]
pub struct MethodOptions {
    pub rank: Option<u64>,
    pub alpha: Option<f64>,
    pub dropout: Option<f64>,
    pub targets: Option<Targets>,
    pub adapter_dtype: Option<AdapterDtype>,
    pub layers: Option<LayerSelection>,
}

/// The paper's LoRA reference rank.
pub const PAPER_LORA_RANK: u64 = 8;

impl MethodSpec {
    /// Resolve a method with options. For `--method all` pass `reference_rank = true`: `--rank`
    /// is then the LoRA reference rank and the PaCA variants follow the paper's matching.
    pub fn resolve(
        name: MethodName,
        opts: &MethodOptions,
        model: &ModelConfig,
        reference_rank: bool,
    ) -> Result<Self> {
        let lora_rank = opts.rank.unwrap_or(PAPER_LORA_RANK);
        // PaCA's matching multiplies the LoRA rank (2r, 3r, 4r): checked, so a huge --rank is
        // an error rather than a wrapped small rank.
        let rank_for = |mult: u64| -> Result<u64> {
            if reference_rank {
                lora_rank
                    .checked_mul(mult)
                    .ok_or_else(|| Error::InvalidArgument {
                        what: "--rank".into(),
                        message: format!(
                        "LoRA rank {lora_rank} × {mult} (PaCA's matched rank) does not fit in 64 \
                         bits; choose a rank no larger than the model's hidden size ({})",
                        model.hidden
                    ),
                    })
            } else {
                Ok(opts.rank.unwrap_or(PAPER_LORA_RANK * mult))
            }
        };
        let factor = name.matched_factor();
        let (kind, rank, alpha, dropout, layers) = match name {
            MethodName::Full => (MethodKind::Full, 0, 0.0, 0.0, LayerSelection::All),
            MethodName::Lora => (MethodKind::Lora, lora_rank, 32.0, 0.1, LayerSelection::All),
            MethodName::Paca => (
                MethodKind::Paca,
                rank_for(factor)?,
                64.0,
                0.0,
                LayerSelection::All,
            ),
            MethodName::PacaUpperHalf => (
                MethodKind::Paca,
                rank_for(factor)?,
                64.0,
                0.0,
                LayerSelection::Upper { fraction: 0.5 },
            ),
            MethodName::PacaThreeQuarters => (
                MethodKind::Paca,
                rank_for(factor)?,
                64.0,
                0.0,
                LayerSelection::Upper { fraction: 0.75 },
            ),
        };
        let spec = Self {
            name,
            kind,
            rank,
            alpha: opts.alpha.unwrap_or(alpha),
            dropout: if kind == MethodKind::Lora {
                opts.dropout.unwrap_or(dropout)
            } else {
                0.0
            },
            targets: opts.targets.unwrap_or_else(Targets::all),
            adapter_dtype: opts.adapter_dtype.unwrap_or(AdapterDtype::Fp32),
            layers: opts.layers.unwrap_or(layers),
        };
        // Under --method all a PaCA variant's rank is the LoRA rank times its matching factor:
        // an error names both.
        let matched = (reference_rank && factor > 1).then_some((lora_rank, factor));
        spec.validate(model, matched)?;
        Ok(spec)
    }

    /// `matched`: (LoRA rank, factor) when the rank is PaCA's matched one under `--method all`.
    fn validate(&self, model: &ModelConfig, matched: Option<(u64, u64)>) -> Result<()> {
        let err = |what: &str, m: String| Error::InvalidArgument {
            what: what.into(),
            message: m,
        };
        if self.kind != MethodKind::Full {
            if self.rank == 0 {
                return Err(err("--rank", "rank must be at least 1".into()));
            }
            match self.max_rank(model) {
                None => {
                    return Err(err(
                        "--targets",
                        format!("no linear layer of {} matches the targets", model.name),
                    ))
                }
                Some(k) if self.rank > k => {
                    let message = match matched {
                        Some((r, mult)) => format!(
                            "{} trains {mult} × {r} = {} columns for --rank {r} (the paper's \
                             matching under --method all), more than the input width {k} of a \
                             targeted layer (hidden size {}); choose --rank ≤ {}, or predict the \
                             methods one at a time",
                            self.name,
                            self.rank,
                            model.hidden,
                            k / mult
                        ),
                        None => format!(
                            "rank {} exceeds the input width {k} of a targeted layer (hidden size \
                             {}); choose a rank ≤ {k}",
                            self.rank, model.hidden
                        ),
                    };
                    return Err(err("--rank", message));
                }
                _ => {}
            }
            if !self.alpha.is_finite() || self.alpha <= 0.0 {
                return Err(err(
                    "--alpha",
                    format!("alpha must be positive, got {}", crate::shown(self.alpha)),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(err(
                "--dropout",
                format!("dropout {} is not in [0, 1)", crate::shown(self.dropout)),
            ));
        }
        self.layers.resolve(model.layers)?;
        Ok(())
    }

    /// Dtype of the trainable tensors, their gradients and optimizer states under `precision`:
    /// LoRA's and PaCA's adapters in fp32 by default (peft's `autocast_adapter_dtype=True`; the
    /// PaCA reference's `torch.zeros`), else the precision's parameter dtype (fp32 master weights
    /// under mixed precision).
    pub fn master_dtype(&self, precision: Precision) -> DType {
        match (self.kind, self.adapter_dtype) {
            (MethodKind::Lora | MethodKind::Paca, AdapterDtype::Fp32) => DType::F32,
            _ => precision.param_dtype(),
        }
    }

    /// Trained layer range `[lo, hi]`.
    pub fn trained_layers(&self, model: &ModelConfig) -> (u32, u32) {
        // validated in `resolve`
        self.layers
            .resolve(model.layers)
            .unwrap_or((0, model.layers.saturating_sub(1)))
    }

    /// True when the embedding (and, for tied models, the LM head) trains: full fine-tuning
    /// whose trained layers start at layer 0.
    pub fn trains_embedding(&self, model: &ModelConfig) -> bool {
        self.kind == MethodKind::Full && self.trained_layers(model).0 == 0
    }

    /// True when the final norm and an untied LM head train (full fine-tuning).
    pub fn trains_head(&self, model: &ModelConfig) -> bool {
        self.kind == MethodKind::Full && (!model.tied_embeddings || self.trains_embedding(model))
    }

    /// Trainable parameters of one trained block.
    ///
    /// full: all block parameters; LoRA: Σ r·(k + n) over targeted linears; PaCA: Σ n·r.
    pub fn block_trainable(&self, model: &ModelConfig) -> u64 {
        match self.kind {
            MethodKind::Full => model.block_params(),
            MethodKind::Lora => model
                .linears()
                .iter()
                .filter(|l| self.targets.contains(l.role))
                .map(|l| self.rank * (l.in_features + l.out_features))
                .sum(),
            MethodKind::Paca => model
                .linears()
                .iter()
                .filter(|l| self.targets.contains(l.role))
                .map(|l| self.rank * l.out_features)
                .sum(),
        }
    }

    /// The largest rank an adapter method may train on `model`: the narrowest input width of a
    /// targeted linear (LoRA's A is r × k, PaCA trains r of the k input columns); `None` when
    /// no linear is targeted. The only bound on the rank that [`MethodSpec::resolve`] checks
    /// besides r ≥ 1.
    pub fn max_rank(&self, model: &ModelConfig) -> Option<u64> {
        model
            .linears()
            .iter()
            .filter(|l| self.targets.contains(l.role))
            .map(|l| l.in_features)
            .min()
    }

    /// For an adapter method, its trainable parameters per unit of rank:
    /// [`MethodSpec::trainable_params`] is the rank times this, exactly (an adapter's
    /// parameters are r·(k + n) or n·r a targeted linear, and nothing else trains). `None` for
    /// full fine-tuning. A sweep counts a rank line's parameters with it once a line.
    pub fn trainable_params_per_rank(&self, model: &ModelConfig) -> Option<u64> {
        match self.kind {
            MethodKind::Full => None,
            MethodKind::Lora | MethodKind::Paca => Some(
                Self {
                    rank: 1,
                    ..self.clone()
                }
                .trainable_params(model),
            ),
        }
    }

    /// Trainable parameters of the whole model.
    pub fn trainable_params(&self, model: &ModelConfig) -> u64 {
        let (lo, hi) = self.trained_layers(model);
        let mut total = u64::from(hi - lo + 1) * self.block_trainable(model);
        if self.trains_embedding(model) {
            total += model.embedding_params();
        }
        if self.kind == MethodKind::Full {
            total += model.final_norm_params();
            if self.trains_head(model) {
                total += model.head_params();
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::preset;

    fn spec(name: MethodName, model: &ModelConfig) -> MethodSpec {
        MethodSpec::resolve(name, &MethodOptions::default(), model, true).unwrap()
    }

    /// An adapter's trainable parameters are its rank times those per unit of rank, on every
    /// preset, method and layer selection, up to the largest rank; full fine-tuning has none.
    #[test]
    fn trainable_params_are_the_rank_times_those_per_rank() {
        for name in ["gpt2", "tinyllama-1.1b", "llama2-7b", "llama3-8b"] {
            let model = preset(name).unwrap();
            for m in MethodName::ALL {
                let base = spec(m, &model);
                let Some(per_rank) = base.trainable_params_per_rank(&model) else {
                    assert_eq!(m, MethodName::Full);
                    continue;
                };
                assert!(per_rank > 0, "{name} {m}");
                let max = base.max_rank(&model).unwrap();
                assert_eq!(max, model.hidden, "{name} {m}: the narrowest input");
                for r in [1, 2, 7, 64, 100, max - 1, max] {
                    let s = MethodSpec {
                        rank: r,
                        ..base.clone()
                    };
                    assert_eq!(s.trainable_params(&model), r * per_rank, "{name} {m} r {r}");
                }
            }
        }
    }

    #[test]
    fn method_names_read_back_in_any_case() {
        for m in MethodName::ALL {
            assert_eq!(m.as_str().parse::<MethodName>().unwrap(), m);
            let shouted = format!("  {}\t", m.as_str().to_ascii_uppercase());
            assert_eq!(shouted.parse::<MethodName>().unwrap(), m);
            assert_eq!(m.to_string(), m.as_str());
        }
        let err = "lorax".parse::<MethodName>().unwrap_err().to_string();
        assert!(err.contains("unknown method 'lorax'"), "{err}");
    }

    /// Each bound of `--train-layers` on a 32-layer model, at and beyond it, and the written form
    /// reading back as the same selection.
    #[test]
    fn layer_selections_resolve_within_their_bounds() {
        use LayerSelection::*;
        let ok = |s: LayerSelection| s.resolve(32).unwrap_or_else(|e| panic!("{s}: {e}"));
        let refused = |s: LayerSelection| assert!(s.resolve(32).is_err(), "{s} accepted");
        assert_eq!(ok(All), (0, 31));
        assert_eq!(ok(Upper { fraction: 1.0 }), (0, 31));
        assert_eq!(ok(Upper { fraction: 0.5 }), (16, 31));
        // A sliver still trains one layer.
        assert_eq!(ok(Upper { fraction: 0.001 }), (31, 31));
        refused(Upper { fraction: 0.0 });
        refused(Upper { fraction: 1.0001 });
        refused(Upper { fraction: f64::NAN });
        assert_eq!(ok(Last { count: 32 }), (0, 31));
        assert_eq!(ok(Last { count: 1 }), (31, 31));
        refused(Last { count: 0 });
        refused(Last { count: 33 });
        assert_eq!(ok(Range { start: 5, end: 5 }), (5, 5));
        assert_eq!(ok(Range { start: 0, end: 31 }), (0, 31));
        refused(Range { start: 6, end: 5 });
        refused(Range { start: 0, end: 32 });
        assert!(All.resolve(0).is_err(), "a model without layers");
        for s in [
            All,
            Upper { fraction: 0.75 },
            Last { count: 3 },
            Range { start: 2, end: 9 },
        ] {
            assert_eq!(s.to_string().parse::<LayerSelection>().unwrap(), s, "{s}");
        }
    }

    /// Every `--targets` word and the roles it selects.
    #[test]
    fn target_words_select_their_roles() {
        use LinearRole::*;
        for (word, want) in [
            ("all", vec![Qkv, Q, K, V, O, Gate, Up, Down]),
            ("all-linear", vec![Qkv, Q, K, V, O, Gate, Up, Down]),
            ("attn", vec![Qkv, Q, K, V, O]),
            ("attention", vec![Qkv, Q, K, V, O]),
            ("mlp", vec![Gate, Up, Down]),
            ("q", vec![Q, Qkv]),
            ("q_proj", vec![Q, Qkv]),
            ("k", vec![K, Qkv]),
            ("k_proj", vec![K, Qkv]),
            ("v", vec![V, Qkv]),
            ("v_proj", vec![V, Qkv]),
            ("qkv", vec![Qkv, Q, K, V]),
            ("c_attn", vec![Qkv, Q, K, V]),
            ("o", vec![O]),
            ("o_proj", vec![O]),
            ("c_proj", vec![O]),
            ("attn.c_proj", vec![O]),
            ("gate", vec![Gate]),
            ("gate_proj", vec![Gate]),
            ("up", vec![Up]),
            ("up_proj", vec![Up]),
            ("c_fc", vec![Up]),
            ("down", vec![Down]),
            ("down_proj", vec![Down]),
            ("mlp.c_proj", vec![Down]),
            (" Q , Down ", vec![Q, Qkv, Down]),
        ] {
            let got = Targets::parse(word).unwrap_or_else(|e| panic!("{word}: {e}"));
            assert_eq!(got, Targets::of(&want), "{word}");
        }
        assert!(Targets::parse("q,wo").is_err());
    }

    /// The head trains under full fine-tuning: an untied LM head always, a tied one (GPT-2's,
    /// the embedding's matrix) only when the embedding trains, i.e. from layer 0; adapters never.
    #[test]
    fn which_full_fine_tunings_train_the_head() {
        let full_from = |model: &str, layers: LayerSelection| {
            let m = preset(model).unwrap();
            let opts = MethodOptions {
                layers: Some(layers),
                ..MethodOptions::default()
            };
            let s = MethodSpec::resolve(MethodName::Full, &opts, &m, false).unwrap();
            (s.trains_embedding(&m), s.trains_head(&m))
        };
        let upper = LayerSelection::Upper { fraction: 0.5 };
        assert!(!preset("llama2-7b").unwrap().tied_embeddings);
        assert!(preset("gpt2").unwrap().tied_embeddings);
        assert_eq!(full_from("llama2-7b", LayerSelection::All), (true, true));
        assert_eq!(full_from("llama2-7b", upper), (false, true));
        assert_eq!(full_from("gpt2", LayerSelection::All), (true, true));
        assert_eq!(full_from("gpt2", upper), (false, false));
        let m = preset("llama2-7b").unwrap();
        assert!(!spec(MethodName::Lora, &m).trains_head(&m));
    }

    /// A single method's default rank (not the `--method all` reference): PaCA's matched 2r, 4r
    /// and 3r of the paper's LoRA rank 8.
    #[test]
    fn single_method_default_ranks() {
        let m = preset("llama2-7b").unwrap();
        let rank = |name| {
            MethodSpec::resolve(name, &MethodOptions::default(), &m, false)
                .unwrap()
                .rank
        };
        assert_eq!(rank(MethodName::Lora), 8);
        assert_eq!(rank(MethodName::Paca), 16);
        assert_eq!(rank(MethodName::PacaUpperHalf), 32);
        assert_eq!(rank(MethodName::PacaThreeQuarters), 24);
    }

    /// `validate`'s refusals, each alone: no targeted layer, a rank above the narrowest targeted
    /// input (equal is allowed), and an alpha that is not a positive finite number.
    #[test]
    fn method_options_are_validated_one_by_one() {
        let gpt2 = preset("gpt2").unwrap();
        let with = |opts: MethodOptions| MethodSpec::resolve(MethodName::Lora, &opts, &gpt2, false);
        let err = with(MethodOptions {
            targets: Some(Targets::parse("gate").unwrap()),
            ..MethodOptions::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("no linear layer of gpt2 matches"), "{err}");
        // GPT-2's narrowest targeted input is 768 wide.
        assert!(with(MethodOptions {
            rank: Some(768),
            ..MethodOptions::default()
        })
        .is_ok());
        let err = with(MethodOptions {
            rank: Some(769),
            ..MethodOptions::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rank 769 exceeds the input width 768"),
            "{err}"
        );
        for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = with(MethodOptions {
                alpha: Some(alpha),
                ..MethodOptions::default()
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains("alpha must be positive"), "{alpha}: {err}");
        }
    }

    #[test]
    fn paper_parameter_matching_on_llama2_7b() {
        let m = preset("llama2-7b").unwrap();
        let lora = spec(MethodName::Lora, &m);
        let paca = spec(MethodName::Paca, &m);
        let half = spec(MethodName::PacaUpperHalf, &m);
        let tq = spec(MethodName::PacaThreeQuarters, &m);
        assert_eq!((lora.rank, paca.rank, half.rank, tq.rank), (8, 16, 32, 24));
        // LoRA r=8 on q,k,v,o (4096→4096) and gate,up (4096→11008), down (11008→4096):
        // per layer 8·(4·8192 + 3·15104) = 624,640; ×32 = 19,988,480.
        assert_eq!(lora.trainable_params(&m), 19_988_480);
        // PaCA r=16: 16·(4·4096 + 2·11008 + 4096) = 16·42,496 = 679,936 per layer; ×32.
        assert_eq!(paca.trainable_params(&m), 21_757_952);
        // Upper half: 16 layers at rank 32 = the same count as 32 layers at rank 16.
        assert_eq!(half.trainable_params(&m), paca.trainable_params(&m));
        // Three quarters: 24 layers at rank 24.
        assert_eq!(tq.trainable_params(&m), 24 * 24 * 42_496);
        assert_eq!(
            spec(MethodName::Full, &m).trainable_params(&m),
            m.total_params()
        );
    }

    #[test]
    fn layer_selection_parsing_and_resolution() {
        let sel: LayerSelection = "upper:0.75".parse().unwrap();
        assert_eq!(sel.resolve(32).unwrap(), (8, 31));
        let sel: LayerSelection = "last:4".parse().unwrap();
        assert_eq!(sel.resolve(32).unwrap(), (28, 31));
        let sel: LayerSelection = "10..20".parse().unwrap();
        assert_eq!(sel.resolve(32).unwrap(), (10, 20));
        assert!("last:40"
            .parse::<LayerSelection>()
            .unwrap()
            .resolve(32)
            .is_err());
        assert!("upper:x".parse::<LayerSelection>().is_err());
    }

    #[test]
    fn rank_above_hidden_is_rejected() {
        let m = preset("gpt2").unwrap();
        let opts = MethodOptions {
            rank: Some(769),
            ..Default::default()
        };
        let err = MethodSpec::resolve(MethodName::Lora, &opts, &m, false).unwrap_err();
        assert!(
            err.to_string().contains("exceeds the input width 768"),
            "{err}"
        );
        let opts = MethodOptions {
            rank: Some(0),
            ..Default::default()
        };
        assert!(MethodSpec::resolve(MethodName::Paca, &opts, &m, false).is_err());
        // Under --method all a PaCA variant's matched rank names the LoRA rank and its factor:
        // --rank 512 is 1,024 columns for PaCA (≤ 384 fits), 2,048 for upper-half (≤ 192).
        let opts = MethodOptions {
            rank: Some(512),
            ..Default::default()
        };
        MethodSpec::resolve(MethodName::Lora, &opts, &m, true).expect("LoRA at 512 fits");
        for (name, cols, max) in [
            (MethodName::Paca, "2 × 512 = 1024", 384),
            (MethodName::PacaUpperHalf, "4 × 512 = 2048", 192),
            (MethodName::PacaThreeQuarters, "3 × 512 = 1536", 256),
        ] {
            let e = MethodSpec::resolve(name, &opts, &m, true)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("{name} trains {cols} columns for --rank 512"))
                    && e.contains(&format!("choose --rank ≤ {max},")),
                "{e}"
            );
        }
        // Given alone, the rank is PaCA's own and the plain message applies.
        let e = MethodSpec::resolve(
            MethodName::Paca,
            &MethodOptions {
                rank: Some(1024),
                ..opts
            },
            &m,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rank 1024 exceeds the input width 768"), "{e}");
    }

    #[test]
    fn targets_parse() {
        let t = Targets::parse("q,v").unwrap();
        assert!(
            t.contains(LinearRole::Q) && t.contains(LinearRole::V) && !t.contains(LinearRole::O)
        );
        assert!(Targets::parse("mlp").unwrap().contains(LinearRole::Down));
        assert!(Targets::parse("lm_head").is_err());
    }

    #[test]
    fn targets_are_a_set_listed_in_declaration_order() {
        // "down" first and "q" twice: the set holds each role once, listed as declared.
        let t = Targets::parse("down, q,q").unwrap();
        let roles: Vec<LinearRole> = t.roles().collect();
        assert_eq!(roles, [LinearRole::Qkv, LinearRole::Q, LinearRole::Down]);
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"["qkv","q","down"]"#);
        assert_eq!(Targets::all().roles().count(), 8);
        // A role given twice is in the set once.
        let q = LinearRole::Q;
        assert_eq!(Targets::of(&[q, q]), Targets::of(&[q]));
        for r in Targets::all().roles() {
            assert_eq!(Targets::of(&[r]).roles().collect::<Vec<_>>(), [r]);
            assert!(!Targets::parse("gate").unwrap().contains(r) || r == LinearRole::Gate);
        }
    }
}
