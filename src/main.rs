use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// Spin count given to libtorch's OpenMP runtime unless the user sets `GOMP_SPINCOUNT`.
///
/// libgomp's default lets an idle worker busy-wait for 300,000 spins after each
/// parallel region; on a 2-core machine that worker then competes with the serial
/// parts of a step (optimizer updates, the SLL objective's own kernels). `sll bench
/// step` measured up to ~1.4× more samples/s for the SLL MLP step with 1,000–10,000
/// (docs/performance.md). libgomp reads the variable when it is loaded, before `main`, so the
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
    // A panic (libtorch's errors surface as panics from tch's non-`f_` methods, with
    // multi-KB C++ backtraces in their message) ends like any other error: one line,
    // `error: <its first line>`. The hook stays silent, also for panics in other
    // threads: those are joined into this one (pipeline stages, loader workers,
    // parallel kernels), and the line is printed here, once. With RUST_BACKTRACE set,
    // Rust's default hook prints the whole message and the backtrace, for debugging.
    let debugging = std::env::var_os("RUST_BACKTRACE").is_some();
    if !debugging {
        std::panic::set_hook(Box::new(|_| {}));
    }
    // A command line clap refuses is one `error:` line too (with clap's tips), exit
    // code 2 as clap's own; --help and --version print as usual.
    if let Err(e) = <sll::cli::Cli as clap::Parser>::try_parse() {
        if !e.use_stderr() {
            e.exit();
        }
        eprintln!("error: {}", usage_line(&e.render().to_string()));
        return ExitCode::from(2);
    }
    match std::panic::catch_unwind(sll::cli::main) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        // Bad input, a missing file, a failed download: exit code 1.
        Ok(Err(e)) => {
            eprintln!("error: {}", sll::one_line_error(&e));
            ExitCode::FAILURE
        }
        // A panic is a bug (every bad input is meant to be an error): exit code 101,
        // Rust's own for a panic, so that scripts can tell the two apart.
        Err(payload) => {
            eprintln!("error: {}", panic_line(payload.as_ref()));
            ExitCode::from(101)
        }
    }
}

/// The first line of a panic's message. tch's panics are `unwrap()`s of a
/// `TchError`, whose debug form puts the whole C++ message on one line with its
/// newlines escaped (`Torch("...\nException raised from ...")`): that is cut at the
/// first escaped newline too, and the wrapping dropped.
fn panic_line(payload: &(dyn std::any::Any + Send)) -> String {
    let message = match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => return "the program panicked (no message)".into(),
    };
    let line = sll::one_line_error(&anyhow::anyhow!(message));
    let line = line
        .strip_prefix("called `Result::unwrap()` on an `Err` value: ")
        .unwrap_or(&line);
    let line = line.split("\\n").next().unwrap_or(line);
    match line.strip_prefix("Torch(\"") {
        Some(torch) => format!(
            "libtorch: {}",
            torch.trim_end_matches("\")").trim_end_matches('"')
        ),
        None => line.to_string(),
    }
}

/// clap's error text on one line: its first line, its tips, and where help is.
fn usage_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("bad command line");
    let mut parts = vec![first.strip_prefix("error: ").unwrap_or(first).to_string()];
    parts.extend(lines.filter(|l| l.starts_with("tip:")).map(str::to_string));
    let usage = text.lines().find_map(|l| l.trim().strip_prefix("Usage: "));
    // The command of the usage line: its words up to the first option or argument.
    let command = usage.map(|u| {
        u.split_whitespace()
            .take_while(|w| !w.starts_with(['-', '[', '<']))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let help = format!(
        "try `{} --help`",
        command.filter(|c| !c.is_empty()).as_deref().unwrap_or("sll")
    );
    format!("{}; {help}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::{panic_line, usage_line};

    #[test]
    fn a_libtorch_panic_is_cut_to_its_first_line() {
        let message = String::from(
            "called `Result::unwrap()` on an `Err` value: Torch(\"mat1 and mat2 shapes cannot be multiplied (2x784 and 400x10)\\nException raised from meta at /pytorch/aten/src/ATen/native/LinearAlgebra.cpp:191 (most recent call first):\\nframe #0: c10::Error::Error(...)\")",
        );
        let line = panic_line(&message);
        assert_eq!(
            line,
            "libtorch: mat1 and mat2 shapes cannot be multiplied (2x784 and 400x10)"
        );
        assert_eq!(
            panic_line(&"index out of bounds\nsecond line"),
            "index out of bounds"
        );
        assert_eq!(panic_line(&42u8), "the program panicked (no message)");
    }

    #[test]
    fn clap_errors_become_one_line() {
        let text = "error: unexpected argument '--thread' found\n\n  tip: a similar argument exists: '--threads'\n\nUsage: sll train --threads <THREADS>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_line(text),
            "unexpected argument '--thread' found; tip: a similar argument exists: '--threads'; try `sll train --help`"
        );
    }
}
