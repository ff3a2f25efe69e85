//! The plain text line (no colour): the same text tracing-subscriber's default `Full` format and
//! `DefaultFields` write with ANSI off and the target hidden —
//! `2026-12-05T11:48:59.306164Z  INFO request{request_id="…" method="POST"}: response status=200`
//! — written straight into the line instead of through their styling layer. With colour off,
//! every piece there still went through an empty `nu-ansi-term` style, and a message through
//! an escaping writer a character at a time: about 7,000 instructions of a relayed call's
//! 185,000 (docs/benchmarks.md, eleventh session). Messages and errors are still escaped as
//! tracing-subscriber escapes them (terminal control characters written as `\x1b`, `\u{9b}`…),
//! so a client's text in a log line cannot drive a terminal; the unit tests hold the two
//! formats to the same text.

use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event line: time, level, the spans with their fields, the event's fields.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TextLine<T> {
    timer: T,
}

impl<T> TextLine<T> {
    pub(super) fn new(timer: T) -> Self {
        TextLine { timer }
    }
}

impl<S, N, T> FormatEvent<S, N> for TextLine<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.timer.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        writer.write_str(match *event.metadata().level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// The fields of a span or an event: `message` as it is, the others `name=value` (`Debug`),
/// separated by a space (a [`FormatFields`] through tracing-subscriber's blanket impl for
/// visitor makers).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TextFields;

impl<'a> MakeVisitor<Writer<'a>> for TextFields {
    type Visitor = TextVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        TextVisitor {
            writer: target,
            first: true,
            result: Ok(()),
        }
    }
}

/// Writes one span's or event's fields (see [`TextFields`]).
pub(super) struct TextVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    fn pad(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.result = self.writer.write_char(' ');
        }
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!(
                    "{} {}.sources={}",
                    Escaped(value),
                    field.name(),
                    Sources(source)
                ),
            ),
            None => self.record_debug(field, &format_args!("{}", Escaped(value))),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.pad();
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        self.result = match name {
            "message" => write!(Escaping(&mut self.writer), "{value:?}"),
            _ => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                write!(self.writer, "{name}={value:?}")
            }
        };
    }
}

impl VisitOutput<fmt::Result> for TextVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for TextVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// An error's text, escaped.
struct Escaped<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaping(f), "{}", self.0)
    }
}

/// An error's sources as a list, `[first, second]`, each escaped.
struct Sources<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut next = Some(self.0);
        while let Some(e) = next {
            list.entry(&format_args!("{}", Escaped(e)));
            next = e.source();
        }
        list.finish()
    }
}

/// Writes text with the control characters a terminal acts on written out (`\x1b`, `\u{9b}`),
/// as tracing-subscriber's sanitizing writer does; runs of ordinary text go through in one
/// piece.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, ch) in s.char_indices() {
            let named = match ch {
                '\x1b' => "\\x1b",
                '\x07' => "\\x07",
                '\x08' => "\\x08",
                '\x0c' => "\\x0c",
                '\x7f' => "\\x7f",
                '\u{80}'..='\u{9f}' => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if named.is_empty() {
                write!(self.0, "\\u{{{:x}}}", u32::from(ch))?;
            } else {
                self.0.write_str(named)?;
            }
            start = i + ch.len_utf8();
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::tests::Buffer;
    use tracing::field::Empty;
    use tracing_subscriber::layer::SubscriberExt;

    /// The same time on every line, so that two formats' lines can be compared.
    #[derive(Clone, Copy)]
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-12-05T12:00:00.000001Z")
        }
    }

    /// A timer that fails.
    #[derive(Clone, Copy)]
    struct Broken;

    impl FormatTime for Broken {
        fn format_time(&self, _: &mut Writer<'_>) -> fmt::Result {
            Err(fmt::Error)
        }
    }

    #[derive(Debug)]
    struct Failure(&'static str, Option<Box<Failure>>);

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Failure {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    /// Every kind of line Tollgate logs, and some it does not yet.
    fn log_everything() {
        tracing::info!("listening");
        tracing::trace!(n = 1u64, "trace");
        tracing::debug!(ok = true, ratio = 0.5, "debug");
        let request = tracing::info_span!(
            "request",
            request_id = "abc123",
            method = "POST",
            route = Empty,
            token_id = Empty,
            r#type = "chat",
        );
        let _request = request.enter();
        request.record("route", "chat");
        request.record("token_id", 7);
        tracing::warn!(
            status = 500,
            body = "a \"quoted\"\n\u{1b}[31mtext",
            "upstream failed"
        );
        let inner = tracing::info_span!("inner");
        let _inner = inner.enter();
        tracing::error!(
            error = &Failure(
                "outer \u{1b}[2J",
                Some(Box::new(Failure(
                    "middle",
                    Some(Box::new(Failure("inner \u{9b}", None)))
                )))
            ) as &(dyn std::error::Error + 'static),
            "failed"
        );
        tracing::error!(error = &Failure("alone", None) as &(dyn std::error::Error + 'static));
        tracing::info!(
            "a message with \u{7}\u{8}\u{c}\u{7f}\u{85} controls: {}",
            "and \u{1b}"
        );
        tracing::info!(message = "a message as a str \u{1b}", r#loop = -3i64);
        tracing::info!(?request, "a debug field");
    }

    /// What [`log_everything`] writes through the fmt layer `layer` makes of a buffer.
    fn written<L>(layer: impl FnOnce(Buffer) -> L) -> String
    where
        L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
    {
        let out = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(layer(out.clone()));
        tracing::subscriber::with_default(subscriber, log_everything);
        out.text()
    }

    fn ours(timer: impl FormatTime + Send + Sync + 'static) -> String {
        written(|out| {
            tracing_subscriber::fmt::layer()
                .event_format(TextLine::new(timer))
                .fmt_fields(TextFields)
                .with_writer(out)
        })
    }

    fn theirs(timer: impl FormatTime + Send + Sync + 'static) -> String {
        written(|out| {
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(false)
                .with_timer(timer)
                .with_writer(out)
        })
    }

    #[test]
    fn lines_are_the_text_tracing_subscriber_writes_without_colour() {
        let (ours, theirs) = (ours(Fixed), theirs(Fixed));
        assert_eq!(ours, theirs);
        // What the comparison covers: levels, spans and their late fields, escapes.
        assert_eq!(ours.lines().count(), 9, "{ours}");
        assert!(ours.contains(
            "  WARN request{request_id=\"abc123\" method=\"POST\" type=\"chat\" route=\"chat\" \
             token_id=7}: upstream failed status=500"
        ));
        assert!(ours.contains("request{"), "{ours}");
        assert!(
            ours.contains(
                "}:inner: failed error=outer \\x1b[2J error.sources=[middle, inner \\u{9b}]"
            ),
            "{ours}"
        );
        assert!(!ours.contains('\u{1b}'), "{ours}");
    }

    #[test]
    fn a_failing_timer_is_written_as_an_unknown_time() {
        assert_eq!(ours(Broken), theirs(Broken));
        assert!(ours(Broken).starts_with("<unknown time>  INFO listening\n"));
    }

    #[test]
    fn escaping_leaves_ordinary_text_alone() {
        let mut s = String::new();
        let world = "wörld \u{1b}";
        write!(Escaping(&mut s), "héllo {world}x\u{80}").expect("written");
        assert_eq!(s, "héllo wörld \\x1bx\\u{80}");
    }
}
