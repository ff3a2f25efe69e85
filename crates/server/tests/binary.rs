//! The `tollgate` binary as an operator runs it: configuration errors, the zero-configuration
//! start on SQLite, log files, and a clean exit on SIGTERM.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tollgate_tests::free_port;

fn tollgate(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("TOLLGATE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-bin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait_healthy(child: &mut Child, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if get(port, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tollgate exited during start-up: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("tollgate did not become healthy");
}

#[test]
fn bad_configuration_fails_with_one_line_naming_the_variable() {
    let dir = temp_dir("badcfg");
    for (var, value) in [
        ("TOLLGATE_LISTEN", "not-an-address"),
        ("TOLLGATE_DATABASE_URL", "postgres://nope"),
        ("TOLLGATE_REDIS_URL", "tcp://x"),
        ("TOLLGATE_EXTERNAL_API_KEYS", "good-secret-1,,"),
        ("TOLLGATE_LOG_FORMAT", "xml"),
    ] {
        let out = tollgate(&dir).env(var, value).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(var), "{stderr}");
    }
    // The configuration file: missing, a typo, a bad value, each one line naming file and key.
    let file = dir.join("tollgate.toml");
    let missing = dir.join("absent.toml");
    for (contents, expected) in [
        (
            None,
            format!("TOLLGATE_CONFIG: cannot read {}", missing.display()),
        ),
        (
            Some("lisen = \"127.0.0.1:1\"\n"),
            format!(
                "{}: unknown key \"lisen\" (did you mean \"listen\"?)",
                file.display()
            ),
        ),
        (
            Some("relay_retries = 11\n"),
            format!(
                "{}: relay_retries: must be a whole number from 0 to 10",
                file.display()
            ),
        ),
    ] {
        let path = match contents {
            Some(text) => {
                std::fs::write(&file, text).expect("config file");
                &file
            }
            None => &missing,
        };
        let out = tollgate(&dir)
            .env("TOLLGATE_CONFIG", path)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{expected}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&expected), "{stderr}");
    }
    let out = tollgate(&dir)
        .env("TOLLGATE_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env(
            "TOLLGATE_DATABASE_URL",
            "mysql://nobody:wrong@127.0.0.1:1/none",
        )
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.contains("TOLLGATE_DATABASE_URL")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong@"),
        "credentials must not be printed: {stderr}"
    );
}

#[test]
fn without_configuration_it_runs_on_sqlite_and_stops_cleanly_on_sigterm() {
    let dir = temp_dir("zero");
    let port = free_port();
    let mut child = tollgate(&dir)
        .env("TOLLGATE_LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .expect("spawn");
    wait_healthy(&mut child, port);
    let ready = get(port, "/readyz").expect("readyz");
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains("sqlite"),
        "{ready}"
    );
    assert!(
        dir.join("data/tollgate.db").exists(),
        "database at ./data/tollgate.db"
    );
    let logs: Vec<_> = std::fs::read_dir(dir.join("logs"))
        .expect("logs dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        logs.iter().any(|n| n.starts_with("tollgate-")
            && n.ends_with(".log")
            && n.len() == "tollgate-2026-01-01.log".len()),
        "{logs:?}"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "tollgate did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status}");
    // The log file is plain text: request lines (with their span fields) carry no colour codes.
    let log_name = logs
        .iter()
        .find(|n| n.starts_with("tollgate-"))
        .expect("log file");
    let text = std::fs::read_to_string(dir.join("logs").join(log_name)).expect("log text");
    assert!(text.contains("request_id="), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in the log file: {text}"
    );
}
