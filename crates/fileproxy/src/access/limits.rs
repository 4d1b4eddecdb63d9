//! The playlist limit of SPEC §4 for a classified User-Agent: its class's limit and
//! window, with the limit replaced per browser name when configured.

use super::ua::{UaClass, UaInfo};
use crate::config::{ClassLimit, PlaylistLimits};

/// The playlist limit and window for a User-Agent: its class's, with the limit
/// replaced by `browsers.<name>` when configured (the window stays the class's).
pub fn playlist_limit(info: &UaInfo, limits: &PlaylistLimits) -> ClassLimit {
    let mut cl = match info.class {
        UaClass::DownloadTool => limits.download_tool,
        UaClass::MobileBrowser => limits.mobile_browser,
        UaClass::DesktopBrowser => limits.desktop_browser,
        UaClass::Unknown => limits.unknown,
    };
    if let Some(limit) = limits.browsers.get(info.name) {
        cl.limit = *limit;
    }
    cl
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::ua::classify_user_agent;

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1";
    const QQ: &str = "Mozilla/5.0 (Linux; U; Android 11; zh-cn; PEGM00 Build/RKQ1.200903.002) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/90.0.4430.210 MQQBrowser/13.6 Mobile Safari/537.36";

    #[test]
    fn limits_by_class_and_browser() {
        let mut l = PlaylistLimits::default();
        let chrome = classify_user_agent(CHROME);
        assert_eq!(
            playlist_limit(&chrome, &l),
            ClassLimit {
                limit: 1,
                window_s: 120
            }
        );
        let iphone = classify_user_agent(IPHONE);
        assert_eq!(
            playlist_limit(&iphone, &l),
            ClassLimit {
                limit: 1,
                window_s: 180
            }
        );
        let curl = classify_user_agent("curl/8");
        assert_eq!(
            playlist_limit(&curl, &l),
            ClassLimit {
                limit: 1,
                window_s: 60
            }
        );
        let vlc = classify_user_agent("VLC/3");
        assert_eq!(
            playlist_limit(&vlc, &l),
            ClassLimit {
                limit: 1,
                window_s: 60
            }
        );
        l.browsers.insert("qq".into(), 2);
        l.browsers.insert("chrome".into(), 5);
        l.mobile_browser.window_s = 300;
        let qq = classify_user_agent(QQ);
        assert_eq!(qq.name, "qq");
        assert_eq!(
            playlist_limit(&qq, &l),
            ClassLimit {
                limit: 2,
                window_s: 300
            }
        );
        assert_eq!(
            playlist_limit(&chrome, &l),
            ClassLimit {
                limit: 5,
                window_s: 120
            }
        );
        assert_eq!(
            playlist_limit(&iphone, &l),
            ClassLimit {
                limit: 1,
                window_s: 300
            }
        );
    }
}
