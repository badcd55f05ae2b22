//! What a role may say about the connection itself: its type (plain NATS,
//! websocket, MQTT, leaf node), the address it comes from, and the times it
//! may connect at. nats-server does not check types or addresses for users
//! an auth callout admits, so the service checks all three itself, from the
//! request's `client_info`, and also writes them into the user JWT.

use std::net::IpAddr;

use crate::nats::user_jwt::{ConnectionLimits as JwtRules, TimeRange as JwtWindow};
use ipnet::IpNet;
use jiff::civil::Time;
use jiff::tz::TimeZone;

/// A connection type as NATS user JWTs name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnType {
    Standard,
    Websocket,
    Leafnode,
    LeafnodeWs,
    Mqtt,
    MqttWs,
    InProcess,
}

impl ConnType {
    pub const ALL: [ConnType; 7] = [
        ConnType::Standard,
        ConnType::Websocket,
        ConnType::Leafnode,
        ConnType::LeafnodeWs,
        ConnType::Mqtt,
        ConnType::MqttWs,
        ConnType::InProcess,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnType::Standard => "STANDARD",
            ConnType::Websocket => "WEBSOCKET",
            ConnType::Leafnode => "LEAFNODE",
            ConnType::LeafnodeWs => "LEAFNODE_WS",
            ConnType::Mqtt => "MQTT",
            ConnType::MqttWs => "MQTT_WS",
            ConnType::InProcess => "IN_PROCESS",
        }
    }

    pub fn parse(name: &str) -> Result<ConnType, String> {
        ConnType::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "{:?} is not a connection type (STANDARD, WEBSOCKET, LEAFNODE, LEAFNODE_WS, MQTT, MQTT_WS, IN_PROCESS)",
                    crate::text::clip(name)
                )
            })
    }

    /// The types a connection may be, by what the request says of it
    /// (`client_info.kind`, `.type` and `.host`). An in-process connection
    /// has no address; nats-server reports MQTT over websocket like MQTT,
    /// and gives leaf nodes no type at all, so those may be either of two.
    /// An unknown kind may be none.
    pub fn of(
        kind: Option<&str>,
        client_type: Option<&str>,
        host: Option<&str>,
    ) -> &'static [ConnType] {
        match (kind, client_type) {
            (Some("Client"), Some("nats")) if host.is_some_and(|h| !h.is_empty()) => {
                &[ConnType::Standard]
            }
            (Some("Client"), Some("nats")) => &[ConnType::InProcess],
            (Some("Client"), Some("websocket")) => &[ConnType::Websocket],
            (Some("Client"), Some("mqtt")) => &[ConnType::Mqtt, ConnType::MqttWs],
            (Some("Leafnode"), _) => &[ConnType::Leafnode, ConnType::LeafnodeWs],
            _ => &[],
        }
    }

    /// The type nats-server cannot tell this one apart from, if any.
    pub fn twin(self) -> Option<ConnType> {
        match self {
            ConnType::Mqtt => Some(ConnType::MqttWs),
            ConnType::MqttWs => Some(ConnType::Mqtt),
            ConnType::Leafnode => Some(ConnType::LeafnodeWs),
            ConnType::LeafnodeWs => Some(ConnType::Leafnode),
            _ => None,
        }
    }
}

/// A daily window, in a role's time zone; `end` before `start` runs over
/// midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: Time,
    pub end: Time,
}

impl Window {
    /// A window from its `HH:MM:SS` ends. nats-server reads the user JWT's
    /// times with Go's "15:04:05" layout: exactly that, nothing looser.
    pub fn parse(start: &str, end: &str) -> Result<Window, String> {
        let time = |v: &str| {
            strict_time(v).ok_or_else(|| {
                format!(
                    "{:?} is not a time of day like \"08:00:00\"",
                    crate::text::clip(v)
                )
            })
        };
        let window = Window {
            start: time(start)?,
            end: time(end)?,
        };
        if window.start == window.end {
            return Err("a window that starts when it ends is empty".into());
        }
        Ok(window)
    }
}

fn strict_time(v: &str) -> Option<Time> {
    let b = v.as_bytes();
    let digits = |i: usize| -> Option<i8> {
        let (h, l) = (*b.get(i)?, *b.get(i + 1)?);
        (h.is_ascii_digit() && l.is_ascii_digit()).then(|| ((h - b'0') * 10 + (l - b'0')) as i8)
    };
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    Time::new(digits(0)?, digits(3)?, digits(6)?, 0).ok()
}

