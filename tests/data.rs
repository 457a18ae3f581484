//! Tests of the data module: the IDX reader and loader on the real MNIST (the
//! copy the repository ships in `data/`) and Fashion-MNIST (shared data, skipped
//! without it) files, their behaviour on damaged copies, seeded minibatches, and
//! the downloader against a local HTTP server.

mod common;
use common::{synthetic, REPO_DATA};
use sll::data::{self, fetch, idx};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tch::{Kind, Tensor};

/// The repository's data dir, holding the real MNIST: `mnist/<official names>.gz`.
fn repo_data() -> PathBuf {
    PathBuf::from(REPO_DATA)
}

/// The official MNIST / Fashion-MNIST file names, without `.gz`.
const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Number of examples of each digit in the MNIST training set.
const MNIST_TRAIN_HISTOGRAM: [i64; 10] = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];

/// The decompressed bytes of one real MNIST file.
fn mnist_raw(file: &str) -> Vec<u8> {
    idx::read_file(&repo_data().join("mnist").join(format!("{file}.gz"))).unwrap()
}

/// A temporary data dir holding a writable copy of the four MNIST `.gz` files,
/// and the folder of the copies.
fn mnist_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    for f in FILES {
        let name = format!("{f}.gz");
        let bytes = std::fs::read(repo_data().join("mnist").join(&name)).unwrap();
        std::fs::write(dir.join(&name), bytes).unwrap();
    }
    (tmp, dir)
}

/// The error message of `load("mnist", dir)`, which must fail.
fn load_error(data_dir: &Path) -> String {
    match data::load("mnist", data_dir) {
        Ok(_) => panic!("loading a damaged copy succeeded"),
        Err(e) => e.to_string(),
    }
}

/// The images' first pixel, which the synthetic sets below set to the example's
/// index, as integers.
fn ids(images: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(images.flatten(1, -1).select(1, 0).to_kind(Kind::Int64)).unwrap()
}

/// The example indices of one epoch of batches, and the batch sizes; checks
/// on the way that each label matches its image.
fn epoch(batches: data::Batches<'_>) -> (Vec<i64>, Vec<usize>) {
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    for (images, labels) in batches {
        let ids = ids(&images);
        let labels = Vec::<i64>::try_from(labels).unwrap();
        assert_eq!(labels, ids.iter().map(|i| i % 10).collect::<Vec<_>>());
        sizes.push(ids.len());
        all.extend(ids);
    }
    (all, sizes)
}

#[test]
fn idx_reader_reads_the_real_mnist_files() {
    let train_images = idx::parse(&mnist_raw(FILES[0])).unwrap();
    assert_eq!(train_images.dims, vec![60000, 28, 28]);
    let test_images = idx::parse(&mnist_raw(FILES[2])).unwrap();
    assert_eq!(test_images.dims, vec![10000, 28, 28]);

    let train_labels = idx::parse(&mnist_raw(FILES[1])).unwrap();
    assert_eq!(train_labels.dims, vec![60000]);
    idx::check_labels(&train_labels, 10).unwrap();
    let mut histogram = [0i64; 10];
    for &l in &train_labels.data {
        histogram[usize::from(l)] += 1;
    }
    assert_eq!(histogram, MNIST_TRAIN_HISTOGRAM);

    let test_labels = idx::parse(&mnist_raw(FILES[3])).unwrap();
    assert_eq!(test_labels.dims, vec![10000]);
}

