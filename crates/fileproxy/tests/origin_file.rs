//! File origin against a real temporary folder: bodies, ranges, validators, cache
//! headers and path-traversal refusals.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fileproxy::config::OriginConfig;
use fileproxy::origin::file::FileOrigin;
use fileproxy::origin::{FetchClass, Origin, OriginBody, OriginError, OriginRequest};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;

const CHUNK: usize = 4096;

/// A temp dir holding `root/` (the origin) and `secret.txt` next to it.
struct Fixture {
    dir: tempfile::TempDir,
    origin: FileOrigin,
    segment: Vec<u8>,
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let demo = root.join("media/demo");
    std::fs::create_dir_all(&demo).unwrap();
    let segment = pattern(100_000);
    std::fs::write(demo.join("seg0.ts"), &segment).unwrap();
    std::fs::write(demo.join("index.m3u8"), b"#EXTM3U\n").unwrap();
    std::fs::write(demo.join("enc.key"), [7u8; 16]).unwrap();
    std::fs::write(demo.join("poster.png"), b"png").unwrap();
    std::fs::write(demo.join("notes.txt"), b"hi").unwrap();
    std::fs::write(demo.join("a b.ts"), b"space").unwrap();
    std::fs::write(demo.join("empty.ts"), b"").unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"top secret").unwrap();
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/x.ts"), b"outside").unwrap();
    let cfg = OriginConfig {
        url: format!("file://{}", root.display()).parse().unwrap(),
        chunk_bytes: CHUNK,
        ..OriginConfig::default()
    };
    let origin = FileOrigin::new(root.to_str().unwrap(), &cfg).unwrap();
    Fixture {
        dir,
        origin,
        segment,
    }
}

fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> OriginRequest {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    OriginRequest {
        method,
        path: path.into(),
        headers: map,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        class: FetchClass::Other,
    }
}

async fn get(
    o: &FileOrigin,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    collect(o.fetch(request(Method::GET, path, headers)).await.unwrap()).await
}

async fn head(
    o: &FileOrigin,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    collect(o.fetch(request(Method::HEAD, path, headers)).await.unwrap()).await
}

async fn collect(resp: Response<OriginBody>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn h<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

const SEG: &str = "/media/demo/seg0.ts";

#[tokio::test]
async fn full_body_is_byte_exact_with_headers() {
    let f = fixture();
    let (status, headers, body) = get(&f.origin, SEG, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, f.segment);
    assert_eq!(h(&headers, "content-length"), "100000");
    assert_eq!(h(&headers, "accept-ranges"), "bytes");
    assert_eq!(h(&headers, "content-type"), "video/mp2t");
    assert_eq!(h(&headers, "cache-control"), "public, max-age=300");
    let etag = h(&headers, "etag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong etag: {etag}"
    );
    let lm = httpdate::parse_http_date(h(&headers, "last-modified")).unwrap();
    let mtime = std::fs::metadata(f.dir.path().join("root").join(&SEG[1..]))
        .unwrap()
        .modified()
        .unwrap();
    assert!(mtime.duration_since(lm).unwrap() < Duration::from_secs(1));
    assert!(headers.get("content-range").is_none());
}

#[tokio::test]
async fn body_streams_in_chunks() {
    let f = fixture();
    let resp = f
        .origin
        .fetch(request(Method::GET, SEG, &[]))
        .await
        .unwrap();
    assert_eq!(f.origin.pool_state().in_flight, 1);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        assert!(
            !data.is_empty() && data.len() <= CHUNK,
            "chunk of {}",
            data.len()
        );
        got.extend_from_slice(&data);
        frames += 1;
    }
    assert_eq!(got, f.segment);
    assert!(frames >= 100_000 / CHUNK);
    assert_eq!(f.origin.pool_state().in_flight, 0);
    assert_eq!(f.origin.pool_state().kind, "file");
}

#[tokio::test]
async fn dropping_the_body_releases_in_flight() {
    let f = fixture();
    let resp = f
        .origin
        .fetch(request(Method::GET, SEG, &[]))
        .await
        .unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(f.origin.pool_state().in_flight, 1);
    drop(body);
    assert_eq!(f.origin.pool_state().in_flight, 0);
}

