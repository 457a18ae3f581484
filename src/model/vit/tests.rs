//! Tests of [`super`].

use super::*;

#[test]
fn fused_attention_matches_the_naive_formula() {
    let _turn = crate::libtorch_turn();
    tch::manual_seed(3);
    let opts = (Kind::Float, Device::Cpu);
    let q = Tensor::randn([2, 3, 17, 8], opts) * 4.0;
    let k = Tensor::randn([2, 3, 17, 8], opts) * 4.0;
    let v = Tensor::randn([2, 3, 17, 8], opts);
    let fused = Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false);
    let naive = attention_reference(&q, &k, &v);
    let diff = (&fused - &naive).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "max difference {diff}");
    // Large logits stay finite (the softmax subtracts its max).
    let big =
        Tensor::scaled_dot_product_attention::<Tensor>(&(q * 1e3), &k, &v, None, 0.0, false, None, false);
    assert!(bool::try_from(big.isfinite().all()).unwrap());
}

#[test]
fn self_attention_heads_match_the_reference() {
    let _turn = crate::libtorch_turn();
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let attention = SelfAttention {
        qkv: linear(vs.root() / "qkv", 12, 36),
        out: linear(vs.root() / "out", 12, 12),
        heads: 3,
        dropout: 0.0,
    };
    let x = Tensor::randn([2, 5, 12], (Kind::Float, Device::Cpu));
    let got = attention.forward_t(&x, false);
    // Per head by hand: split q, k, v along features, attend, concatenate.
    let qkv = x.apply(&attention.qkv).split(12, -1);
    let heads: Vec<Tensor> = (0..3)
        .map(|h| {
            let part = |t: &Tensor| t.narrow(-1, 4 * h, 4);
            attention_reference(&part(&qkv[0]), &part(&qkv[1]), &part(&qkv[2]))
        })
        .collect();
    let want = Tensor::cat(&heads, -1).apply(&attention.out);
    let diff = (&got - &want).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "max difference {diff}");
}

#[test]
fn blocks_group_layers_and_shapes_follow_patches() {
    let _turn = crate::libtorch_turn();
    let config = crate::model::test_config(
        &[
            "model.kind=vit".into(),
            "model.patch_size=7".into(),
            "model.width=32".into(),
            "model.depth=5".into(),
            "model.heads=4".into(),
            "model.block_size=2".into(),
            "model.class_token=true".into(),
            "model.token_pool=cls".into(),
            "model.patch_embed=linear".into(),
        ],
        28,
    )
    .unwrap();
    let net = Network::new(&config, [1, 28, 28], Device::Cpu).unwrap();
    assert_eq!(net.len(), 3);
    let mut h = Tensor::randn([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    for block in &net.blocks {
        h = block.forward_t(&h, false);
        assert_eq!(h.size(), [2, 17, 32]);
        assert_eq!(block.pooling().apply(&h).size(), [2, 32]);
    }
    let e = Network::new(&config, [1, 30, 30], Device::Cpu).unwrap_err();
    assert!(format!("{e}").contains("model.patch_size"), "{e}");
}
