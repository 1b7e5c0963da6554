//! The `keyrelay` binary: parses arguments, loads config, starts logging, and
//! runs one command. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyrelay::commands::{self, telemetry::LogFormat};
use keyrelay::config::Config;

#[derive(Parser)]
#[command(
    name = "keyrelay",
    version,
    about = "A pool of LLM API keys behind RabbitMQ"
)]
struct Cli {
    /// Log format on standard error.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "KEYRELAY_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service until SIGINT/SIGTERM.
    Run {
        #[arg(
            long,
            short,
            default_value = "config/keyrelay.toml",
            env = "KEYRELAY_CONFIG"
        )]
        config: PathBuf,
    },
    /// Publish a JSONL file of jobs (one job per line; `-` reads standard input).
    Enqueue {
        /// Pool whose queue receives the jobs.
        #[arg(long)]
        pool: String,
        /// JSONL file of jobs, or `-`.
        file: PathBuf,
        #[arg(
            long,
            short,
            default_value = "config/keyrelay.toml",
            env = "KEYRELAY_CONFIG"
        )]
        config: PathBuf,
        /// Queue the results go to (sets `reply_to` on every job).
        #[arg(long)]
        reply_to: Option<String>,
    },
    /// Run the demo: mock provider + keyrelay + sample jobs, end to end.
    Demo {
        /// Number of sample jobs.
        #[arg(long, default_value_t = 24)]
        jobs: usize,
        /// AMQP URL of the local RabbitMQ.
        #[arg(
            long,
            env = "AMQP_URL",
            default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
        )]
        amqp_url: String,
    },
    /// Serve the mock Gemini/OpenAI/Anthropic API (for tests and demos).
    MockProvider {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: std::net::SocketAddr,
        /// TOML file with mock settings (keys, limits, latency).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.command {
        Command::Demo { .. } => commands::telemetry::DEMO_FILTER,
        _ => commands::telemetry::SERVICE_FILTER,
    };
    commands::telemetry::init(cli.log_format, filter);
    // Actors live on the System's arbiter; job tasks and I/O use every core.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut runtime = Some(runtime);
    let system =
        actix::System::with_tokio_rt(move || runtime.take().expect("the runtime is built once"));
    match system.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => {
            commands::run::run(load(&config)?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Enqueue {
            pool,
            file,
            config,
            reply_to,
        } => {
            let config = load(&config)?;
            if !config.pools.iter().any(|p| p.name == pool) {
                anyhow::bail!("no pool named `{pool}` in the config");
            }
            let summary = commands::enqueue::enqueue(commands::enqueue::EnqueueArgs {
                broker_url: &config.broker.url,
                queue: config.job_queue(&pool),
                input: &file,
                reply_to,
                progress: true,
            })
            .await?;
            let clean = summary.rejected.is_empty() && summary.failed == 0;
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Demo { jobs, amqp_url } => {
            commands::demo::run(&amqp_url, jobs).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::MockProvider { listen, config } => {
            commands::mock::run(listen, config.as_deref()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}
