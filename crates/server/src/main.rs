//! The `tollgate` binary: read configuration, start logging, build and run the server. A
//! configuration or start-up problem ends the process with one line naming its cause.

use std::process::ExitCode;
use tollgate_server::{Application, Settings, telemetry};

/// jemalloc, not the system allocator: with 1,000 streams open its peak RSS is about 10 MB
/// lower than glibc's per-thread arenas, and its background thread returns what a burst freed
/// (docs/benchmarks.md).
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tollgate: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // Held to the end of `main`: dropping it writes the last lines.
    let _logs = match telemetry::init(settings.log_dir.clone(), settings.log_format) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!(
                "tollgate: configuration error: TOLLGATE_LOG_DIR: cannot write logs there: {e}"
            );
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &settings.config_file {
        tracing::info!(file = %path.display(), "configuration file read; the environment overrides it");
    }
    let outcome = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(&settings)
            .await
            .map_err(|e| e.to_string())?;
        app.run_until_stopped()
            .await
            .map_err(|e| format!("server: {e}"))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}
