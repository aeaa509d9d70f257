use super::*;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::format::{DefaultFields, JsonFields};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// Log lines written to memory.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// The same job span and lines, logged through `subscriber`.
fn log_job_lines(subscriber: impl Subscriber + Send + Sync) {
    tracing::subscriber::with_default(subscriber, || {
        let subject = "jetinfer.jobs.p1.mlp";
        let span = tracing::info_span!(
            "dispatcher.job",
            otel.name = %format_args!("process {subject}"),
            "messaging.message.id" = %"job-7",
            "jetinfer.delivered" = 2u32,
            "jetinfer.ok" = true,
            "jetinfer.quote" = "a \"b\"",
            trace_id = tracing::field::Empty,
            "jetinfer.status" = tracing::field::Empty,
        );
        span.record("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
        span.record("jetinfer.status", "ok");
        span.record("jetinfer.status", "error");
        // A span no line is written in: nothing of it shows.
        let _quiet = tracing::info_span!(parent: &span, "quiet", x = 1);
        tracing::warn!(parent: &span, code = "invalid_input", "job answered with an error");
        let child = span.in_scope(|| tracing::info_span!("dispatcher.dispatch", attempt = 1));
        child.in_scope(|| tracing::info!("inside both"));
    });
}

fn eager_and_lazy_text() -> (String, String) {
    let eager = Lines::default();
    log_job_lines(
        tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .without_time()
                .with_ansi(false)
                .with_writer(eager.clone()),
        ),
    );
    let lazy = Lines::default();
    log_job_lines(
        tracing_subscriber::registry().with(LazyFields::new(
            tracing_subscriber::fmt::layer()
                .without_time()
                .with_ansi(false)
                .with_writer(lazy.clone()),
            DefaultFields::new(),
        )),
    );
    (eager.text(), lazy.text())
}

#[test]
fn text_lines_carry_the_span_fields() {
    let (eager, lazy) = eager_and_lazy_text();
    let lines: Vec<&str> = lazy.lines().collect();
    assert_eq!(lines.len(), 2, "{lazy}");
    for want in [
        "dispatcher.job{",
        "otel.name=process jetinfer.jobs.p1.mlp",
        "messaging.message.id=job-7",
        "jetinfer.delivered=2",
        "jetinfer.ok=true",
        r#"jetinfer.quote="a \"b\"""#,
        "trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"",
        "jetinfer.status=\"error\"",
        "job answered with an error code=\"invalid_input\"",
    ] {
        assert!(lines[0].contains(want), "{want} not in {}", lines[0]);
    }
    assert!(!lines[0].contains("status=\"ok\""), "{}", lines[0]);
    assert!(
        lines[1].contains(":dispatcher.dispatch{attempt=1}"),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\""));
    // Every field the eager layer printed is printed (the eager one also prints the
    // status twice: it appends each record).
    for field in eager.lines().next().unwrap().split_whitespace() {
        if field.contains('=') && !field.contains("status") {
            assert!(
                lines[0].contains(field.trim_end_matches(['}', ':'])),
                "{field}"
            );
        }
    }
}

#[test]
fn json_lines_carry_the_span_list() {
    let lazy = Lines::default();
    log_job_lines(
        tracing_subscriber::registry().with(LazyFields::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(lazy.clone()),
            JsonFields::new(),
        )),
    );
    let text = lazy.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let spans = lines[1]["spans"].as_array().unwrap();
    assert_eq!(spans[0]["name"], "dispatcher.job");
    assert_eq!(spans[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(spans[0]["messaging.message.id"], "job-7");
    assert_eq!(spans[0]["jetinfer.delivered"], 2);
    assert_eq!(spans[0]["jetinfer.status"], "error");
    assert_eq!(spans[1]["name"], "dispatcher.dispatch");
    assert_eq!(lines[1]["span"]["attempt"], 1);
}
