//! The `vipd` binary: parse flags, set up logging and the runtime, dispatch the subcommand.
//! `anyhow` is used here only; everything below returns typed errors.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;
use vipd::cli::{Cli, Command, LogArgs, LogFormat};

fn init_logging(args: &LogArgs) {
    let filter = match &args.log_level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// An error as one line: each cause in the chain is appended unless an outer message already
/// quotes it (typed errors often embed their source's text).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line.replace(['\n', '\r'], " ")
}

fn main() {
    if let Err(e) = run() {
        // One line on stderr and exit 1, whatever RUST_BACKTRACE says.
        eprintln!("Error: {}", one_line(&e));
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Table(args) => {
            // Warnings are part of the JSON output; keep stderr for the one-line error.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")?;
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = rt.block_on(vipd::commands::table::run(&args, &mut stdout)) {
                // One line, whatever the error text holds.
                let line = e.to_string().replace(['\n', '\r'], " ");
                eprintln!("vipd table: {line}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Run(args) => {
            init_logging(&cli.log);
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.worker_threads {
                builder.worker_threads(n.max(1));
            }
            let rt = builder
                .enable_all()
                .thread_name("vipd-worker")
                .build()
                .context("cannot start the runtime")?;
            let config = matches
                .subcommand_matches("run")
                .map(vipd::cli::config::effective_run_config)
                .unwrap_or_default();
            rt.block_on(async {
                let daemon = vipd::daemon::Daemon::start(&args, config).await?;
                daemon.run_until_signal().await?;
                anyhow::Ok(())
            })
        }
        Command::Status(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")?;
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = rt.block_on(vipd::commands::status::run(&args, &mut stdout)) {
                eprintln!("vipd status: {}", e.to_string().replace(['\n', '\r'], " "));
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Demo(args) => {
            init_logging(&cli.log);
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            rt.block_on(vipd::demo::run(args))?;
            Ok(())
        }
    }
}
