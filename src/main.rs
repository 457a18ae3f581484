use std::process::ExitCode;

fn main() -> ExitCode {
    match sll::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", sll::one_line_error(&e));
            ExitCode::FAILURE
        }
    }
}
