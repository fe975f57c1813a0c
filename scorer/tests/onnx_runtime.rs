//! A graph written from Rust runs through the real ONNX Runtime with dynamic batch size.

use absa_onnx::{Dim, ElemType, GraphBuilder};
use ndarray::{array, Array2};
use ort::value::TensorRef;

/// softmax(x · W + b) over a dynamic batch: the smallest graph with the shapes a
/// classifier has.
fn linear_softmax_model(w: &Array2<f32>, b: &[f32]) -> Vec<u8> {
    let mut g = GraphBuilder::new("linear_softmax");
    let x = g.input("x", ElemType::F32, &[Dim::Dynamic("batch"), Dim::Fixed(w.nrows() as i64)]);
    let w_name = g.initializer_f32("w", &[w.nrows() as i64, w.ncols() as i64], w.as_slice().unwrap());
    let b_name = g.initializer_f32("b", &[b.len() as i64], b);
    let xw = g.node("MatMul", &[&x, &w_name], &[]);
    let logits = g.node("Add", &[&xw, &b_name], &[]);
    g.node_named("Softmax", &[&logits], &["probabilities"], &[("axis", absa_onnx::Attr::Int(-1))]);
    g.output("probabilities", ElemType::F32, &[Dim::Dynamic("batch"), Dim::Fixed(w.ncols() as i64)]);
    g.finish("absa-test", &[("labels", "[\"a\",\"b\",\"c\"]".into())])
}

#[test]
fn a_rust_written_graph_runs_and_matches_the_arithmetic() {
    let w = array![[1.0f32, -1.0, 0.5], [0.25, 2.0, -0.5]];
    let b = [0.1f32, 0.0, -0.1];
    let model = linear_softmax_model(&w, &b);
    let mut session = absa_scorer::runtime::session_from_bytes(&model, 1).expect("session");

    for batch in [1usize, 4] {
        let x = Array2::from_shape_fn((batch, 2), |(i, j)| (i as f32 + 1.0) * if j == 0 { 0.5 } else { -0.25 });
        let outputs = session.run(ort::inputs!["x" => TensorRef::from_array_view(&x).unwrap()]).expect("run");
        let probs = outputs["probabilities"].try_extract_array::<f32>().expect("f32 output");
        assert_eq!(probs.shape(), &[batch, 3]);
        let logits = x.dot(&w) + ndarray::aview1(&b);
        for (row, expected_logits) in probs.outer_iter().zip(logits.outer_iter()) {
            let max = expected_logits.fold(f32::MIN, |m, &v| m.max(v));
            let exp: Vec<f32> = expected_logits.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            for (p, e) in row.iter().zip(exp.iter()) {
                assert!((p - e / sum).abs() < 1e-6, "{p} vs {}", e / sum);
            }
        }
    }
}

#[test]
fn a_corrupt_model_is_an_error_not_a_panic() {
    let err = absa_scorer::runtime::session_from_bytes(b"not an onnx file", 1).unwrap_err();
    assert!(err.to_string().contains("ONNX Runtime"), "{err}");
}
