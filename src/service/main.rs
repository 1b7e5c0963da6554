//! The `keyrelay` binary: parses arguments, loads config, starts logging, and
//! runs one command. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyrelay::commands::{self, telemetry::LogFormat};
use keyrelay_core::config::Config;

/// mimalloc instead of glibc malloc: a job allocates and frees many small,
/// short-lived buffers across threads, where glibc spent ~15 % of keyrelay's
/// instructions (and `malloc_consolidate` stalls). Built as mimalloc v2 (the
/// `v2` feature): v3, the crate's default, kept 7-10 MiB more resident for
/// the same work (sled's page bookkeeping churns), at the same CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's arenas on transparent huge pages made an idle 1,000-key
/// keyrelay resident at 106 MiB instead of 47 MiB: 2 MiB pages are committed
/// whole. keyrelay gains nothing from huge pages, so they are off for the
/// process (what `MIMALLOC_ALLOW_THP=0` would do).
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes a
    // flag of this process; a failure (old kernel) just leaves THP as it was.
    unsafe {
        // Variadic: every argument must be an unsigned long, or the kernel
        // may read garbage in the upper bits and refuse (EINVAL).
        let (one, zero): (libc::c_ulong, libc::c_ulong) = (1, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, one, zero, zero, zero);
    }
}

/// `keyrelay --version`: the crate version and the git revision it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("KEYRELAY_GIT_REV"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "keyrelay",
    version = VERSION,
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
        /// Publish at most N jobs per second.
        #[arg(long, value_name = "N")]
        rate: Option<std::num::NonZeroU32>,
        /// To the pool's high-priority queue: these jobs go ahead of its backlog.
        #[arg(long)]
        high: bool,
    },
    /// Pools, keys and alerts as tables, from the admin API.
    Status {
        #[command(flatten)]
        admin: commands::admin_client::AdminArgs,
        /// Redraw every --interval seconds until Ctrl-C.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
    /// Take a key out (disable), put it back (enable), test it (probe), clear it (reset).
    Keys {
        #[arg(value_enum)]
        action: commands::keys::KeyAction,
        pool: String,
        name: String,
        /// Why (disable only).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        admin: commands::admin_client::AdminArgs,
    },
    /// Export stored results as JSONL (newest first), from the admin API.
    Results {
        #[command(flatten)]
        filter: commands::results::ResultsFilter,
        #[command(flatten)]
        admin: commands::admin_client::AdminArgs,
    },
    /// What was spent (by pool, key, user or model) and every budget, from the admin API.
    Spend {
        #[arg(long, value_enum, default_value = "pool")]
        by: commands::spend::SpendBy,
        /// From: RFC 3339 or a duration ago (30m, 6h, 7d); default: this UTC month.
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        admin: commands::admin_client::AdminArgs,
    },
    /// Run a JSONL file of jobs as one batch (resumable), or follow or cancel a batch.
    Batch {
        #[command(subcommand)]
        action: BatchAction,
    },
    /// Inspect the dead-letter queue, or send dead letters back to their pool's queue.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
        #[arg(
            long,
            short,
            global = true,
            default_value = "config/keyrelay.toml",
            env = "KEYRELAY_CONFIG"
        )]
        config: PathBuf,
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
        /// The mock provider's binary (default: `keyrelay-mock` next to this one).
        #[arg(long, env = "KEYRELAY_MOCK_BIN")]
        mock_bin: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BatchAction {
    /// Publish every line of FILE as one batch and collect the results into
    /// --out (one line per input, any order); run it again to resume.
    Run {
        file: PathBuf,
        #[arg(long)]
        pool: String,
        /// Where the results go (default: FILE.results.jsonl).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The batch's name (default: the file's name and a hash of its content).
        #[arg(long)]
        batch: Option<String>,
        #[arg(
            long,
            short,
            default_value = "config/keyrelay.toml",
            env = "KEYRELAY_CONFIG"
        )]
        config: PathBuf,
    },
    /// Follow a batch to its end: progress, rate, ETA and what limits it.
    Watch {
        id: String,
        #[command(flatten)]
        admin: commands::admin_client::AdminArgs,
    },
    /// Cancel a batch: its jobs not yet run are answered `cancelled`, no call.
    Cancel {
        id: String,
        #[command(flatten)]
        admin: commands::admin_client::AdminArgs,
    },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// Print dead letters as JSON lines (they stay in the queue).
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Republish dead letters to their pool's job queue (confirmed), then ack
    /// them; `invalid_job` ones are skipped unless --force; --dry-run prints.
    Replay {
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        filter: commands::dead_letters::ReplayFilter,
    },
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let filter = match cli.command {
        Command::Demo { .. } => commands::telemetry::DEMO_FILTER,
        _ => commands::telemetry::SERVICE_FILTER,
    };
    commands::telemetry::init(cli.log_format, filter);
    // Actors live on the System's arbiter; job tasks and I/O on the runtime.
    let mut builder = match runtime_builder() {
        Ok(builder) => builder,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match builder.enable_all().build() {
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

/// The environment variable tokio reads for its worker count.
const WORKER_THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// One worker thread unless `TOKIO_WORKER_THREADS` asks for more. A job costs
/// keyrelay about 90 µs of CPU, so one thread has room for some 10,000 jobs/s,
/// more than the combined quota of most key pools; on two cores a second
/// thread only added thread hops (wake-ups, futexes, context switches): 14 %
/// more CPU per job at the same throughput (docs/performance.md). Socket I/O
/// (lapin's I/O loop), sled's writers and the HTTP workers have threads of
/// their own; lapin's heartbeats run here, so a stalled worker stalls them
/// and the lease gate's round trips alike (the gate closes: no key is
/// driven on a lease that may be gone).
fn runtime_builder() -> Result<tokio::runtime::Builder, String> {
    let threads = match std::env::var(WORKER_THREADS_VAR) {
        Err(std::env::VarError::NotPresent) => 1,
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "{WORKER_THREADS_VAR} must be a whole number above 0, not {value:?}"
                ));
            }
        },
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(format!(
                "{WORKER_THREADS_VAR} must be a whole number above 0"
            ));
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(threads);
    Ok(builder)
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
            rate,
            high,
        } => {
            let config = load_without_keys(&config)?;
            if !config.pools.iter().any(|p| p.name == pool) {
                anyhow::bail!("no pool named `{pool}` in the config");
            }
            let queue = if high {
                config.high_queue(&pool)
            } else {
                config.job_queue(&pool)
            };
            let broker = keyrelay::amqp::Broker::connect(&config.broker.url).await?;
            commands::pool_queues::ensure(&broker, &config, &pool).await?;
            let _ = broker.close().await;
            let summary = commands::enqueue::enqueue(commands::enqueue::EnqueueArgs {
                broker_url: &config.broker.url,
                queue,
                input: &file,
                reply_to,
                progress: true,
                rate,
            })
            .await?;
            let clean = summary.rejected.is_empty() && summary.failed == 0;
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Demo {
            jobs,
            amqp_url,
            mock_bin,
        } => {
            commands::demo::run(&amqp_url, jobs, mock_bin.as_deref()).await?;
            Ok(ExitCode::SUCCESS)
        }
        command => operate(command).await,
    }
}