#[test]
fn load_verifies_and_converts_mnist() {
    let (train, test) = data::load("mnist", &repo_data()).unwrap();
    assert_eq!((train.len(), test.len()), (60000, 10000));
    assert!(!train.is_empty());
    assert_eq!(train.classes, 10);
    assert_eq!(train.images.size(), vec![60000, 1, 28, 28]);
    assert_eq!(test.images.size(), vec![10000, 1, 28, 28]);
    assert_eq!(train.images.kind(), Kind::Float);
    assert_eq!(train.labels.kind(), Kind::Int64);
    assert_eq!(train.images.min().double_value(&[]), 0.0);
    assert_eq!(train.images.max().double_value(&[]), 1.0);

    let histogram = Vec::<i64>::try_from(train.labels.bincount(None::<Tensor>, 10)).unwrap();
    assert_eq!(histogram, MNIST_TRAIN_HISTOGRAM);

    // The well-known MNIST normalisation constants.
    let (mean, std) = train.channel_stats();
    assert_eq!(mean.size(), vec![1]);
    assert!((mean.double_value(&[0]) - 0.1307).abs() < 1e-3, "{mean}");
    assert!((std.double_value(&[0]) - 0.3081).abs() < 1e-3, "{std}");

    let head = test.take(100);
    assert_eq!(head.len(), 100);
    assert_eq!(head.images.size(), vec![100, 1, 28, 28]);
    assert!(head.labels.equal(&test.labels.narrow(0, 0, 100)));
    assert_eq!(test.take(1 << 40).len(), 10000);
    assert!(test.take(0).is_empty());
}

#[test]
fn load_verifies_fashion_mnist() {
    let Some(shared) = common::shared_data("Fashion-MNIST", &common::FASHION_MNIST_FILES) else {
        return;
    };
    let (train, test) = data::load("fashion-mnist", &shared).unwrap();
    assert_eq!((train.len(), test.len()), (60000, 10000));
    assert_eq!(test.images.size(), vec![10000, 1, 28, 28]);
    // Fashion-MNIST is balanced: 6,000 and 1,000 examples of each class.
    let train_counts = Vec::<i64>::try_from(train.labels.bincount(None::<Tensor>, 10)).unwrap();
    assert_eq!(train_counts, vec![6000; 10]);
    let test_counts = Vec::<i64>::try_from(test.labels.bincount(None::<Tensor>, 10)).unwrap();
    assert_eq!(test_counts, vec![1000; 10]);
}

#[test]
fn dataset_names_and_mirrors() {
    assert_eq!(
        data::known_datasets(),
        ["mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"]
    );
    assert_eq!(
        fetch::fetchable(),
        ["mnist", "fashion-mnist", "cifar10", "cifar100", "imagenette"]
    );
    for name in ["cifar10", "cifar100"] {
        assert_eq!(
            fetch::default_mirror(name).unwrap(),
            "https://www.cs.toronto.edu/~kriz/"
        );
    }
    assert_eq!(
        fetch::default_mirror("imagenette").unwrap(),
        "https://s3.amazonaws.com/fast-ai-imageclas/"
    );
    assert_eq!(
        fetch::default_mirror("mnist").unwrap(),
        "https://ossci-datasets.s3.amazonaws.com/mnist/"
    );
    assert_eq!(
        fetch::default_mirror("fashion-mnist").unwrap(),
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    );
    for err in [
        fetch::default_mirror("cifar-100").unwrap_err(),
        data::load("cifar-100", &repo_data()).unwrap_err(),
        fetch::fetch("cifar-100", Path::new("unused"), None).unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(
            msg.contains("cifar-100") && msg.contains("mnist, fashion-mnist"),
            "{msg}"
        );
    }
}

#[test]
fn missing_files_suggest_sll_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let msg = load_error(tmp.path());
    assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
    assert!(
        msg.contains(&format!("sll fetch mnist --data-dir {}", tmp.path().display())),
        "{msg}"
    );

    // Only the test labels missing.
    let (tmp, dir) = mnist_copy();
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let msg = load_error(tmp.path());
    assert!(
        msg.contains("t10k-labels-idx1-ubyte") && msg.contains("sll fetch"),
        "{msg}"
    );
}

#[test]
fn gz_is_preferred_and_raw_files_load() {
    let (tmp, dir) = mnist_copy();
    // A damaged raw copy next to a good .gz is ignored...
    std::fs::write(dir.join("train-images-idx3-ubyte"), b"garbage").unwrap();
    // ...and a good raw file without .gz is read.
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), mnist_raw(FILES[3])).unwrap();
    let (train, test) = data::load("mnist", tmp.path()).unwrap();
    assert_eq!((train.len(), test.len()), (60000, 10000));
}

