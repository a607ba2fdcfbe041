//! The addresses a node tells its peers and clients (`--advertise-gossip`, `--advertise-http`):
//! parsing the flags and choosing each address from them and the bound sockets. Pure: binds and
//! resolves nothing. A node bound to every interface (`0.0.0.0`, `::`) cannot advertise that:
//! on another host it names the host itself, so the choice refuses it with one line saying
//! which flag to pass.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// An `--advertise-*` value: an IP address, with or without a port (`10.0.0.5`,
/// `10.0.0.5:7101`, `fd00::5`, `[fd00::5]:7101`). Without a port, the bound port is advertised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvertiseAddr {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl FromStr for AdvertiseAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(AdvertiseAddr {
                ip: addr.ip(),
                port: Some(addr.port()),
            });
        }
        let bare = s
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(s);
        bare.parse::<IpAddr>()
            .map(|ip| AdvertiseAddr { ip, port: None })
            .map_err(|_| {
                format!(
                    "{s:?} is not an IP address with an optional port (10.0.0.5, 10.0.0.5:7101, \
                     fd00::5 or [fd00::5]:7101); names are not advertised, addresses are"
                )
            })
    }
}

impl fmt::Display for AdvertiseAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => SocketAddr::new(self.ip, port).fmt(f),
            None => self.ip.fmt(f),
        }
    }
}

/// Why an address cannot be advertised.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdvertiseError {
    #[error(
        "cannot advertise {addr} for {what}: it means every interface, and on another host it \
         names that host; pass {flag} with an address peers can reach (e.g. {flag} 10.0.0.5)"
    )]
    Unspecified {
        addr: SocketAddr,
        what: &'static str,
        flag: &'static str,
    },
    #[error("cannot advertise port 0 for {what}: give {flag} a port, or bind a fixed one")]
    PortZero {
        what: &'static str,
        flag: &'static str,
    },
}

/// What peers are told to send cluster traffic to: `flag`'s address (its port, or the bound
/// one), else the bound address. Refuses an unspecified address either way.
pub fn gossip_addr(
    bound: SocketAddr,
    flag: Option<AdvertiseAddr>,
) -> Result<SocketAddr, AdvertiseError> {
    let chosen = flag.map_or(bound, |f| {
        SocketAddr::new(f.ip, f.port.unwrap_or(bound.port()))
    });
    checked(chosen, "cluster traffic", "--advertise-gossip")
}

/// What clients (and peers redirecting them) are told the HTTP API is at: `flag`'s address (its
/// port, or the bound one); else the bound address; else, when HTTP binds every interface, the
/// advertised cluster address's IP with the bound HTTP port (the address peers already reach
/// this host at).
pub fn http_addr(
    bound: SocketAddr,
    flag: Option<AdvertiseAddr>,
    gossip: SocketAddr,
) -> Result<SocketAddr, AdvertiseError> {
    let chosen = match flag {
        Some(f) => SocketAddr::new(f.ip, f.port.unwrap_or(bound.port())),
        None if bound.ip().is_unspecified() => SocketAddr::new(gossip.ip(), bound.port()),
        None => bound,
    };
    checked(chosen, "the HTTP API", "--advertise-http")
}

fn checked(
    addr: SocketAddr,
    what: &'static str,
    flag: &'static str,
) -> Result<SocketAddr, AdvertiseError> {
    if addr.ip().is_unspecified() {
        return Err(AdvertiseError::Unspecified { addr, what, flag });
    }
    if addr.port() == 0 {
        return Err(AdvertiseError::PortZero { what, flag });
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn adv(s: &str) -> AdvertiseAddr {
        s.parse().unwrap()
    }

    #[test]
    fn flags_take_an_ip_with_or_without_a_port_in_either_family() {
        assert_eq!(adv("10.0.0.5").port, None);
        assert_eq!(adv("10.0.0.5:7101").port, Some(7101));
        assert_eq!(adv("fd00::5").ip, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(adv("[fd00::5]").port, None);
        assert_eq!(adv("[fd00::5]:7101").port, Some(7101));
        assert_eq!(adv(" 10.0.0.5 ").to_string(), "10.0.0.5");
        assert_eq!(adv("[::1]:9").to_string(), "[::1]:9");
        for bad in [
            "",
            "node-1",
            "node-1:7101",
            "10.0.0.5:port",
            "10.0.0.5:70000",
            "[::1",
        ] {
            assert!(bad.parse::<AdvertiseAddr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_bound_address_is_advertised_unless_it_means_every_interface() {
        let bound = sa("10.0.0.5:7101");
        assert_eq!(gossip_addr(bound, None), Ok(bound));
        assert_eq!(gossip_addr(sa("[::1]:7101"), None), Ok(sa("[::1]:7101")));
        for every in ["0.0.0.0:7101", "[::]:7101"] {
            let refused = gossip_addr(sa(every), None).unwrap_err();
            assert!(
                refused.to_string().contains("--advertise-gossip"),
                "{refused}"
            );
            assert!(matches!(refused, AdvertiseError::Unspecified { .. }));
        }
    }

    #[test]
    fn a_flag_overrides_the_bound_address_and_a_bare_ip_keeps_the_bound_port() {
        let any = sa("0.0.0.0:7101");
        assert_eq!(
            gossip_addr(any, Some(adv("10.0.0.5"))),
            Ok(sa("10.0.0.5:7101"))
        );
        assert_eq!(
            gossip_addr(any, Some(adv("10.0.0.5:9000"))),
            Ok(sa("10.0.0.5:9000"))
        );
        assert_eq!(
            gossip_addr(sa("[::]:7101"), Some(adv("fd00::5"))),
            Ok(sa("[fd00::5]:7101"))
        );
        for unspecified in ["0.0.0.0", "::", "[::]:7101"] {
            assert!(matches!(
                gossip_addr(sa("10.0.0.5:7101"), Some(adv(unspecified))),
                Err(AdvertiseError::Unspecified { .. })
            ));
        }
        assert_eq!(
            gossip_addr(sa("10.0.0.5:0"), None),
            Err(AdvertiseError::PortZero {
                what: "cluster traffic",
                flag: "--advertise-gossip"
            })
        );
    }

    #[test]
    fn http_bound_to_every_interface_is_advertised_at_the_cluster_address_ip() {
        let gossip = sa("10.0.0.5:7101");
        assert_eq!(
            http_addr(sa("0.0.0.0:7001"), None, gossip),
            Ok(sa("10.0.0.5:7001"))
        );
        assert_eq!(
            http_addr(sa("10.0.0.9:7001"), None, gossip),
            Ok(sa("10.0.0.9:7001"))
        );
        assert_eq!(
            http_addr(sa("0.0.0.0:7001"), Some(adv("192.0.2.1:80")), gossip),
            Ok(sa("192.0.2.1:80"))
        );
        let refused = http_addr(sa("10.0.0.9:7001"), Some(adv("0.0.0.0")), gossip).unwrap_err();
        assert!(
            refused.to_string().contains("--advertise-http"),
            "{refused}"
        );
    }
}
