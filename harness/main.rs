//! The `cases` test target (`harness = false`): one trial per case under test_configs/.
//! The logic lives in `servetest::harness` so that `servetest test` runs the same thing.

fn main() -> std::process::ExitCode {
    servetest::harness::main_with_args(
        std::env::args_os(),
        env!("CARGO_BIN_EXE_servetest").into(),
        servetest::harness::Caller::CargoTest,
    )
}