#[test]
fn damaged_copies_are_errors_naming_the_file() {
    // Each case: the file to replace (its .gz is removed), its new raw content,
    // and what the message must say.
    let mut truncated = mnist_raw(FILES[0]);
    truncated.truncate(1000);
    let mut flipped = mnist_raw(FILES[3]);
    let last = flipped.len() - 1;
    flipped[last] = (flipped[last] + 1) % 10; // still a valid label
    let mut wrong_magic = mnist_raw(FILES[0]);
    wrong_magic[0] = 0x1e;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (FILES[0], truncated, "truncated"),
        (FILES[3], flipped, "SHA-256 mismatch"),
        (FILES[0], wrong_magic, "magic"),
    ];
    for (file, bytes, expected) in cases {
        let (tmp, dir) = mnist_copy();
        std::fs::remove_file(dir.join(format!("{file}.gz"))).unwrap();
        let path = dir.join(file);
        std::fs::write(&path, bytes).unwrap();
        let msg = load_error(tmp.path());
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(expected), "{msg}");
        assert!(msg.contains("sll fetch mnist"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    // A truncated .gz file.
    let (tmp, dir) = mnist_copy();
    let path = dir.join("train-labels-idx1-ubyte.gz");
    let gz = std::fs::read(&path).unwrap();
    std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
    let msg = load_error(tmp.path());
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("not a valid gzip file"), "{msg}");
}

#[test]
fn idx_parse_rejects_malformed_bytes() {
    let labels = |payload: &[u8], count: u32| {
        let mut bytes = vec![0, 0, 8, 1];
        bytes.extend(count.to_be_bytes());
        bytes.extend(payload);
        bytes
    };
    let ok = idx::parse(&labels(&[0, 3, 9], 3)).unwrap();
    assert_eq!((ok.dims, ok.data), (vec![3], vec![0, 3, 9]));

    let cases: [(Vec<u8>, &str); 6] = [
        (labels(&[0, 3], 3), "truncated"),
        (labels(&[0, 3, 9, 9], 3), "trailing bytes"),
        (vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0], "0x0d"),
        (vec![0, 0, 8], "truncated IDX header"),
        (vec![0, 0, 8, 2, 0, 0, 0, 1], "truncated IDX header"),
        (vec![0, 0, 8, 0], "zero dimensions"),
    ];
    for (bytes, expected) in cases {
        let msg = idx::parse(&bytes).unwrap_err().to_string();
        assert!(msg.contains(expected), "{msg}");
    }

    // A hand-made label file with a 10 in a 10-class set: parses, then fails the
    // label check; read back through `read_file`, raw and gzipped.
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("labels-idx1-ubyte");
    std::fs::write(&raw, labels(&[1, 9, 10, 2], 4)).unwrap();
    let gz = tmp.path().join("labels-idx1-ubyte.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &std::fs::read(&raw).unwrap()).unwrap();
    std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
    for path in [&raw, &gz] {
        let array = idx::parse(&idx::read_file(path).unwrap()).unwrap();
        let msg = idx::check_labels(&array, 10).unwrap_err().to_string();
        assert!(msg.contains("label 10 at index 2"), "{msg}");
        idx::check_labels(&array, 11).unwrap();
    }
    let images = idx::parse(&[0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 1, 7]).unwrap();
    assert!(idx::check_labels(&images, 10).is_err());

    // read_file errors name the file.
    let bad_gz = tmp.path().join("bad.gz");
    std::fs::write(&bad_gz, b"not gzip").unwrap();
    let msg = idx::read_file(&bad_gz).unwrap_err().to_string();
    assert!(
        msg.contains("bad.gz") && msg.contains("not a valid gzip file"),
        "{msg}"
    );
    let msg = idx::read_file(&tmp.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("absent") && msg.contains("cannot read"), "{msg}");
}

