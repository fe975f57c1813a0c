//! The training recipe: every setting a job may choose, with its default and its range,
//! declared once in [`recipe!`]'s invocation below. From that one list come
//! - [`Recipe`], the settings a run trains with (the engine reads it; `Default` is the
//!   reference recipe: AdamW lr 1e-5, weight decay 0.01, 100 warmup steps, batch 16, up to
//!   8 epochs, max length 100, max pooling, early stopping patience 3),
//! - [`Hyperparameters`], what a job or a command line overrides (each optional; unknown
//!   names refused by serde; one `--flag` each for the trainer's local mode),
//! - [`HYPERPARAMETERS`], names and ranges, from which the API's schema and the checks
//!   every door makes ([`check_hyperparameters`]) are built.
//!
//! Adding a hyperparameter is one line here and its use in the engine.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::text::{brief, truncate};

/// How the aspect tokens' hidden states become one vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Element-wise max over aspect tokens (TD-BERT's choice, the default).
    #[default]
    Max,
    /// Mean over aspect tokens.
    Mean,
    /// The first token's hidden state (`[CLS]`, `<s>`): the encoder marks that token
    /// alone in the mask, so this pools like `Max` over it.
    Cls,
}

/// How a model reads an instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum InputForm {
    /// The text alone; the target is a span of it (the TD-BERT recipe for aspects).
    #[default]
    Text,
    /// Text and target as the encoder's sentence pair: the target need not occur.
    #[value(alias = "text_target_pair", alias = "pair")]
    TextTargetPair,
}

impl std::str::FromStr for InputForm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "text_target_pair" | "text-target-pair" | "pair" => Ok(Self::TextTargetPair),
            other => Err(format!("input form {other:?}: expected text or text_target_pair")),
        }
    }
}

impl InputForm {
    /// Pair input when any target comes without a span, else text input.
    pub fn for_spans(mut spans: impl Iterator<Item = bool>) -> Self {
        if spans.all(|has_span| has_span) {
            Self::Text
        } else {
            Self::TextTargetPair
        }
    }
}

/// How rows are padded in training batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// Each batch padded to its longest row, rows grouped by length.
    #[default]
    Dynamic,
    /// Every row padded to the max length, random order (the reference recipe).
    Fixed,
}

/// Which validation figure picks the best epoch and drives early stopping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SelectMetric {
    /// Lowest validation loss (the recipe's `eval_loss`).
    #[default]
    Loss,
    Accuracy,
    MacroF1,
}

/// How the ranks divide the model's state (FSDP's `ShardingStrategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Sharding {
    /// The device plan's choice: NoShard when the model trains on one device, else FullShard.
    #[default]
    Auto,
    NoShard,
    ShardGradOp,
    FullShard,
}

impl Sharding {
    /// Whether each rank holds only a part of the model's state.
    pub fn sharded(self) -> bool {
        matches!(self, Sharding::ShardGradOp | Sharding::FullShard)
    }
}

/// The forward pass's arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    /// bf16 autocast on CUDA and on CPUs with native bf16 (AMX or AVX-512 BF16),
    /// else fp32.
    #[default]
    Auto,
    Fp32,
    Bf16,
}

/// What values a hyperparameter takes.
#[derive(Clone, Copy, Debug)]
pub enum Range {
    /// A number in `min..=max`, or `min < x` when `min_exclusive`, `x < max` when `max_exclusive`.
    Float {
        min: f64,
        max: f64,
        min_exclusive: bool,
        max_exclusive: bool,
    },
    /// An integer in `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    /// One of the names an enum is written with (its serde names).
    Choice(fn() -> Vec<String>),
    Bool,
}

const fn closed(min: f64, max: f64) -> Range {
    Range::Float { min, max, min_exclusive: false, max_exclusive: false }
}
const fn int(min: i64, max: i64) -> Range {
    Range::Int { min, max }
}
/// The serde names of `T`'s variants.
fn names<T: ValueEnum + Serialize>() -> Vec<String> {
    T::value_variants().iter().filter_map(|v| serde_json::to_value(v).ok()?.as_str().map(str::to_owned)).collect()
}
const fn choice<T: ValueEnum + Serialize>() -> Range {
    Range::Choice(names::<T>)
}

