//! Structured logs, and optionally traces. `RUST_LOG` overrides the configured filter.
//!
//! With `[log] otlp_traces_endpoint` set, every span (an API request with its
//! `request_id`, say) is also exported as OTLP over HTTP to that collector, batched on
//! a thread of its own, with the process's name as `service.name`.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Keeps the trace exporter alive; dropping it sends the spans still batched.
#[must_use = "dropping the guard at once stops the trace export"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("sending the last spans failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber for the process `service` (`absa-api`, ...); logs go
/// to stderr so stdout stays free for the one-line JSON summaries the CLIs print.
/// A second call (tests) keeps the first subscriber.
pub fn init(service: &str, settings: &LogSettings) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    // Colours only on a terminal: files and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = settings.json.then(|| tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr));
    let text = (!settings.json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi));
    let (traces, exporter_error) = match settings.otlp_traces_endpoint.as_deref().filter(|e| !e.is_empty()) {
        Some(endpoint) => match tracer_provider(service, endpoint) {
            Ok(provider) => (Some(provider), None),
            Err(e) => (None, Some(format!("no trace export to {endpoint}: {e}"))),
        },
        None => (None, None),
    };
    let otel = traces.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service.to_owned())));
    let _ = tracing_subscriber::registry().with(filter).with(json).with(text).with(otel).try_init();
    if let Some(error) = exporter_error {
        tracing::error!("{error}");
    }
    Telemetry { traces }
}

fn tracer_provider(service: &str, endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(endpoint).build()?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.to_owned()).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}
