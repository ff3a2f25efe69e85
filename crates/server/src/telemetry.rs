//! Logging to stdout and to a daily file `tollgate-YYYY-MM-DD.log` (UTC) under
//! `TOLLGATE_LOG_DIR`, as human-readable lines or, with `TOLLGATE_LOG_FORMAT=json`, one JSON
//! object a line for log shippers. The filter comes from `RUST_LOG` (default `info`). Prompts,
//! completions and secrets are never logged.
//!
//! Both formats carry the fields of the span a line was logged in: the middleware's `request`
//! span holds `request_id`, `method` and `path`, and for a relayed call `route`, `token_id`,
//! `model` and `channel_id` once known, so `grep <request id>` finds every line of a call
//! (its stream's and settlement's included). A JSON line looks like
//! `{"timestamp":…,"level":"WARN","fields":{"message":"upstream failed",…},
//! "span":{"request_id":…,"method":"POST",…,"route":"chat","token_id":…,"name":"request"},"spans":[{…"name":"request"}]}`:
//! `span` is the innermost span, `spans` all of them from the outermost.
//!
//! A line is formatted once and goes to both outputs (stdout is coloured, and so formatted
//! apart, only when it is a terminal). Lines are written by a thread per output
//! ([`Background`]): a request's task only copies its formatted line into a buffer; the thread,
//! woken by the first line after a quiet spell, gathers lines for up to [`GATHER`] (or
//! [`GATHER_BYTES`]) and writes them with one write, so a busy gateway makes a few large writes
//! a second and no wake-up per line. Nothing is dropped while the process runs: a writer waits
//! when the buffer is full, and [`LogGuard`] writes the rest when the process ends; a
//! `kill -9` loses at most the last [`GATHER`] of lines.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tollgate_domain::time::UnixTime;
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

mod text;
use text::{TextFields, TextLine};

/// How log lines are written (`TOLLGATE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (coloured on stdout, plain in the file).
    #[default]
    Text,
    /// One JSON object a line, in both places.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "{:?} is not a log format: use text or json",
                s.trim()
            )),
        }
    }
}

/// A file writer that switches to a new file when the UTC date changes.
#[derive(Clone)]
pub struct DailyFile {
    dir: PathBuf,
    current: Arc<Mutex<Option<(String, File)>>>,
}

impl DailyFile {
    /// Writes under `dir`, creating it if needed.
    pub fn new(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(DailyFile {
            dir,
            current: Arc::new(Mutex::new(None)),
        })
    }

    fn today() -> String {
        // `YYYY-MM-DD HH:MM:SS`: the date is the first ten characters.
        let mut stamp = crate::clock::now().to_string();
        stamp.truncate(10);
        stamp
    }
}

/// One write to the current day's file.
pub struct DailyWriter(DailyFile);

impl Write for DailyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let today = DailyFile::today();
        let mut guard = self
            .0
            .current
            .lock()
            .map_err(|_| io::Error::other("log file lock poisoned"))?;
        if guard.as_ref().is_none_or(|(day, _)| *day != today) {
            let path = self.0.dir.join(format!("tollgate-{today}.log"));
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            *guard = Some((today, file));
        }
        match guard.as_mut() {
            Some((_, file)) => file.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut guard = self
            .0
            .current
            .lock()
            .map_err(|_| io::Error::other("log file lock poisoned"))?;
        guard.as_mut().map_or(Ok(()), |(_, f)| f.flush())
    }
}

impl<'a> MakeWriter<'a> for DailyFile {
    type Writer = DailyWriter;

    fn make_writer(&'a self) -> Self::Writer {
        DailyWriter(self.clone())
    }
}

/// Lines gathered and not written yet; beyond this a writer waits for the thread.
const BUFFER_LIMIT: usize = 4 << 20;

/// How long the thread gathers lines after the first one before it writes them.
pub const GATHER: Duration = Duration::from_millis(50);

/// Gathered lines that make the thread write at once, before [`GATHER`] has passed.
pub const GATHER_BYTES: usize = 64 << 10;

/// What a [`Background`] writer and its thread share.
#[derive(Default)]
struct Pending {
    state: Mutex<PendingState>,
    /// The thread waits here for lines (or the end).
    ready: Condvar,
    /// Writers wait here for room.
    room: Condvar,
}

#[derive(Default)]
struct PendingState {
    lines: Vec<u8>,
    waiting: Waiting,
    closed: bool,
}

