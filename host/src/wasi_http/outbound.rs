//! The manifest's `outbound` grants: which origins a `wasi:http` component
//! may send requests to, written `scheme://host[:port]`, with `*` for any
//! port. Anything not granted is denied.

use std::fmt;

/// One granted origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    scheme: String,
    /// Lower-case host name or IP address, as written in the URL.
    host: String,
    /// `None` for `*`: any port.
    port: Option<u16>,
}

impl Origin {
    /// Parse one `outbound` entry, such as `https://api.example.com` or
    /// `http://127.0.0.1:*`.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let hint = "write it as scheme://host, scheme://host:port or scheme://host:*, such as \"https://api.example.com\"";
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!("outbound `{text}` has no scheme; {hint}"));
        };
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "outbound `{text}`: the scheme must be http or https, got `{scheme}`"
            ));
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "outbound `{text}` must name an origin only, without a path, query or user; {hint}"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 address without a port, such as [::1].
            Some((host, port)) if !port.contains(']') => (host, Some(port)),
            _ => (rest, None),
        };
        if host.is_empty() || host.contains('*') {
            return Err(format!(
                "outbound `{text}` must name one host (only the port may be `*`); {hint}"
            ));
        }
        let port = match port {
            None if scheme == "https" => Some(443),
            None => Some(80),
            Some("*") => None,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => Some(port),
                _ => {
                    return Err(format!(
                        "outbound `{text}`: the port must be a number from 1 to 65535 or `*`"
                    ));
                }
            },
        };
        Ok(Origin {
            scheme: scheme.to_string(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether a request to `uri` is covered by this grant.
    pub fn allows(&self, uri: &hyper::Uri) -> bool {
        let Some(scheme) = uri.scheme_str() else {
            return false;
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        self.scheme == scheme
            && self.host.eq_ignore_ascii_case(host)
            && self.port.is_none_or(|p| p == port)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}://{}:{port}", self.scheme, self.host),
            None => write!(f, "{}://{}:*", self.scheme, self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(grant: &str, url: &str, expected: bool) {
        let origin = Origin::parse(grant).unwrap();
        let uri: hyper::Uri = url.parse().unwrap();
        assert_eq!(origin.allows(&uri), expected, "{grant} against {url}");
    }

    #[test]
    fn grants_match_scheme_host_and_port() {
        check(
            "https://api.example.com",
            "https://api.example.com/v1",
            true,
        );
        check(
            "https://api.example.com",
            "https://API.example.com:443/",
            true,
        );
        check("https://api.example.com", "http://api.example.com/", false);
        check(
            "https://api.example.com",
            "https://api.example.com:8443/",
            false,
        );
        check(
            "https://api.example.com",
            "https://evil.example.com/",
            false,
        );
        check("http://127.0.0.1:*", "http://127.0.0.1:39211/x", true);
        check("http://127.0.0.1:*", "http://127.0.0.2:39211/x", false);
        check("http://localhost:8080", "http://localhost:8080/", true);
        check("http://localhost:8080", "http://localhost:8081/", false);
    }

    #[test]
    fn bad_grants_are_refused_with_a_reason() {
        for (grant, message) in [
            (
                "api.example.com",
                "outbound `api.example.com` has no scheme; write it as scheme://host, scheme://host:port or scheme://host:*, such as \"https://api.example.com\"",
            ),
            (
                "ftp://x",
                "outbound `ftp://x`: the scheme must be http or https, got `ftp`",
            ),
            (
                "https://x/path",
                "outbound `https://x/path` must name an origin only, without a path, query or user; write it as scheme://host, scheme://host:port or scheme://host:*, such as \"https://api.example.com\"",
            ),
            (
                "https://*.example.com",
                "outbound `https://*.example.com` must name one host (only the port may be `*`); write it as scheme://host, scheme://host:port or scheme://host:*, such as \"https://api.example.com\"",
            ),
            (
                "http://x:0",
                "outbound `http://x:0`: the port must be a number from 1 to 65535 or `*`",
            ),
        ] {
            assert_eq!(Origin::parse(grant).unwrap_err(), message);
        }
    }
}