#[test]
fn shuffled_batches_are_seeded_permutations() {
    let ds = synthetic(103);
    let batches = data::shuffled_batches(&ds, 10, 42, 0);
    assert_eq!(batches.len(), 11);
    let (order, sizes) = epoch(batches);
    assert_eq!(sizes, [vec![10; 10], vec![3]].concat());
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..103).collect::<Vec<_>>());
    assert_ne!(order, sorted, "the order is shuffled");

    assert_eq!(epoch(data::shuffled_batches(&ds, 10, 42, 0)).0, order);
    assert_eq!(epoch(data::shuffled_batches(&ds, 7, 42, 0)).0, order);
    assert_ne!(epoch(data::shuffled_batches(&ds, 10, 42, 1)).0, order);
    assert_ne!(epoch(data::shuffled_batches(&ds, 10, 43, 0)).0, order);
}

#[test]
fn ordered_batches_keep_the_order() {
    let ds = synthetic(25);
    let (order, sizes) = epoch(data::ordered_batches(&ds, 8));
    assert_eq!(order, (0..25).collect::<Vec<_>>());
    assert_eq!(sizes, vec![8, 8, 8, 1]);
    assert_eq!(epoch(data::ordered_batches(&ds, 25)).1, vec![25]);
    assert_eq!(epoch(data::ordered_batches(&ds, 100)).1, vec![25]);
    // A batch size of 0 is treated as 1.
    assert_eq!(data::ordered_batches(&ds, 0).len(), 25);
    // An empty set has no batch.
    let empty = ds.take(0);
    assert_eq!(data::ordered_batches(&empty, 8).count(), 0);
    assert_eq!(data::shuffled_batches(&empty, 8, 1, 0).count(), 0);
}

/// A local HTTP server serving `/<folder>/<file>` from a data folder (the
/// repository's, with MNIST, unless told otherwise); it counts the requests and
/// stops when dropped.
struct Mirror {
    server: Arc<tiny_http::Server>,
    port: u16,
    requests: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Mirror {
    fn start() -> Mirror {
        Mirror::serving(repo_data())
    }

    fn serving(root: PathBuf) -> Mirror {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (server, requests) = (server.clone(), requests.clone());
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let file = request
                        .url()
                        .strip_prefix('/')
                        .and_then(|p| p.split_once('/'))
                        .filter(|(folder, file)| !folder.starts_with('.') && !file.contains('/'))
                        .and_then(|(folder, file)| std::fs::read(root.join(folder).join(file)).ok());
                    let _ = match file {
                        Some(bytes) => request.respond(tiny_http::Response::from_data(bytes)),
                        None => request
                            .respond(tiny_http::Response::from_string("not found").with_status_code(404)),
                    };
                }
            })
        };
        Mirror {
            server,
            port,
            requests,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

/// The names of the entries of `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn fetch_downloads_verifies_and_skips() {
    let mirror = Mirror::start();
    let tmp = tempfile::tempdir().unwrap();
    fetch::fetch("mnist", tmp.path(), Some(&mirror.url("mnist/"))).unwrap();
    assert_eq!(mirror.requests(), 4);
    let mut expected: Vec<String> = FILES.iter().map(|f| format!("{f}.gz")).collect();
    expected.sort();
    assert_eq!(listing(&tmp.path().join("mnist")), expected);
    let (train, test) = data::load("mnist", tmp.path()).unwrap();
    assert_eq!((train.len(), test.len()), (60000, 10000));

    // Everything present and valid: nothing is downloaded.
    fetch::fetch("mnist", tmp.path(), Some(&mirror.url("mnist/"))).unwrap();
    assert_eq!(mirror.requests(), 4);

    // A damaged file is downloaded again (mirror given without trailing slash).
    let damaged = tmp.path().join("mnist/t10k-labels-idx1-ubyte.gz");
    std::fs::write(&damaged, b"garbage").unwrap();
    fetch::fetch("mnist", tmp.path(), Some(&mirror.url("mnist"))).unwrap();
    assert_eq!(mirror.requests(), 5);
    assert_eq!(listing(&tmp.path().join("mnist")), expected);
    data::load("mnist", tmp.path()).unwrap();
}

