//! What ranks send each other, as bytes: minibatch messages, loss sums, block tensors
//! and replicas' shares of a minibatch.

use crate::learner::Model;
use crate::rules::terms::{BlockLoss, Terms};
use crate::train::pipeline::Minibatch;
use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

/// Replica `replica`'s rows of a minibatch of `rows` rows, as (first row, count): the
/// `replicas` split it in order into runs that differ by at most one row.
pub(super) fn share(rows: i64, replicas: usize, replica: usize) -> (i64, i64) {
    let (r, j) = (replicas as i64, replica as i64);
    let start = rows * j / r;
    (start, rows * (j + 1) / r - start)
}

/// Loss sums as numbers: per block its index, its number of terms, their values (the
/// names are the block's rule's, known to every rank).
pub(super) fn encode_losses(sums: &[BlockLoss]) -> Vec<f64> {
    sums.iter()
        .flat_map(|l| {
            [l.block as f64, l.terms.0.len() as f64]
                .into_iter()
                .chain(l.terms.0.iter().map(|(_, v)| *v))
        })
        .collect()
}

/// Reads back what [`encode_losses`] wrote, naming the terms after `model`'s rules.
pub(super) fn decode_losses(model: &Model, mut values: &[f64]) -> Result<Vec<BlockLoss>> {
    let mut out = vec![];
    while let [block, n, rest @ ..] = values {
        let (block, n) = (*block as usize, *n as usize);
        let rule = model.rules.get(block).context("loss of an unknown block")?;
        let names = rule.term_names();
        if rest.len() < n || n != names.len() {
            bail!("malformed loss message for block {}", block + 1);
        }
        let terms = names
            .iter()
            .zip(&rest[..n])
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        out.push(BlockLoss {
            block,
            terms: Terms(terms),
        });
        values = &rest[n..];
    }
    if !values.is_empty() {
        bail!("malformed loss message");
    }
    Ok(out)
}

/// Little-endian i64 words, as the header of a minibatch message.
fn push_words(out: &mut Vec<u8>, words: &[i64]) {
    out.extend(words.iter().flat_map(|w| w.to_le_bytes()));
}

/// Appends a tensor's dims (count first) to `header` and its bytes (as `kind`) to `data`.
fn push_tensor(header: &mut Vec<i64>, data: &mut Vec<u8>, t: &Tensor, kind: Kind) {
    let t = t.to_device(Device::Cpu).to_kind(kind).contiguous();
    let dims = t.size();
    header.push(dims.len() as i64);
    header.extend(&dims);
    let start = data.len();
    data.resize(start + t.numel() * kind.elt_size_in_bytes(), 0);
    t.copy_data_u8(&mut data[start..], t.numel());
}

/// The activations' kind on the wire: bf16 as computed in a bf16 run (half the bytes
/// of f32, and exact), f32 otherwise.
fn wire_kind(h: &Tensor) -> (i64, Kind) {
    match h.kind() {
        Kind::BFloat16 => (1, Kind::BFloat16),
        _ => (0, Kind::Float),
    }
}

/// One minibatch as bytes: header length, then the header (step, the activations'
/// kind (0: f32, 1: bf16), then each tensor's dims: h, what the rule passes on (0 dims
/// when absent), y), then h in its kind, the message as f32 and y as i64.
pub(super) fn encode(m: &Minibatch) -> Vec<u8> {
    let (code, h_kind) = wire_kind(&m.h);
    let (mut header, mut data) = (vec![m.step as i64, code], vec![]);
    push_tensor(&mut header, &mut data, &m.h, h_kind);
    match &m.passed {
        Some(passed) => push_tensor(&mut header, &mut data, passed, Kind::Float),
        None => header.push(0),
    }
    push_tensor(&mut header, &mut data, &m.y, Kind::Int64);
    let mut out = Vec::with_capacity(8 * (header.len() + 1) + data.len());
    push_words(&mut out, &[header.len() as i64]);
    push_words(&mut out, &header);
    out.extend(data);
    out
}