#[tokio::test]
async fn every_range_form() {
    let f = fixture();
    let seg = &f.segment;
    let cases: &[(&str, usize, usize)] = &[
        ("bytes=0-0", 0, 0),
        ("bytes=10-4105", 10, 4105),
        ("bytes=99990-", 99_990, 99_999),
        ("bytes=5000-", 5000, 99_999),
        ("bytes=-1", 99_999, 99_999),
        ("bytes=-20000", 80_000, 99_999),
        ("bytes=-200000", 0, 99_999),
        ("bytes=99000-500000", 99_000, 99_999),
    ];
    for &(range, start, end) in cases {
        let (status, headers, body) = get(&f.origin, SEG, &[("range", range)]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(&body[..], &seg[start..=end], "{range}");
        assert_eq!(
            h(&headers, "content-range"),
            format!("bytes {start}-{end}/100000"),
            "{range}"
        );
        assert_eq!(
            h(&headers, "content-length"),
            (end - start + 1).to_string(),
            "{range}"
        );
        assert_eq!(h(&headers, "content-type"), "video/mp2t");
    }
}

#[tokio::test]
async fn unsatisfiable_and_multi_ranges_get_416() {
    let f = fixture();
    for range in [
        "bytes=100000-",
        "bytes=100000-100001",
        "bytes=-0",
        "bytes=9-3",
        "bytes=0-1,5-9",
        "bytes=abc",
        "pages=0-1",
    ] {
        let (status, headers, body) = get(&f.origin, SEG, &[("range", range)]).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(h(&headers, "content-range"), "bytes */100000", "{range}");
        assert!(body.is_empty());
    }
    let (status, headers, _) =
        get(&f.origin, "/media/demo/empty.ts", &[("range", "bytes=0-")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h(&headers, "content-range"), "bytes */0");
    let (status, headers, body) = get(&f.origin, "/media/demo/empty.ts", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h(&headers, "content-length"), "0");
    assert!(body.is_empty());
}

#[tokio::test]
async fn head_has_get_headers_and_no_body() {
    let f = fixture();
    let (gs, gh, _) = get(&f.origin, SEG, &[]).await;
    let (hs, hh, hb) = head(&f.origin, SEG, &[]).await;
    assert_eq!(gs, hs);
    assert_eq!(gh, hh);
    assert!(hb.is_empty());
    let (status, headers, body) = head(&f.origin, SEG, &[("range", "bytes=0-9")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h(&headers, "content-length"), "10");
    assert_eq!(h(&headers, "content-range"), "bytes 0-9/100000");
    assert!(body.is_empty());
    assert_eq!(f.origin.pool_state().in_flight, 0);
}

#[tokio::test]
async fn not_modified_for_both_validators() {
    let f = fixture();
    let (_, headers, _) = get(&f.origin, SEG, &[]).await;
    let etag = h(&headers, "etag").to_owned();
    let lm = h(&headers, "last-modified").to_owned();
    let weak = format!("W/{etag}");
    let listed = format!("\"nope\", {etag}");
    for inm in [etag.as_str(), weak.as_str(), listed.as_str(), "*"] {
        let (status, headers, body) = get(&f.origin, SEG, &[("if-none-match", inm)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{inm}");
        assert_eq!(h(&headers, "etag"), etag);
        assert_eq!(h(&headers, "cache-control"), "public, max-age=300");
        assert!(headers.get("content-length").is_none());
        assert!(body.is_empty());
    }
    // If-Modified-Since: equal or later → 304; earlier → 200.
    let (status, _, _) = get(&f.origin, SEG, &[("if-modified-since", &lm)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
    let (status, _, _) = get(&f.origin, SEG, &[("if-modified-since", &later)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, _, body) = get(
        &f.origin,
        SEG,
        &[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, f.segment);
    // A garbage date is ignored.
    let (status, _, _) = get(&f.origin, SEG, &[("if-modified-since", "yesterday")]).await;
    assert_eq!(status, StatusCode::OK);
    // If-None-Match wins: a mismatching tag means 200 even with a fresh IMS.
    let (status, _, _) = get(
        &f.origin,
        SEG,
        &[
            ("if-none-match", "\"other\""),
            ("if-modified-since", &later),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // HEAD too.
    let (status, _, _) = head(&f.origin, SEG, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn if_range_falls_back_to_full_body() {
    let f = fixture();
    let (_, headers, _) = get(&f.origin, SEG, &[]).await;
    let etag = h(&headers, "etag").to_owned();
    let lm = h(&headers, "last-modified").to_owned();
    let range = ("range", "bytes=0-99");
    for matching in [etag.as_str(), lm.as_str()] {
        let (status, _, body) = get(&f.origin, SEG, &[range, ("if-range", matching)]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{matching}");
        assert_eq!(&body[..], &f.segment[..100]);
    }
    let weak = format!("W/{etag}");
    for stale in [
        "\"other\"",
        weak.as_str(),
        "Mon, 01 Jan 2001 00:00:00 GMT",
        "garbage",
    ] {
        let (status, headers, body) = get(&f.origin, SEG, &[range, ("if-range", stale)]).await;
        assert_eq!(status, StatusCode::OK, "{stale}");
        assert_eq!(body, f.segment);
        assert!(headers.get("content-range").is_none());
    }
    // If-Range with an unsatisfiable range that does not match: full 200, not 416.
    let (status, _, _) = get(
        &f.origin,
        SEG,
        &[("range", "bytes=999999-"), ("if-range", "\"other\"")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn media_types_and_cache_headers() {
    let f = fixture();
    let (status, headers, body) = get(&f.origin, "/media/demo/index.m3u8", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"#EXTM3U\n");
    assert_eq!(h(&headers, "content-type"), "application/vnd.apple.mpegurl");
    assert_eq!(
        h(&headers, "cache-control"),
        "no-cache, no-store, must-revalidate"
    );
    assert_eq!(h(&headers, "pragma"), "no-cache");
    assert_eq!(h(&headers, "expires"), "0");

    let (_, headers, _) = get(&f.origin, "/media/demo/enc.key", &[]).await;
    assert_eq!(h(&headers, "content-type"), "application/octet-stream");
    assert_eq!(h(&headers, "cache-control"), "public, max-age=600");
    assert!(headers.get("pragma").is_none());

    let (_, headers, _) = get(&f.origin, "/media/demo/poster.png", &[]).await;
    assert_eq!(h(&headers, "content-type"), "image/png");
    assert_eq!(h(&headers, "cache-control"), "public, max-age=3600");

    let (_, headers, _) = get(&f.origin, "/media/demo/notes.txt", &[]).await;
    assert_eq!(h(&headers, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(h(&headers, "cache-control"), "public, max-age=600");
}

#[tokio::test]
async fn missing_files_and_directories_are_404() {
    let f = fixture();
    for path in [
        "/media/demo/nope.ts",
        "/media/demo",
        "/",
        "/media/demo/seg0.ts/x",
    ] {
        let (status, _, body) = get(&f.origin, path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(body.is_empty());
    }
    // Percent-encoded names are decoded.
    let (status, _, body) = get(&f.origin, "/media/demo/a%20b.ts", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"space");
    let (status, _, _) = get(&f.origin, "/media/demo/nope.ts", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let resp = f
        .origin
        .fetch(request(Method::POST, SEG, &[]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn fifo_is_not_served_and_does_not_hang() {
    let f = fixture();
    let fifo = f.dir.path().join("root/media/demo/pipe.ts");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    // Guard against a hang only (opening a FIFO blocks without O_NONBLOCK).
    let (status, _, _) = tokio::time::timeout(
        Duration::from_secs(30),
        get(&f.origin, "/media/demo/pipe.ts", &[]),
    )
    .await
    .expect("opening a FIFO hung");
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn large_chunks_are_filled_across_reads() {
    // tokio reads a file at most 2 MiB at a time; a 4 MiB chunk takes several reads.
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(5 * 1024 * 1024 + 123);
    std::fs::write(dir.path().join("big.ts"), &data).unwrap();
    let cfg = OriginConfig {
        chunk_bytes: 4 * 1024 * 1024,
        ..OriginConfig::default()
    };
    let origin = FileOrigin::new(dir.path().to_str().unwrap(), &cfg).unwrap();
    let resp = origin
        .fetch(request(Method::GET, "/big.ts", &[]))
        .await
        .unwrap();
    let mut body = resp.into_body();
    assert_eq!(
        http_body::Body::size_hint(&body).exact(),
        Some(data.len() as u64)
    );
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    while let Some(frame) = body.frame().await {
        let chunk = frame.unwrap().into_data().unwrap();
        sizes.push(chunk.len());
        got.extend_from_slice(&chunk);
    }
    assert_eq!(sizes, [4 * 1024 * 1024, 1024 * 1024 + 123]);
    assert!(got == data);
}

#[tokio::test]
async fn traversal_attempts_are_refused() {
    let f = fixture();
    for path in [
        "/../secret.txt",
        "/media/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/media/demo/..%2f..%2f..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/media\\..\\..\\secret.txt",
        "/media%5c..%5c..%5csecret.txt",
        "/media/demo/seg0.ts%00.png",
        // Ambiguous spellings are refused, never normalised (SPEC §10).
        "/media/demo/",
        "/media/demo/index.m3u8/",
        "/media/demo//enc.key",
        "/media/demo/index.m3u8;.ts",
        "/media%2Fdemo/enc.key",
    ] {
        let err = f
            .origin
            .fetch(request(Method::GET, path, &[]))
            .await
            .err()
            .unwrap_or_else(|| panic!("{path} was served"));
        assert!(matches!(err, OriginError::BadPath(_)), "{path}: {err}");
    }
    assert_eq!(f.origin.pool_state().in_flight, 0);
}

#[tokio::test]
async fn symlinks_escaping_the_root_are_404() {
    let f = fixture();
    let root = f.dir.path().join("root");
    // Absolute symlink to a file outside the root.
    std::os::unix::fs::symlink(f.dir.path().join("secret.txt"), root.join("media/leak.txt"))
        .unwrap();
    // Relative symlink to a folder outside the root.
    std::os::unix::fs::symlink("../../outside", root.join("media/out")).unwrap();
    // A symlink that stays inside the root is fine.
    std::os::unix::fs::symlink("demo/seg0.ts", root.join("media/alias.ts")).unwrap();

    let (status, _, body) = get(&f.origin, "/media/leak.txt", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.is_empty());
    let (status, _, _) = get(&f.origin, "/media/out/x.ts", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = get(&f.origin, "/media/alias.ts", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, f.segment);
}

#[tokio::test]
async fn root_is_canonicalized_and_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OriginConfig::default();
    assert!(FileOrigin::new(dir.path().join("missing").to_str().unwrap(), &cfg).is_err());
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    assert!(FileOrigin::new(dir.path().join("file").to_str().unwrap(), &cfg).is_err());
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
    let o = FileOrigin::new(dir.path().join("link").to_str().unwrap(), &cfg).unwrap();
    assert_eq!(
        o.root(),
        std::fs::canonicalize(dir.path().join("real")).unwrap()
    );
    assert_eq!(
        o.url_for("/a/b.ts"),
        format!("file://{}/a/b.ts", o.root().display())
    );
}

#[tokio::test]
async fn bundled_sample_media_is_served() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sample-media");
    let cfg = OriginConfig {
        url: format!("file://{}", root.display()).parse().unwrap(),
        ..OriginConfig::default()
    };
    let origin = Origin::from_config(&cfg).unwrap();
    let get = |path: &str| origin.fetch(request(Method::GET, path, &[]));
    let (status, _, playlist) = collect(get("/media/demo/index.m3u8").await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let playlist = String::from_utf8(playlist.to_vec()).unwrap();
    assert!(playlist.contains("#EXT-X-KEY:METHOD=AES-128,URI=\"enc.key\""));
    let segments: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".ts")).collect();
    assert!((3..=4).contains(&segments.len()), "{segments:?}");
    let mut total = 0;
    for name in segments.iter().copied().chain(["enc.key", "poster.png"]) {
        let (status, _, body) = collect(get(&format!("/media/demo/{name}")).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert!(!body.is_empty());
        total += body.len();
    }
    let (_, _, key) = collect(get("/media/demo/enc.key").await.unwrap()).await;
    assert_eq!(key.len(), 16);
    assert!(total < 1024 * 1024);
    assert_eq!(origin.pool_state().kind, "file");
}