/// A source network: a network or one address, written canonically.
pub(crate) fn parse_source(n: &str) -> Result<IpNet, String> {
    let net = n
        .parse::<IpNet>()
        .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!(
                "{:?} is not a network like \"10.0.0.0/8\" or an address",
                crate::text::clip(n)
            )
        })?;
    // Clients are checked by their canonical address (an IPv4 client seen
    // through an IPv6 socket is IPv4), so an IPv4-mapped network never
    // matches.
    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            let prefix = v6.prefix_len().saturating_sub(96);
            return Err(format!(
                "{n:?} is an IPv4-mapped IPv6 network, which no client address is compared with; write the IPv4 network {v4}/{prefix}"
            ));
        }
    }
    // "10.0.0.1/8" is either a typo for one address or for the whole
    // network; which is not for us to guess.
    if net.trunc() != net {
        return Err(format!(
            "{n:?} has bits set past its prefix: write the network {} or the address {}/{}",
            net.trunc(),
            net.addr(),
            net.max_prefix_len()
        ));
    }
    Ok(net)
}

/// A time zone by its exact IANA name: nats-server looks the zone up by
/// the name written into the user JWT, case-sensitively.
pub(crate) fn parse_zone(name: &str) -> Result<(String, TimeZone), String> {
    let zone = TimeZone::get(name).map_err(|_| {
        format!(
            "{:?} is not an IANA time zone (like \"Europe/Berlin\" or \"UTC\")",
            crate::text::clip(name)
        )
    })?;
    if zone.iana_name() != Some(name) {
        return Err(format!(
            "{:?} must be written as its IANA name{}",
            crate::text::clip(name),
            zone.iana_name()
                .map(|n| format!(" ({n:?})"))
                .unwrap_or_default()
        ));
    }
    Ok((name.to_string(), zone))
}

/// One role's rules.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionRules {
    pub types: Option<Vec<ConnType>>,
    pub sources: Option<Vec<IpNet>>,
    pub times: Option<Vec<Window>>,
    /// The IANA name and zone the times are in (UTC when not set).
    pub zone: (String, TimeZone),
}

impl Eq for ConnectionRules {}

/// A connection that breaks a rule, and which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    Type(String),
    Source(String),
    Time(String),
}

/// What a connection is, as far as the rules care.
pub struct Facts<'a> {
    pub kind: Option<&'a str>,
    pub client_type: Option<&'a str>,
    pub host: Option<&'a str>,
    /// Unix seconds.
    pub now: u64,
}

impl ConnectionRules {
    /// Whether the connection keeps these rules; `Ok(Some(end))` when a time
    /// window admits it until `end` (Unix seconds).
    pub fn check(&self, role: &str, facts: &Facts<'_>) -> Result<Option<u64>, Broken> {
        if let Some(types) = &self.types {
            // Admitted only when every type it may be is allowed.
            let found = ConnType::of(facts.kind, facts.client_type, facts.host);
            if found.is_empty() || !found.iter().all(|t| types.contains(t)) {
                let this = match found {
                    [] => format!(
                        "of kind {} and type {}",
                        crate::text::name(facts.kind.unwrap_or("?")),
                        crate::text::name(facts.client_type.unwrap_or("?"))
                    ),
                    [one] => one.as_str().to_string(),
                    several => format!(
                        "{} (nats-server does not tell them apart)",
                        several
                            .iter()
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                };
                return Err(Broken::Type(format!(
                    "role {role} admits {} connections, this one is {this}",
                    names(types)
                )));
            }
        }
        if let Some(sources) = &self.sources {
            // An IPv4 client seen through an IPv6 socket is still an
            // IPv4 address for the networks it is checked against.
            let ip = facts
                .host
                .and_then(|h| h.parse::<IpAddr>().ok())
                .map(|ip| ip.to_canonical());
            if !ip.is_some_and(|ip| sources.iter().any(|net| net.contains(&ip))) {
                return Err(Broken::Source(format!(
                    "role {role} admits connections from {}, this one comes from {}",
                    sources
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    crate::text::name(facts.host.unwrap_or("an unknown address"))
                )));
            }
        }
        match &self.times {
            None => Ok(None),
            Some(windows) => self
                .open_until(windows, facts.now)
                .map(Some)
                .ok_or_else(|| {
                    Broken::Time(format!(
                        "role {role} admits connections at {} ({}), not now",
                        window_list(windows),
                        self.zone.0
                    ))
                }),
        }
    }

    /// The rules in a line, as `explain` shows them.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(types) = &self.types {
            parts.push(format!("types {}", names(types)));
        }
        if let Some(sources) = &self.sources {
            let nets: Vec<String> = sources.iter().map(|n| n.to_string()).collect();
            parts.push(format!("from {}", nets.join(", ")));
        }
        if let Some(windows) = &self.times {
            parts.push(format!("at {} ({})", window_list(windows), self.zone.0));
        }
        parts.join("; ")
    }

    /// When the window that contains `now` closes (Unix seconds), if any.
    fn open_until(&self, windows: &[Window], now: u64) -> Option<u64> {
        let ts = jiff::Timestamp::from_second(now as i64).ok()?;
        let zoned = ts.to_zoned_datetime(self.zone.1.clone());
        let time = zoned.time();
        let date = zoned.date();
        // Of the windows open now, the one that stays open longest.
        windows
            .iter()
            .filter_map(|w| {
                let (open, end_date) = if w.start <= w.end {
                    (w.start <= time && time < w.end, date)
                } else if time >= w.start {
                    (true, date.tomorrow().ok()?)
                } else {
                    (time < w.end, date)
                };
                if !open {
                    return None;
                }
                // An end inside a fall-back fold happens twice: take the
                // first occurrence still ahead, so a connection in the second
                // hour is not handed an end that has passed already.
                let end = self
                    .zone
                    .1
                    .to_ambiguous_timestamp(end_date.to_datetime(w.end));
                let ahead = |t: jiff::Timestamp| Some(t.as_second() as u64).filter(|&e| e > now);
                end.earlier()
                    .ok()
                    .and_then(ahead)
                    .or_else(|| end.later().ok().and_then(ahead))
            })
            .max()
    }
}

