//! User-Agent classes and browser names of SPEC §4, from one table of keyword rules.
//!
//! Matching is case-insensitive substring search over the raw header: no regex and no
//! allocation per request. The first rule (top to bottom) whose platform condition
//! holds and one of whose keywords occurs wins.

/// The User-Agent classes of SPEC §4, each with its own playlist limit and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UaClass {
    /// wget, curl, ffmpeg, yt-dlp, HTTP libraries, …
    DownloadTool,
    /// QQ, UC, Baidu, Sogou, and Chrome/Safari/Edge/Firefox on a mobile platform.
    MobileBrowser,
    /// Chrome, Firefox, Edge, Safari, Opera on Windows/macOS/Linux.
    DesktopBrowser,
    /// Anything else.
    Unknown,
}

impl UaClass {
    /// The class name used in configuration (`auth.playlist_limits.<name>`) and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            UaClass::DownloadTool => "download_tool",
            UaClass::MobileBrowser => "mobile_browser",
            UaClass::DesktopBrowser => "desktop_browser",
            UaClass::Unknown => "unknown",
        }
    }
}

/// Which platform a rule requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    /// Any platform (or none).
    Any,
    /// A mobile platform token is present.
    Mobile,
    /// A desktop platform token is present and no mobile one.
    Desktop,
}

use Platform::{Any, Desktop, Mobile};
use UaClass::{DesktopBrowser as DESK, DownloadTool as TOOL, MobileBrowser as MOB};

/// The rules, first match wins: (browser name, class, platform, keywords).
/// Keywords are lowercase; an empty keyword list matches any User-Agent.
#[rustfmt::skip]
const RULES: &[(&str, UaClass, Platform, &[&str])] = &[
    // Download tools and HTTP libraries, on any platform.
    ("wget",            TOOL, Any,     &["wget"]),
    ("curl",            TOOL, Any,     &["curl/", "libcurl"]),
    ("aria2",           TOOL, Any,     &["aria2"]),
    ("ffmpeg",          TOOL, Any,     &["lavf/", "ffmpeg"]),
    ("yt-dlp",          TOOL, Any,     &["yt-dlp"]),
    ("youtube-dl",      TOOL, Any,     &["youtube-dl"]),
    ("n_m3u8dl",        TOOL, Any,     &["n_m3u8dl", "m3u8dl"]),
    ("python-requests", TOOL, Any,     &["python-requests"]),
    ("python-urllib",   TOOL, Any,     &["python-urllib"]),
    ("python-httpx",    TOOL, Any,     &["python-httpx"]),
    ("aiohttp",         TOOL, Any,     &["aiohttp"]),
    ("scrapy",          TOOL, Any,     &["scrapy"]),
    ("go-http-client",  TOOL, Any,     &["go-http-client"]),
    ("okhttp",          TOOL, Any,     &["okhttp"]),
    ("java",            TOOL, Any,     &["java/", "apache-httpclient"]),
    ("libwww-perl",     TOOL, Any,     &["libwww-perl"]),
    ("httpie",          TOOL, Any,     &["httpie"]),
    ("node-fetch",      TOOL, Any,     &["node-fetch", "undici", "axios/"]),
    ("powershell",      TOOL, Any,     &["powershell"]),
    // Chinese browsers count as mobile on any platform (SPEC §4).
    ("qq",              MOB,  Any,     &["mqqbrowser", "qqbrowser", " qq/"]),
    ("baidu",           MOB,  Any,     &["baiduboxapp", "baidubrowser", "bidubrowser", "baiduhd"]),
    ("sogou",           MOB,  Any,     &["sogoumobilebrowser", "sogoumse", "sogousearch", "metasr"]),
    ("uc",              MOB,  Any,     &["ucbrowser", "ucweb", "ubrowser"]),  // after Baidu: "baidubrowser"
    // Major browsers on a mobile platform (Edge and Firefox before Chrome, Chrome
    // before Safari: their User-Agents name the engines they derive from).
    ("edge_mobile",     MOB,  Mobile,  &["edga/", "edgios/", "edg/", "edge/"]),
    ("firefox_mobile",  MOB,  Mobile,  &["fxios/", "firefox/"]),
    ("chrome_mobile",   MOB,  Mobile,  &["crios/", "chrome/"]),
    ("safari_mobile",   MOB,  Mobile,  &["safari/"]),
    ("generic_mobile",  MOB,  Mobile,  &[]),
    // Major browsers on Windows, macOS, Linux.
    ("edge",            DESK, Desktop, &["edg/", "edge/"]),
    ("opera",           DESK, Desktop, &["opr/", "opera"]),
    ("firefox",         DESK, Desktop, &["firefox/"]),
    ("chrome",          DESK, Desktop, &["chrome/", "chromium/"]),
    ("safari",          DESK, Desktop, &["safari/"]),
    ("generic_desktop", DESK, Desktop, &[]),
];

