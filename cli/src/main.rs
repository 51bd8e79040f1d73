//! `ebbtide`: will this pool survive my load, and how big must it be?
//!
//! - `ebbtide` / `ebbtide survive`: the survival lab (1M tasks, 1000
//!   workers, overflow, panics, deadlines, an interrupt) and its verdict.
//! - `ebbtide simulate --scenario …`: an open-loop load against an elastic
//!   pool, sampled every 10 ms, written as an HTML report with charts, a
//!   CSV time series and a JSON summary.
//! - `ebbtide size --rate 5000/s --latency 80ms …`: Little's-law sizing,
//!   step by step.
//! - `ebbtide worker --redis URL --stream NAME`: consume a Redis stream
//!   on an elastic pool (keyed, acked after run); `ebbtide produce` feeds
//!   one; `ebbtide dead-letters list|redrive|remove` works on what its
//!   consumers gave up on.
//! - `--metrics-addr HOST:PORT` on `survive`, `simulate` and `worker`:
//!   Prometheus text at `/metrics` while it runs.

mod broker;
mod dead;
mod progress;
mod serve;
mod simulate;
mod size;
mod survive;
mod units;

use std::io::Read;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ebbtide",
    version,
    about = "Will this pool survive my load, and how big must it be? (Runs `survive` when no command is given.)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The survival lab: many tasks, every failure mode at once, an exact verdict.
    Survive(survive::SurviveArgs),
    /// An open-loop load against an elastic pool, with an HTML report.
    Simulate(simulate::SimulateArgs),
    /// How many workers a load needs (Little's law), step by step.
    Size(SizeArgs),
    /// Consume a Redis stream: keyed tasks on an elastic pool, acked after they ran.
    Worker(broker::WorkerArgs),
    /// Append keyed messages to a Redis stream (for `worker`).
    Produce(broker::ProduceArgs),
    /// List a Redis stream's dead letters, send them back once fixed, or remove them.
    DeadLetters(dead::DeadLettersArgs),
}

#[derive(clap::Args)]
struct SizeArgs {
    /// Arrival rate, such as 5000/s or 300/min.
    #[arg(long, value_parser = units::rate)]
    rate: f64,
    /// Time each item spends in the system, such as 80ms.
    #[arg(long, value_parser = units::positive_duration)]
    latency: Duration,
    /// Instances sharing the load.
    #[arg(long, default_value = "1", value_parser = units::count)]
    instances: usize,
    /// Extra capacity over the mean in-flight work.
    #[arg(long, default_value = "20%", value_parser = units::fraction)]
    headroom: f64,
    /// Also size so that each worker is busy this fraction of the time.
    #[arg(long, value_parser = units::utilisation)]
    target_util: Option<f64>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Binds the metrics endpoint before anything starts, or exits with
/// status 2 naming the flag.
fn metrics_server(addr: Option<SocketAddr>) -> Option<(serve::Server, serve::Source)> {
    let addr = addr?;
    let source = serve::Source::default();
    match serve::Server::start(addr, source.clone()) {
        Ok(server) => {
            println!("serving metrics on http://{}/metrics", server.addr);
            Some((server, source))
        }
        Err(e) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            cmd.error(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value '{addr}' for '--metrics-addr <HOST:PORT>': {e}"),
            )
            .exit()
        }
    }
}

/// SIGINT/SIGTERM: the first asks the run to stop and drain; a second
/// exits at once.
fn interrupts() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("interrupted: no more submissions; draining (interrupt again to quit now)");
    });
    if let Err(e) = installed {
        eprintln!("warning: interrupts will not drain: {e}");
    }
    stop
}

/// `--linger`: keep the endpoint up until interrupted or stdin closes.
fn linger(stop: &AtomicBool) {
    println!("lingering: /metrics stays up until interrupted or standard input closes");
    let closed = Arc::new(AtomicBool::new(false));
    let c = Arc::clone(&closed);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        c.store(true, Ordering::SeqCst);
    });
    while !stop.load(Ordering::SeqCst) && !closed.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ok = match cli.command.unwrap_or(Command::Survive(Default::default())) {
        Command::Survive(args) => {
            if args.panic_rate + args.slow_rate > 1.0 {
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "--panic-rate ({}%) and --slow-rate ({}%) add up to more than 100%",
                            args.panic_rate * 100.0,
                            args.slow_rate * 100.0
                        ),
                    )
                    .exit();
            }
            let stop = interrupts();
            let server = metrics_server(args.metrics_addr);
            let ok = survive::run(&args, &stop, server.as_ref().map(|(_, s)| s));
            if args.linger {
                linger(&stop);
            }
            ok
        }
        Command::Simulate(args) => {
            let stop = interrupts();
            let server = metrics_server(args.metrics_addr);
            let ok = simulate::run(&args, &stop, server.as_ref().map(|(_, s)| s));
            if args.linger {
                linger(&stop);
            }
            ok
        }
        Command::Worker(args) => {
            let stop = interrupts();
            let server = metrics_server(args.metrics_addr);
            broker::worker(&args, &stop, server.as_ref().map(|(_, s)| s))
        }
        Command::Produce(args) => {
            let stop = interrupts();
            broker::produce(&args, &stop)
        }
        Command::DeadLetters(args) => dead::run(&args),
        Command::Size(a) => {
            let q = size::Question {
                rate: a.rate,
                latency: a.latency,
                instances: a.instances,
                headroom: a.headroom,
                target_util: a.target_util,
            };
            let answer = match size::answer(&q) {
                Ok(answer) => answer,
                Err(e) => Cli::command()
                    .error(clap::error::ErrorKind::ValueValidation, e)
                    .exit(),
            };
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&answer).expect("plain figures serialise")
                );
            } else {
                for line in size::steps(&q, &answer) {
                    println!("{line}");
                }
            }
            true
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