/// What the writer thread waits on `ready` for. A wake-up costs a system call, so a line wakes
/// the thread only when it waits for that line.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// It is not waiting (it is writing, or about to).
    #[default]
    No,
    /// A first line: the next line wakes it.
    ForLine,
    /// [`GATHER`] to pass: only [`GATHER_BYTES`] gathered wake it.
    Gathering,
}

impl Pending {
    /// Waits for lines, gathers them for up to [`GATHER`], and swaps them into `batch` (empty);
    /// whether the output is closed.
    fn next_batch(&self, batch: &mut Vec<u8>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while state.lines.is_empty() && !state.closed {
            state.waiting = Waiting::ForLine;
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let until = Instant::now() + GATHER;
        while state.lines.len() < GATHER_BYTES && !state.closed {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            state.waiting = Waiting::Gathering;
            state = self
                .ready
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.waiting = Waiting::No;
        std::mem::swap(batch, &mut state.lines);
        self.room.notify_all();
        state.closed
    }
}

/// A [`MakeWriter`] whose lines a thread of its own writes to an output, in batches.
#[derive(Clone)]
pub struct Background(Arc<Pending>);

/// One line's writer (see [`Background`]).
pub struct BackgroundWriter(Arc<Pending>);

impl Background {
    /// Starts the thread that writes to `output` (named `name` in thread listings).
    fn start<W: Write + Send + 'static>(
        name: &str,
        mut output: W,
    ) -> io::Result<(Self, JoinHandle<()>)> {
        let pending = Arc::new(Pending::default());
        let shared = Arc::clone(&pending);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut batch = Vec::new();
                loop {
                    let closed = shared.next_batch(&mut batch);
                    if !batch.is_empty() {
                        // A log line that cannot be written has nowhere better to go.
                        let _ = output.write_all(&batch).and_then(|()| output.flush());
                        batch.clear();
                    }
                    if closed
                        && shared
                            .state
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .lines
                            .is_empty()
                    {
                        return;
                    }
                }
            })?;
        Ok((Background(pending), thread))
    }

    /// Ends the thread once it has written every line.
    fn close(&self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.closed = true;
        self.0.ready.notify_all();
    }
}

