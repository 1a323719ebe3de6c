//! The `imagepush` command line: argument parsing and how results are shown. The work is
//! done by the library (`push::push`); this module turns flags into options, errors into
//! exit codes, and reports into files and lines.

pub mod controller;
pub mod push;

use clap::{Parser, Subcommand, ValueEnum};

/// Push OCI image layouts to container registries, with `docker push` semantics.
#[derive(Debug, Parser)]
#[command(name = "imagepush", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "IMAGEPUSH_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax: `warn`, `info`, `imagepush=debug`).
    #[arg(long, global = true, default_value = "warn", env = "IMAGEPUSH_LOG")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Push an OCI image layout to a registry.
    Push(push::PushArgs),
    /// Run the Kubernetes operator: reconcile ImagePush objects with worker Jobs.
    Controller(controller::ControllerArgs),
    /// Print the ImagePush CustomResourceDefinition (YAML).
    Crd,
}

/// Sets up logging on stderr. Credentials never reach a log: no type that holds one prints it.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}