/// Reads back what [`encode`] wrote, onto `device`.
pub(super) fn decode(bytes: &[u8], device: Device) -> Result<Minibatch> {
    let mut words = bytes
        .chunks_exact(8)
        .map(|w| i64::from_le_bytes(w.try_into().expect("8 bytes")));
    let mut word = || words.next().context("message too short");
    let header_len = word()? as usize;
    let mut header = Vec::with_capacity(header_len);
    for _ in 0..header_len {
        header.push(word()?);
    }
    let mut data = bytes.get(8 * (header_len + 1)..).context("message too short")?;
    let mut header = header.into_iter();
    let step = header.next().context("empty header")? as usize;
    let h_kind = match header.next().context("header too short")? {
        0 => Kind::Float,
        1 => Kind::BFloat16,
        code => bail!("unknown activation kind {code} in a minibatch message"),
    };
    let mut tensor = |kind: Kind| -> Result<Option<Tensor>> {
        let rank = header.next().context("header too short")? as usize;
        if rank == 0 {
            return Ok(None);
        }
        let dims: Vec<i64> = header.by_ref().take(rank).collect();
        let len = dims.iter().product::<i64>() as usize * kind.elt_size_in_bytes();
        if dims.len() != rank || data.len() < len {
            bail!("message too short for a tensor of shape {dims:?}");
        }
        let t = Tensor::from_data_size(&data[..len], &dims, kind).to_device(device);
        data = &data[len..];
        Ok(Some(t))
    };
    let h = tensor(h_kind)?.context("no activations")?;
    let passed = tensor(Kind::Float)?;
    let y = tensor(Kind::Int64)?.context("no labels")?;
    Ok(Minibatch { step, h, passed, y })
}

/// Block `i`'s tensors (parameters and buffers, its head's included) in name order, as
/// one f32 vector.
pub(super) fn block_values(model: &Model, i: usize) -> Result<Vec<f32>> {
    let mut values = vec![];
    for (_, t) in sorted_variables(model, i) {
        values.extend(Vec::<f32>::try_from(
            &t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1),
        )?);
    }
    Ok(values)
}

/// Copies what [`block_values`] produced on another rank into block `i` of `model`.
pub(super) fn load_block(model: &Model, i: usize, values: &[f32]) -> Result<()> {
    let variables = sorted_variables(model, i);
    let expected: usize = variables.iter().map(|(_, t)| t.numel()).sum();
    if values.len() != expected {
        bail!(
            "{} values, expected {expected} (different configs on different ranks?)",
            values.len()
        );
    }
    let mut at = 0;
    tch::no_grad(|| {
        for (_, mut t) in variables {
            let n = t.numel();
            let source = Tensor::from_slice(&values[at..at + n]).reshape(t.size());
            t.copy_(&source.to_kind(t.kind()).to_device(t.device()));
            at += n;
        }
    });
    Ok(())
}

fn sorted_variables(model: &Model, i: usize) -> Vec<(String, Tensor)> {
    let mut variables: Vec<_> = model.network.stores[i].variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    variables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_share_a_minibatch_in_order() {
        assert_eq!(share(128, 1, 0), (0, 128));
        let shares: Vec<_> = (0..3).map(|j| share(100, 3, j)).collect();
        assert_eq!(shares, vec![(0, 33), (33, 33), (66, 34)]);
        assert_eq!(share(1, 2, 0), (0, 0));
    }

    #[test]
    fn minibatch_messages_round_trip() {
        let _turn = crate::libtorch_turn();
        let h = Tensor::randn([5, 3, 2, 2], (Kind::Float, Device::Cpu));
        let log_q = Tensor::randn([5, 7], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[3i64, 1, 4, 1, 5]);
        for log_q in [Some(log_q), None] {
            let m = Minibatch {
                step: 42,
                h: h.shallow_clone(),
                passed: log_q.as_ref().map(|t| t.shallow_clone()),
                y: y.shallow_clone(),
            };
            let back = decode(&encode(&m), Device::Cpu).unwrap();
            assert_eq!(back.step, 42);
            assert!(back.h.equal(&h));
            assert_eq!(back.passed.is_some(), log_q.is_some());
            if let (Some(a), Some(b)) = (&back.passed, &log_q) {
                assert!(a.equal(b));
            }
            assert!(back.y.equal(&y));
            let bytes = encode(&m);
            assert!(decode(&bytes[..bytes.len() - 1], Device::Cpu).is_err());
            assert!(decode(&bytes[..12], Device::Cpu).is_err());
        }
    }

    #[test]
    fn bf16_activations_travel_as_bf16() {
        let _turn = crate::libtorch_turn();
        let h = Tensor::randn([4, 6], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
        let m = Minibatch {
            step: 7,
            h: h.shallow_clone(),
            passed: None,
            y: Tensor::from_slice(&[0i64, 1, 2, 3]),
        };
        let bytes = encode(&m);
        let f32_bytes = encode(&Minibatch {
            h: h.to_kind(Kind::Float),
            ..Minibatch {
                step: 7,
                h: h.shallow_clone(),
                passed: None,
                y: m.y.shallow_clone(),
            }
        });
        assert_eq!(f32_bytes.len() - bytes.len(), 24 * 2, "2 bytes per value, not 4");
        let back = decode(&bytes, Device::Cpu).unwrap();
        assert_eq!(back.h.kind(), Kind::BFloat16);
        assert!(back.h.equal(&h));
    }
}
