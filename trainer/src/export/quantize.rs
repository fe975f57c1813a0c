//! Dynamic int8 quantization, as onnxruntime's `quantize_dynamic` does it with
//! `per_channel=True` (the setting that kept the peer's accuracy): each MatMul weight
//! is int8, symmetric, one scale per output column; the activation is quantized per
//! batch to uint8 by `DynamicQuantizeLinear`. The subgraph is the one that quantizer
//! writes (`DynamicQuantizeLinear` -> `MatMulInteger` -> `Cast` -> `Mul` by the product
//! of the scales), which ONNX Runtime fuses into `DynamicQuantizeMatMul` /
//! `MatMulIntegerToFloat` with the bias folded in. The graph stays standard opset 17.

use absa_onnx::{Attr, ElemType, GraphBuilder};

/// A weight quantized per output channel, laid out `[in, out]` for `MatMul(x, W)`.
pub struct QuantizedWeight {
    pub values: Vec<i8>,
    /// One scale per output column: `w ≈ values * scale`.
    pub scales: Vec<f32>,
    pub inputs: usize,
    pub outputs: usize,
}

/// Quantizes a torch `Linear` weight (`[out, in]`, row-major) symmetrically to
/// [-127, 127] per output row, rounding half to even like numpy, and transposes it.
pub fn quantize_per_output_channel(weight: &[f32], outputs: usize, inputs: usize) -> QuantizedWeight {
    assert_eq!(weight.len(), outputs * inputs);
    let mut values = vec![0i8; outputs * inputs];
    let mut scales = Vec::with_capacity(outputs);
    for o in 0..outputs {
        let row = &weight[o * inputs..(o + 1) * inputs];
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        // An all-zero row keeps scale 1 so dequantization never divides by zero.
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        for (i, &w) in row.iter().enumerate() {
            values[i * outputs + o] = (w / scale).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        scales.push(scale);
    }
    QuantizedWeight { values, scales, inputs, outputs }
}

/// The three outputs of `DynamicQuantizeLinear` for one activation.
#[derive(Clone)]
pub struct QuantizedActivation {
    pub values: String,
    pub scale: String,
    pub zero_point: String,
}

pub fn quantize_activation(g: &mut GraphBuilder, x: &str) -> QuantizedActivation {
    let mut out = g.node_multi("DynamicQuantizeLinear", &[x], 3, &[]).into_iter();
    let (values, scale, zero_point) = (out.next().unwrap(), out.next().unwrap(), out.next().unwrap());
    QuantizedActivation { values, scale, zero_point }
}

/// `x · W` in float from the quantized activation and weight (no bias).
pub fn matmul(g: &mut GraphBuilder, x: &QuantizedActivation, w: &QuantizedWeight, name: &str) -> String {
    let dims = [w.inputs as i64, w.outputs as i64];
    let wq = g.initializer_i8(&format!("{name}.weight_quantized"), &dims, &w.values);
    let ws = g.initializer_f32(&format!("{name}.weight_scale"), &[w.outputs as i64], &w.scales);
    let wz = g.initializer_i8(&format!("{name}.weight_zero_point"), &[w.outputs as i64], &vec![0i8; w.outputs]);
    let scale = g.node("Mul", &[&x.scale, &ws], &[]);
    let product = g.node("MatMulInteger", &[&x.values, &wq, &x.zero_point, &wz], &[]);
    let float = g.node("Cast", &[&product], &[("to", Attr::Int(ElemType::F32 as i64))]);
    g.node("Mul", &[&float, &scale], &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_output_channel_gets_its_own_scale_and_round_trips_within_half_a_step() {
        // 2 outputs x 3 inputs.
        let w = [0.5f32, -1.0, 0.25, 0.01, 0.02, -0.03];
        let q = quantize_per_output_channel(&w, 2, 3);
        assert_eq!(q.scales, vec![1.0 / 127.0, 0.03 / 127.0]);
        // Transposed: element (in i, out o) sits at i * 2 + o.
        assert_eq!(q.values[2], -127); // in 1, out 0
        assert_eq!(q.values[2 * 2 + 1], -127);
        for o in 0..2 {
            for i in 0..3 {
                let back = q.values[i * 2 + o] as f32 * q.scales[o];
                assert!((back - w[o * 3 + i]).abs() <= q.scales[o] / 2.0 + 1e-9);
            }
        }
    }

    #[test]
    fn an_all_zero_channel_quantizes_to_zeros_with_scale_one() {
        let q = quantize_per_output_channel(&[0.0, 0.0], 1, 2);
        assert_eq!((q.values, q.scales), (vec![0, 0], vec![1.0]));
    }
}
