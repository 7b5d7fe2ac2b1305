//! Binary entry: parse argv, run, map the outcome to the platform's exit code.

fn main() {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    std::process::exit(tanium_tr_indicators::app::main(&args));
}