impl Write for BackgroundWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        while state.lines.len() >= BUFFER_LIMIT && !state.closed {
            state = self
                .0
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            // After the end nobody writes: straight to stderr rather than lost.
            return io::stderr().write(buf);
        }
        state.lines.extend_from_slice(buf);
        let wake = match state.waiting {
            Waiting::ForLine => true,
            Waiting::Gathering => state.lines.len() >= GATHER_BYTES,
            Waiting::No => false,
        };
        if wake {
            state.waiting = Waiting::No;
            self.0.ready.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Background {
    type Writer = BackgroundWriter;

    fn make_writer(&'a self) -> Self::Writer {
        BackgroundWriter(Arc::clone(&self.0))
    }
}

/// Keep it for as long as the process logs: dropping it writes the lines still gathered and
/// stops the writer threads.
#[must_use = "dropping the guard stops logging"]
pub struct LogGuard(Vec<(Background, Option<JoinHandle<()>>)>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        for (output, _) in &self.0 {
            output.close();
        }
        for (_, thread) in &mut self.0 {
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The lines' timestamps: RFC 3339 in UTC with microseconds, as tracing-subscriber's default
/// timer writes them (`2026-12-05T11:48:59.306164Z`), but with the date and time of day
/// formatted once a second per thread, not for every line (a calendar conversion and a dozen
/// formatted numbers, about 1% of a relayed call's instructions; docs/benchmarks.md, tenth
/// session).
#[derive(Debug, Clone, Copy, Default)]
struct LineTime;

thread_local! {
    /// The second last formatted on this thread and its text up to the seconds.
    static SECOND: std::cell::RefCell<(u64, String)> =
        const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

impl tracing_subscriber::fmt::time::FormatTime for LineTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since.as_secs();
        SECOND.with_borrow_mut(|(second, text)| {
            if *second != secs {
                *second = secs;
                text.clear();
                let at = UnixTime::from_secs(i64::try_from(secs).unwrap_or(i64::MAX));
                write!(text, "{at}")?;
                // `YYYY-MM-DD HH:MM:SS`: the date and the time joined by a `T`.
                if text.len() > 10 {
                    text.replace_range(10..11, "T");
                }
            }
            write!(w, "{text}.{:06}Z", since.subsec_micros())
        })
    }
}

/// A layer of the subscriber, boxed so that both formats build the same type.
type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

/// The layers writing `format` to `stdout` and `file` (the daily file, or a buffer in tests):
/// one layer writing each line to both, or, for text with `colour` (stdout is a terminal), a
/// coloured layer for stdout and a plain one for the file.
fn layers<S, O, F>(format: LogFormat, colour: bool, stdout: O, file: F) -> Vec<BoxedLayer<S>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    O: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    F: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::fmt;
    match format {
        LogFormat::Text if !colour => vec![
            fmt::layer()
                .event_format(TextLine::new(LineTime))
                .fmt_fields(TextFields)
                .with_writer(stdout.and(file))
                .boxed(),
        ],
        LogFormat::Text => vec![
            fmt::layer()
                .with_target(false)
                .with_timer(LineTime)
                .with_writer(stdout)
                .boxed(),
            // Span fields are formatted once per field formatter *type* and kept on the span:
            // `TextFields`, not stdout's type, keeps stdout's colour codes out of the file.
            fmt::layer()
                .event_format(TextLine::new(LineTime))
                .fmt_fields(TextFields)
                .with_writer(file)
                .boxed(),
        ],
        LogFormat::Json => vec![
            fmt::layer()
                .json()
                .with_target(false)
                .with_timer(LineTime)
                .with_ansi(false)
                .with_writer(stdout.and(file))
                .boxed(),
        ],
    }
}

/// Installs the global subscriber. Call once, from `main`, and keep the guard until the end.
pub fn init(log_dir: PathBuf, format: LogFormat) -> io::Result<LogGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let file = DailyFile::new(log_dir)?;
    let (stdout, stdout_thread) = Background::start("log-stdout", io::stdout())?;
    let (daily, daily_thread) = Background::start("log-file", file.make_writer())?;
    let guard = LogGuard(vec![
        (stdout.clone(), Some(stdout_thread)),
        (daily.clone(), Some(daily_thread)),
    ]);
    tracing_subscriber::registry()
        .with(filter)
        .with(layers(format, io::stdout().is_terminal(), stdout, daily))
        .try_init()
        .map_err(io::Error::other)?;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use tracing::field::Empty;

    /// Lines written to memory (the text formatter's tests write to it too).
    #[derive(Clone, Default)]
    pub(super) struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Buffer {
        /// Everything written so far.
        pub(super) fn text(&self) -> String {
            let bytes = self.0.lock().expect("buffer").clone();
            String::from_utf8(bytes).expect("utf-8")
        }

        fn lines(&self) -> Vec<String> {
            self.text().lines().map(str::to_owned).collect()
        }
    }

    /// Logs what a relayed call logs, its span as the middleware opens it and the relay fills
    /// it in, in `format`; returns the stdout and file lines.
    fn log_a_call(format: LogFormat, colour: bool) -> (Vec<String>, Vec<String>) {
        let (stdout, file) = (Buffer::default(), Buffer::default());
        let subscriber = tracing_subscriber::registry().with(layers(
            format,
            colour,
            stdout.clone(),
            file.clone(),
        ));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("listening");
            // The one span of a call, as the middleware opens it and the relay fills it in.
            let request = tracing::info_span!(
                "request",
                request_id = "abc123",
                method = "POST",
                route = Empty,
                token_id = Empty,
                model = Empty,
                channel_id = Empty
            );
            let _request = request.enter();
            request.record("route", "chat");
            request.record("token_id", 7);
            tracing::warn!(status = 500, "upstream failed");
            // Recorded later, as the gateway does once it has picked a channel.
            request.record("model", "qwen-turbo");
            request.record("channel_id", 3);
            tracing::info!("settled");
        });
        (stdout.lines(), file.lines())
    }

    #[test]
    fn json_lines_carry_the_span_fields_recorded_so_far() {
        let (stdout, file) = log_a_call(LogFormat::Json, false);
        assert_eq!(stdout, file, "the same lines in both places");
        let lines: Vec<Value> = file
            .iter()
            .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
            .collect();
        assert_eq!(lines.len(), 3, "{file:?}");
        assert_eq!(lines[0]["fields"]["message"], "listening");
        assert!(lines[0].get("span").is_none());
        let failed = &lines[1];
        assert_eq!(failed["level"], "WARN");
        assert_eq!(failed["fields"]["status"], 500);
        assert_eq!(failed["span"]["name"], "request");
        assert_eq!(failed["span"]["request_id"], "abc123");
        assert_eq!(failed["span"]["route"], "chat");
        assert_eq!(failed["span"]["token_id"], 7);
        assert!(failed["span"].get("channel_id").is_none());
        assert_eq!(
            failed["spans"].as_array().map(Vec::len),
            Some(1),
            "one span a call"
        );
        let settled = &lines[2];
        assert_eq!(settled["span"]["channel_id"], 3);
        assert_eq!(settled["span"]["model"], "qwen-turbo");
        assert_eq!(settled["span"]["token_id"], 7);
        assert!(!file.iter().any(|l| l.contains('\u{1b}')));
    }

    #[test]
    fn text_lines_carry_the_span_fields_and_the_file_has_no_colour() {
        let (stdout, file) = log_a_call(LogFormat::Text, false);
        assert_eq!(
            stdout, file,
            "not a terminal: the same plain lines in both places"
        );
        let (stdout, file) = log_a_call(LogFormat::Text, true);
        assert_eq!(stdout.len(), 3, "{stdout:?}");
        assert!(
            stdout.iter().any(|l| l.contains('\u{1b}')),
            "a terminal gets colour"
        );
        assert_eq!(file.len(), 3, "{file:?}");
        assert!(
            file[1].contains(
                "request{request_id=\"abc123\" method=\"POST\" route=\"chat\" token_id=7}"
            ),
            "{}",
            file[1]
        );
        assert!(file[2].contains("channel_id=3"), "{}", file[2]);
        assert!(!file.iter().any(|l| l.contains('\u{1b}')));
    }

    #[test]
    fn timestamps_are_written_as_tracing_subscriber_writes_them() {
        use tracing_subscriber::fmt::format::Writer;
        use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
        let stamp = |timer: &dyn Fn(&mut Writer<'_>) -> std::fmt::Result| {
            let mut s = String::new();
            timer(&mut Writer::new(&mut s)).expect("formatted");
            s
        };
        // Twice on the same second (the second time from the thread's cache), unless a second
        // boundary falls between the two stamps: then again.
        for _ in 0..3 {
            let ours = [
                stamp(&|w| LineTime.format_time(w)),
                stamp(&|w| LineTime.format_time(w)),
            ];
            let theirs = stamp(&|w| SystemTime.format_time(w));
            if ours.iter().any(|s| s[..19] != theirs[..19]) {
                continue;
            }
            for s in &ours {
                assert_eq!(s.len(), theirs.len(), "{s} / {theirs}");
                assert_eq!(s[..19], theirs[..19], "{s} / {theirs}");
                assert_eq!(&s[19..20], ".");
                assert!(s[20..26].bytes().all(|b| b.is_ascii_digit()), "{s}");
                assert!(s.ends_with('Z'), "{s}");
            }
            return;
        }
        panic!("three second boundaries in a row");
    }

    #[test]
    fn log_formats_are_text_or_json() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!(" Text ".parse(), Ok(LogFormat::Text));
        assert_eq!(
            "xml".parse::<LogFormat>(),
            Err("\"xml\" is not a log format: use text or json".to_owned())
        );
    }

    #[test]
    fn the_background_writer_writes_every_line_in_order_by_the_end() {
        let out = Buffer::default();
        let (bg, thread) = Background::start("log-test", out.clone()).expect("thread");
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let bg = bg.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        let mut line = bg.make_writer();
                        line.write_all(format!("{w} {i}\n").as_bytes())
                            .expect("write");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        drop(LogGuard(vec![(bg, Some(thread))]));
        let lines = out.lines();
        assert_eq!(lines.len(), 20_000);
        for w in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("{w} ")))
                .map(|n| n.parse().expect("number"))
                .collect();
            assert_eq!(
                mine,
                (0..5_000).collect::<Vec<_>>(),
                "writer {w}'s lines in order"
            );
        }
    }

    #[test]
    fn writes_to_todays_file() {
        let dir = std::env::temp_dir().join(format!("tollgate-log-test-{}", std::process::id()));
        let file = DailyFile::new(dir.clone()).expect("dir");
        let mut w = file.make_writer();
        w.write_all(b"hello\n").expect("write");
        w.flush().expect("flush");
        let path = dir.join(format!("tollgate-{}.log", DailyFile::today()));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "hello\n");
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
