//! Where the client's requests go: the node's address from `--addr`, and keys and elements
//! percent-encoded as URL path segments.

use hyper::Uri;
use std::fmt;

/// A node's HTTP address, from `--addr`: `http://HOST[:PORT][/]`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `HOST:PORT` as given (brackets kept around an IPv6 address), for the `Host` header.
    pub(super) authority: String,
    pub(super) host: String,
    pub(super) port: u16,
}

impl Endpoint {
    /// Parses `--addr`; the error is the reason, for clap to print after the value.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let expected = "expected http://HOST:PORT, e.g. http://127.0.0.1:7001";
        let uri: Uri = text.parse().map_err(|_| format!("not a URL; {expected}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(format!(
                    "{other}:// is not supported, only plain http://; {expected}"
                ))
            }
            None => return Err(format!("no http:// scheme; {expected}")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("no host; {expected}"))?;
        if authority.as_str().contains('@') {
            return Err(format!("user information is not supported; {expected}"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("a path or query is not supported; {expected}"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("no host; {expected}"));
        }
        Ok(Endpoint {
            authority: authority.as_str().to_string(),
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// `name` as one URL path segment: every byte but the unreserved `A-Z a-z 0-9 - . _ ~` is
/// percent-encoded, so `/`, `%`, spaces and non-ASCII stay inside the segment.
pub fn path_segment(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_encode_everything_but_unreserved_bytes() {
        assert_eq!(path_segment("a-Z.0_~"), "a-Z.0_~");
        assert_eq!(path_segment("a/b c%é"), "a%2Fb%20c%25%C3%A9");
    }

    #[test]
    fn only_plain_http_addresses_are_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:7001/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 7001));
        assert_eq!(e.to_string(), "http://127.0.0.1:7001");
        let e = Endpoint::parse("http://[::1]:9").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9));
        assert_eq!(Endpoint::parse("http://example.org").unwrap().port, 80);
        for bad in [
            "nope",
            "127.0.0.1:7001",
            "https://h:1",
            "http://h:1/x",
            "http://u@h:1",
            "",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
