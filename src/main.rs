//! The `vipd` binary: parse flags, set up logging and the runtime, dispatch the subcommand.
//! `anyhow` is used here only; everything below returns typed errors.
//!
//! The first thing `main` does is block SIGHUP, SIGINT and SIGTERM (every thread started later
//! inherits the mask), so a signal in the first milliseconds is held pending instead of killing
//! the process with its default action. `vipd run` unblocks them on the main thread once the
//! daemon's handlers are installed; the other subcommands unblock them at once.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use vipd::cli::{Cli, Command, LogArgs, LogFormat};
use vipd::logging::{stderr_line, JsonLines, LossyStderr, TextFields};

fn init_logging(args: &LogArgs) -> anyhow::Result<()> {
    let filter = match &args.log_level {
        Some(level) => vipd::logging::parse_filter(level)?,
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    // Never a panic on a closed stderr: the writer drops (and counts) what it cannot write.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LossyStderr)
        .log_internal_errors(false)
        .fmt_fields(TextFields);
    match args.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.with_ansi(false).event_format(JsonLines).init(),
    }
    Ok(())
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

/// Blocks the signals before `main`, from the ELF constructors (`.init_array` runs right after
/// the dynamic loader, before the Rust runtime starts), to narrow the window in which a signal
/// sent just after `exec` gets its default action.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static BLOCK_SIGNALS_EARLY: extern "C" fn() = {
    extern "C" fn block() {
        vipd::signals::block_shutdown_signals();
    }
    block
};

fn main() {
    vipd::signals::block_shutdown_signals();
    if let Err(e) = run() {
        // One line on stderr and exit 1, whatever RUST_BACKTRACE says.
        stderr_line(&format!("Error: {}", one_line(&e)));
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
            vipd::signals::unblock_shutdown_signals();
            // Warnings are part of the JSON output; keep stderr for the one-line error.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")?;
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = rt.block_on(vipd::commands::table::run(&args, &mut stdout)) {
                // One line, whatever the error text holds.
                let line = e.to_string().replace(['\n', '\r'], " ");
                stderr_line(&format!("vipd table: {line}"));
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Run(args) => {
            // Before any thread exists: capabilities are per thread, and threads inherit them.
            let capabilities = vipd::capabilities::raise_permitted();
            init_logging(&cli.log)?;
            // Before anything sizes itself from it; logged once the daemon has started (a startup
            // error stays the only line).
            let nofile = vipd::fd_budget::raise_nofile();
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
                // Handlers first; then the signals held since `main` began are delivered to them.
                let signals = vipd::signals::ShutdownSignals::install()?;
                vipd::signals::unblock_shutdown_signals();
                let daemon = vipd::daemon::Daemon::start(&args, config).await?;
                tracing::info!(
                    soft = nofile.soft,
                    hard = nofile.hard,
                    was = nofile.was,
                    "descriptor limit (RLIMIT_NOFILE), soft raised to hard"
                );
                match &capabilities {
                    Ok(raised) => tracing::info!(effective = ?raised.effective, "capabilities"),
                    Err(e) => tracing::warn!(error = %e, "cannot read or raise capabilities"),
                }
                daemon.run_until(signals).await;
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
            vipd::signals::unblock_shutdown_signals();
            init_logging(&cli.log)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            rt.block_on(vipd::demo::run(args))?;
            Ok(())
        }
    }
}
