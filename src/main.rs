use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use quiver::config::{self, ServeArgs, StorageArgs};
use quiver::ingest::text::{BatchReader, TimestampUnit};
use quiver::sql::OutputFormat;
use quiver::storage::{Storage, WriteWindow, objstore};

/// Quiver: a Prometheus-compatible metrics store on Parquet blocks, with SQL.
#[derive(Parser)]
#[command(name = "quiver", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (remote write, import, health) on a data dir (default ./data).
    Serve(Box<ServeArgs>),
    /// Backfill Prometheus text / OpenMetrics files (with timestamps) into a data dir.
    /// Do not run against a data dir a server is using.
    Import {
        #[command(flatten)]
        storage: StorageArgs,
        /// Timestamp unit: auto (fractions or values below 1e11 are seconds), ms or s
        #[arg(long, default_value = "auto")]
        timestamps: String,
        /// Files to import (`-` for standard input)
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run Prometheus promqltest scripts (`.test` files) against the engine.
    Promqltest {
        /// Print only the per-file lines and the totals, not each failing eval
        #[arg(long)]
        quiet: bool,
        /// Check each eval's plans run on three workers over TCP against one process
        /// (not against the files' expected results)
        #[arg(long)]
        distributed: bool,
        /// Test script files
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show how a PromQL range query (or with --sql a SQL statement) executes: its
    /// DataFusion plans.
    Explain {
        #[command(flatten)]
        storage: StorageArgs,
        /// Range start (Unix seconds or RFC 3339) [default: end - 1h]
        #[arg(long)]
        start: Option<String>,
        /// Range end (Unix seconds or RFC 3339) [default: now]
        #[arg(long)]
        end: Option<String>,
        /// Step (seconds or a Prometheus duration)
        #[arg(long, default_value = "60s")]
        step: String,
        /// Also run the plan and print each operator's metrics (rows, time), as
        /// `EXPLAIN ANALYZE`
        #[arg(long)]
        analyze: bool,
        /// Parallelism of the plan [default: the CPUs]
        #[arg(long)]
        partitions: Option<usize>,
        /// Ask a running server (`/api/v1/explain`) instead of reading a data dir: its
        /// data, limits and planner, as the credentials see them (`http://user:pass@host`
        /// for basic auth, or --bearer-token)
        #[arg(long = "url", id = "server_url", conflicts_with = "partitions")]
        server: Option<String>,
        /// With --url: a bearer token (JWT) to send
        #[arg(long, env = "QUIVER_BEARER_TOKEN", requires = "server_url")]
        bearer_token: Option<String>,
        /// The query is SQL (over `samples`, `series`, ...), not PromQL
        #[arg(long)]
        sql: bool,
        /// The PromQL expression (or SQL statement)
        query: String,
    },
    /// Run SQL over the stored samples (tables `series`, `samples`; views in sql/views.sql).
    Sql {
        #[command(flatten)]
        storage: StorageArgs,
        /// Output format
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// The SQL statement
        query: String,
    },
    /// Print an argon2id hash of a password read from standard input, for
    /// `[[auth.users]] password_hash` in the config file.
    HashPassword,
    /// The blocks of a data dir or bucket: `list` them, or `verify` every file (counts,
    /// sort order, time range, index); exits 1 when a block has a problem.
    Blocks {
        #[command(subcommand)]
        action: BlocksAction,
    },
    /// Series counts by metric name, label name and label pair (as `/api/v1/status/tsdb`,
    /// over every stored series; like `promtool tsdb analyze`).
    Cardinality {
        #[command(flatten)]
        storage: StorageArgs,
        /// Entries per list
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Print the lists as JSON (the status endpoint's names) instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BlocksAction {
    /// One line per block: time range, series, samples, bytes, level, parents.
    List {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Read every file of every block and check it against its meta.json.
    Verify {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("QUIVER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() {
    // The matches are kept: `serve` layers its config file under the flags and variables
    // the user gave, which only the matches know (`config::layered`).
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if !matches!(cli.command, Command::Serve(_)) {
        // `serve` sets its configured threshold; `sql`, `explain` and the others read
        // blocks the same way and keep the default (`memory::DEFAULT_TRIM_THRESHOLD`).
        quiver::memory::tune_allocator(quiver::memory::DEFAULT_TRIM_THRESHOLD);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        // Parsing, printing and dropping PromQL ASTs recurse per level; `promql::guard`
        // bounds the depth to what this stack holds (queries run on `QueryRuntime`).
        .thread_stack_size(64 << 20)
        // Local object-store I/O and import parsing share this pool (WAL fsyncs have their
        // own threads, `storage::wal_pool`): its size bounds those threads.
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(_) => {
                let serve = matches
                    .subcommand_matches("serve")
                    .expect("the serve subcommand matched");
                let cfg = ServeArgs::layered(serve)?.resolve()?;
                init_tracing(cfg.json_logs);
                quiver::server::run(cfg).await
            }
            Command::Import {
                storage,
                timestamps,
                files,
            } => {
                init_tracing(false);
                import(storage, &timestamps, files).await
            }
            Command::Promqltest {
                quiet,
                distributed,
                files,
            } => promqltest(quiet, distributed, files).await,
            Command::Explain {
                storage,
                start,
                end,
                step,
                analyze,
                partitions,
                server,
                bearer_token,
                sql,
                query,
            } => {
                if let Some(url) = server {
                    let window = (start, end, step);
                    let token = bearer_token.as_deref();
                    print!(
                        "{}",
                        explain_remote(&url, token, &query, window, analyze, sql).await?
                    );
                    return Ok(());
                }
                use quiver::api::params::{parse_duration, parse_time};
                let storage = open_read_only(&storage).await?;
                if sql {
                    let ctx = quiver::sql::session(storage).await?;
                    print!(
                        "{}",
                        quiver::sql::explain(&ctx, &query, analyze).await?.text
                    );
                    return Ok(());
                }
                let end = match end {
                    Some(e) => parse_time(&e).map_err(anyhow::Error::msg)?,
                    None => storage.now_ms(),
                };
                let start = match start {
                    Some(s) => parse_time(&s).map_err(anyhow::Error::msg)?,
                    None => end - 3_600_000,
                };
                let step = parse_duration(&step).map_err(anyhow::Error::msg)?;
                let mut opts = quiver::promql::QueryOptions::default();
                if let Some(p) = partitions {
                    opts.partitions = p.max(1);
                }
                let engine = quiver::promql::Engine::new(storage, opts);
                let expr = quiver::promql::Engine::parse(&query)?;
                let text = if analyze {
                    engine.explain_analyze(&expr, start, end, step).await?
                } else {
                    engine.explain(&expr, start, end, step).await?
                };
                print!("{text}");
                Ok(())
            }
            Command::Blocks { action } => {
                let (storage, verify) = match action {
                    BlocksAction::List { storage } => (storage, false),
                    BlocksAction::Verify { storage } => (storage, true),
                };
                let r = config::resolve_storage(&storage)?;
                let store = objstore::build(r.url.as_deref(), &r.data_dir, &r.s3)?;
                let (text, ok) = quiver::ops::blocks(&store, verify).await?;
                print!("{text}");
                anyhow::ensure!(ok, "some blocks have problems (listed above)");
                Ok(())
            }
            Command::Cardinality {
                storage,
                limit,
                json,
            } => {
                let storage = open_read_only(&storage).await?;
                let v = quiver::ops::cardinality(&storage, limit);
                if json {
                    println!("{v}");
                } else {
                    print!("{}", quiver::ops::cardinality_text(&v));
                }
                Ok(())
            }
            Command::HashPassword => {
                let mut pw = String::new();
                std::io::stdin().read_line(&mut pw)?;
                let pw = pw.trim_end_matches(['\r', '\n']);
                anyhow::ensure!(!pw.is_empty(), "no password on standard input");
                println!("{}", quiver::auth::hash_password(pw)?);
                Ok(())
            }
            Command::Sql {
                storage,
                format,
                query,
            } => {
                let storage = open_read_only(&storage).await?;
                let ctx = quiver::sql::session(storage).await?;
                let batches = quiver::sql::query(&ctx, &query).await?;
                print!("{}", quiver::sql::render(&batches, format)?);
                if format == OutputFormat::Table {
                    println!();
                }
                Ok(())
            }
        }
    });
    if let Err(e) = result {
        eprintln!("quiver: error: {e:#}");
        std::process::exit(1);
    }
}

/// Opens a data dir (and its bucket) without changing anything, beside a running server.
async fn open_read_only(args: &StorageArgs) -> anyhow::Result<Arc<Storage>> {
    let r = config::resolve_storage(args)?;
    let store = objstore::build(r.url.as_deref(), &r.data_dir, &r.s3)?;
    let mut opts = r.options();
    opts.read_only = true;
    Ok(Arc::new(Storage::open(opts, store).await?))
}

async fn import(args: StorageArgs, unit: &str, files: Vec<PathBuf>) -> anyhow::Result<()> {
    let unit = match unit {
        "auto" => TimestampUnit::Auto,
        "ms" => TimestampUnit::Millis,
        "s" => TimestampUnit::Seconds,
        other => anyhow::bail!("--timestamps must be auto, ms or s (got {other:?})"),
    };
    let r = config::resolve_storage(&args)?;
    let store = objstore::build(r.url.as_deref(), &r.data_dir, &r.s3)?;
    let mut opts = r.options();
    // Bulk import skips the WAL: it writes blocks directly and is simply re-run on failure.
    opts.wal = false;
    let storage = Storage::open(opts, store).await?;
    let mut total = 0usize;
    for f in &files {
        let (reader, size): (Box<dyn std::io::BufRead>, u64) = if f.as_os_str() == "-" {
            (Box::new(BufReader::new(std::io::stdin())), 0)
        } else {
            let file =
                std::fs::File::open(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            let size = file.metadata()?.len();
            (Box::new(BufReader::with_capacity(1 << 20, file)), size)
        };
        let pb = ProgressBar::new(size);
        pb.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        pb.set_message(f.display().to_string());
        let mut reader =
            BatchReader::new(reader, unit, storage.now_ms(), 100_000).with_batch_bytes(64 << 20);
        loop {
            let batch = reader
                .next_batch()
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            let Some(batch) = batch else { break };
            total += storage
                .append(batch, WriteWindow::Backfill)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            pb.set_position(reader.bytes_read());
            // Only the size bound: an import file is usually series after series, so
            // every batch spans the file's whole time range, which the server's
            // time-span trigger would turn into a flush per batch.
            if storage.head_stats().1 >= r.head_max_samples {
                storage.flush().await?;
            }
        }
        pb.finish_and_clear();
    }
    storage.flush().await?;
    let report = storage.compact_all().await?;
    eprintln!(
        "imported {total} samples from {} file(s); {} blocks after compaction ({} merged)",
        files.len(),
        storage.blocks().len(),
        report.merged.len()
    );
    Ok(())
}

async fn promqltest(quiet: bool, distributed: bool, files: Vec<PathBuf>) -> anyhow::Result<()> {
    use quiver::promqltest::{Counts, Mode, load_index, run_file_as};
    let mode = if distributed {
        Mode::Distributed
    } else {
        Mode::Conformance
    };
    let index = files.first().and_then(|f| load_index(f));
    let mut total = Counts::default();
    let mut errors = 0;
    for f in &files {
        let mut report = |msg: String| {
            if !quiet {
                println!("{msg}");
            }
        };
        match run_file_as(f, index.as_ref(), &mut report, mode).await {
            Ok(c) => {
                println!(
                    "{}: {} passed, {} failed, {} skipped",
                    f.display(),
                    c.passed,
                    c.failed,
                    c.skipped
                );
                total.add(&c);
            }
            Err(e) => {
                errors += 1;
                println!("{}: error: {e}", f.display());
            }
        }
    }
    if total.clean_total > 0 {
        println!(
            "stable evals (neither native histograms nor experimental syntax, per eval-index.tsv): {} of {} passed ({:.1}%)",
            total.clean_passed,
            total.clean_total,
            100.0 * total.clean_passed as f64 / total.clean_total as f64
        );
    }
    println!(
        "{} passed, {} failed, {} skipped",
        total.passed, total.failed, total.skipped
    );
    if total.failed > 0 || errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `quiver explain --url`: the server's `/api/v1/explain` for a range query, as text.
async fn explain_remote(
    url: &str,
    bearer: Option<&str>,
    query: &str,
    (start, end, step): (Option<String>, Option<String>, String),
    analyze: bool,
    sql: bool,
) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let end = end.unwrap_or_else(|| now.to_string());
    let start = match start {
        Some(s) => s,
        None => {
            let e = quiver::api::params::parse_time(&end).map_err(anyhow::Error::msg)?;
            ((e - 3_600_000) / 1000).to_string()
        }
    };
    let mut params = vec![
        ("query", query.to_string()),
        ("start", start),
        ("end", end),
        ("step", step),
    ];
    if analyze {
        params.push(("analyze", "1".into()));
    }
    if sql {
        params.push(("lang", "sql".into()));
    }
    // Longer than any server's query timeout (2 m by default): a hung server ends too.
    let mut req = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()?
        .post(format!("{}/api/v1/explain", url.trim_end_matches('/')))
        .form(&params);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| anyhow::anyhow!("{url} answered {status} without JSON: {e}"))?;
    if body["status"] != "success" {
        anyhow::bail!(
            "{url} answered {status}: {}: {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("")
        );
    }
    let mut text = body["data"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for (key, what) in [("warnings", "warning"), ("infos", "info")] {
        for note in body[key].as_array().into_iter().flatten() {
            text.push_str(&format!("{what}: {}\n", note.as_str().unwrap_or_default()));
        }
    }
    Ok(text)
}
