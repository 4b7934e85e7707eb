use clap::Parser;
use vipd::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Table(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = runtime.block_on(vipd::commands::table::run(&args, &mut stdout)) {
                // One line, whatever the error text holds.
                let line = e.to_string().replace(['\n', '\r'], " ");
                eprintln!("vipd table: {line}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
