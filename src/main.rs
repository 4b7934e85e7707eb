use clap::Parser;
use vipd::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Table(_args) => anyhow::bail!("not yet implemented"),
    }
}
