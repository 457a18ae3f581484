//! Tests of [`super`].

use super::*;

fn plan(blocks: usize, stages: usize, threads: usize) -> Result<Stages> {
    let train = TrainConfig {
        stages,
        threads,
        ..Default::default()
    };
    Stages::plan(&train, blocks)
}

#[test]
fn stages_split_blocks_evenly_earlier_stages_first() {
    let _turn = crate::libtorch_turn();
    assert_eq!(plan(3, 2, 1).unwrap().blocks, vec![0..2, 2..3]);
    assert_eq!(plan(3, 0, 1).unwrap().blocks, vec![0..1, 1..2, 2..3]);
    assert_eq!(plan(7, 3, 1).unwrap().blocks, vec![0..3, 3..5, 5..7]);
    assert_eq!(plan(4, 1, 2).unwrap().blocks, vec![0..4]);
    let e = plan(3, 4, 1).unwrap_err().to_string();
    assert!(e.contains("train.stages") && e.contains("3 blocks"), "{e}");
}

#[test]
fn stages_are_named_by_their_blocks() {
    let _turn = crate::libtorch_turn();
    assert_eq!(stage_name(0, &(0..2)), "stage 1 (blocks 1–2)");
    assert_eq!(stage_name(1, &(2..3)), "stage 2 (block 3)");
    let stages = plan(3, 2, 1).unwrap();
    assert_eq!(
        stages.to_string(),
        "pipeline of 2 stages (blocks 1–2 | 3), 1 thread each"
    );
}

#[test]
fn stages_balance_counted_costs() {
    let _turn = crate::libtorch_turn();
    // Equal costs: the even split, earlier stages longer.
    assert_eq!(balanced_ranges(&[1.0; 7], 3), vec![0..3, 3..5, 5..7]);
    assert_eq!(balanced_ranges(&[1.0; 3], 2), vec![0..2, 2..3]);
    // A cheap start and an expensive end: the cut moves right. 1+1+1+1 | 4 | 4
    // (largest 4) beats the count's even split 1+1+1 | 1+4 | 4 (largest 5).
    assert_eq!(
        balanced_ranges(&[1.0, 1.0, 1.0, 1.0, 4.0, 4.0], 3),
        vec![0..4, 4..5, 5..6]
    );
    // One block per stage, and one stage for all.
    assert_eq!(balanced_ranges(&[3.0, 1.0, 2.0], 3), vec![0..1, 1..2, 2..3]);
    assert_eq!(balanced_ranges(&[3.0, 1.0, 2.0], 1), vec![0..3]);
    // 2 stages of [5, 1, 1, 1, 1, 1]: 5 | 1+1+1+1+1 (largest 5).
    assert_eq!(
        balanced_ranges(&[5.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2),
        vec![0..1, 1..6]
    );
    let train = TrainConfig {
        stages: 2,
        threads: 1,
        ..Default::default()
    };
    let stages = Stages::plan_by_cost(&train, &[1.0, 1.0, 2.0]).unwrap();
    assert_eq!(stages.blocks, vec![0..2, 2..3]);
    assert_eq!(
        stages.to_string(),
        "pipeline of 2 stages (blocks 1–2 | 3), 1 thread each; counted FLOPs per stage 50 % | 50 %"
    );
}
