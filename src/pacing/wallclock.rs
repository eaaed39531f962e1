//! The wall clock, for the few things that name a calendar time: an epoch
//! `*-Reset` header, `Retry-After` and `Date` as HTTP-dates. It is read
//! once, then advanced by tokio's clock, so that paused-time tests move it
//! like every other timer (and the simulator and the proxy agree on it).

// The one place the calendar clock is read; everything else takes tokio
// time (clippy.toml bans these types elsewhere).
#![allow(clippy::disallowed_types)]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The calendar time and tokio's time at one moment.
fn anchor() -> &'static (Duration, std::time::Instant) {
    static ANCHOR: OnceLock<(Duration, std::time::Instant)> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (since_epoch, std::time::Instant::now())
    })
}

/// Now, as time since the Unix epoch, on tokio's clock.
pub(crate) fn unix_now() -> Duration {
    at(Instant::now())
}

/// `instant` as time since the Unix epoch.
pub(crate) fn at(instant: Instant) -> Duration {
    let (since_epoch, then) = *anchor();
    let then = Instant::from_std(then);
    if instant >= then {
        since_epoch + (instant - then)
    } else {
        since_epoch.saturating_sub(then - instant)
    }
}

/// An HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT` and the two obsolete
/// forms) as time since the Unix epoch.
pub(crate) fn parse_http_date(text: &str) -> Option<Duration> {
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    time.duration_since(UNIX_EPOCH).ok()
}

/// Time since the Unix epoch as an IMF-fixdate, whole seconds.
pub(crate) fn http_date(since_epoch: Duration) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + since_epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time() {
        let a = unix_now();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(unix_now() - a, Duration::from_secs(90));
    }

    #[test]
    fn http_dates_round_trip_in_whole_seconds() {
        let t = Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date(" Sun, 06 Nov 1994 08:49:37 GMT "), Some(t));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(parse_http_date("2020-05-31T00:00:00Z"), None);
        assert_eq!(parse_http_date("17"), None);
    }
}
