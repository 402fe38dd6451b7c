//! Standard output for the command-line commands. `println!` panics when the
//! reader has gone (`provisio executions list | head`); these end the process
//! quietly instead, as any Unix tool ends when its pipe closes.

use std::io::Write;

/// Writes `text` to standard output. A closed pipe exits with status 0 and
/// no message: the reader took what it wanted. Any other failure (a full
/// disk) is one line on standard error and status 1.
pub fn write(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("provisio: cannot write the output: {err}");
        std::process::exit(1);
    }
}

/// `println!` that ends quietly on a closed pipe (see [`write`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(&format!("{}\n", format_args!($($arg)*)))
    };
}