/// Tokens that mark a mobile platform.
const MOBILE_TOKENS: &[&str] = &[
    "mobile",
    "android",
    "iphone",
    "ipad",
    "ipod",
    "windows phone",
    "harmonyos",
    "opera mini",
    "blackberry",
];

/// Tokens that mark a desktop platform (checked only when no mobile token is present).
const DESKTOP_TOKENS: &[&str] = &["windows", "macintosh", "mac os x", "x11", "linux", "cros"];

/// What a User-Agent is: its class and browser name (SPEC §4's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UaInfo {
    /// The class deciding the default limit and window.
    pub class: UaClass,
    /// The browser or tool name (`chrome_mobile`, `curl`, …; `unknown` when none).
    pub name: &'static str,
}

/// Whether `hay` contains `needle` (lowercase ASCII), ignoring ASCII case.
fn contains_ignore_case(hay: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    n.is_empty() || hay.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// The class and browser name of a User-Agent.
pub fn classify_user_agent(user_agent: &str) -> UaInfo {
    let ua = user_agent.as_bytes();
    let mobile = MOBILE_TOKENS.iter().any(|t| contains_ignore_case(ua, t));
    let desktop = !mobile && DESKTOP_TOKENS.iter().any(|t| contains_ignore_case(ua, t));
    for &(name, class, platform, keywords) in RULES {
        let platform_ok = match platform {
            Any => true,
            Mobile => mobile,
            Desktop => desktop,
        };
        if platform_ok
            && (keywords.is_empty() || keywords.iter().any(|k| contains_ignore_case(ua, k)))
        {
            return UaInfo { class, name };
        }
    }
    UaInfo {
        class: UaClass::Unknown,
        name: "unknown",
    }
}

/// Every browser or tool name the table can give (for config checks and `/debug`).
pub fn browser_names() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.0).chain(std::iter::once("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Real User-Agent strings and what they must be classified as.
    #[rustfmt::skip]
    const CASES: &[(&str, &str, UaClass)] = &[
        // Desktop browsers.
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "chrome", DESK),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36", "chrome", DESK),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36", "chrome", DESK),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0", "firefox", DESK),
        ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0", "firefox", DESK),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0", "firefox", DESK),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15", "safari", DESK),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51", "edge", DESK),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.79 Safari/537.36 Edge/14.14393", "edge", DESK),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36 OPR/108.0.0.0", "opera", DESK),
        ("AppleCoreMedia/1.0.0.23E214 (Macintosh; U; Intel Mac OS X 14_4_1; en_us)", "generic_desktop", DESK),
        // Mobile browsers.
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1", "safari_mobile", MOB),
        ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1", "safari_mobile", MOB),
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36", "chrome_mobile", MOB),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1", "chrome_mobile", MOB),
        ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 EdgA/124.0.2478.64", "edge_mobile", MOB),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 EdgiOS/124.2478.50 Mobile/15E148 Safari/605.1.15", "edge_mobile", MOB),
        ("Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0", "firefox_mobile", MOB),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15", "firefox_mobile", MOB),
        ("Mozilla/5.0 (Linux; U; Android 11; zh-cn; PEGM00 Build/RKQ1.200903.002) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/90.0.4430.210 MQQBrowser/13.6 Mobile Safari/537.36", "qq", MOB),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/94.0.4606.71 Safari/537.36 Core/1.94.225.400 QQBrowser/12.2.5544.400", "qq", MOB),
        ("Mozilla/5.0 (Linux; U; Android 12; zh-CN; V2145A Build/SP1A.210812.003) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/100.0.4896.58 UCBrowser/15.5.6.1247 Mobile Safari/537.36", "uc", MOB),
        ("Mozilla/5.0 (Linux; Android 12; LIO-AN00 Build/HUAWEILIO-AN00; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/97.0.4692.98 Mobile Safari/537.36 T7/13.50 SP-engine/2.91.0 baiduboxapp/13.50.0.10 (Baidu; P1 12) NABar/1.0", "baidu", MOB),
        ("Mozilla/5.0 (Linux; Android 11; M2012K11AC Build/RKQ1.200826.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/86.0.4240.99 XWEB/4317 MMWEBSDK/20220903 Mobile Safari/537.36 SogouMobileBrowser/5.33.9", "sogou", MOB),
        ("Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/86.0.4240.198 Safari/537.36 SE 2.X MetaSr 1.0", "sogou", MOB),
        // Players.
        ("AppleCoreMedia/1.0.0.21E236 (iPhone; U; CPU OS 17_4_1 like Mac OS X; zh_cn)", "generic_mobile", MOB),
        ("ExoPlayerDemo/2.19.1 (Linux;Android 13) ExoPlayerLib/2.19.1", "generic_mobile", MOB),
        ("VLC/3.0.20 LibVLC/3.0.20", "unknown", UaClass::Unknown),
        ("Lavf/60.16.100", "ffmpeg", TOOL),
        // Download tools and libraries.
        ("Wget/1.21.4", "wget", TOOL),
        ("curl/8.7.1", "curl", TOOL),
        ("aria2/1.37.0", "aria2", TOOL),
        ("ffmpeg/6.1", "ffmpeg", TOOL),
        ("yt-dlp/2024.04.09", "yt-dlp", TOOL),
        ("python-requests/2.31.0", "python-requests", TOOL),
        ("Python-urllib/3.11", "python-urllib", TOOL),
        ("Go-http-client/1.1", "go-http-client", TOOL),
        ("Go-http-client/2.0", "go-http-client", TOOL),
        ("okhttp/4.12.0", "okhttp", TOOL),
        ("Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230901.001) okhttp/3.12.13", "okhttp", TOOL),
        ("Java/17.0.10", "java", TOOL),
        ("N_m3u8DL-RE/0.2.0", "n_m3u8dl", TOOL),
        // Others.
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "unknown", UaClass::Unknown),
        ("", "unknown", UaClass::Unknown),
    ];

    #[test]
    fn real_user_agents() {
        assert!(CASES.len() >= 30);
        for (ua, name, class) in CASES {
            let info = classify_user_agent(ua);
            assert_eq!((info.name, info.class), (*name, *class), "{ua}");
            // Case never matters.
            assert_eq!(classify_user_agent(&ua.to_uppercase()), info, "{ua}");
        }
    }

    #[test]
    fn names_are_unique_and_cover_spec() {
        let names: Vec<&str> = browser_names().collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        for n in [
            "qq",
            "uc",
            "baidu",
            "sogou",
            "chrome_mobile",
            "safari_mobile",
            "edge_mobile",
            "firefox_mobile",
            "chrome",
            "firefox",
            "edge",
            "safari",
            "opera",
            "generic_mobile",
            "generic_desktop",
            "wget",
            "curl",
            "aria2",
            "ffmpeg",
            "yt-dlp",
            "python-requests",
            "go-http-client",
            "okhttp",
        ] {
            assert!(names.contains(&n), "{n}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(ua in "\\PC{0,300}") {
            let info = classify_user_agent(&ua);
            prop_assert!(browser_names().any(|n| n == info.name));
        }
    }
}
