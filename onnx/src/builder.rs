//! A small builder for ONNX graphs: initializers, nodes, typed inputs and outputs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::proto::*;

/// IR version 8 goes with opset 17..18; ONNX Runtime 1.31 reads both.
const IR_VERSION: i64 = 8;
pub const OPSET: i64 = 17;

/// ONNX Runtime's contrib-operator domain; a graph that uses it imports version 1.
pub const MICROSOFT_DOMAIN: &str = "com.microsoft";

/// Element types used by this project's graphs (`TensorProto.DataType` numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    F32 = 1,
    U8 = 2,
    I8 = 3,
    I32 = 6,
    I64 = 7,
    Bool = 9,
}

/// A dimension of a graph input or output: fixed, or named and dynamic.
#[derive(Clone, Debug)]
pub enum Dim {
    Fixed(i64),
    Dynamic(&'static str),
}

/// A node attribute value.
#[derive(Clone, Debug)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Str(String),
}

#[derive(Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    next_id: usize,
    /// Operator domains other than the default one that nodes use; each gets an
    /// opset import in [`GraphBuilder::finish`].
    domains: std::collections::BTreeSet<String>,
    /// Where large initializers go when the model would pass protobuf's 2 GiB limit.
    external: Option<ExternalData>,
}

/// A side file for initializer bytes (ONNX "external data"): weights are written as
/// they are added, so a model larger than memory allows as one protobuf still exports.
struct ExternalData {
    writer: BufWriter<File>,
    path: PathBuf,
    /// The file name the model refers to, relative to the model file.
    location: String,
    offset: u64,
}

