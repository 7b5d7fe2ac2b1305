//! Binary entry: parse argv, run, map the outcome to the platform's exit code.

fn main() {
    println!("tanium-tr-indicators {}", env!("CARGO_PKG_VERSION"));
}