/// A hyperparameter a training job accepts: its name and its range.
#[derive(Clone, Copy, Debug)]
pub struct Hyperparameter {
    pub name: &'static str,
    pub range: Range,
}

/// Declares the recipe: `name: type = default, range;` with the setting's docs (and any
/// `#[arg]` of its `--flag`) above it.
macro_rules! recipe {
    ($( $(#[$meta:meta])* $name:ident : $ty:ty = $default:expr, $range:expr; )*) => {
        /// The settings a run trains with; `Default` is the reference recipe (each is
        /// documented on [`Hyperparameters`]).
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct Recipe {
            $( pub $name: $ty, )*
        }

        impl Default for Recipe {
            fn default() -> Self {
                Self { $( $name: $default, )* }
            }
        }

        /// The recipe's settings a job (or a command line) overrides: each optional,
        /// unknown names refused.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, clap::Args)]
        #[serde(default, deny_unknown_fields)]
        pub struct Hyperparameters {
            $( $(#[$meta])* #[arg(long)] #[serde(skip_serializing_if = "Option::is_none")] pub $name: Option<$ty>, )*
        }

        impl Recipe {
            /// This recipe with every setting `overrides` gives.
            pub fn with(mut self, overrides: &Hyperparameters) -> Self {
                $( if let Some(value) = &overrides.$name { self.$name = value.clone(); } )*
                self
            }
        }

        /// Every hyperparameter a job may set, in the recipe's order.
        pub const HYPERPARAMETERS: &[Hyperparameter] = &[ $( Hyperparameter { name: stringify!($name), range: $range }, )* ];
    };
}

recipe! {
    /// AdamW's peak learning rate (after warmup, decaying linearly to 0).
    #[arg(alias = "lr")]
    learning_rate: f64 = 1e-5, Range::Float { min: 0.0, max: 1.0, min_exclusive: true, max_exclusive: false };
    /// AdamW's decoupled weight decay (not on biases and LayerNorm weights).
    weight_decay: f64 = 0.01, closed(0.0, 1.0);
    /// Optimizer steps of linear warmup.
    warmup_steps: i64 = 100, int(0, 1_000_000);
    /// Rows per optimizer micro-batch.
    batch_size: usize = 16, int(1, 1024);
    /// Micro-batches per optimizer step.
    gradient_accumulation_steps: usize = 1, int(1, 1024);
    /// The most epochs a run trains (early stopping may end it sooner).
    epochs: usize = 8, int(1, 100);
    /// Gradients are clipped to this global norm.
    max_grad_norm: f64 = 1.0, closed(0.0, 1.0e4);
    /// Share of each training label's probability spread evenly over all classes in the
    /// loss (0: plain cross-entropy); validation loss stays unsmoothed.
    label_smoothing_factor: f64 = 0.0, closed(0.0, 1.0);
    /// Seed of the initialisation of the head, the order of batches and dropout.
    seed: u64 = 42, int(0, 1 << 53);
    /// Seed of the validation split, separate so `seed` varies only the training.
    split_seed: u64 = 42, int(0, 1 << 53);
    /// Share of the training rows held out for validation when no validation set is given.
    validation_fraction: f64 = 0.1, Range::Float { min: 0.0, max: 1.0, min_exclusive: true, max_exclusive: true };
    /// Tokens per row, special tokens included (the model's own position limit is checked
    /// by the trainer, which reads its config).
    max_length: usize = 100, int(8, 8192);
    /// How the aspect tokens' hidden states become one vector.
    #[arg(value_enum)]
    pooling: Pooling = Pooling::Max, choice::<Pooling>();
    /// `text` (the target is a span of the text) or `text_target_pair` (the encoder's
    /// sentence pair: targets the text need not name); default: pair when a training row
    /// has no span.
    #[arg(value_enum)]
    input: Option<InputForm> = None, choice::<InputForm>();
    /// How rows are padded in training batches.
    #[arg(value_enum)]
    padding: Padding = Padding::Dynamic, choice::<Padding>();
    /// Epochs without a better validation figure before training stops.
    #[arg(alias = "patience")]
    early_stopping_patience: usize = 3, int(0, 100);
    /// Which validation figure picks the best epoch and drives early stopping.
    #[arg(value_enum)]
    select_metric: SelectMetric = SelectMetric::Loss, choice::<SelectMetric>();
    /// How several ranks divide the model (auto: the device plan's choice).
    #[arg(value_enum)]
    sharding: Sharding = Sharding::Auto, choice::<Sharding>();
    /// AdamW's moments (and, sharded, the fp32 master shard) in CPU memory, the update run
    /// there (ZeRO-Offload).
    #[arg(num_args = 0..=1, default_missing_value = "true")]
    offload_optimizer: bool = false, Range::Bool;
    /// The forward pass: bf16 autocast (fp32 master weights) or fp32; auto: bf16 on CUDA
    /// and on CPUs with AMX or AVX-512 BF16, else fp32.
    #[arg(value_enum)]
    precision: PrecisionChoice = PrecisionChoice::Auto, choice::<PrecisionChoice>();
}

/// Padded tokens in one optimizer micro-batch (`batch_size` x `max_length`): 1,024 rows
/// of 256 tokens, far above the recipe's 16 x 100, well below what exhausts a trainer's
/// memory with the largest model's activations.
pub const MAX_TOKENS_PER_BATCH: u64 = 262_144;

/// The names of [`HYPERPARAMETERS`], for messages.
pub fn hyperparameter_names() -> String {
    HYPERPARAMETERS.iter().map(|h| h.name).collect::<Vec<_>>().join(", ")
}

fn check_value(h: &Hyperparameter, value: &Value) -> Result<(), String> {
    let name = h.name;
    match h.range {
        Range::Float { min, max, min_exclusive, max_exclusive } => {
            let x = value.as_f64().ok_or_else(|| format!("{name}: a number, not {}", brief(value)))?;
            let low_ok = if min_exclusive { x > min } else { x >= min };
            let high_ok = if max_exclusive { x < max } else { x <= max };
            if !(low_ok && high_ok) {
                let (open, close) = (if min_exclusive { '(' } else { '[' }, if max_exclusive { ')' } else { ']' });
                return Err(format!("{name} {x}: outside {open}{min}, {max}{close}"));
            }
        }
        Range::Int { min, max } => {
            let x = value.as_i64().ok_or_else(|| format!("{name}: an integer, not {}", brief(value)))?;
            if x < min || x > max {
                return Err(format!("{name} {x}: outside [{min}, {max}]"));
            }
        }
        Range::Choice(names) => {
            let names = names();
            match value.as_str() {
                Some(s) if names.iter().any(|n| n == s) => {}
                _ => return Err(format!("{name} {}: expected one of {}", brief(value), names.join(", "))),
            }
        }
        Range::Bool => {
            if !value.is_boolean() {
                return Err(format!("{name}: true or false, not {}", brief(value)));
            }
        }
    }
    Ok(())
}

/// Unknown names and values out of range are refused (named by their path in a request,
/// `hyperparameters.NAME`); so is a batch of more than [`MAX_TOKENS_PER_BATCH`] padded tokens.
pub fn check_hyperparameters(hyperparameters: &Map<String, Value>) -> Result<(), String> {
    for (name, value) in hyperparameters {
        let h = HYPERPARAMETERS
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| format!("unknown hyperparameter {:?} (known: {})", truncate(name, 40), hyperparameter_names()))?;
        check_value(h, value).map_err(|e| format!("hyperparameters.{e}"))?;
    }
    let recipe = Recipe::default();
    let get = |name: &str, default: usize| hyperparameters.get(name).and_then(Value::as_u64).unwrap_or(default as u64);
    let (batch, length) = (get("batch_size", recipe.batch_size), get("max_length", recipe.max_length));
    if batch * length > MAX_TOKENS_PER_BATCH {
        return Err(format!("batch_size {batch} x max_length {length} = {} padded tokens a batch, over {MAX_TOKENS_PER_BATCH}", batch * length));
    }
    Ok(())
}

impl Hyperparameters {
    /// Checked as [`check_hyperparameters`] checks a request's, then typed.
    pub fn from_map(hyperparameters: &Map<String, Value>) -> Result<Self, String> {
        check_hyperparameters(hyperparameters)?;
        serde_json::from_value(Value::Object(hyperparameters.clone())).map_err(|e| format!("hyperparameters: {e}"))
    }

    /// The settings given, as a request writes them.
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }
}

/// [`HYPERPARAMETERS`] as the API documents them: an object with one optional property
/// per hyperparameter, its type, range and the recipe's default, and no others.
pub fn hyperparameters_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let defaults = serde_json::to_value(Recipe::default()).unwrap_or_default();
    let mut object = ObjectBuilder::new()
        .description(Some("Training settings; each is optional (the recipe's default applies) and checked against its range"))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for h in HYPERPARAMETERS {
        let property = match h.range {
            Range::Float { min, max, min_exclusive, max_exclusive } => {
                let p = ObjectBuilder::new().schema_type(Type::Number);
                let p = if min_exclusive { p.exclusive_minimum(Some(min)) } else { p.minimum(Some(min)) };
                if max_exclusive {
                    p.exclusive_maximum(Some(max))
                } else {
                    p.maximum(Some(max))
                }
            }
            Range::Int { min, max } => ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(min as f64)).maximum(Some(max as f64)),
            Range::Choice(names) => ObjectBuilder::new().schema_type(Type::String).enum_values(Some(names())),
            Range::Bool => ObjectBuilder::new().schema_type(Type::Boolean),
        };
        let default = defaults.get(h.name).filter(|d| !d.is_null()).cloned();
        object = object.property(h.name, property.default(default));
    }
    object.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_default_recipe_is_the_reference_one_and_within_every_range() {
        let recipe = Recipe::default();
        assert_eq!((recipe.learning_rate, recipe.weight_decay, recipe.warmup_steps, recipe.batch_size), (1e-5, 0.01, 100, 16));
        assert_eq!((recipe.epochs, recipe.max_length, recipe.pooling, recipe.early_stopping_patience), (8, 100, Pooling::Max, 3));
        let Value::Object(mut all) = serde_json::to_value(&recipe).unwrap() else { panic!("an object") };
        all.retain(|_, v| !v.is_null());
        assert_eq!(all.len(), HYPERPARAMETERS.len() - 1, "every setting but the unset input");
        check_hyperparameters(&all).unwrap();
        let typed = Hyperparameters::from_map(&all).unwrap();
        assert_eq!(Recipe { learning_rate: 0.5, ..Recipe::default() }.with(&typed), recipe, "every given setting overrides");
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let h = Hyperparameters::from_map(json!({ "epochs": 3, "pooling": "mean", "input": "text_target_pair" }).as_object().unwrap()).unwrap();
        let r = Recipe::default().with(&h);
        assert_eq!((r.epochs, r.pooling, r.input, r.learning_rate), (3, Pooling::Mean, Some(InputForm::TextTargetPair), 1e-5));
        assert_eq!(h.to_map(), *json!({ "epochs": 3, "pooling": "mean", "input": "text_target_pair" }).as_object().unwrap());
    }

    #[test]
    fn choices_are_the_serde_names() {
        assert_eq!(names::<SelectMetric>(), ["loss", "accuracy", "macro_f1"]);
        assert_eq!(names::<Sharding>(), ["auto", "no_shard", "shard_grad_op", "full_shard"]);
        assert_eq!(names::<InputForm>(), ["text", "text_target_pair"]);
    }

    #[test]
    fn the_schema_names_every_hyperparameter_with_its_default() {
        let schema = serde_json::to_value(hyperparameters_schema()).unwrap();
        let properties = schema["properties"].as_object().unwrap();
        assert_eq!(properties.len(), HYPERPARAMETERS.len());
        assert_eq!(properties["learning_rate"]["default"], 1e-5);
        assert_eq!(properties["pooling"]["enum"], json!(["max", "mean", "cls"]));
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn local_mode_flags_come_from_the_same_list() {
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            hyperparameters: Hyperparameters,
        }
        let args = <Args as clap::Parser>::try_parse_from(["train", "--lr", "5e-5", "--patience", "10", "--offload-optimizer", "--select-metric", "macro-f1"])
            .unwrap();
        let r = Recipe::default().with(&args.hyperparameters);
        assert_eq!((r.learning_rate, r.early_stopping_patience, r.offload_optimizer, r.select_metric), (5e-5, 10, true, SelectMetric::MacroF1));
    }
}
