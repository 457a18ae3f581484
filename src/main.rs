use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// Spin count given to libtorch's OpenMP runtime unless the user sets `GOMP_SPINCOUNT`.
///
/// libgomp's default lets an idle worker busy-wait for 300,000 spins after each
/// parallel region; on a 2-core machine that worker then competes with the serial
/// parts of a step (optimizer updates, the SLL objective's own kernels). `sll bench
/// step` measured up to ~1.4× more samples/s for the SLL MLP step with 1,000–10,000
/// (README, Speed). libgomp reads the variable when it is loaded, before `main`, so the
/// binary re-executes itself once with it set.
const GOMP_SPINCOUNT: &str = "10000";

fn main() -> ExitCode {
    if std::env::var_os("GOMP_SPINCOUNT").is_none() {
        if let Ok(exe) = std::env::current_exe() {
            let mut args = std::env::args_os();
            let arg0 = args.next().unwrap_or_default();
            // exec() only returns if it failed; then run as we are.
            let _ = Command::new(exe)
                .arg0(arg0)
                .args(args)
                .env("GOMP_SPINCOUNT", GOMP_SPINCOUNT)
                .exec();
        }
    }
    match sll::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", sll::one_line_error(&e));
            ExitCode::FAILURE
        }
    }
}
