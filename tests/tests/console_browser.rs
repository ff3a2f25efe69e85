//! The operator console (`/admin`, SPEC §7) in a real browser: Debian's Chromium, headless,
//! driven through WebDriver (chromedriver, started here on a free port) with `fantoccini`, at
//! 1280×800 and at 390×844. Each size gets its own server, mock provider and browser session,
//! and walks the operator's path: sign in once, create a channel on the mock provider and test
//! it, see a relayed call in the logs and in the overview's hourly chart, disable the channel
//! (with its reason shown, and the next call refused), and find a user whose external id is
//! markup shown as plain text. Every page is checked for horizontal overflow and saved as a
//! full-page PNG (`<width>x<height>-<page>.png`) in `$TOLLGATE_SCREENSHOT_DIR`, or else in
//! `target-screenshots/` at the repository root.
//!
//! Without `/usr/bin/chromedriver` and `/usr/bin/chromium` (or the programs that
//! `TOLLGATE_CHROMEDRIVER` and `TOLLGATE_CHROMIUM` name) the test prints why and passes, so a plain
//! `cargo test` works on a machine without Chromium; with `CI` set it fails instead, so CI cannot
//! skip it silently.
#![allow(
    clippy::expect_used,
    reason = "a test fails by panicking, with the message saying what was expected"
)]

use fantoccini::elements::Element;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tollgate_storage::testing;
use tollgate_tests::mock::MockProvider;
use tollgate_tests::{ADMIN_KEY, TestApp};

/// Debian's chromedriver (`chromium-driver`); `TOLLGATE_CHROMEDRIVER` names another.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's Chromium; `TOLLGATE_CHROMIUM` names another (Chrome on GitHub's runners).
const CHROMIUM: &str = "/usr/bin/chromium";
/// The window sizes of SPEC §7: a laptop and a phone.
const SIZES: [(u32, u32); 2] = [(1280, 800), (390, 844)];
/// How long a page may take to show what a step waits for.
const PATIENCE: Duration = Duration::from_secs(10);
/// An external user id that is markup.
const XSS: &str = "<script>alert(1)</script>";
/// A username that is markup too (an image whose error handler would run script).
const XSS_IMG: &str = "<img src=x onerror=alert(1)>";
/// The user whose call the console shows.
const CALLER: &str = "browser-user";
/// A model with a seeded default price, served by the mock provider's default behaviour.
const MODEL: &str = "gpt-4o-mini";
/// The channel the test creates through the console.
const CHANNEL: &str = "mock-provider";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_chromium_at_laptop_and_phone_sizes() {
    let Some(driver) = ChromeDriver::start_or_skip().await else {
        return;
    };
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    for (width, height) in SIZES {
        let client = driver.session(width, height).await;
        // The scenario runs as its own task so that the browser is closed even when it fails;
        // chromedriver itself is killed by the guard's Drop.
        let mut task = tokio::spawn(scenario(client.clone(), width, height, shots.clone()));
        let outcome = tokio::time::timeout(Duration::from_secs(240), &mut task).await;
        if outcome.is_err() {
            task.abort();
        }
        let _ = client.close().await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("the {width}x{height} scenario did not finish: {e}"),
            Err(_) => panic!("the {width}x{height} scenario took longer than 240 s"),
        }
    }
    note(&format!("console screenshots: {}", shots.display()));
}

