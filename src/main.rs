//! The `exactly` binary: everything lives in the library; see `cli::main`.

fn main() {
    std::process::exit(exactly::cli::main());
}
