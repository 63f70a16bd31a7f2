//! The web page in a real browser: headless Chromium (Debian's `chromium`) driven through
//! WebDriver (`chromedriver`) by fantoccini. Upload a photo, see its source first with a verified
//! badge, ask for more like it, page through the collection, at laptop and phone widths.
//! `IMGVEC_SCREENSHOT=FILE.png` also saves the laptop-width page (the README's picture).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use imgvec::Preset;
use imgvec_serve::ServeOptions;

use super::*;

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (apt: chromium-driver; ./scripts/setup.sh installs it)");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// Waits until the text of `css` satisfies `ok`, and returns it.
async fn wait_text(client: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        if let Ok(el) = client.find(Locator::Css(css)).await {
            if let Ok(text) = el.text().await {
                if ok(&text) {
                    return text;
                }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting on {css}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_verify_more_like_this_and_browse_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tokio::task::spawn_blocking({
        let dir = tmp.path().to_path_buf();
        move || make_db(&dir, Preset::Robust, 7)
    })
    .await
    .unwrap();
    let base = serve(&db, ServeOptions::default());
    let (query, source) = query_and_source();
    let source_name = source.file_name().unwrap().to_str().unwrap().to_string();
    let driver = start_driver();
    let client = browser(&driver).await;

    client.goto(&format!("{base}/?page_size=4")).await.unwrap();
    wait_text(&client, "#db-info", |t| t.contains("8 images")).await;
    // Upload: the source of the heavily re-encoded query comes first, verified.
    let input = client.find(Locator::Id("file")).await.unwrap();
    let query = std::fs::canonicalize(&query).unwrap();
    input.send_keys(query.to_str().unwrap()).await.unwrap();
    wait_text(&client, "#status", |t| t.ends_with("results")).await;
    let first = client.find(Locator::Css("#results .card")).await.unwrap();
    let path = first
        .find(Locator::Css(".path"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(path.ends_with(&source_name), "{path}");
    let badge = first.find(Locator::Css(".badge")).await.unwrap();
    assert_eq!(
        badge.attr("class").await.unwrap().as_deref(),
        Some("badge verified")
    );
    assert!(badge.text().await.unwrap().contains("inliers"));
    if let Some(file) = std::env::var_os("IMGVEC_SCREENSHOT") {
        std::fs::write(file, client.screenshot().await.unwrap()).unwrap();
    }

    // The verified hit's matched points: query and hit side by side, a line per inlier pair.
    let text = badge.text().await.unwrap();
    assert!(text.starts_with("verified · "), "{text}"); // with its confidence
    first
        .find(Locator::Css("button.pairs"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#pairs-label", |t| t.contains("inliers agree")).await;
    let lines = client
        .find_all(Locator::Css("#pairs-svg line"))
        .await
        .unwrap();
    assert!(lines.len() >= 8, "{} lines drawn", lines.len());
    let images = client
        .find_all(Locator::Css("#pairs-svg image"))
        .await
        .unwrap();
    assert_eq!(images.len(), 2);
    client
        .find(Locator::Id("pairs-close"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let view = client.find(Locator::Id("pairs-view")).await.unwrap();
    assert!(!view.is_displayed().await.unwrap());

    // More like this: the page searches with the stored image.
    first
        .find(Locator::Css("button.more"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let label = wait_text(&client, "#query-label", |t| t.starts_with("more like id")).await;
    assert!(label.ends_with(&source_name), "{label}");
    wait_text(&client, "#status", |t| t.ends_with("results")).await;

    // Browse the collection, page by page (4 per page here).
    client
        .find(Locator::Id("tab-browse"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#page-label", |t| t.starts_with("page 1 of 2")).await;
    assert_eq!(
        client
            .find_all(Locator::Css("#browse .card"))
            .await
            .unwrap()
            .len(),
        4
    );
    client
        .find(Locator::Id("next"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#page-label", |t| t.starts_with("page 2 of 2")).await;

    // The duplicates view lists groups (or says there are none).
    client
        .find(Locator::Id("tab-dupes"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#dupe-status", |t| {
        t.contains("groups among 8 images")
    })
    .await;

    // At a phone's width nothing overflows sideways.
    client.set_window_size(390, 844).await.unwrap();
    client
        .find(Locator::Id("tab-search"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let overflow = client
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert!(overflow.as_i64().unwrap_or(1) <= 0, "{overflow}");
    client.close().await.unwrap();
}