/// The operator's path through the console at one window size.
async fn scenario(client: Client, width: u32, height: u32, shots: PathBuf) {
    let mock = MockProvider::start().await;
    let app = TestApp::start(testing::sqlite_url(), "sqlite").await;
    let key = app.funded_key(CALLER, "10").await;
    app.ext(
        Method::POST,
        "/sync",
        Some(json!({"external_user_id": XSS, "username": XSS_IMG})),
    )
    .await
    .data();
    let page = Page {
        client,
        size: format!("{width}x{height}"),
        viewport: (width, height),
        shots,
    };
    page.fit_viewport().await;

    // Sign in: asked once, then kept for the browser session (a reload does not ask again).
    page.client
        .goto(&format!("{}/admin", app.base))
        .await
        .expect("open /admin");
    page.until(
        "the sign-in form, and no navigation before signing in",
        "return !document.getElementById('sign-in').hidden && document.getElementById('nav').hidden",
    )
    .await;
    page.shot("sign-in").await;
    page.find("//input[@id='admin-key']")
        .await
        .send_keys(ADMIN_KEY)
        .await
        .expect("type the admin key");
    page.click("//form[@id='sign-in-form']//button[@type='submit']")
        .await;
    page.until(
        "the overview once signed in",
        "return document.getElementById('sign-in').hidden && !document.getElementById('nav').hidden \
         && document.querySelector('#view h1')?.textContent === 'Overview'",
    )
    .await;
    page.client.refresh().await.expect("reload");
    page.until(
        "still signed in after a reload",
        "return document.readyState === 'complete' && document.getElementById('sign-in').hidden \
         && document.querySelector('#view h1')?.textContent === 'Overview'",
    )
    .await;

    // A channel created through the form, listed as enabled, and its test call passing.
    page.open("channels", "Channels").await;
    page.click("//button[normalize-space()='New channel']")
        .await;
    let form = "//form[h2='New channel']";
    page.fill(form, "Name", CHANNEL).await;
    page.find(&format!(
        "{form}//label[starts-with(normalize-space(), 'Type')]/select"
    ))
    .await
    .select_by_value("openai_compatible")
    .await
    .expect("choose the type");
    page.fill(form, "Base URL", &mock.base_url).await;
    page.fill(form, "Upstream key", "sk-upstream-secret").await;
    page.fill(form, "Models", MODEL).await;
    page.shot("channels-new").await;
    page.click(&format!("{form}//button[@type='submit']")).await;
    let row = format!("//tr[td[normalize-space()='{CHANNEL}']]");
    page.until(
        "the new channel listed as enabled, the form closed",
        &format!(
            "return !document.evaluate(\"{form}\", document, null, 9, null).singleNodeValue \
             && {} === 'enabled'",
            js_text(&format!("{row}//span[contains(@class,'badge')]"))
        ),
    )
    .await;
    page.click(&format!("{row}//button[normalize-space()='Test']"))
        .await;
    let tested = page
        .until(
            "the channel's test result",
            &format!(
                "var t = {}; return t && t !== 'Testing…' ? t : null",
                js_text(&format!(
                    "{row}/td[last()]/div[contains(@class,'muted') or contains(@class,'error')]"
                ))
            ),
        )
        .await;
    assert!(
        tested
            .as_str()
            .is_some_and(|t| t.starts_with("OK (HTTP 200)")),
        "the mock provider answers the channel test: {tested}"
    );
    page.shot("channels").await;

    // A relayed call shows in the logs and in the overview.
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hello from a browser test"}]});
    let r = app.chat(&key, &chat).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let info = app.settled(CALLER, 1).await;
    assert_eq!(info["total_requests"], 1, "{info}");

    page.open("logs", "Logs").await;
    let log = page
        .until(
            "a call row with the model and the user",
            &format!(
                "var rows = Array.from(document.querySelectorAll('#view tbody tr')).map(function (tr) {{ \
                   return Array.from(tr.cells).map(function (td) {{ return td.textContent; }}); }}); \
                 var hit = rows.filter(function (c) {{ return c[1] === 'consume' && c[3] === '{MODEL}'; }}); \
                 return hit.length ? {{ rows: rows.length, cells: hit[0] }} : null"
            ),
        )
        .await;
    assert_eq!(log["rows"], 2, "the top-up and the call: {log}");
    let cells = &log["cells"];
    assert_eq!(cells[2], CALLER, "{log}");
    assert_eq!(cells[7], "json", "{log}");
    let time = cells[0].as_str().expect("log time").to_owned();
    assert_eq!(time.len(), 19, "YYYY-MM-DD HH:MM:SS: {time}");
    page.shot("logs").await;

    page.open("overview", "Overview").await;
    let chart = page
        .until(
            "the calls chart with a bar",
            "var svg = document.querySelector('#view svg[aria-label=\"Calls per hour\"]'); \
             if (!svg) { return null; } \
             var bars = Array.from(svg.querySelectorAll('rect')); \
             return { count: bars.length, drawn: bars.map(function (r, i) { \
               return { index: i, height: parseFloat(r.getAttribute('height')), \
                        shown: r.getBoundingClientRect().height, title: r.textContent }; \
             }).filter(function (b) { return b.height > 0; }) }",
        )
        .await;
    assert_eq!(chart["count"], 24, "one bar per hour: {chart}");
    let drawn = chart["drawn"].as_array().expect("bars");
    assert_eq!(drawn.len(), 1, "one hour had calls: {chart}");
    let bar = &drawn[0];
    assert!(
        bar["index"].as_u64().is_some_and(|i| i >= 22),
        "the call's hour is the last (or, across an hour's turn, the one before): {chart}"
    );
    assert!(bar["shown"].as_f64().is_some_and(|h| h > 10.0), "{chart}");
    let title = bar["title"].as_str().expect("bar title");
    assert!(
        title.starts_with(&time[..13]) && title.ends_with("UTC: 1 call"),
        "the bar is the hour of the logged call ({time}): {title}"
    );
    let calls = page.until("the calls total", &stat_js("Calls")).await;
    assert_eq!(calls, "1");
    let health = page
        .until(
            "the channel's health",
            &format!(
                "var c = Array.from(document.evaluate(\"{row}\", document, null, 9, null).singleNodeValue?.cells || []) \
                   .map(function (td) {{ return td.textContent; }}); return c.length ? c : null"
            ),
        )
        .await;
    assert_eq!(health[2], "enabled", "{health}");
    assert_eq!(health[4], "1", "one call on the channel in 24 h: {health}");
    page.shot("overview").await;

    // Disabling through the console: the status and its reason change, calls are refused.
    page.open("channels", "Channels").await;
    page.click(&format!("{row}//button[normalize-space()='Disable']"))
        .await;
    page.until(
        "the channel disabled, with the reason, and an Enable button",
        &format!(
            "return {} === 'disabled' && {} === 'disabled by an admin' && {} !== null",
            js_text(&format!("{row}//span[contains(@class,'badge')]")),
            js_text(&format!("{row}/td[4]/div[contains(@class,'muted')]")),
            js_text(&format!("{row}//button[normalize-space()='Enable']"))
        ),
    )
    .await;
    page.shot("channels-disabled").await;
    let refused = app.chat(&key, &chat).await;
    assert_eq!(refused.status.as_u16(), 503, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "no_available_channel");
    page.open("overview", "Overview").await;
    let health = page
        .until(
            "the channel's health after disabling",
            &format!(
                "var c = Array.from(document.evaluate(\"{row}\", document, null, 9, null).singleNodeValue?.cells || []) \
                   .map(function (td) {{ return td.textContent; }}); return c.length ? c : null"
            ),
        )
        .await;
    assert_eq!(health[2], "disabled", "{health}");
    assert_eq!(health[3], "disabled by an admin", "{health}");

    page.open("prices", "Prices").await;
    page.until(
        "the model's price",
        &format!(
            "return {} !== null",
            js_text(&format!("//tr/td[normalize-space()='{MODEL}']"))
        ),
    )
    .await;
    page.shot("prices").await;

    // Markup in ids and names is shown as text: no element made of it, no dialog opened.
    page.open("users", "Users").await;
    page.until_args(
        "both users listed, the markup as text",
        "var a = arguments; \
         var links = Array.from(document.querySelectorAll('#view tbody td a')).map(function (x) { return x.textContent; }); \
         var cells = Array.from(document.querySelectorAll('#view tbody td')).map(function (x) { return x.textContent; }); \
         return links.indexOf(a[0]) >= 0 && links.indexOf(a[1]) >= 0 && cells.indexOf(a[2]) >= 0",
        vec![json!(XSS), json!(CALLER), json!(XSS_IMG)],
    )
    .await;
    page.assert_no_injection().await;
    page.shot("users").await;
    let search = page.find("//input[@type='search']").await;
    search.send_keys("<script>").await.expect("type a search");
    page.click("//form[contains(@class,'toolbar')]//button[@type='submit']")
        .await;
    let found = page
        .until(
            "the search for markup",
            "return location.hash.indexOf('query=') >= 0 \
               && document.getElementById('view').getAttribute('data-route') === location.hash.slice(1) \
               && !Array.from(document.querySelectorAll('#view p')).some(function (p) { return p.textContent === 'Loading…'; }) \
               ? Array.from(document.querySelectorAll('#view tbody td a')).map(function (a) { return a.textContent; }) : null",
        )
        .await;
    assert_eq!(found, json!([XSS]), "the search matches the markup id only");
    page.click(&format!("//td/a[.=\"{XSS}\"]")).await;
    page.until_args(
        "the user page of the markup id",
        "var a = arguments, h = document.querySelector('#view h1'); \
         return h && h.textContent === 'User ' + a[0] \
           && Array.from(document.querySelectorAll('#view dd')).some(function (d) { return d.textContent === a[1]; })",
        vec![json!(XSS), json!(XSS_IMG)],
    )
    .await;
    page.assert_no_injection().await;

    page.open("users", "Users").await;
    page.click(&format!("//td/a[.='{CALLER}']")).await;
    page.until(
        "the caller's page with a masked key and usage per model",
        &format!(
            "var h = document.querySelector('#view h1'); \
             return h && h.textContent === 'User {CALLER}' \
               && Array.from(document.querySelectorAll('#view td')).some(function (td) {{ return /^sk-.{{4}}\\.\\.\\..{{4}}$/.test(td.textContent); }}) \
               && Array.from(document.querySelectorAll('#view td')).some(function (td) {{ return td.textContent === '{MODEL}'; }})"
        ),
    )
    .await;
    page.shot("user").await;
    app.stop().await;
}

