//! Span fields for the log layer, kept as recorded and formatted only when a log line
//! inside the span is written.
//!
//! tracing-subscriber's fmt layer formats every span's fields into a string when the span
//! is created, and again on each `record`, whether or not a line is ever logged inside the
//! span. The dispatcher and the worker open several spans per job and log inside almost
//! none of them, so that formatting (field names, `Debug` quoting of every string, a growing
//! `String`) was a measurable share of their CPU per job (docs/benchmarks.md, "Service CPU
//! per job"). [`LazyFields`] wraps the fmt layer and takes over its span bookkeeping: it keeps
//! each span's values as they come (strings copied into one buffer, numbers as numbers,
//! other values rendered once with `Debug`) and, just before a line inside the span is
//! written, formats them with the fmt layer's own field formatter into the
//! `FormattedFields` the fmt layer reads. Lines carry the same fields as before, in the
//! order the span declares them; a field recorded twice shows its last value.

use std::fmt::Write as _;
use std::marker::PhantomData;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};
use tracing_subscriber::Layer;

/// The fmt layer `inner`, with span fields formatted by `N` (the fmt layer's own field
/// formatter, `DefaultFields` or `JsonFields`) only when a line needs them.
pub(crate) struct LazyFields<L, N> {
    inner: L,
    fields: N,
}

impl<L, N> LazyFields<L, N> {
    pub(crate) fn new(inner: L, fields: N) -> Self {
        LazyFields { inner, fields }
    }
}

/// A recorded value; strings are ranges of [`Raw::text`].
#[derive(Clone, Copy)]
enum Val {
    Str(u32, u32),
    /// A value rendered with `Debug` (replayed verbatim, as the fmt layer would print it).
    Debug(u32, u32),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    Bool(bool),
    F64(f64),
}

/// A span's values as recorded, by field index, until a line needs them formatted.
struct Raw<N> {
    values: Vec<(usize, Val)>,
    text: String,
    /// Whether `FormattedFields<N>` holds the current values.
    formatted: bool,
    _fields: PhantomData<fn(N)>,
}

impl<N> Raw<N> {
    fn new() -> Self {
        Raw {
            values: Vec::new(),
            text: String::new(),
            formatted: false,
            _fields: PhantomData,
        }
    }

    fn put(&mut self, field: &Field, v: Val) {
        self.formatted = false;
        let i = field.index();
        match self.values.iter_mut().find(|(at, _)| *at == i) {
            Some(slot) => slot.1 = v,
            None => self.values.push((i, v)),
        }
    }

    fn text_range(&self, start: usize) -> (u32, u32) {
        (start as u32, self.text.len() as u32)
    }
}

impl<N> Visit for Raw<N> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let start = self.text.len();
        self.text.push_str(value);
        let (a, b) = self.text_range(start);
        self.put(field, Val::Str(a, b));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let start = self.text.len();
        let _ = write!(self.text, "{value:?}");
        let (a, b) = self.text_range(start);
        self.put(field, Val::Debug(a, b));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Val::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Val::U64(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, Val::I128(value));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.put(field, Val::U128(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Val::Bool(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Val::F64(value));
    }
}

/// A recorded value borrowed back as a `tracing` value, to replay it to the formatter.
enum Replay<'a> {
    Str(&'a str),
    Debug(tracing::field::DisplayValue<&'a str>),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    Bool(bool),
    F64(f64),
}

impl Replay<'_> {
    fn as_value(&self) -> &dyn tracing::Value {
        match self {
            Replay::Str(v) => v,
            Replay::Debug(v) => v,
            Replay::I64(v) => v,
            Replay::U64(v) => v,
            Replay::I128(v) => v,
            Replay::U128(v) => v,
            Replay::Bool(v) => v,
            Replay::F64(v) => v,
        }
    }
}

/// Formats `raw`'s values for `meta`'s span with `fields`, as the fmt layer would have.
fn format<N>(raw: &Raw<N>, meta: &'static Metadata<'static>, fields: &N) -> FormattedFields<N>
where
    N: for<'w> FormatFields<'w> + 'static,
{
    let text = |a: u32, b: u32| &raw.text[a as usize..b as usize];
    let replays: Vec<(usize, Replay<'_>)> = raw
        .values
        .iter()
        .map(|&(i, v)| {
            let r = match v {
                Val::Str(a, b) => Replay::Str(text(a, b)),
                Val::Debug(a, b) => Replay::Debug(tracing::field::display(text(a, b))),
                Val::I64(v) => Replay::I64(v),
                Val::U64(v) => Replay::U64(v),
                Val::I128(v) => Replay::I128(v),
                Val::U128(v) => Replay::U128(v),
                Val::Bool(v) => Replay::Bool(v),
                Val::F64(v) => Replay::F64(v),
            };
            (i, r)
        })
        .collect();
    let set = meta.fields();
    let mut slots: Vec<Option<&dyn tracing::Value>> = vec![None; set.len()];
    for (i, r) in &replays {
        if let Some(slot) = slots.get_mut(*i) {
            *slot = Some(r.as_value());
        }
    }
    let values = set.value_set_all(&slots);
    let mut out = FormattedFields::<N>::new(String::new());
    let _ = fields.format_fields(out.as_writer(), Record::new(&values));
    out
}

impl<L, N> LazyFields<L, N>
where
    N: for<'w> FormatFields<'w> + 'static,
{
    /// Makes sure `span` has its fields formatted for the fmt layer.
    fn ensure_formatted<S>(&self, span: &SpanRef<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let mut ext = span.extensions_mut();
        let out = if let Some(raw) = ext.get_mut::<Raw<N>>() {
            if raw.formatted {
                return;
            }
            raw.formatted = true;
            format(raw, span.metadata(), &self.fields)
        } else if ext.get_mut::<FormattedFields<N>>().is_none() {
            // A span this layer did not see created: give the formatter an empty set (the
            // JSON formatter requires one).
            FormattedFields::<N>::new(String::new())
        } else {
            return;
        };
        ext.replace(out);
    }
}

impl<S, L, N> Layer<S> for LazyFields<L, N>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
    N: for<'w> FormatFields<'w> + Send + Sync + 'static,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    /// Keeps the values; the fmt layer's own `on_new_span` (which formats them) is not
    /// called.
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut raw = Raw::<N>::new();
        attrs.record(&mut raw);
        span.extensions_mut().replace(raw);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        match ext.get_mut::<Raw<N>>() {
            Some(raw) => values.record(raw),
            None => {
                let mut raw = Raw::<N>::new();
                values.record(&mut raw);
                ext.replace(raw);
            }
        }
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    /// Formats the fields of every span the line will show — the event's scope, and the
    /// current span's (the JSON span list follows the current span even when the event
    /// names another parent) — then lets the fmt layer write it.
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                self.ensure_formatted(&span);
            }
        }
        if let Some(current) = ctx.lookup_current() {
            for span in current.scope() {
                self.ensure_formatted(&span);
            }
        }
        self.inner.on_event(event, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
}

#[cfg(test)]
mod tests;