fn window_list(windows: &[Window]) -> String {
    windows
        .iter()
        .map(|w| format!("{}-{}", w.start, w.end))
        .collect::<Vec<_>>()
        .join(", ")
}

fn names(types: &[ConnType]) -> String {
    types
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rules of all roles that set any, as the user JWT says them: every
/// role's must hold, so types and sources are intersected, and times are
/// written when one zone holds them all.
pub(crate) fn jwt_rules<'a>(rules: impl IntoIterator<Item = &'a ConnectionRules>) -> JwtRules {
    let mut types: Option<Vec<ConnType>> = None;
    let mut sources: Option<Vec<IpNet>> = None;
    let mut times: Option<(String, Vec<(u32, u32)>)> = None;
    let mut zones_differ = false;
    for r in rules {
        if let Some(t) = &r.types {
            types = Some(match types {
                None => t.clone(),
                Some(have) => have.into_iter().filter(|x| t.contains(x)).collect(),
            });
        }
        if let Some(s) = &r.sources {
            sources = Some(match sources {
                None => s.clone(),
                Some(have) => intersect_nets(&have, s),
            });
        }
        if let Some(w) = &r.times {
            let spans = spans(w);
            times = match times {
                None => Some((r.zone.0.clone(), spans)),
                Some((zone, have)) if zone == r.zone.0 => {
                    Some((zone, intersect_spans(&have, &spans)))
                }
                Some(other) => {
                    zones_differ = true;
                    Some(other)
                }
            };
        }
    }
    let (times, times_location) = match times {
        Some((zone, spans)) if !zones_differ => (Some(jwt_windows(&spans)), Some(zone)),
        _ => (None, None),
    };
    JwtRules {
        allowed_connection_types: types.map(|t| t.into_iter().map(ConnType::as_str).collect()),
        src: sources.map(|s| s.iter().map(|n| n.to_string()).collect()),
        times,
        times_location,
    }
}

/// Networks in both lists: of two networks, the narrower when one holds
/// the other.
fn intersect_nets(a: &[IpNet], b: &[IpNet]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            if x.contains(y) {
                out.push(*y);
            } else if y.contains(x) {
                out.push(*x);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Windows as second-of-day spans, an overnight window split in two.
fn spans(windows: &[Window]) -> Vec<(u32, u32)> {
    let sec = |t: Time| t.hour() as u32 * 3600 + t.minute() as u32 * 60 + t.second() as u32;
    let mut out = Vec::new();
    for w in windows {
        let (a, b) = (sec(w.start), sec(w.end));
        if a <= b {
            out.push((a, b));
        } else {
            out.push((a, 86_400));
            out.push((0, b));
        }
    }
    out
}

fn intersect_spans(a: &[(u32, u32)], b: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| (x.0.max(y.0), x.1.min(y.1))))
        .filter(|(s, e)| s < e)
        .collect();
    out.sort();
    out
}