/// The text of the first node an XPath finds, as a JavaScript expression (`null` when none).
fn js_text(xpath: &str) -> String {
    format!(
        "(document.evaluate(\"{xpath}\", document, null, 9, null).singleNodeValue?.textContent ?? null)"
    )
}

/// A script returning the value of the overview's stat labelled `label`.
fn stat_js(label: &str) -> String {
    format!(
        "var s = Array.from(document.querySelectorAll('#view .stat')).find(function (s) {{ \
           return s.querySelector('.label').textContent === '{label}'; }}); \
         return s ? s.querySelector('.value').textContent : null"
    )
}

/// One browser session at one window size.
struct Page {
    client: Client,
    /// `1280x800`: the prefix of screenshot names.
    size: String,
    /// The viewport the page must have.
    viewport: (u32, u32),
    shots: PathBuf,
}

impl Page {
    /// Sizes the window so that the page's viewport is exactly the wanted size (the window
    /// may add a frame around it).
    async fn fit_viewport(&self) {
        let (w, h) = self.viewport;
        self.client
            .set_window_size(w, h)
            .await
            .expect("set the window size");
        let inner = self
            .run("return [window.innerWidth, window.innerHeight]", vec![])
            .await;
        let (iw, ih) = (
            inner[0].as_u64().expect("innerWidth"),
            inner[1].as_u64().expect("innerHeight"),
        );
        if (iw, ih) != (u64::from(w), u64::from(h)) {
            let frame_w = u32::try_from(u64::from(w).saturating_sub(iw)).unwrap_or(0);
            let frame_h = u32::try_from(u64::from(h).saturating_sub(ih)).unwrap_or(0);
            self.client
                .set_window_size(w + frame_w, h + frame_h)
                .await
                .expect("set the window size");
        }
        let inner = self
            .run("return [window.innerWidth, window.innerHeight]", vec![])
            .await;
        assert_eq!(inner, json!([w, h]), "the viewport is {}", self.size);
    }

