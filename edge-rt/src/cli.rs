//! Command-line pieces every binary shares: shell completions.

use std::io::Write;

pub use clap_complete::Shell;

/// Writes the completion script of `C` for `shell` to `out`, for the binary
/// named `bin` (what the user types). Install it as the shell expects, e.g.
/// `edgecore-dmi completions bash > /etc/bash_completion.d/edgecore-dmi`.
pub fn write_completions<C: clap::CommandFactory>(shell: Shell, bin: &str, out: &mut dyn Write) {
    let mut cmd = C::command();
    clap_complete::generate(shell, &mut cmd, bin, out);
}

/// [`write_completions`] to stdout.
pub fn print_completions<C: clap::CommandFactory>(shell: Shell, bin: &str) {
    write_completions::<C>(shell, bin, &mut std::io::stdout().lock());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Demo {
        /// A flag.
        #[arg(long, value_enum)]
        log_format: Option<crate::logging::LogFormat>,
    }

    #[test]
    fn completions_name_the_binary_and_its_flags() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            write_completions::<Demo>(shell, "demo-bin", &mut out);
            let text = String::from_utf8_lossy(&out);
            assert!(text.contains("demo-bin"), "{shell}: {text}");
            assert!(text.contains("log-format"), "{shell}: {text}");
        }
    }
}
