//! Property tests of SPEC §10 over generated paths (empty segments, dots, encodings,
//! case and suffix tricks, `;`, `%2F`, unicode, trailing slashes): the class the
//! policy applied is never weaker than the class of what the origin served, on both
//! origin kinds.
//!
//! * File origin, in process: the path goes through [`CanonicalPath`] exactly as the
//!   pipeline does; when the folder serves the playlist's or the key's bytes, the
//!   class the policy took from that same path must be playlist or key.
//! * HTTP origin: the real binary in front of a real loopback origin that normalises
//!   paths the way a sloppy server does (`/sloppy/`: `%2F` decoded, empty segments and
//!   `;` parameters dropped, case ignored); no request carries a token, so no answer
//!   may carry the playlist's or the key's bytes (key protection on).

mod support;

use std::net::{IpAddr, Ipv4Addr};

use fileproxy::access::canonical_path::CanonicalPath;
use fileproxy::access::classify::{classify, is_key_file, FileClass};
use fileproxy::config::OriginConfig;
use fileproxy::origin::file::FileOrigin;
use fileproxy::origin::{FetchClass, OriginRequest};
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use proptest::prelude::*;
use support::access::{ProxyConfig, Viewer, CHROME};

const PLAYLIST_BODY: &[u8] = b"#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"enc.key\"\n";
const KEY_BODY: &[u8] = b"KEY-0123456789ab";
const SEGMENT_BODY: &[u8] = b"\x47segment";

/// One path component, plain or in a disguise.
fn component(name: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(name.to_string()),
        1 => Just(name.to_ascii_uppercase()),
        1 => Just(format!("{name};x=1")),
        1 => Just(format!("{name}%3B")),
        1 => Just(name.replace('.', "%2e")),
        1 => Just(name.replace('e', "%65")),
        1 => Just(name.replace('e', "%C3%A9")),
        1 => Just(format!("{name}%00")),
        1 => Just(format!("{name}.")),
        1 => Just(format!("{name}%20")),
    ]
}

/// Separators between components.
fn separator() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => Just("/"),
        1 => Just("//"),
        1 => Just("/./"),
        1 => Just("/%2F"),
        1 => Just("%2f"),
        1 => Just("/%252F"),
        1 => Just("/x/../"),
    ]
}

/// A request path for one of the three files under `prefix`.
fn path(prefix: &'static str) -> impl Strategy<Value = String> {
    let file = prop_oneof![
        Just("index.m3u8"),
        Just("enc.key"),
        Just("seg0.ts"),
        Just("index.M3U8"),
        Just("视频.ts"),
    ];
    (
        component("vod"),
        component("abc"),
        file.prop_flat_map(component),
        separator(),
        separator(),
        prop_oneof![4 => Just(""), 1 => Just("/"), 1 => Just("//"), 1 => Just("/."), 1 => Just(";")],
    )
        .prop_map(move |(a, b, f, s1, s2, tail)| format!("{prefix}{a}{s1}{b}{s2}{f}{tail}"))
}

/// Which file a served body is.
fn served_class(body: &[u8]) -> Option<FileClass> {
    match body {
        b if b == PLAYLIST_BODY => Some(FileClass::Playlist),
        b if b == KEY_BODY => Some(FileClass::Key),
        _ => None,
    }
}

fn write_media(root: &std::path::Path) {
    let folder = root.join("vod/abc");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join("index.m3u8"), PLAYLIST_BODY).expect("write");
    std::fs::write(folder.join("enc.key"), KEY_BODY).expect("write");
    std::fs::write(folder.join("seg0.ts"), SEGMENT_BODY).expect("write");
}

#[test]
fn file_origin_never_serves_a_stronger_class_than_the_policy_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_media(dir.path());
    let root = dir.path().to_str().expect("utf-8 tempdir");
    let origin = FileOrigin::new(root, &OriginConfig::default()).expect("origin");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let served = std::cell::Cell::new(0u32);
    let mut runner = runner(2000);
    runner
        .run(&path("/"), |raw| {
            let Ok(canonical) = CanonicalPath::parse(&raw) else {
                return Ok(()); // refused with 400 before the origin
            };
            let policy = classify(canonical.as_str());
            let req = OriginRequest {
                method: Method::GET,
                path: canonical.origin_path(),
                headers: HeaderMap::new(),
                client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                class: FetchClass::Other,
            };
            let body = rt.block_on(async {
                match origin.fetch(req).await {
                    Ok(r) if r.status() == 200 => {
                        Some(r.into_body().collect().await.expect("body").to_bytes())
                    }
                    _ => None,
                }
            });
            if let Some(body) = body {
                served.set(served.get() + 1);
                match served_class(&body) {
                    Some(FileClass::Playlist) => {
                        prop_assert_eq!(policy, FileClass::Playlist, "{} served the playlist", raw)
                    }
                    Some(_) => {
                        prop_assert!(is_key_file(canonical.as_str()), "{} served the key", raw)
                    }
                    None => {}
                }
            }
            Ok(())
        })
        .expect("property holds");
    assert!(served.get() > 0, "the generator reaches real files");
}

/// A runner of `cases` cases with a fixed seed: the same paths every run, so the
/// "reaches real files" check below is a property of the generator, not of luck.
fn runner(cases: u32) -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    TestRunner::new_with_rng(
        ProptestConfig::with_cases(cases),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

#[test]
fn sloppy_http_origin_never_serves_playlist_or_key_bytes_unchecked() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let origin = rt.block_on(support::origin::TestOrigin::start());
    origin.put("vod/abc/index.m3u8", PLAYLIST_BODY);
    origin.put("vod/abc/enc.key", KEY_BODY);
    origin.put("vod/abc/seg0.ts", SEGMENT_BODY);
    let p = ProxyConfig::trusting_loopback("memory://")
        .tail("[protect]\nkey_protection = true\n")
        .start(&origin.url());
    let v = Viewer::new("180.98.66.2", CHROME);
    rt.block_on(v.admit(&p, "u1", "/sloppy/vod/abc/index.m3u8"));
    let segments = std::cell::Cell::new(0u32);
    let mut runner = runner(256);
    runner
        .run(&path("/sloppy/"), |raw| {
            let r = rt.block_on(v.get(&p, &raw));
            prop_assert!(
                served_class(&r.body).is_none(),
                "{} → {} served protected bytes without a token",
                raw,
                r.status
            );
            if r.status == 200 && r.body.as_ref() == SEGMENT_BODY {
                segments.set(segments.get() + 1);
            }
            Ok(())
        })
        .expect("property holds");
    assert!(segments.get() > 0, "the generator reaches real files");
    drop(origin);
}