async fn batch(action: BatchAction) -> anyhow::Result<bool> {
    match action {
        BatchAction::Run {
            file,
            pool,
            out,
            batch,
            config,
        } => {
            let config = load_without_keys(&config)?;
            if !config.pools.iter().any(|p| p.name == pool) {
                anyhow::bail!("no pool named `{pool}` in the config");
            }
            let out = out.unwrap_or_else(|| commands::batch_run::default_out(&file));
            let s = commands::batch_run::run(commands::batch_run::BatchRun {
                config: &config,
                pool: &pool,
                input: &file,
                out: &out,
                batch,
            })
            .await?;
            println!(
                "batch {}: {} jobs, {} succeeded, {} failed ({} already in {} before this run); ${:.4} this run",
                s.batch,
                s.total,
                s.succeeded,
                s.failed,
                s.resumed,
                out.display(),
                s.cost_usd
            );
            Ok(s.failed == 0)
        }
        BatchAction::Watch { id, admin } => {
            let batch =
                commands::batch_watch::watch(&admin, &id, std::time::Duration::from_secs(1))
                    .await?;
            println!("{}", serde_json::to_string_pretty(&batch)?);
            Ok(batch["cancelled_at"].is_null())
        }
        BatchAction::Cancel { id, admin } => {
            let answer = commands::batch_watch::cancel(&admin, &id).await?;
            println!("{answer}");
            Ok(true)
        }
    }
}

/// The operator commands (admin API and dead letters).
async fn operate(command: Command) -> anyhow::Result<ExitCode> {
    let ok = match command {
        Command::Status {
            admin,
            watch,
            interval,
        } => {
            let every = std::time::Duration::from_secs(interval.max(1));
            commands::status::run(&admin, watch, every).await?;
            true
        }
        Command::Keys {
            action,
            pool,
            name,
            reason,
            admin,
        } => commands::keys::run(&admin, action, &pool, &name, reason).await?,
        Command::Results { filter, admin } => {
            commands::results::run(&admin, &filter).await?;
            true
        }
        Command::Spend { by, since, admin } => {
            commands::spend::run(&admin, by, since.as_deref()).await?;
            true
        }
        Command::Batch { action } => batch(action).await?,
        Command::DeadLetters { action, config } => {
            let config = load_without_keys(&config)?;
            match action {
                DeadLetterAction::List { limit } => {
                    commands::dead_letters::list(&config, limit).await?;
                    true
                }
                DeadLetterAction::Replay { limit, filter } => {
                    let s = commands::dead_letters::replay(&config, limit, &filter).await?;
                    let verb = if filter.dry_run {
                        "would replay"
                    } else {
                        "replayed"
                    };
                    println!(
                        "{verb} {} dead letters; {} skipped (filtered out or no known pool; {} of them would fail again: --force to replay), {} failed",
                        s.replayed, s.skipped, s.would_fail_again, s.failed
                    );
                    s.failed == 0
                }
            }
        }
        _ => anyhow::bail!("internal error: a service command reached the operator dispatch"),
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

/// The config for a command that only publishes or reads queues: the keys'
/// variables need not be set.
fn load_without_keys(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load_without_keys(path)?)
}