    async fn run(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs `script` until it returns something other than `null`, `false` or `""`; returns
    /// that, or fails naming `what`.
    async fn until(&self, what: &str, script: &str) -> Value {
        self.until_args(what, script, vec![]).await
    }

    async fn until_args(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let v = self.run(script, args.clone()).await;
            let done =
                !matches!(v, Value::Null | Value::Bool(false)) && v != Value::String(String::new());
            if done {
                return v;
            }
            if Instant::now() > deadline {
                let text = self
                    .run("return document.getElementById('view').innerText", vec![])
                    .await;
                panic!(
                    "{}: no {what} within {PATIENCE:?}; the page shows:\n{}",
                    self.size,
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn find(&self, xpath: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::XPath(xpath))
            .await
            .unwrap_or_else(|e| panic!("{}: no element {xpath}: {e}", self.size))
    }

    async fn click(&self, xpath: &str) {
        self.find(xpath)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("{}: cannot click {xpath}: {e}", self.size));
    }

    /// Types `text` into the input of the label starting with `label` inside `form`.
    async fn fill(&self, form: &str, label: &str, text: &str) {
        self.find(&format!(
            "{form}//label[starts-with(normalize-space(), '{label}')]/input"
        ))
        .await
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("{}: cannot type into {label}: {e}", self.size));
    }

    /// Opens a page through the navigation bar and waits until it has loaded.
    async fn open(&self, page: &str, title: &str) {
        self.click(&format!("//nav[@id='nav']/a[@data-page='{page}']"))
            .await;
        self.until_args(
            &format!("{title} page"),
            "var h = document.querySelector('#view h1'); \
             return location.hash.indexOf('#/' + arguments[0]) === 0 && h && h.textContent === arguments[1] \
               && !Array.from(document.querySelectorAll('#view p')).some(function (p) { return p.textContent === 'Loading…'; })",
            vec![json!(page), json!(title)],
        )
        .await;
    }

    /// No element came from data: the page's only script is its own, it has no image, its
    /// markup holds no tag spelled by the data, and no dialog is open.
    async fn assert_no_injection(&self) {
        let scripts = self
            .run(
                "return Array.from(document.querySelectorAll('script')).map(function (s) { return s.getAttribute('src'); })",
                vec![],
            )
            .await;
        assert_eq!(scripts, json!(["/admin/app.js"]), "{}: scripts", self.size);
        let markup = self
            .run(
                "return { images: document.querySelectorAll('img').length, html: document.body.innerHTML }",
                vec![],
            )
            .await;
        assert_eq!(markup["images"], 0, "{}: an image was made", self.size);
        let html = markup["html"].as_str().expect("body markup");
        assert!(
            !html.contains("<script>") && !html.contains("<img") && html.contains("&lt;script&gt;"),
            "{}: the markup is escaped text in the DOM",
            self.size
        );
        match self.client.get_alert_text().await {
            Err(e) if e.is_no_such_alert() => {}
            Err(e) => panic!("{}: asking for a dialog failed: {e}", self.size),
            Ok(text) => panic!("{}: a dialog is open: {text}", self.size),
        }
    }

    /// Checks the page fits its width, then saves the whole page as `<size>-<name>.png`.
    async fn shot(&self, name: &str) {
        let (w, h) = self.viewport;
        let fit = self
            .run(
                "return [document.documentElement.scrollWidth, window.innerWidth, \
                 Math.ceil(document.documentElement.scrollHeight)]",
                vec![],
            )
            .await;
        assert!(
            fit[0].as_u64() <= fit[1].as_u64(),
            "{}: the {name} page is wider than the window: {fit}",
            self.size
        );
        // The whole page: the window grows to the page's height for the picture.
        let full = fit[2]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(h)
            .clamp(h, 8_000);
        let (ow, oh) = self.client.get_window_size().await.expect("window size");
        let frame = u32::try_from(oh).unwrap_or(h).saturating_sub(h);
        if full > h {
            self.client
                .set_window_size(u32::try_from(ow).unwrap_or(w), full + frame)
                .await
                .expect("grow the window");
        }
        let png = self.client.screenshot().await.expect("screenshot");
        if full > h {
            self.client
                .set_window_size(
                    u32::try_from(ow).unwrap_or(w),
                    u32::try_from(oh).unwrap_or(h),
                )
                .await
                .expect("restore the window");
        }
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = self.shots.join(format!("{}-{name}.png", self.size));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// chromedriver on a free loopback port, killed (with the browsers it started) on drop.
struct ChromeDriver {
    child: Child,
    url: String,
    /// The browser it starts.
    chromium: PathBuf,
    /// Holds each session's fresh Chromium profile; removed on drop.
    profiles: PathBuf,
}

impl ChromeDriver {
    /// Starts chromedriver, or returns `None` after saying why when it is not installed
    /// (outside CI; in CI that is a failure).
    async fn start_or_skip() -> Option<ChromeDriver> {
        let chromedriver = program("TOLLGATE_CHROMEDRIVER", CHROMEDRIVER);
        let chromium = program("TOLLGATE_CHROMIUM", CHROMIUM);
        let missing: Vec<String> = [&chromedriver, &chromium]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            let reason = format!(
                "{} missing (Debian: apt-get install chromium chromium-driver)",
                missing.join(" and ")
            );
            let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
            assert!(
                !ci,
                "CI is set, so the console's browser test must run, but {reason}"
            );
            note(&format!(
                "SKIPPED the_console_works_in_chromium_at_laptop_and_phone_sizes: {reason}"
            ));
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let profiles =
            std::env::temp_dir().join(format!("tollgate-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profiles);
        std::fs::create_dir_all(&profiles).expect("profile folder");
        let child = {
            use std::os::unix::process::CommandExt as _;
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                // Its own process group, so that Drop can end it with every browser it started.
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver")
        };
        let mut driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium,
            profiles,
        };
        let status = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(exit)) = driver.child.try_wait() {
                panic!("chromedriver exited at start: {exit}");
            }
            let ready = match status.get(format!("{}/status", driver.url)).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                return Some(driver);
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {} within 20 s",
                driver.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new headless Chromium session with a fresh profile and a window of this size.
    async fn session(&self, width: u32, height: u32) -> Client {
        let profile = self.profiles.join(format!("{width}x{height}"));
        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        // A dialog stays open instead of being dismissed, so that a test can see it.
        caps.insert("unhandledPromptBehavior".into(), json!("ignore"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": self.chromium.display().to_string(),
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("a Chromium session through {}: {e}", self.url))
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The whole process group: chromedriver and any browser a failed test left open.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profiles);
    }
}

/// The program `var` names, or else `default`.
fn program(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(default),
    }
}

/// `$TOLLGATE_SCREENSHOT_DIR`, or `target-screenshots/` at the repository root.
fn screenshot_dir() -> PathBuf {
    match std::env::var_os("TOLLGATE_SCREENSHOT_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate is inside the repository")
            .join("target-screenshots"),
    }
}

/// A line on stderr that the test harness does not capture, so a skip is seen in `cargo test`.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
