//! The sweep's unit tests: parsing, naming, settling, planning, results and the plot.

use super::grid::parse_set;
use super::plot::{plot_series, x_axis};
use super::*;
use crate::config::DEFAULT_PRESET;
use std::collections::HashSet;
use std::path::Path;
use toml::Value;

fn s(v: &str) -> Value {
    Value::String(v.into())
}

#[test]
fn values_split_outside_brackets_and_quotes() {
    assert_eq!(split_values("sll,local, bp").unwrap(), ["sll", "local", "bp"]);
    assert_eq!(
        split_values("[64,64],[128, 128]").unwrap(),
        ["[64,64]", "[128, 128]"]
    );
    assert_eq!(
        split_values(r#""a,b",'c,d',"e\",f""#).unwrap(),
        [r#""a,b""#, "'c,d'", r#""e\",f""#]
    );
    assert_eq!(
        split_values("{ flip = true, crop_padding = 4 },{}").unwrap(),
        ["{ flip = true, crop_padding = 4 }", "{}"]
    );
    assert!(split_values("[1,2").is_err());
    assert!(split_values("1],2").is_err());
    assert!(split_values("\"a,b").is_err());
    assert!(split_values("1,,2").is_err());
    assert!(split_values("").is_err());
}

#[test]
fn grid_args_parse_like_set_values() {
    let a = parse_grid_arg("objective.beta=0,0.3,1,3").unwrap();
    assert_eq!(a.key, "objective.beta");
    assert_eq!(
        a.values,
        [
            Value::Integer(0),
            Value::Float(0.3),
            Value::Integer(1),
            Value::Integer(3)
        ]
    );
    let a = parse_grid_arg("model.hidden=[64,64],[128,128]").unwrap();
    let arr = |w: i64| Value::Array(vec![Value::Integer(w), Value::Integer(w)]);
    assert_eq!(a.values, [arr(64), arr(128)]);
    let a = parse_grid_arg(r#"train.method=sll,"local",bp"#).unwrap();
    assert_eq!(a.values, [s("sll"), s("local"), s("bp")]);
    assert!(parse_grid_arg("train.method").is_err());
    assert!(parse_grid_arg("train.seed=1,1").is_err());
    assert!(parse_grid_arg("=1,2").is_err());
    assert!(parse_grid_arg("train..seed=1").is_err());
}

#[test]
fn the_product_varies_the_first_key_slowest() {
    let grid = [
        parse_grid_arg("train.method=sll,local").unwrap(),
        parse_grid_arg("train.seed=0,1,2").unwrap(),
    ];
    let points = product(&grid);
    assert_eq!(points.len(), 6);
    let names = run_names(&grid, &points);
    assert_eq!(
        names,
        [
            "method-sll_seed-0",
            "method-sll_seed-1",
            "method-sll_seed-2",
            "method-local_seed-0",
            "method-local_seed-1",
            "method-local_seed-2"
        ]
    );
    assert_eq!(product(&[]), vec![Vec::<Value>::new()]);
}

#[test]
fn names_are_stable_readable_and_unique() {
    let grid = [
        parse_grid_arg("train.method=sll").unwrap(),
        parse_grid_arg("objective.beta=0.3,1e-3").unwrap(),
        parse_grid_arg("model.hidden=[64,64],[128]").unwrap(),
    ];
    let names = run_names(&grid, &product(&grid));
    assert_eq!(
        names,
        [
            "method-sll_beta-0.3_hidden-64x64",
            "method-sll_beta-0.3_hidden-128",
            "method-sll_beta-0.001_hidden-64x64",
            "method-sll_beta-0.001_hidden-128"
        ]
    );
    assert_eq!(names, run_names(&grid, &product(&grid)));
    // Keys with the same last part are named in full.
    let grid = [
        parse_grid_arg("model.dropout=0,0.1").unwrap(),
        parse_grid_arg("objective.dropout=0.2").unwrap(),
    ];
    assert_eq!(
        run_names(&grid, &product(&grid))[1],
        "model.dropout-0.1_objective.dropout-0.2"
    );
    // Values that sanitise alike, and path-like values, stay apart and inside runs/.
    let grid = [parse_grid_arg(r#"data.dir="a b","a_b","../x","a/b""#).unwrap()];
    let names = run_names(&grid, &product(&grid));
    assert_eq!(names, ["dir-a_b", "dir-a_b-2", "dir-.._x", "dir-a_b-3"]);
    assert!(names.iter().all(|n| !n.contains('/')));
    let unique: HashSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len());
}

#[test]
fn grid_files_parse_dotted_and_quoted_keys() {
    let text = r#"
config = "mnist-mlp"
[set]
data.train_subset = 1000
"model.hidden" = [64, 64]
[grid]
train.method = ["sll", "local"]
"objective.beta" = [0, 0.3]
"#;
    let r = parse_grid_file(text, "g.toml").unwrap();
    assert_eq!(r.config.as_deref(), Some("mnist-mlp"));
    assert_eq!(
        r.sets,
        [
            ("data.train_subset".to_string(), Value::Integer(1000)),
            (
                "model.hidden".to_string(),
                Value::Array(vec![Value::Integer(64), Value::Integer(64)])
            )
        ]
    );
    let keys: Vec<&str> = r.grid.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["train.method", "objective.beta"]);
    assert_eq!(r.grid[0].values, [s("sll"), s("local")]);
    let e = parse_grid_file("[grid]\n\"train.seed\" = 3\n", "g.toml").unwrap_err();
    assert!(e.to_string().contains("must be an array"), "{e}");
    let e = parse_grid_file("[grid]\n\"train.seed\" = []\n", "g.toml").unwrap_err();
    assert!(e.to_string().contains("no values"), "{e}");
    let e = parse_grid_file("grids = 1\n", "g.toml").unwrap_err();
    assert!(e.to_string().contains("g.toml"), "{e}");
}

fn sweep_of(grid: &[&str], sets: &[&str]) -> Request {
    let mut r = Request::default();
    for g in grid {
        r.grid.push(parse_grid_arg(g).unwrap());
    }
    for set in sets {
        parse_set(&mut r.sets, set).unwrap();
    }
    r
}

#[test]
fn sweep_toml_round_trips_and_the_grid_cannot_change() {
    let dir = Path::new("/nonexistent-sweep");
    let request = sweep_of(
        &[
            "train.method=sll,local",
            "model.hidden=[64,64],[32]",
            "objective.beta=0.3,1",
        ],
        &["data.train_subset=1000", "data.augment={flip=true}"],
    );
    let (sweep, new) = Sweep::settle(request.clone(), None, dir).unwrap();
    assert!(new);
    assert_eq!(sweep.config, DEFAULT_PRESET);
    assert_eq!(sweep.sets[1].0, "data.augment.flip");
    let text = sweep.to_toml().unwrap();
    let back = parse_grid_file(&text, "sweep.toml").unwrap();
    assert_eq!(back.grid, sweep.grid);
    assert_eq!(back.sets, sweep.sets);
    assert_eq!(back.config.as_deref(), Some(DEFAULT_PRESET));
    // The same grid, or none, continues it.
    let (again, new) = Sweep::settle(request, Some(sweep.clone()), dir).unwrap();
    assert!(!new);
    assert_eq!(again, sweep);
    let (again, _) = Sweep::settle(Request::default(), Some(sweep.clone()), dir).unwrap();
    assert_eq!(again, sweep);
    // Another grid, other sets or another config are refused.
    let other = sweep_of(&["train.method=sll,bp"], &[]);
    let e = Sweep::settle(other, Some(sweep.clone()), dir).unwrap_err();
    assert!(e.to_string().contains("another grid"), "{e}");
    let other = sweep_of(&[], &["data.train_subset=2000"]);
    let e = Sweep::settle(other, Some(sweep.clone()), dir).unwrap_err();
    assert!(e.to_string().contains("--set"), "{e}");
    let other = Request {
        config: Some("cifar10-vgg".into()),
        ..Request::default()
    };
    let e = Sweep::settle(other, Some(sweep), dir).unwrap_err();
    assert!(e.to_string().contains("config"), "{e}");
    // A new sweep needs a grid; a key cannot be both set and varied.
    assert!(Sweep::settle(Request::default(), None, dir).is_err());
    let both = sweep_of(&["train.seed=0,1"], &["train.seed=3"]);
    assert!(Sweep::settle(both, None, dir).is_err());
}

#[test]
fn the_plot_axis_is_a_numeric_key() {
    let grid = [
        parse_grid_arg("train.method=sll,local").unwrap(),
        parse_grid_arg("train.seed=0,1").unwrap(),
        parse_grid_arg("objective.beta=0,0.5").unwrap(),
    ];
    assert_eq!(x_axis(&grid, None).unwrap(), Some(1));
    assert_eq!(x_axis(&grid, Some("objective.beta")).unwrap(), Some(2));
    assert!(x_axis(&grid, Some("train.method")).is_err());
    assert!(x_axis(&grid, Some("model.depth")).is_err());
    assert_eq!(x_axis(&grid[..1], None).unwrap(), None);
}

#[test]
fn run_directories_are_planned_from_what_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(matches!(state(&run), State::New));
    std::fs::create_dir(&run).unwrap();
    assert!(matches!(state(&run), State::New));
    // Only a temporary a killed write left: still new.
    std::fs::write(run.join(format!("{}1-config.toml", crate::io::TEMP_PREFIX)), "x").unwrap();
    assert!(matches!(state(&run), State::New));
    std::fs::write(run.join("notes.txt"), "x").unwrap();
    assert!(matches!(state(&run), State::Blocked(_)));
    std::fs::write(run.join("config.toml"), "x").unwrap();
    assert!(matches!(state(&run), State::Resume(_)));
    std::fs::write(dir.path().join("file"), "x").unwrap();
    assert!(matches!(state(&dir.path().join("file")), State::Blocked(_)));
}

#[test]
fn the_plot_has_a_line_per_other_value_and_only_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let request = sweep_of(&["train.method=sll,local", "objective.beta=0,0.5,1"], &[]);
    let (sweep, _) = Sweep::settle(request, None, dir.path()).unwrap();
    let mut rows: Vec<Row> = points(&sweep, dir.path()).iter().map(row).collect();
    for (i, r) in rows.iter_mut().enumerate() {
        r.status = if i == 1 { "interrupted" } else { "finished" }.into();
        r.test = Some(0.5 + 0.01 * i as f64);
    }
    let series = plot_series(&sweep, &rows, 1);
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].0, "method=sll");
    assert_eq!(series[0].1.len(), 2);
    assert_eq!(
        series[1].1.iter().map(|p| p.0).collect::<Vec<_>>(),
        [0.0, 0.5, 1.0]
    );
    let path = dir.path().join("results.png");
    crate::report::plot::sweep_accuracy(&series, "objective.beta", "t", &path).unwrap();
    let picture = image::open(&path).unwrap().to_rgb8();
    assert_eq!(picture.dimensions(), crate::report::plot::ONE_PANEL_SIZE);
}

