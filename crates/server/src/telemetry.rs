//! Logging: human-readable lines on stdout and in a daily file `tollgate-YYYY-MM-DD.log` (UTC)
//! under `TOLLGATE_LOG_DIR`. The filter comes from `RUST_LOG` (default `info`). Prompts,
//! completions and secrets are never logged.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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

/// The file layer's field formatter. Span fields are formatted once per formatter *type* and
/// cached on the span; with the same type as the (coloured) stdout layer, the file would get
/// stdout's ANSI codes. A type of its own keeps the file plain.
struct PlainFields(tracing_subscriber::fmt::format::DefaultFields);

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for PlainFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        self.0.format_fields(writer, fields)
    }
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(log_dir: PathBuf) -> io::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let file = DailyFile::new(log_dir)?;
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(false)
                .fmt_fields(PlainFields(
                    tracing_subscriber::fmt::format::DefaultFields::new(),
                ))
                .with_writer(file),
        )
        .try_init()
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

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
