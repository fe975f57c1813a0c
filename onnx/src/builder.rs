//! A small builder for ONNX graphs: initializers, nodes, typed inputs and outputs.

use prost::Message;

use crate::proto::*;

/// IR version 8 goes with opset 17..18; ONNX Runtime 1.31 reads both.
const IR_VERSION: i64 = 8;
pub const OPSET: i64 = 17;

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
    Str(String),
}

#[derive(Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    next_id: usize,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self { graph: GraphProto { name: name.into(), ..Default::default() }, next_id: 0 }
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
    pub fn initializer_bytes(&mut self, name: &str, elem: ElemType, dims: &[i64], raw: Vec<u8>) -> String {
        self.graph.initializer.push(TensorProto { dims: dims.to_vec(), data_type: elem as i32, name: name.into(), raw_data: raw });
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
        let name = self.fresh(&format!("{op}_node"));
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name,
            op_type: op.into(),
            attribute: attrs.iter().map(|(n, a)| attribute(n, a)).collect(),
            ..Default::default()
        });
    }

    /// A serialised `ModelProto` with the given metadata (label names, for instance).
    pub fn finish(self, producer: &str, metadata: &[(&str, String)]) -> Vec<u8> {
        let model = ModelProto {
            ir_version: IR_VERSION,
            producer_name: producer.into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(self.graph),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
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
    }
    a
}