#[test]
fn results_list_every_point_in_grid_order() {
    let dir = tempfile::tempdir().unwrap();
    let request = sweep_of(&["train.method=sll,local", "train.seed=0,1"], &[]);
    let (sweep, _) = Sweep::settle(request, None, dir.path()).unwrap();
    let rows: Vec<Row> = points(&sweep, dir.path()).iter().map(row).collect();
    let md = markdown(&sweep, &rows);
    let lines: Vec<&str> = md
        .lines()
        .skip_while(|l| !l.starts_with("| run "))
        .take_while(|l| l.starts_with('|'))
        .filter(|l| l.starts_with("| "))
        .collect();
    assert_eq!(lines.len(), 5, "{md}");
    // Two grid keys: the matrix follows, one line per seed, blank cells (nothing ran).
    assert!(md.contains("`train.method` across, `train.seed` down"), "{md}");
    assert!(md.trim_end().ends_with("| 1 |  |  |"), "{md}");
    assert!(
        lines[1].starts_with("| method-sll_seed-0 | sll | 0 | not started |"),
        "{md}"
    );
    assert!(lines[4].starts_with("| method-local_seed-1 |"), "{md}");
    let csv = csv(&sweep, &rows);
    assert_eq!(
        csv.lines().next().unwrap(),
        "run,train.method,train.seed,status,epochs,test acc %,avg heads acc %,train min,MFLOP per example"
    );
    assert_eq!(csv.lines().count(), 5);
}
