//! The run's log: `tracing` events on standard error, as text lines or as one JSON object per
//! line (`--log-format json`, for journald or a log shipper), with the counters as fields rather
//! than inside the message, so that they can be queried. The final error of a run that fails
//! stays a plain line (`stripwatch: error: ...`), written by `main`.

/// How log events are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIME LEVEL message key=value ...`
    #[default]
    Text,
    /// `{"timestamp":...,"level":...,"message":...,"key":value,...}`
    Json,
}

/// Installs the subscriber for the whole process (once; later calls change nothing). It writes
/// on the calling thread, so it starts no thread of its own (see `cli::privileges`).
pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}
