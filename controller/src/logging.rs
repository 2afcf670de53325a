//! Log set-up: text or JSON lines on stderr through `tracing`, filtered by
//! `RUST_LOG` (default `info`).
//!
//! Text is coloured only when stderr is a terminal: a container runtime, a
//! pipe or a file gets plain lines, not ANSI escape codes. JSON lines carry
//! the same fields as text: the event's own fields (`message` included) at
//! the top level next to `timestamp`, `level` and `target`, and the spans it
//! happened in under `spans` (the text format prints them before the
//! message).

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like [`init`] with another level when `RUST_LOG` is unset (the simulation
/// keeps the terminal for its own output).
pub fn init_with_default(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = colour(&std::io::stderr());
    // `try_init` also routes `log` records into `tracing`; a subscriber
    // already set (tests, `simulate`) stays.
    let _ = subscriber(format, filter, std::io::stderr, ansi).try_init();
}

/// Whether text logs written to `stream` get ANSI colours: only on a
/// terminal.
pub fn colour(stream: &impl IsTerminal) -> bool {
    stream.is_terminal()
}

/// The subscriber `init` installs, writing to `writer`.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;

    /// A writer that keeps what it gets, as a pipe to a log collector would.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    /// One warning inside a span, logged with `format` into a writer;
    /// `ansi` as `init` would decide it for that writer.
    fn log_one(format: LogFormat, ansi: bool) -> String {
        let out = Captured::default();
        let subscriber = subscriber(format, EnvFilter::new("info"), out.clone(), ansi);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("reconcile", node = "node-1");
            let _entered = span.enter();
            tracing::warn!(
                resource = "aliyun/eni",
                value = 2,
                "advertised ENI capacity"
            );
        });
        let bytes = out.0.lock().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn text_into_a_file_or_pipe_has_no_escape_codes() {
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let ansi = colour(&file);
        assert!(!ansi, "a file is not a terminal");
        let text = log_one(LogFormat::Text, ansi);
        assert!(!text.contains('\u{1b}'), "{text:?}");
        for part in [
            "WARN",
            "reconcile{node=\"node-1\"}",
            "advertised ENI capacity",
            "resource=\"aliyun/eni\"",
            "value=2",
        ] {
            assert!(text.contains(part), "{part} missing in {text:?}");
        }
        // The same line on a terminal is coloured: the check above can fail.
        assert!(log_one(LogFormat::Text, true).contains('\u{1b}'));
    }

    #[test]
    fn json_carries_the_text_fields_at_the_top_level() {
        let text = log_one(LogFormat::Json, false);
        assert!(!text.contains('\u{1b}'), "{text:?}");
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["message"], "advertised ENI capacity", "{line}");
        assert_eq!(line["resource"], "aliyun/eni", "{line}");
        assert_eq!(line["value"], 2, "{line}");
        assert_eq!(line["target"], "controller::logging::tests", "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
        assert_eq!(line["spans"][0]["name"], "reconcile", "{line}");
        assert_eq!(line["spans"][0]["node"], "node-1", "{line}");
        assert!(line.get("fields").is_none(), "fields are flattened: {line}");
    }
}
