//! Weight initialisation.
//!
//! Every layer draws from its own key of the [`rng::STREAM_INIT`] stream, so
//! a layer's weights depend only on the seed, the layer's index and its
//! shape, and never on how many values earlier layers drew.

use crate::model::{Init, LayerParams, ModelSpec, Params};
use crate::rng;

/// Draws the initial parameters of `spec`: uniform weights with the limit of
/// each layer's [`Init`] scheme (fan in `I`, fan out `O`) and zero biases.
pub fn init_params(spec: &ModelSpec, seed: u64) -> Params {
    let layers = spec
        .layer_shapes()
        .into_iter()
        .enumerate()
        .map(|(index, (inputs, outputs))| {
            let limit = uniform_limit(spec.layer_init(index), inputs, outputs);
            let mut stream = rng::Stream::new(seed, layer_key(index));
            // w[O, I], drawn in row-major order.
            let w = (0..inputs * outputs)
                .map(|_| ((2.0 * stream.next_f64() - 1.0) * limit) as f32)
                .collect();
            LayerParams {
                inputs,
                outputs,
                w,
                b: vec![0.0; outputs],
            }
        })
        .collect();
    Params { layers }
}

/// Returns the bound `limit` of the `U(-limit, limit)` distribution of `init`.
pub fn uniform_limit(init: Init, fan_in: usize, fan_out: usize) -> f64 {
    let (fan_in, fan_out) = (fan_in.max(1) as f64, fan_out as f64);
    match init {
        Init::He => (6.0 / fan_in).sqrt(),
        Init::Glorot => (6.0 / (fan_in + fan_out)).sqrt(),
        Init::Lecun => (3.0 / fan_in).sqrt(),
    }
}

/// Key of layer `index` within the initialisation stream.
fn layer_key(index: usize) -> u64 {
    rng::mix64(rng::STREAM_INIT) ^ index as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LossKind;
    use crate::model::Activation;

    fn spec(init: Init) -> ModelSpec {
        ModelSpec {
            inputs: 300,
            hidden: vec![200, 100],
            activation: Activation::Relu,
            outputs: 10,
            loss: LossKind::SoftmaxCrossEntropy,
            init,
            dropout: 0.0,
        }
    }

    #[test]
    fn limits_follow_each_scheme() {
        assert!((uniform_limit(Init::He, 24, 7) - 0.5).abs() < 1e-12);
        assert!((uniform_limit(Init::Lecun, 12, 7) - 0.5).abs() < 1e-12);
        assert!((uniform_limit(Init::Glorot, 16, 8) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn weights_fill_the_range_and_biases_are_zero() {
        for init in [Init::He, Init::Glorot, Init::Lecun] {
            let spec = spec(init);
            let params = init_params(&spec, 9);
            assert_eq!(params.layers.len(), 3);
            for (index, layer) in params.layers.iter().enumerate() {
                let (inputs, outputs) = spec.layer_shapes()[index];
                assert_eq!((layer.inputs, layer.outputs), (inputs, outputs));
                assert_eq!(layer.w.len(), inputs * outputs);
                assert!(layer.b.iter().all(|&b| b == 0.0));

                let limit = uniform_limit(spec.layer_init(index), inputs, outputs) as f32;
                let max = layer.w.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
                assert!(max <= limit, "layer {index}: |w| {max} above limit {limit}");
                assert!(
                    max > 0.95 * limit,
                    "layer {index}: |w| {max} far below {limit}"
                );
                // U(-l, l) has mean 0 and variance l^2 / 3.
                let n = layer.w.len() as f64;
                let mean = layer.w.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
                let var = layer.w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n;
                let expected_var = f64::from(limit).powi(2) / 3.0;
                assert!(
                    mean.abs() < 0.05 * f64::from(limit),
                    "layer {index}: mean {mean}"
                );
                assert!(
                    (var / expected_var - 1.0).abs() < 0.1,
                    "layer {index}: variance {var}, expected {expected_var}"
                );
            }
        }
    }

    #[test]
    fn output_layer_uses_glorot() {
        // He's limit for fan in 100 is 0.245, Glorot's for 100 -> 10 is 0.234. With
        // 1000 draws the largest |w| separates the two.
        let params = init_params(&spec(Init::He), 3);
        let max = params.layers[2]
            .w
            .iter()
            .fold(0.0f32, |m, &v| m.max(v.abs()));
        let glorot = uniform_limit(Init::Glorot, 100, 10) as f32;
        assert!(
            max <= glorot,
            "output |w| {max} above the Glorot limit {glorot}"
        );
        assert!(max > 0.99 * glorot, "output |w| {max} far below {glorot}");
    }

    #[test]
    fn same_seed_same_weights() {
        let spec = spec(Init::Glorot);
        assert_eq!(init_params(&spec, 5), init_params(&spec, 5));
        assert_ne!(init_params(&spec, 5), init_params(&spec, 6));
    }

    #[test]
    fn layers_draw_different_values() {
        let spec = ModelSpec {
            inputs: 8,
            hidden: vec![8],
            outputs: 8,
            ..spec(Init::Lecun)
        };
        let params = init_params(&spec, 1);
        let first: Vec<f32> = params.layers[0].w.iter().map(|v| v.abs()).collect();
        let second: Vec<f32> = params.layers[1].w.iter().map(|v| v.abs()).collect();
        assert_ne!(first, second);
    }
}
