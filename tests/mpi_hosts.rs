//! The MPI pipeline (feature `mpi`) across two hosts, emulated on one machine: two
//! network namespaces joined by a veth pair (`scripts/netns-hosts`), mpirun in host A
//! (10.77.0.1, 2 slots) starting its daemon in host B (10.77.0.2, 1 slot) through
//! `scripts/netns-rsh` instead of ssh, and OpenMPI talking TCP over the veth only.
//!
//! Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN), iproute2's `ip` and OpenMPI's
//! `mpirun`. Without namespaces the test prints `skipped: ...` and passes, unless
//! `SLL_TEST_NETNS_REQUIRED=1` (CI), which makes it fail with the reason.
#![cfg(feature = "mpi")]

use sll::config::Config;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

mod common;
use common::{assert_same_training, small_sets};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts");

/// Two namespaces made by `scripts/netns-hosts up`, deleted again when dropped (also
/// when the test fails).
struct Hosts {
    a: String,
    b: String,
}

impl Hosts {
    /// Hosts A and B under names of this process's own; `Err` says why there are none.
    fn up() -> Result<Self, String> {
        let id = std::process::id();
        let hosts = Hosts {
            a: format!("sllA{id}"),
            b: format!("sllB{id}"),
        };
        let output = hosts
            .script("up")
            .map_err(|e| format!("cannot run scripts/netns-hosts: {e}"))?;
        match output.status.success() {
            true => Ok(hosts),
            false => Err(String::from_utf8_lossy(&output.stderr).trim().to_string()),
        }
    }

    fn script(&self, action: &str) -> std::io::Result<std::process::Output> {
        Command::new(format!("{SCRIPTS}/netns-hosts"))
            .args([action, &self.a, &self.b])
            .output()
    }

    /// The inode of a namespace (what `/proc/PID/ns/net` of a process in it names).
    fn inode(name: &str) -> u64 {
        std::fs::metadata(format!("/run/netns/{name}")).unwrap().ino()
    }

    /// The bytes received so far on host B's end of the veth pair.
    fn b_received_bytes(&self) -> u64 {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.b])
            .args(["cat", "/sys/class/net/veth0/statistics/rx_bytes"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        match self.script("down") {
            Ok(o) if o.status.success() => {}
            other => eprintln!("cannot delete namespaces {} and {}: {other:?}", self.a, self.b),
        }
    }
}

/// Hosts A and B, or `None` after a `skipped:` line (a failure with
/// `SLL_TEST_NETNS_REQUIRED=1`) when namespaces cannot be made here.
fn hosts_or_skip() -> Option<Hosts> {
    match Hosts::up() {
        Ok(hosts) => Some(hosts),
        Err(why) => {
            common::skip(
                &format!("needs network namespaces ({why})"),
                "SLL_TEST_NETNS_REQUIRED",
            );
            None
        }
    }
}

/// 3 ranks on 2 hosts (ranks 0 and 1 on A, rank 2 on B: the boundary between stages 2
/// and 3 crosses the veth) train bit-identical weights to sequential training, with
/// the same losses and test accuracies; each rank records its hostname and network
/// namespace, and B's end of the veth received at least the activations of stage 2.
#[test]
fn three_ranks_on_two_hosts_train_the_same_weights_as_sequential() {
    let Some(hosts) = hosts_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hostfile = dir.path().join("hosts");
    std::fs::write(&hostfile, "10.77.0.1 slots=2\n10.77.0.2 slots=1\n").unwrap();
    let (run, places, launches) = (
        dir.path().join("mpi"),
        dir.path().join("places"),
        dir.path().join("launches"),
    );
    std::fs::create_dir(&places).unwrap();
    let received_before = hosts.b_received_bytes();

    // mpirun runs in A, so it reaches B over the veth only; every rank first writes
    // where it runs to places/RANK, then becomes `sll`.
    let mut command = Command::new(format!("{SCRIPTS}/netns-rsh"));
    command
        .args(["--argv", "10.77.0.1", "mpirun", "--hostfile"])
        .arg(&hostfile)
        .args(["-np", "3", "--oversubscribe", "--timeout", "300"])
        .args(["--mca", "plm_rsh_agent", &format!("{SCRIPTS}/netns-rsh")])
        .args(["--mca", "btl", "tcp,self"])
        .args(["--mca", "btl_tcp_if_include", "10.77.0.0/24"])
        .args(["--mca", "oob_tcp_if_include", "10.77.0.0/24"])
        .args(["sh", "-c"])
        .arg(
            r#"echo "$(hostname) $(readlink /proc/self/ns/net)" > "$SLL_PLACES/$OMPI_COMM_WORLD_RANK" && exec "$0" "$@""#,
        )
        .arg(env!("CARGO_BIN_EXE_sll"))
        .args(["train", "--pipeline", "mpi", "--out"])
        .arg(&run);
    for set in small_sets() {
        command.args(["--set", &set]);
    }
    command
        .env("SLL_NETNS_A", &hosts.a)
        .env("SLL_NETNS_B", &hosts.b)
        .env("SLL_NETNS_LOG", &launches)
        .env("SLL_PLACES", &places)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    let output = command.output().expect("scripts/netns-rsh runs mpirun");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let launched = std::fs::read_to_string(&launches).unwrap_or_default();
    assert!(
        output.status.success(),
        "mpirun failed: {stderr}\nlaunches:\n{launched}"
    );
    assert!(stderr.contains("MPI pipeline, 3 ranks"), "{stderr}");

    // Where the ranks ran: by hostname and by network namespace.
    let place = |rank: usize| std::fs::read_to_string(places.join(rank.to_string())).unwrap();
    for (rank, host) in [(0, &hosts.a), (1, &hosts.a), (2, &hosts.b)] {
        let expected = format!("{host} net:[{}]\n", Hosts::inode(host));
        assert_eq!(place(rank), expected, "rank {rank}; launches:\n{launched}");
    }
    assert!(
        launched
            .lines()
            .any(|l| l.starts_with(&format!("10.77.0.2 {} ", hosts.b)) && l.contains("orted")),
        "no daemon launched in B: {launched}"
    );
    // Rank 2 received stage 2's output over the veth: 1,500 examples × 256 floats per
    // epoch, 2 epochs.
    let received = hosts.b_received_bytes() - received_before;
    assert!(received >= 2 * 1500 * 256 * 4, "B received only {received} bytes");

    let sequential = dir.path().join("sequential");
    sll::run::run(Config::load(None, &small_sets()).unwrap(), &sequential).unwrap();
    assert_same_training(&sequential, &run, "3 MPI ranks on 2 hosts");
}

/// The scripts' usage errors are one line each (no namespaces needed).
#[test]
fn scripts_reject_bad_arguments_in_one_line() {
    let run = |script: &str, args: &[&str]| {
        let output = Command::new(format!("{SCRIPTS}/{script}"))
            .args(args)
            .env("SLL_NETNS_A", "sllA-unused")
            .env("SLL_NETNS_B", "sllB-unused")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{script} {args:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let error = run("netns-hosts", &["sideways"]);
    assert!(
        error.starts_with("usage: ") && error.lines().count() == 1,
        "{error}"
    );
    let error = run("netns-hosts", &["up", "same", "same"]);
    assert!(
        error.contains("different names") && error.lines().count() == 1,
        "{error}"
    );
    let error = run("netns-rsh", &["10.0.0.9", "true"]);
    assert!(error.contains("unknown host '10.0.0.9'"), "{error}");
    let error = run("netns-rsh", &["10.77.0.2", "true"]);
    assert!(error.contains("no network namespace sllB-unused"), "{error}");
}
