//! Where an MQTT source connects, parsed once from the config.

use std::fmt;

/// `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883); `tcp://` means `mqtt://`;
/// an IPv6 address in brackets (`mqtt://[::1]:1883`). Displays as written (it holds no
/// credentials: those are refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    text: String,
    /// A name or an address, an IPv6 one without its brackets: as name lookups and the TLS
    /// name check take it (bracketed, the lookup finds nothing and the certificate's address
    /// does not match). rumqttc resolves it as `host:port`, which the system's resolver takes
    /// apart at the last colon, so a bare IPv6 address is reached too.
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl MqttUrl {
    pub fn parse(url: &str) -> Result<MqttUrl, String> {
        // The URL shows in logs, `doctor` and metric labels: no credentials in it, and not
        // quoted back here.
        if url.contains('@') {
            return Err(
                "a user name or password in the MQTT url would show in logs and metrics: give username and password_file instead".into(),
            );
        }
        let (rest, tls, default_port) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (rest, true, 8883)
        } else {
            let rest = url
                .strip_prefix("mqtt://")
                .or_else(|| url.strip_prefix("tcp://"))
                .ok_or_else(|| {
                    format!(
                        "bad MQTT url {url:?}: expected mqtt://host[:port] or mqtts://host[:port]"
                    )
                })?;
            (rest, false, 1883)
        };
        let rest = rest.trim_end_matches('/');
        // Else taken as part of the host name, and known wrong only at connect time, by a
        // name lookup that fails in the reconnect log rather than at config load.
        if rest.contains(['/', '?', '#']) || rest.contains(char::is_whitespace) {
            return Err(format!(
                "bad MQTT url {url:?}: a path, query or space after the host; expected mqtt://host[:port] or mqtts://host[:port]"
            ));
        }
        let bad_port = || format!("bad port in MQTT url {url:?}");
        let (host, port) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(format!("bad IPv6 address in MQTT url {url:?}"));
                }
                let port = match after {
                    "" => default_port,
                    p => p
                        .strip_prefix(':')
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(bad_port)?,
                };
                (v6, port)
            }
            None => match rest.rsplit_once(':') {
                Some((h, _)) if h.contains([':', '[', ']']) => {
                    return Err(format!(
                        "bad MQTT url {url:?}: an IPv6 address goes in brackets, mqtt://[::1]:1883"
                    ))
                }
                Some((h, p)) => (h, p.parse().map_err(|_| bad_port())?),
                None => (rest, default_port),
            },
        };
        if host.is_empty() {
            return Err(format!("bad MQTT url {url:?}: no host"));
        }
        // A forgotten `s`: plain TCP to the TLS port sends the CONNECT, password included,
        // in clear text before the broker's TLS listener drops it.
        if !tls && port == 8883 {
            return Err(format!(
                "{url:?} is plain MQTT to port 8883, MQTT over TLS: write mqtts://{host}:8883"
            ));
        }
        Ok(MqttUrl {
            text: url.to_string(),
            host: host.to_string(),
            port,
            tls,
        })
    }

    /// `host:port`, an IPv6 address in brackets: the broker, in metric labels and links.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `localhost` or a loopback address: traffic that never leaves the machine.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::MqttUrl;

    #[test]
    fn urls() {
        let url = |host: &str, port, tls| (host.to_string(), port, tls);
        let parts = |s: &str| MqttUrl::parse(s).map(|u| (u.host, u.port, u.tls));
        assert_eq!(
            parts("mqtt://127.0.0.1:18830").unwrap(),
            url("127.0.0.1", 18830, false)
        );
        assert_eq!(parts("mqtt://broker").unwrap(), url("broker", 1883, false));
        assert_eq!(parts("mqtts://broker/").unwrap(), url("broker", 8883, true));
        assert_eq!(
            parts("mqtts://broker:18883").unwrap(),
            url("broker", 18883, true)
        );
        assert_eq!(
            MqttUrl::parse("mqtts://broker/").unwrap().to_string(),
            "mqtts://broker/"
        );
        assert!(MqttUrl::parse("http://x").is_err());
        assert!(MqttUrl::parse("mqtt://x:port").is_err());
        for slip in ["mqtt://broker:8883", "tcp://broker:8883/"] {
            let e = MqttUrl::parse(slip).unwrap_err();
            assert!(e.contains("mqtts://broker:8883"), "{e}");
        }
        let e = MqttUrl::parse("mqtt://user:hunter2@broker:1883").unwrap_err();
        assert!(e.contains("password_file") && !e.contains("hunter2"), "{e}");
    }

    /// A path (or a space) after the host is refused at config load, not taken as part of
    /// the host name to fail as a name lookup at every connect.
    #[test]
    fn a_path_or_space_after_the_host_is_refused() {
        for url in [
            "mqtt://broker.example/mqtt",
            "mqtt://broker.example:1883/mqtt",
            "mqtts://broker.example/?x",
            "mqtt://bro ker",
        ] {
            let e = MqttUrl::parse(url).map(|u| u.host).unwrap_err();
            assert!(e.contains("a path, query or space"), "{url}: {e}");
        }
    }

    /// An IPv6 address is written in brackets, and kept without them (name lookups and
    /// the TLS name check take it so); without a port the default one applies, as for a name.
    /// One without brackets is refused, not split at its last colon.
    #[test]
    fn ipv6_addresses_in_brackets() {
        let parts = |s: &str| MqttUrl::parse(s).map(|u| (u.host.clone(), u.port, u.authority()));
        assert_eq!(
            parts("mqtt://[::1]"),
            Ok(("::1".into(), 1883, "[::1]:1883".into()))
        );
        assert_eq!(
            parts("mqtts://[2001:db8::7]:18883/"),
            Ok(("2001:db8::7".into(), 18883, "[2001:db8::7]:18883".into()))
        );
        assert_eq!(parts("mqtt://broker").unwrap().2, "broker:1883");
        for bad in [
            "mqtt://::1",
            "mqtt://[::1]1883",
            "mqtt://[::1]:x",
            "mqtt://[broker]",
            "mqtt://[::1",
        ] {
            assert!(MqttUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for (url, local) in [
            ("mqtt://localhost", true),
            ("mqtt://127.0.0.1:1883", true),
            ("mqtt://[::1]:1883", true),
            ("mqtt://broker.example", false),
        ] {
            assert_eq!(MqttUrl::parse(url).unwrap().is_loopback(), local, "{url}");
        }
    }
}
