//! Shell completions and man pages, generated from the same clap definitions the binary
//! parses, so they cannot drift from the commands. The Debian package runs these at build
//! time; an operator can run them too (`geo-agent completions bash > ...`).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write one page per command (geo-agent.1, geo-agent-run.1, ...) into this directory,
    /// which must exist. Without it, the top page goes to standard output.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` on standard output.
pub fn completions(args: CompletionsArgs) -> u8 {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, BIN, &mut out);
    if args.shell == Shell::Bash {
        out = fix_bash_states(&out);
    }
    write_stdout(&out)
}

const BIN: &str = "geo-agent";

/// clap_complete's bash script (4.6) spells a subcommand's state `geo__agent__subcmd__x`
/// where it walks the words typed, but `geo__subcmd__agent__subcmd__x` where it matches
/// that state (the hyphen of the binary's name escaped as a subcommand separator), so
/// nothing after a subcommand completes (clap-rs/clap#6421). Spell the matches like the
/// walk; the test in tests/operator.rs completes `geo-agent maintenance e` through bash.
fn fix_bash_states(script: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(script);
    let walked = format!("{}__subcmd__", BIN.replace('-', "__"));
    let matched = format!("{}__subcmd__", BIN.replace('-', "__subcmd__"));
    text.replace(&matched, &walked).into_bytes()
}

/// Writes the man pages.
pub fn man(args: ManArgs) -> u8 {
    let cmd = Cli::command();
    match args.dir {
        Some(dir) => match clap_mangen::generate_to(cmd, &dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: cannot write man pages to {}: {e}", dir.display());
                2
            }
        },
        None => {
            let mut out = Vec::new();
            if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
                eprintln!("error: cannot render the man page: {e}");
                return 2;
            }
            write_stdout(&out)
        }
    }
}

fn write_stdout(bytes: &[u8]) -> u8 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            2
        }
    }
}
