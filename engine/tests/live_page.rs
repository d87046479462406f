//! The live page at `/` in headless Chromium, driven over WebDriver by
//! chromedriver (Debian's `chromium` and `chromium-driver`, which `./test.sh`
//! installs): it loads without any external resource, shows the top songs of a
//! known input with their titles escaped, updates in place when the
//! leaderboard changes, and says so when the engine stops answering; and,
//! once the streams forecast has warmed up, draws its band and the
//! forecasts ahead as `/api/v1/forecast` gives them.
#![allow(clippy::too_many_lines)] // a test reads top to bottom, as one scenario

mod common;

use common::free_port;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long the page may take to show a change (it polls every 2.5 s).
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A minute-aligned epoch time (2023-11-14) for the crafted events.
const T0: i64 = 1_700_000_040_000;
const MINUTE: i64 = 60_000;

/// `name` on `PATH`, or the file named by the environment variable `env`;
/// panics with what to install (the test must not skip silently).
fn program(env: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH (nor ${env} set): the live-page test needs headless \
                 Chromium and chromedriver: `apt-get install -y chromium chromium-driver` \
                 (./test.sh installs them)"
            )
        })
}

/// One raw HTTP/1.1 exchange: (status, headers, body). Reads a
/// `Content-Length` body, a chunked body, or up to the end of the connection.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, String, String) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buffer = [0u8; 65536];
    let (head_end, head) = loop {
        let n = stream.read(&mut buffer).unwrap();
        assert!(
            n > 0,
            "{method} {path}: connection closed before the headers"
        );
        raw.extend_from_slice(&buffer[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break (
                i + 4,
                String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase(),
            );
        }
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let header = |name: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    let chunked = header("transfer-encoding") == Some("chunked");
    let mut rest = raw.split_off(head_end);
    loop {
        if length.is_some_and(|l| rest.len() >= l) || (chunked && rest.ends_with(b"0\r\n\r\n")) {
            break;
        }
        let n = stream.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&buffer[..n]);
    }
    if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        while let Some(eol) = rest[at..].windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&rest[at..at + eol]).unwrap();
            let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            at += eol + 2;
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
        rest = body;
    }
    (status, head, String::from_utf8(rest).unwrap())
}

/// `downbeat run --input -`, stdin kept open; killed on drop.
struct Engine {
    _child: common::KillOnDrop,
    stdin: ChildStdin,
    port: u16,
    _config: tempfile::TempDir,
}

/// The sessions' gap in the engine under test: short, so sessions of the
/// crafted minutes close while the test runs.
const SESSION_GAP_MS: i64 = 90_000;

impl Engine {
    fn start() -> Self {
        Self::start_with("")
    }