#[test]
fn fetch_rejects_wrong_files_and_http_errors() {
    // A mirror whose `other/` folder has the MNIST file names, gzipped, holding
    // other bytes.
    let served = tempfile::tempdir().unwrap();
    let other = served.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    for f in FILES {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, format!("not {f}").as_bytes()).unwrap();
        std::fs::write(other.join(format!("{f}.gz")), encoder.finish().unwrap()).unwrap();
    }
    let mirror = Mirror::serving(served.path().to_path_buf());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mnist");

    // A mirror serving other files: checksum error, nothing written.
    let msg = fetch::fetch("mnist", tmp.path(), Some(&mirror.url("other/")))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("SHA-256 mismatch") && msg.contains("train-images-idx3-ubyte.gz"),
        "{msg}"
    );
    assert!(listing(&dir).is_empty());

    // HTTP 404.
    let msg = fetch::fetch("mnist", tmp.path(), Some(&mirror.url("nothing/")))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cannot download") && msg.contains("404"), "{msg}");
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(listing(&dir).is_empty());
}

#[test]
fn fetch_without_network_is_a_one_line_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // the listener is dropped: the port is closed
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/mnist/");
    let msg = fetch::fetch("mnist", tmp.path(), Some(&url))
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(&format!("cannot download {url}train-images-idx3-ubyte.gz: ")),
        "{msg}"
    );
    assert!(msg.contains("no network?"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn fetch_cifar10_keeps_a_verified_archive() {
    let Some(shared) = common::shared_data("CIFAR-10", &[common::CIFAR10_ARCHIVE]) else {
        return;
    };
    let mirror = Mirror::serving(shared.clone());
    let tmp = tempfile::tempdir().unwrap();
    fetch::fetch("cifar10", tmp.path(), Some(&mirror.url("cifar-10"))).unwrap();
    assert_eq!(mirror.requests(), 1);
    let archive = tmp.path().join("cifar-10/cifar-10-binary.tar.gz");
    assert_eq!(listing(&tmp.path().join("cifar-10")), ["cifar-10-binary.tar.gz"]);
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(shared.join(common::CIFAR10_ARCHIVE)).unwrap()
    );
    // Present and valid: not downloaded again.
    fetch::fetch("cifar10", tmp.path(), Some(&mirror.url("cifar-10/"))).unwrap();
    assert_eq!(mirror.requests(), 1);
    // The mirror has no CIFAR-100.
    let msg = fetch::fetch("cifar100", tmp.path(), Some(&mirror.url("cifar-10/")))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cannot download") && msg.contains("cifar-100-binary.tar.gz"),
        "{msg}"
    );
    assert!(msg.contains("404"), "{msg}");
    assert!(listing(&tmp.path().join("cifar-100")).is_empty());
}

#[test]
fn fetch_rejects_damaged_archives() {
    // A mirror serving a truncated CIFAR-10 archive and a wrong ImageNette one.
    let served = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(served.path().join("m")).unwrap();
    let head = common::truncated_cifar10_archive();
    std::fs::write(served.path().join("m/cifar-10-binary.tar.gz"), &head).unwrap();
    std::fs::write(served.path().join("m/imagenette2-160.tgz"), &head).unwrap();
    let mirror = Mirror::serving(served.path().to_path_buf());
    let tmp = tempfile::tempdir().unwrap();

    let msg = fetch::fetch("cifar10", tmp.path(), Some(&mirror.url("m")))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!(
            "{}: truncated or corrupt archive",
            mirror.url("m/cifar-10-binary.tar.gz")
        )),
        "{msg}"
    );
    assert!(
        msg.contains("try another --mirror") && !msg.contains('\n'),
        "{msg}"
    );
    assert!(listing(&tmp.path().join("cifar-10")).is_empty());

    let msg = fetch::fetch("imagenette", tmp.path(), Some(&mirror.url("m")))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("imagenette2-160.tgz: MD5 mismatch"), "{msg}");
    assert!(listing(&tmp.path().join("imagenette")).is_empty());
}