/// ONNX Runtime memory-maps external data at offsets aligned to this.
const EXTERNAL_ALIGNMENT: u64 = 4096;
/// Initializers smaller than this stay inside the model file.
const EXTERNAL_MIN_BYTES: usize = 1024;

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self { graph: GraphProto { name: name.into(), ..Default::default() }, next_id: 0, domains: Default::default(), external: None }
    }

    /// Writes initializers of 1 KiB and more to `data_path` instead of the model file
    /// (which then refers to it by file name). Needed above protobuf's 2 GiB limit.
    pub fn with_external_data(mut self, data_path: &Path) -> std::io::Result<Self> {
        let location = data_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "external data path needs a UTF-8 file name"))?
            .to_owned();
        let writer = BufWriter::with_capacity(1 << 20, File::create(data_path)?);
        self.external = Some(ExternalData { writer, path: data_path.to_path_buf(), location, offset: 0 });
        Ok(self)
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> String {
        self.graph.input.push(value_info(name, elem, dims));
        name.to_owned()
    }

    /// Declares a graph output (the value must be produced by some node).
    pub fn output(&mut self, name: &str, elem: ElemType, dims: &[Dim]) {
        self.graph.output.push(value_info(name, elem, dims));
    }

    /// Adds a constant tensor from little-endian bytes and returns its name.
    ///
    /// # Panics
    /// When writing to the external data file fails; [`GraphBuilder::finish_to_file`]
    /// reports such failures instead, so use that with external data.
    pub fn initializer_bytes(&mut self, name: &str, elem: ElemType, dims: &[i64], raw: Vec<u8>) -> String {
        let mut tensor = TensorProto { dims: dims.to_vec(), data_type: elem as i32, name: name.into(), ..Default::default() };
        match self.external.as_mut().filter(|_| raw.len() >= EXTERNAL_MIN_BYTES) {
            Some(ext) => {
                let offset = ext.append(&raw).unwrap_or_else(|e| panic!("writing {}: {e}", ext.path.display()));
                tensor.data_location = 1;
                tensor.external_data = vec![
                    StringStringEntryProto { key: "location".into(), value: ext.location.clone() },
                    StringStringEntryProto { key: "offset".into(), value: offset.to_string() },
                    StringStringEntryProto { key: "length".into(), value: raw.len().to_string() },
                ];
            }
            None => tensor.raw_data = raw,
        }
        self.graph.initializer.push(tensor);
        name.to_owned()
    }

    pub fn initializer_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "{name}");
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer_bytes(name, ElemType::F32, dims, raw)
    }

    pub fn initializer_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer_bytes(name, ElemType::I64, dims, raw)
    }

    pub fn initializer_i8(&mut self, name: &str, dims: &[i64], data: &[i8]) -> String {
        debug_assert_eq!(dims.iter().product::<i64>() as usize, data.len(), "{name}");
        self.initializer_bytes(name, ElemType::I8, dims, data.iter().map(|&v| v as u8).collect())
    }

    /// A 0-d (scalar) constant, named automatically.
    pub fn scalar_f32(&mut self, value: f32) -> String {
        let name = self.fresh("const");
        self.initializer_f32(&name, &[], &[value])
    }

    pub fn scalar_i64(&mut self, value: i64) -> String {
        let name = self.fresh("const");
        self.initializer_i64(&name, &[], &[value])
    }

    /// A scalar or 1-D constant, named automatically.
    pub fn const_f32(&mut self, data: &[f32]) -> String {
        let name = self.fresh("const");
        let dims: Vec<i64> = if data.len() == 1 { vec![] } else { vec![data.len() as i64] };
        self.initializer_f32(&name, &dims, data)
    }

    pub fn const_i64(&mut self, data: &[i64]) -> String {
        let name = self.fresh("const");
        self.initializer_i64(&name, &[data.len() as i64], data)
    }

    /// Adds a node with one output, named automatically, and returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(op);
        self.node_named(op, inputs, &[&out], attrs);
        out
    }

    /// Adds a node whose outputs are named by the caller (graph outputs, for instance).
    pub fn node_named(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, Attr)]) {
        self.node_in_domain("", op, inputs, outputs, attrs);
    }

    /// A node with several outputs, named automatically.
    pub fn node_multi(&mut self, op: &str, inputs: &[&str], outputs: usize, attrs: &[(&str, Attr)]) -> Vec<String> {
        let names: Vec<String> = (0..outputs).map(|i| self.fresh(&format!("{op}_out{i}"))).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.node_named(op, inputs, &refs, attrs);
        names
    }

    /// A node of another operator domain with one output, named automatically.
    pub fn node_with_domain(&mut self, domain: &str, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(op);
        self.node_in_domain(domain, op, inputs, &[&out], attrs);
        out
    }

    /// A node of another operator domain (`com.microsoft` contrib operators, say).
    /// An empty input name stands for an omitted optional input, as ONNX specifies.
    pub fn node_in_domain(&mut self, domain: &str, op: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, Attr)]) {
        if !domain.is_empty() {
            self.domains.insert(domain.to_owned());
        }
        let name = self.fresh(&format!("{op}_node"));
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name,
            op_type: op.into(),
            domain: domain.into(),
            attribute: attrs.iter().map(|(n, a)| attribute(n, a)).collect(),
            ..Default::default()
        });
    }

    /// The nodes added so far, for inspection.
    pub fn nodes(&self) -> &[NodeProto] {
        &self.graph.node
    }

    /// Writes the model to `path` (and flushes its external data file, if any).
    pub fn finish_to_file(mut self, path: &Path, producer: &str, metadata: &[(&str, String)]) -> std::io::Result<u64> {
        if let Some(mut ext) = self.external.take() {
            ext.writer.flush()?;
            ext.writer.get_mut().sync_all()?;
        }
        let bytes = self.finish(producer, metadata);
        std::fs::write(path, &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// A serialised `ModelProto` with the given metadata (label names, for instance).
    /// With external data, use [`GraphBuilder::finish_to_file`], which flushes it.
    pub fn finish(self, producer: &str, metadata: &[(&str, String)]) -> Vec<u8> {
        let model = ModelProto {
            ir_version: IR_VERSION,
            producer_name: producer.into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(self.graph),
            opset_import: std::iter::once(OperatorSetIdProto { domain: String::new(), version: OPSET })
                .chain(self.domains.iter().map(|d| OperatorSetIdProto { domain: d.clone(), version: 1 }))
                .collect(),
            metadata_props: metadata.iter().map(|(k, v)| StringStringEntryProto { key: k.to_string(), value: v.clone() }).collect(),
            ..Default::default()
        };
        model.encode_to_vec()
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.next_id += 1;
        format!("{stem}_{}", self.next_id)
    }
}

impl ExternalData {
    /// Appends `raw` at the next aligned offset and returns that offset.
    fn append(&mut self, raw: &[u8]) -> std::io::Result<u64> {
        let aligned = self.offset.div_ceil(EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT;
        if aligned > self.offset {
            self.writer.write_all(&vec![0u8; (aligned - self.offset) as usize])?;
        }
        self.writer.write_all(raw)?;
        self.offset = aligned + raw.len() as u64;
        Ok(aligned)
    }
}

fn value_info(name: &str, elem: ElemType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| TensorShapeDimension {
            value: Some(match d {
                Dim::Fixed(n) => DimensionValue::DimValue(*n),
                Dim::Dynamic(p) => DimensionValue::DimParam((*p).into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto { tensor_type: Some(TypeProtoTensor { elem_type: elem as i32, shape: Some(TensorShapeProto { dim }) }) }),
    }
}

fn attribute(name: &str, value: &Attr) -> AttributeProto {
    let mut a = AttributeProto { name: name.into(), ..Default::default() };
    match value {
        Attr::Int(i) => (a.i, a.r#type) = (*i, 2),
        Attr::Float(f) => (a.f, a.r#type) = (*f, 1),
        Attr::Str(s) => (a.s, a.r#type) = (s.as_bytes().to_vec(), 3),
        Attr::Ints(v) => (a.ints, a.r#type) = (v.clone(), 7),
        Attr::Floats(v) => (a.floats, a.r#type) = (v.clone(), 6),
    }
    a
}
