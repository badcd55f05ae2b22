//! JSON log lines: one object per event, its fields flattened beside
//! `timestamp`, `level`, `message` and `target`, as tracing-subscriber's
//! own JSON format writes them, except that the list fields (`roles`,
//! `scopes`, `bindings`: written by the callout as JSON arrays in text) are real JSON
//! arrays, so a collector can filter on one role.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Fields whose text is a JSON array of strings (see `text::list`).
const LIST_FIELDS: &[&str] = &["roles", "scopes", "bindings"];

pub(super) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        if let Some(message) = fields.0.remove("message") {
            line.insert("message".into(), message);
        }
        for (key, value) in fields.0 {
            // A field of the event cannot replace the line's own keys.
            line.entry(key).or_insert(value);
        }
        line.entry("target").or_insert(meta.target().into());
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct Fields(Map<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        self.0
            .insert(name.strip_prefix("r#").unwrap_or(name).to_string(), value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if LIST_FIELDS.contains(&field.name()) {
            if let Ok(list @ Value::Array(_)) = serde_json::from_str::<Value>(&text) {
                return self.put(field, list);
            }
        }
        self.put(field, text.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}