/// Spans as nats-server reads windows. A span that runs to midnight is
/// written as an overnight window to the end of the span that continues
/// after midnight (so the server's own timer does not end the connection
/// at midnight), and that continuing span is written too: nats-server 2.10
/// only admits the part of an overnight window before midnight.
fn jwt_windows(spans: &[(u32, u32)]) -> Vec<JwtWindow> {
    const MIDNIGHT: u32 = 86_400;
    let continued = spans
        .iter()
        .filter(|(a, _)| *a == 0)
        .map(|(_, b)| *b)
        .max()
        .unwrap_or(0);
    let mut spans: Vec<(u32, u32)> = spans.iter().copied().filter(|(a, b)| a < b).collect();
    spans.sort();
    spans.dedup();
    spans
        .into_iter()
        .map(|(a, b)| JwtWindow {
            start: clock(a),
            end: clock(if b == MIDNIGHT { continued } else { b }),
        })
        .collect()
}

fn clock(sec: u32) -> String {
    format!("{:02}:{:02}:{:02}", sec / 3600, sec / 60 % 60, sec % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Time {
        s.parse().unwrap()
    }

    fn rules(
        types: Option<&[ConnType]>,
        sources: Option<&[&str]>,
        times: Option<&[(&str, &str)]>,
        zone: &str,
    ) -> ConnectionRules {
        ConnectionRules {
            types: types.map(|t| t.to_vec()),
            sources: sources.map(|s| s.iter().map(|n| n.parse().unwrap()).collect()),
            times: times.map(|w| {
                w.iter()
                    .map(|(a, b)| Window {
                        start: t(a),
                        end: t(b),
                    })
                    .collect()
            }),
            zone: (zone.into(), TimeZone::get(zone).unwrap()),
        }
    }

    fn facts<'a>(kind: &'a str, ty: &'a str, host: &'a str, now: u64) -> Facts<'a> {
        Facts {
            kind: Some(kind),
            client_type: Some(ty),
            host: Some(host),
            now,
        }
    }

    // 2026-11-29 12:00:00 UTC, a Sunday.
    const NOON: u64 = 1_795_953_600;

    #[test]
    fn types_sources_and_times_are_checked() {
        let ws = rules(Some(&[ConnType::Websocket]), None, None, "UTC");
        assert!(ws
            .check("browser", &facts("Client", "websocket", "10.1.1.1", NOON))
            .is_ok());
        assert!(matches!(
            ws.check("browser", &facts("Client", "nats", "10.1.1.1", NOON)),
            Err(Broken::Type(_))
        ));
        let net = rules(None, Some(&["10.0.0.0/8", "::1/128"]), None, "UTC");
        assert!(net
            .check("r", &facts("Client", "nats", "10.2.3.4", NOON))
            .is_ok());
        assert!(net
            .check("r", &facts("Client", "nats", "::1", NOON))
            .is_ok());
        assert!(net
            .check("r", &facts("Client", "nats", "::ffff:10.9.8.7", NOON))
            .is_ok());
        for host in ["192.168.1.1", "not an ip", ""] {
            assert!(matches!(
                net.check("r", &facts("Client", "nats", host, NOON)),
                Err(Broken::Source(_))
            ));
        }
        let office = rules(None, None, Some(&[("08:00:00", "18:00:00")]), "UTC");
        assert_eq!(
            office.check("r", &facts("Client", "nats", "1.1.1.1", NOON)),
            Ok(Some(NOON + 6 * 3600))
        );
        assert!(matches!(
            office.check("r", &facts("Client", "nats", "1.1.1.1", NOON + 7 * 3600)),
            Err(Broken::Time(_))
        ));
        // 12:00 UTC is 13:00 in Berlin; a night window spans midnight.
        let night = rules(
            None,
            None,
            Some(&[("22:00:00", "06:00:00")]),
            "Europe/Berlin",
        );
        assert!(night
            .check("r", &facts("Client", "nats", "1.1.1.1", NOON))
            .is_err());
        let late = NOON + 10 * 3600; // 23:00 Berlin
        assert_eq!(
            night.check("r", &facts("Client", "nats", "1.1.1.1", late)),
            Ok(Some(NOON + 17 * 3600)),
            "until 06:00 Berlin the next day"
        );
    }

    #[test]
    fn a_window_ending_in_a_fall_back_fold_ends_at_the_occurrence_still_ahead() {
        // Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC, so
        // 02:30 happens twice. At 02:15 CET (01:15 UTC), the second hour,
        // the window's end is 02:30 CET (01:30 UTC), not the 02:30 CEST
        // that passed an hour ago.
        let w = rules(
            None,
            None,
            Some(&[("00:00:00", "02:30:00")]),
            "Europe/Berlin",
        );
        assert_eq!(
            w.check("r", &facts("Client", "nats", "1.1.1.1", 1_792_890_900)),
            Ok(Some(1_792_891_800))
        );
    }

    #[test]
    fn several_roles_intersect_in_the_user_jwt() {
        let a = rules(
            Some(&[ConnType::Standard, ConnType::Websocket]),
            Some(&["10.0.0.0/8"]),
            Some(&[("08:00:00", "18:00:00")]),
            "UTC",
        );
        let b = rules(
            Some(&[ConnType::Websocket]),
            Some(&["10.1.0.0/16", "192.168.0.0/16"]),
            Some(&[("12:00:00", "20:00:00")]),
            "UTC",
        );
        let j = jwt_rules([&a, &b]);
        assert_eq!(j.allowed_connection_types, Some(vec!["WEBSOCKET"]));
        assert_eq!(j.src, Some(vec!["10.1.0.0/16".to_string()]));
        assert_eq!(
            j.times,
            Some(vec![JwtWindow {
                start: "12:00:00".into(),
                end: "18:00:00".into()
            }])
        );
        assert_eq!(j.times_location.as_deref(), Some("UTC"));
        let c = rules(
            None,
            None,
            Some(&[("00:00:00", "01:00:00")]),
            "Europe/Berlin",
        );
        let j = jwt_rules([&a, &c]);
        assert_eq!(
            j.times, None,
            "two zones: the service's check and the expiry hold them"
        );
    }

    #[test]
    fn overnight_windows_are_written_as_both_server_versions_read_them() {
        let w = |a: &str, b: &str| JwtWindow {
            start: a.into(),
            end: b.into(),
        };
        let night = rules(None, None, Some(&[("22:00:00", "06:00:00")]), "UTC");
        assert_eq!(
            jwt_rules([&night]).times,
            Some(vec![w("00:00:00", "06:00:00"), w("22:00:00", "06:00:00")])
        );
        let evening = rules(None, None, Some(&[("18:00:00", "00:00:00")]), "UTC");
        assert_eq!(
            jwt_rules([&evening]).times,
            Some(vec![w("18:00:00", "00:00:00")])
        );
        // Of overlapping windows, the connection lasts to the later end.
        let both = rules(
            None,
            None,
            Some(&[("20:00:00", "00:00:00"), ("22:00:00", "02:00:00")]),
            "UTC",
        );
        let late = NOON + 11 * 3600; // 23:00 UTC
        assert_eq!(
            both.check("r", &facts("Client", "nats", "1.1.1.1", late)),
            Ok(Some(NOON + 14 * 3600))
        );
    }

    #[test]
    fn a_connection_is_admitted_only_when_every_type_it_may_be_is() {
        use ConnType::*;
        let c = |k, t, h| ConnType::of(Some(k), Some(t), h);
        assert_eq!(c("Client", "nats", Some("10.1.1.1")), [Standard]);
        assert_eq!(c("Client", "nats", None), [InProcess]);
        assert_eq!(c("Client", "mqtt", Some("10.1.1.1")), [Mqtt, MqttWs]);
        assert_eq!(
            ConnType::of(Some("Leafnode"), None, Some("10.1.1.1")),
            [Leafnode, LeafnodeWs]
        );
        assert!(ConnType::of(None, Some("nats"), Some("10.1.1.1")).is_empty());
        assert!(ConnType::parse("websocket").is_err());

        let mqtt = rules(Some(&[Mqtt]), None, None, "UTC");
        let err = mqtt
            .check("iot", &facts("Client", "mqtt", "10.1.1.1", NOON))
            .unwrap_err();
        assert_eq!(
            err,
            Broken::Type("role iot admits MQTT connections, this one is MQTT or MQTT_WS (nats-server does not tell them apart)".into())
        );
        let both = rules(Some(&[Mqtt, MqttWs]), None, None, "UTC");
        assert!(both
            .check("iot", &facts("Client", "mqtt", "10.1.1.1", NOON))
            .is_ok());
        let tcp = rules(Some(&[Standard]), None, None, "UTC");
        assert!(
            tcp.check("r", &facts("Client", "nats", "", NOON)).is_err(),
            "in-process is not STANDARD"
        );
        let odd = tcp
            .check("r", &facts("Router", "x\u{1b}", "10.1.1.1", NOON))
            .unwrap_err();
        assert_eq!(
            odd,
            Broken::Type(
                "role r admits STANDARD connections, this one is of kind Router and type x\\u{1b}"
                    .into()
            )
        );
    }
}
