//! Writes a small random-weight TD-BERT checkpoint (BERT layout, sentiment head) that
//! uses a real tokenizer's vocabulary, for runs where only the machinery matters and
//! MiniLM would take hours: the scorer's memory-flatness run over a million rows.
//!
//! `cargo run --release -p absa-trainer --example random_td_bert -- TOKENIZER_DIR OUT_DIR`

use std::path::PathBuf;

use absa_domain::LabelSet;
use absa_trainer::checkpoint::copy_tokenizer_files;
use absa_trainer::model::{EncoderConfig, Pooling, TdBertModel};
use serde_json::json;
use tch::{nn, Device};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(PathBuf::from);
    let (tokenizer_dir, out) = match (args.next(), args.next()) {
        (Some(t), Some(o)) => (t, o),
        _ => anyhow::bail!("usage: random_td_bert TOKENIZER_DIR OUT_DIR"),
    };
    let tokenizer = tokenizers::Tokenizer::from_file(tokenizer_dir.join("tokenizer.json")).map_err(anyhow::Error::msg)?;
    let labels = LabelSet::sentiment();
    let config = json!({
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "vocab_size": tokenizer.get_vocab_size(true),
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "hidden_act": "gelu",
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "id2label": labels.names().iter().enumerate().map(|(i, n)| (i.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "label2id": labels.names().iter().enumerate().map(|(i, n)| (n.clone(), json!(i))).collect::<serde_json::Map<_, _>>(),
    });
    std::fs::create_dir_all(&out)?;
    let config_path = out.join("config.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let encoder_config = EncoderConfig::from_file(&config_path)?;
    let _model = TdBertModel::new(&vs.root(), encoder_config, labels.len() as i64, Pooling::Max)?;
    vs.save(out.join("model.safetensors"))?;
    copy_tokenizer_files(&tokenizer_dir, &out)?;
    println!("{}", out.display());
    Ok(())
}