    /// With `more` appended to its config file.
    fn start_with(more: &str) -> Self {
        let port = free_port();
        let config = tempfile::tempdir().unwrap();
        let config_file = config.path().join("downbeat.toml");
        std::fs::write(
            &config_file,
            format!("[sessions]\ngap_ms = {SESSION_GAP_MS}\n{more}"),
        )
        .unwrap();
        let mut child = common::downbeat()
            .arg("run")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--input", "-"])
            .arg("--config")
            .arg(&config_file)
            // Windows close by event time only: never by the idle wall clock,
            // which would make the later (historical) events late.
            .args(["--idle-timeout-ms", "3600000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let engine = Self {
            _child: common::KillOnDrop(child),
            stdin,
            port,
            _config: config,
        };
        common::wait_until(Duration::from_secs(20), "/healthz", || {
            matches!(common::get(port, "/healthz"), Ok((200, _)))
        });
        engine
    }

    fn write(&mut self, lines: &[String]) {
        for line in lines {
            self.stdin.write_all(line.as_bytes()).unwrap();
            self.stdin.write_all(b"\n").unwrap();
        }
        self.stdin.flush().unwrap();
    }
}

/// chromedriver with one headless Chromium session; both end on drop.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Self {
        let chromedriver = program("CHROMEDRIVER", "chromedriver");
        let chromium = program("CHROMIUM", "chromium");
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        common::wait_until(Duration::from_secs(20), "chromedriver /status", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                && http(port, "GET", "/status", None)
                    .2
                    .contains("\"ready\":true")
        });
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            },
        }}});
        let (status, _, body) = http(port, "POST", "/session", Some(&capabilities));
        assert_eq!(status, 200, "new WebDriver session: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        browser.session = answer["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser
    }

    /// A WebDriver command on the session; returns its `value`.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, _, text) = http(self.port, method, &path, body.as_ref());
        assert_eq!(status, 200, "{method} {path}: {text}");
        serde_json::from_str::<Value>(&text).unwrap()["value"].take()
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    /// Run `body` as a function in the page; returns what it returns.
    fn script(&self, body: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": body, "args": []})),
        )
    }

    /// Poll `body` until it returns `true`; on timeout, panic with `what`,
    /// the page's state and a screenshot.
    fn wait_for(&self, what: &str, body: &str) {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        while self.script(body) != json!(true) {
            if Instant::now() >= deadline {
                let shot = self.screenshot("live_page-timeout.png");
                panic!(
                    "timed out after {PAGE_TIMEOUT:?} waiting for the page to show {what}\n\
                     page state: {}\nscreenshot: {}",
                    self.script(PAGE_STATE),
                    shot.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Save a PNG of the viewport under the target's temporary directory.
    fn screenshot(&self, name: &str) -> PathBuf {
        let png = base64_decode(self.command("GET", "/screenshot", None).as_str().unwrap());
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The browser console since the last call.
    fn console(&self) -> Vec<Value> {
        let value = self.command("POST", "/se/log", Some(json!({"type": "browser"})));
        value.as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = std::panic::catch_unwind(|| http(self.port, "DELETE", &path, None));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// What the page shows, for assertions and failure messages.
const PAGE_STATE: &str = r##"
const text = (sel) => { const e = document.querySelector(sel); return e ? e.textContent : null; };
return {
  status: document.getElementById("status").dataset.state,
  statusText: text("#status"),
  streams10m: text("#kpi-streams-10m"),
  users1m: text("#kpi-users-1m"),
  users10m: text("#kpi-users-10m"),
  topSong: text("#kpi-top-song"),
  late: text("#kpi-late"),
  sessionMedian: text("#kpi-session-median"),
  sessionsRate: text("#kpi-sessions-rate"),
  sessionsOpen: text("#kpi-sessions-open"),
  rejected: text("#kpi-rejected"),
  leaderboard: [...document.querySelectorAll("#leaderboard li")].map((li) => ({
    song: li.querySelector(".song").textContent,
    artist: li.querySelector(".artist").textContent,
    count: li.querySelector(".count").textContent,
  })),
  artists: [...document.querySelectorAll("#artists li")].map((li) => ({
    artist: li.querySelector(".song").textContent,
    count: li.querySelector(".count").textContent,
  })),
  trend: [...document.querySelectorAll("#trend rect.col")].map((r) => Number(r.dataset.streams)),
  forecast: document.getElementById("forecast-card").dataset.forecast,
  forecastNote: !document.getElementById("forecast-note").hidden,
  forecastActual: [...document.querySelectorAll("#forecast-chart circle.actual")].map((c) => Number(c.dataset.streams)),
  forecastBands: document.querySelectorAll("#forecast-chart path.band").length,
  forecastMarks: [...document.querySelectorAll("#forecast-chart .ahead-mark")].map((g) => Number(g.dataset.horizon)),
  forecastAhead: [...document.querySelectorAll("#forecast-ahead li")].map((li) => ({
    horizon_minutes: Number(li.dataset.horizonMinutes),
    start_ms: Number(li.dataset.startMs),
    streams: Number(li.dataset.streams),
    lower: Number(li.dataset.lower),
    upper: Number(li.dataset.upper),
  })),
  predicted: [...document.querySelectorAll("#predicted li")].map((li) => ({
    song: li.querySelector(".song").textContent,
    artist: li.querySelector(".artist").textContent,
  })),
  predictedEmpty: !document.getElementById("predicted-empty").hidden,
  elementsInLeaderboard: document.querySelectorAll("#leaderboard b, #leaderboard img, #leaderboard script, #artists img").length,
  pwned: window.pwned === 1,
  marker: window.downbeatTestMarker || null,
};
"##;

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | (u32::from(d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..group.len()]);
    }
    out
}

/// One EventSim stream.
fn stream(ts: i64, user: u32, artist: &str, song: &str) -> String {
    json!({
        "ts": ts,
        "userId": user.to_string(),
        "page": "NextSong",
        "artist": artist,
        "song": song,
        "level": "paid",
        "location": "Austin, TX",
        "length": 200.5,
    })
    .to_string()
}

/// Crafted streams, the users of each minute (the oracle for active users)
/// and each stream's (user, time) (the oracle for sessions).
struct Input {
    next_user: u32,
    users_by_minute: Vec<HashSet<u32>>,
    plays: Vec<(u32, i64)>,
}

impl Input {
    fn new() -> Self {
        Self {
            next_user: 0,
            users_by_minute: vec![HashSet::new(); 16],
            plays: Vec::new(),
        }
    }

    /// (end, length) of the sessions closed at `watermark_ms`, from
    /// scratch: each user's plays sorted, cut at gaps over the session gap;
    /// closed once the watermark passes the last play plus the gap.
    fn closed_sessions(&self, watermark_ms: i64) -> Vec<(i64, i64)> {
        let mut by_user: std::collections::BTreeMap<u32, Vec<i64>> = Default::default();
        for &(user, ts) in &self.plays {
            by_user.entry(user).or_default().push(ts);
        }
        let mut closed = Vec::new();
        for times in by_user.values_mut() {
            times.sort_unstable();
            let mut start = times[0];
            for pair in times.windows(2) {
                if pair[1] - pair[0] > SESSION_GAP_MS {
                    closed.push((pair[0], pair[0] - start));
                    start = pair[1];
                }
            }
            let last = *times.last().unwrap();
            closed.push((last, last - start));
        }
        closed.retain(|&(end, _)| end + SESSION_GAP_MS < watermark_ms);
        closed
    }

    /// `count` streams of one song in minute `minute`, 11 s into it (so the
    /// first stream of a minute moves the watermark past the minute's start),
    /// each by the next of 13 users.
    fn streams(&mut self, minute: i64, artist: &str, song: &str, count: usize) -> Vec<String> {
        (0..count)
            .map(|i| {
                let user = self.next_user % 13;
                self.next_user += 1;
                self.users_by_minute[minute as usize].insert(user);
                let ts = T0 + minute * MINUTE + 11_000 + i as i64 * 100;
                self.plays.push((user, ts));
                stream(ts, user, artist, song)
            })
            .collect()
    }

    /// Distinct users over minutes `from..to`.
    fn users(&self, from: usize, to: usize) -> usize {
        self.users_by_minute[from..to]
            .iter()
            .flatten()
            .collect::<HashSet<_>>()
            .len()
    }
}

const BOLD: &str = "<b>Bold</b> & \"Quotes\"";
const EVIL_ARTIST: &str = "Ärtist <img src=x onerror=\"window.pwned=1\">";

#[test]
fn live_page_shows_the_leaderboard_and_updates_in_place() {
    let started = Instant::now();
    let mut engine = Engine::start();
    let browser = Browser::start();
    let origin = format!("http://127.0.0.1:{}", engine.port);

    // The page and its assets forbid anything from elsewhere.
    let (status, head, html) = http(engine.port, "GET", "/", None);
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'self';"),
        "{head}"
    );
    assert!(html.contains("/assets/app.js"));
    for asset in ["/assets/app.js", "/assets/app.css", "/assets/icon.svg"] {
        let (status, head, _) = http(engine.port, "GET", asset, None);
        assert_eq!(status, 200, "{asset}");
        assert!(head.contains("content-security-policy:"), "{asset}: {head}");
    }

    // Before any window: the page loads and waits.
    browser.open(&format!("{origin}/"));
    browser.script("window.downbeatTestMarker = 42; return true;");
    browser.wait_for(
        "that it waits for the first window",
        r##"return document.getElementById("status").dataset.state === "waiting"
            && !document.getElementById("leaderboard-empty").hidden;"##,
    );
    let waiting = browser.script(PAGE_STATE);
    assert_eq!(waiting["forecast"], "none", "{waiting}");
    assert_eq!(waiting["forecastNote"], false, "{waiting}");
    assert_eq!(waiting["predictedEmpty"], true, "{waiting}");

    // Minutes 0..2: Alpha 5 a minute, BOLD 3, Gamma 1; a refused line; then a
    // stream in minute 4 moves the watermark past minute 4's start, closing
    // the tumbling windows of minutes 0..2 and the sliding window ending there.
    let mut input = Input::new();
    let mut lines = Vec::new();
    for minute in 0..3 {
        lines.extend(input.streams(minute, "The Testers", "Alpha", 5));
        lines.extend(input.streams(minute, EVIL_ARTIST, BOLD, 3));
        lines.extend(input.streams(minute, "C", "Gamma", 1));
    }
    lines.push("this is not json".to_owned());
    lines.extend(input.streams(4, "C", "Gamma", 1));
    engine.write(&lines);

    browser.wait_for(
        "Alpha at the top of the leaderboard",
        r##"const rows = document.querySelectorAll("#leaderboard li");
           return rows.length === 3 && rows[0].querySelector(".song").textContent === "Alpha";"##,
    );
    // Its forecast follows the windows of a close: the card may say "off"
    // for a poll.
    browser.wait_for(
        "the forecast card warming up",
        r##"return document.getElementById("forecast-card").dataset.forecast === "warming";"##,
    );
    let first = browser.script(PAGE_STATE);
    assert_eq!(
        first["leaderboard"],
        json!([
            {"song": "Alpha", "artist": "The Testers", "count": "15"},
            {"song": BOLD, "artist": EVIL_ARTIST, "count": "9"},
            {"song": "Gamma", "artist": "C", "count": "3"},
        ]),
        "{first}"
    );
    assert_eq!(
        first["artists"],
        json!([
            {"artist": "The Testers", "count": "15"},
            {"artist": EVIL_ARTIST, "count": "9"},
            {"artist": "C", "count": "3"},
        ]),
        "{first}"
    );
    assert_eq!(
        first["elementsInLeaderboard"], 0,
        "titles are text, not HTML"
    );
    assert_eq!(first["pwned"], false);
    assert_eq!(first["status"], "live", "{first}");
    assert_eq!(first["streams10m"], "27");
    assert_eq!(first["topSong"], "Alpha");
    assert_eq!(first["users10m"], input.users(0, 4).to_string());
    assert_eq!(first["users1m"], input.users(2, 3).to_string());
    assert_eq!(
        first["trend"],
        json!([9, 9, 9]),
        "one bar per closed minute"
    );
    // The forecast card draws the same minutes and says it is warming up
    // (no band before 60 scored forecasts).
    assert_eq!(first["forecast"], "warming", "{first}");
    assert_eq!(first["forecastNote"], true, "{first}");
    assert_eq!(first["forecastActual"], json!([9, 9, 9]), "{first}");
    assert_eq!(first["forecastBands"], 0, "{first}");
    assert_eq!(first["forecastAhead"], json!([]), "{first}");
    // The predicted chart (the trend detector's, from the first minute on):
    // the most played song first, names shown as text.
    assert_eq!(first["predictedEmpty"], false, "{first}");
    assert_eq!(first["predicted"][0]["song"], "Alpha", "{first}");
    assert_eq!(
        first["predicted"][1]["song"], "<b>Bold</b> & \"Quotes\"",
        "{first}"
    );
    browser.wait_for(
        "the refused line",
        r##"return document.getElementById("kpi-rejected").textContent === "1";"##,
    );
    let resources = browser.script(
        "return performance.getEntriesByType('resource').map((e) => e.name)\
         .filter((name) => !name.startsWith(location.origin + '/'));",
    );
    assert_eq!(resources, json!([]), "nothing loaded from elsewhere");
    no_console_errors_then_screenshot(&browser, "live_page-1.png");

    // Minutes 5..6: Delta 12 a minute overtakes Alpha; one late stream for
    // minute 0; a stream in minute 8 closes the windows ending at minute 8.
    let mut lines = Vec::new();
    for minute in 5..7 {
        lines.extend(input.streams(minute, "New Act", "Delta", 12));
    }
    lines.push(stream(T0 + 30_000, 99, "The Testers", "Alpha")); // late
    lines.extend(input.streams(8, "C", "Gamma", 1));
    engine.write(&lines);

    browser.wait_for(
        "Delta at the top of the leaderboard, without a reload",
        r##"const row = document.querySelector("#leaderboard li");
           return row !== null && row.querySelector(".song").textContent === "Delta";"##,
    );
    browser.wait_for(
        "the late stream",
        r##"return document.getElementById("kpi-late").textContent === "1";"##,
    );
    let second = browser.script(PAGE_STATE);
    assert_eq!(second["marker"], 42, "the page was not reloaded");
    assert_eq!(
        second["leaderboard"],
        json!([
            {"song": "Delta", "artist": "New Act", "count": "24"},
            {"song": "Alpha", "artist": "The Testers", "count": "15"},
            {"song": BOLD, "artist": EVIL_ARTIST, "count": "9"},
            {"song": "Gamma", "artist": "C", "count": "4"},
        ]),
        "{second}"
    );
    assert_eq!(second["streams10m"], "52");
    assert_eq!(second["topSong"], "Delta");
    assert_eq!(second["users1m"], input.users(6, 7).to_string());
    assert_eq!(second["users10m"], input.users(0, 8).to_string());
    assert_eq!(second["trend"], json!([9, 9, 9, 1, 12, 12]), "{second}");
    assert_eq!(
        second["forecastActual"],
        json!([9, 9, 9, 1, 12, 12]),
        "{second}"
    );
    assert_eq!(second["forecast"], "warming", "{second}");

    // The API behind it.
    let (status, head, history) = http(engine.port, "GET", "/api/v1/windows/history", None);
    assert_eq!(status, 200);
    assert!(head.contains("cache-control: no-store"), "{head}");
    let history: Vec<Value> = serde_json::from_str(&history).unwrap();
    let minutes: Vec<(i64, i64)> = history
        .iter()
        .map(|w| {
            assert_eq!(w["window"], "tumbling");
            (
                (w["start_ms"].as_i64().unwrap() - T0) / MINUTE,
                w["streams"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(minutes, [(0, 9), (1, 9), (2, 9), (4, 1), (5, 12), (6, 12)]);
    let stats: Value =
        serde_json::from_str(&common::get(engine.port, "/api/v1/stats").unwrap().1).unwrap();
    assert_eq!(stats["events_total"], 55, "{stats}");
    assert_eq!(stats["streams_total"], 53, "{stats}");
    assert_eq!(stats["late_total"], 1, "{stats}");
    assert_eq!(stats["rejected_total"], 1, "{stats}");
    assert_eq!(stats["rejected_by_reason"]["invalid_json"], 1, "{stats}");
    assert_eq!(
        stats["watermark_timestamp_seconds"],
        json!((T0 + 8 * MINUTE + 11_000 - 10_000) as f64 / 1000.0),
        "{stats}"
    );
    // The forecast of the latest minute: none yet, nothing ahead.
    let (status, _, forecast) = http(engine.port, "GET", "/api/v1/forecast", None);
    assert_eq!(status, 200);
    let forecast: Value = serde_json::from_str(&forecast).unwrap();
    assert_eq!(forecast["window"], "1m", "{forecast}");
    assert_eq!(
        forecast["latest"]["start_ms"],
        T0 + 6 * MINUTE,
        "{forecast}"
    );
    assert_eq!(forecast["latest"]["streams"], 12, "{forecast}");
    assert_eq!(forecast["latest"]["forecast"], Value::Null, "{forecast}");
    assert_eq!(forecast["ahead"], json!([]), "{forecast}");
    let (status, _, trending) = http(engine.port, "GET", "/api/v1/trending", None);
    assert_eq!(status, 200);
    let trending: Value = serde_json::from_str(&trending).unwrap();
    assert!(trending["songs"].is_array(), "{trending}");

    // Sessions (one per user, cut at 90 s gaps) closed by the watermark
    // at minute 8: the API against a from-scratch cut, the page against
    // the API.
    let closed = input.closed_sessions(T0 + 8 * MINUTE + 11_000 - 10_000);
    let latest_end = closed.iter().map(|c| c.0).max().unwrap();
    let mut lengths: Vec<i64> = closed
        .iter()
        .filter(|c| c.0 > latest_end - 10 * MINUTE)
        .map(|c| c.1)
        .collect();
    lengths.sort_unstable();
    let n = lengths.len();
    assert!(n > 5, "{closed:?}");
    let median_ms = if n % 2 == 1 {
        lengths[n / 2] as f64
    } else {
        (lengths[n / 2 - 1] + lengths[n / 2]) as f64 / 2.0
    };
    let (status, _, sessions) = http(engine.port, "GET", "/api/v1/sessions", None);
    assert_eq!(status, 200);
    let sessions: Value = serde_json::from_str(&sessions).unwrap();
    assert_eq!(sessions["closed"], n, "{sessions}");
    assert_eq!(
        sessions["median_duration_seconds"],
        median_ms / 1000.0,
        "{sessions}"
    );
    assert_eq!(
        sessions["sessions_per_minute"],
        n as f64 / 10.0,
        "{sessions}"
    );
    // Every user has one session or more, closed or open.
    let users: HashSet<u32> = input.plays.iter().map(|p| p.0).collect();
    let open = sessions["open"].as_u64().unwrap() as usize;
    assert!(open >= 1, "{sessions}");
    assert!(closed.len() + open >= users.len(), "{sessions}");
    // The page's figures, as JavaScript formats them (one decimal at most).
    let one_decimal = |x: f64| {
        let text = format!("{:.1}", x);
        text.strip_suffix(".0").map(str::to_owned).unwrap_or(text)
    };
    let seconds = median_ms / 1000.0;
    let median_text = if seconds < 60.0 {
        format!("{} s", seconds.round())
    } else {
        format!("{} min", one_decimal(seconds / 60.0))
    };
    browser.wait_for(
        "the sessions card",
        &format!(
            r##"return document.getElementById("kpi-session-median").textContent === {:?};"##,
            median_text
        ),
    );
    let card = browser.script(PAGE_STATE);
    assert_eq!(card["sessionsRate"], one_decimal(n as f64 / 10.0), "{card}");
    assert_eq!(card["sessionsOpen"], sessions["open"].to_string(), "{card}");

    let shot = browser.screenshot("live_page-2.png");
    eprintln!("screenshot: {}", shot.display());

    // The engine stops: the page says so and keeps the last data.
    drop(engine);
    browser.wait_for(
        "that the engine does not answer",
        r##"return document.getElementById("status").dataset.state === "offline";"##,
    );
    let offline = browser.script(PAGE_STATE);
    assert!(
        offline["statusText"]
            .as_str()
            .unwrap()
            .contains("not answering"),
        "{offline}"
    );
    assert_eq!(offline["leaderboard"], second["leaderboard"]);
    assert_eq!(offline["trend"], second["trend"]);
    browser.screenshot("live_page-offline.png");
    eprintln!("live page test took {:?}", started.elapsed());
}

/// Close enough for two parses of one JSON number (serde_json's default
/// float parsing may be a unit in the last place off the browser's).
fn same_number(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        _ => false,
    }
}

/// With a short warm-up (10 scored forecasts instead of 60), 90 minutes of
/// streams give the forecast card its band, and its forecasts ahead are
/// the API's: listed for every horizon, drawn for those within the quarter
/// hour the chart shows ahead.
#[test]
fn live_page_draws_the_forecast_once_warmed_up() {
    let mut engine = Engine::start_with("[forecast]\nmin_residuals = 10\n");
    let browser = Browser::start();
    browser.open(&format!("http://127.0.0.1:{}/", engine.port));

    // 20 to 26 streams a minute, minutes 0 to 89: minute 89's streams
    // close minute 88.
    let mut lines = Vec::new();
    for minute in 0..90 {
        for i in 0..20 + minute % 7 {
            let ts = T0 + minute * MINUTE + 11_000 + i * 100;
            let user = u32::try_from(i % 13).unwrap();
            lines.push(stream(ts, user, "The Testers", &format!("Song {}", i % 4)));
        }
    }
    engine.write(&lines);

    let mut doc = Value::Null;
    common::wait_until(PAGE_TIMEOUT, "the forecast made at minute 88", || {
        let Ok((200, body)) = common::get(engine.port, "/api/v1/forecast") else {
            return false;
        };
        doc = serde_json::from_str(&body).unwrap();
        doc["latest"]["start_ms"] == json!(T0 + 88 * MINUTE)
    });
    let ahead = doc["ahead"].as_array().unwrap().clone();
    let horizons: Vec<i64> = ahead
        .iter()
        .map(|a| a["horizon_minutes"].as_i64().unwrap())
        .collect();
    assert_eq!(horizons, [5, 15, 60], "{doc}");
    assert!(doc["latest"]["forecast"]["upper"].is_number(), "{doc}");
    let history: Vec<Value> = serde_json::from_str(
        &common::get(engine.port, "/api/v1/windows/history")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(history.len(), 60, "an hour of minutes");

    let actual: Vec<&Value> = history.iter().map(|w| &w["streams"]).collect();

    // The page drew this close: its history and its forecast.
    browser.wait_for(
        "the forecast card of minute 88",
        &format!(
            r##"const items = document.querySelectorAll("#forecast-ahead li");
               const dots = [...document.querySelectorAll("#forecast-chart circle.actual")];
               return document.getElementById("forecast-card").dataset.forecast === "ready"
                 && items.length === 3 && items[0].dataset.startMs === "{}"
                 && JSON.stringify(dots.map((c) => Number(c.dataset.streams))) === {:?};"##,
            ahead[0]["start_ms"],
            json!(actual).to_string()
        ),
    );
    let page = browser.script(PAGE_STATE);
    assert_eq!(page["forecastNote"], false, "{page}");
    assert_eq!(page["forecastActual"], json!(actual), "{page}");
    assert!(
        page["forecastBands"].as_u64().unwrap() >= 1,
        "the band is drawn: {page}"
    );
    assert_eq!(page["forecastMarks"], json!([5, 15]), "{page}");
    assert_eq!(page["forecastAhead"].as_array().unwrap().len(), 3, "{page}");
    for (shown, given) in page["forecastAhead"].as_array().unwrap().iter().zip(&ahead) {
        for key in ["horizon_minutes", "start_ms", "streams", "lower", "upper"] {
            assert!(
                same_number(&shown[key], &given[key]),
                "{key}: the page shows {shown}, the API gave {given}"
            );
        }
    }
    let predicted: Vec<&Value> = doc["predicted_top_songs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["song"])
        .collect();
    let shown: Vec<&Value> = page["predicted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["song"])
        .collect();
    assert_eq!(shown, predicted, "{page}");
    assert_eq!(page["predictedEmpty"], predicted.is_empty(), "{page}");
    no_console_errors_then_screenshot(&browser, "live_page-forecast.png");
}

/// No error in the browser console; then a screenshot, kept as `name`.
fn no_console_errors_then_screenshot(browser: &Browser, name: &str) {
    let errors: Vec<Value> = browser
        .console()
        .into_iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let shot = browser.screenshot(name);
    eprintln!("screenshot: {}", shot.display());
}
