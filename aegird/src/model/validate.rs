//! Edge validation: every name, hostname, path and URL a user gives is checked here before it
//! reaches the store, and the error names the field it is about.

/// A value that cannot be accepted; `field` is the request field (or CLI argument) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Invalid>;

/// Names of servers, clusters, projects, releases and tokens: they appear in URLs, file names
/// and CLI arguments, so they are kept to a portable set.
pub fn name(field: &str, value: &str) -> Result<String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.len() > 64 {
        return Err(Invalid::new(field, "must be at most 64 characters"));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Invalid::new(field, "must start with a letter or digit"));
    }
    if let Some(bad) = value.chars().find(|c| !ok_char(*c)) {
        return Err(Invalid::new(
            field,
            format!("{bad:?} is not allowed; use letters, digits, '.', '_' and '-'"),
        ));
    }
    Ok(value.to_string())
}

/// A DNS host name per RFC 1123. Internationalised names are converted to their punycode
/// (A-label) form, which is what nginx, certificates and the store hold.
pub fn hostname(field: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.trim() != value {
        return Err(Invalid::new(field, "must not start or end with spaces"));
    }
    if value.ends_with('.') {
        return Err(Invalid::new(field, "must not end with a dot"));
    }
    if value.contains("://") || value.contains('/') || value.contains(':') {
        return Err(Invalid::new(
            field,
            "must be a bare host name (no scheme, port or path)",
        ));
    }
    let ascii = idna::domain_to_ascii_strict(value)
        .map_err(|_| Invalid::new(field, format!("{value:?} is not a valid host name")))?;
    if ascii.len() > 253 {
        return Err(Invalid::new(field, "must be at most 253 characters"));
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err(Invalid::new(
                field,
                "has an empty label (two dots in a row?)",
            ));
        }
        if label.len() > 63 {
            return Err(Invalid::new(
                field,
                format!("label {label:?} is longer than 63 characters"),
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(Invalid::new(
                field,
                format!("label {label:?} must not start or end with '-'"),
            ));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Invalid::new(
                field,
                format!("label {label:?} may only hold letters, digits and '-'"),
            ));
        }
    }
    // An all-numeric last label would make this an IP address, not a site name.
    if ascii
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(Invalid::new(
            field,
            "must be a host name, not an IP address",
        ));
    }
    Ok(ascii)
}

/// An absolute, normalised path on a server (no `..`, no `.`, no empty components).
pub fn abs_path(field: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.len() > 4096 {
        return Err(Invalid::new(field, "must be at most 4096 characters"));
    }
    if value.contains('\0') {
        return Err(Invalid::new(field, "must not contain NUL"));
    }
    if !value.starts_with('/') {
        return Err(Invalid::new(field, "must be an absolute path"));
    }
    if value.contains("//") || (value.len() > 1 && value.ends_with('/')) {
        return Err(Invalid::new(
            field,
            "must be normalised (no '//' and no trailing '/')",
        ));
    }
    // Raw segments: Path::components() would silently drop an inner ".".
    if value.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(Invalid::new(field, "must not contain '.' or '..'"));
    }
    Ok(value.to_string())
}

/// A git remote: https://, ssh://, git://, file:// or scp-like `user@host:path`.
pub fn git_url(field: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if value.len() > 2048 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::new(
            field,
            "must be a URL without spaces or control characters",
        ));
    }
    // A leading '-' would be read by git as an option.
    if value.starts_with('-') {
        return Err(Invalid::new(field, "must not start with '-'"));
    }
    let schemes = ["https://", "http://", "ssh://", "git://", "file://"];
    if schemes.iter().any(|s| value.starts_with(s)) {
        return Ok(value.to_string());
    }
    if let Some((user_host, path)) = value.split_once(':') {
        if user_host.contains('@') && !path.is_empty() {
            return Ok(value.to_string());
        }
    }
    Err(Invalid::new(
        field,
        format!("{value:?} is not a git URL (https://, ssh://, git://, file:// or user@host:path)"),
    ))
}

/// A git ref (branch, tag or commit) as `git check-ref-format` would accept it, and never an
/// option.
pub fn git_ref(field: &str, value: &str) -> Result<String> {
    let bad = value.is_empty()
        || value.len() > 255
        || value.starts_with('-')
        || value.starts_with('/')
        || value.ends_with('/')
        || value.ends_with('.')
        || value.ends_with(".lock")
        || value.contains("..")
        || value.contains("@{")
        || value.contains("//")
        || value
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        return Err(Invalid::new(
            field,
            format!("{value:?} is not a valid git ref"),
        ));
    }
    Ok(value.to_string())
}

/// `USER@HOST[:PORT]` for a server reached over SSH.
pub fn ssh_target(field: &str, value: &str) -> Result<(String, String, u16)> {
    let (user, rest) = value
        .split_once('@')
        .ok_or_else(|| Invalid::new(field, "must be USER@HOST[:PORT]"))?;
    let user_ok = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !user_ok {
        return Err(Invalid::new(
            field,
            format!("{user:?} is not a valid user name"),
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 = p
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| Invalid::new(field, format!("{p:?} is not a port (1-65535)")))?;
            (h, port)
        }
        None => (rest, 22),
    };
    let host = if host.parse::<std::net::IpAddr>().is_ok() {
        host.to_string()
    } else {
        hostname(field, host)?
    };
    Ok((user.to_string(), host, port))
}

/// An http(s) URL with a host, e.g. a Kubernetes API server.
pub fn http_url(field: &str, value: &str) -> Result<String> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| Invalid::new(field, "must start with https:// or http://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::new(field, format!("{value:?} is not a URL")));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert_eq!(
            hostname("uri", "Site1.Example.COM").unwrap(),
            "site1.example.com"
        );
        assert_eq!(
            hostname("uri", "bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(hostname("uri", "localhost").unwrap(), "localhost");
        for bad in [
            "",
            " a.com",
            "a..com",
            "-a.com",
            "a-.com",
            "a_b.com",
            "a.com.",
            "http://a.com",
            "a.com:80",
            "10.0.0.1",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}.com", ["a"; 130].join(".")),
        ] {
            let err = hostname("uri", bad).unwrap_err();
            assert_eq!(err.field, "uri", "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(name("name", "drupal-10.2.6").is_ok());
        assert!(name("name", "").is_err());
        assert!(name("name", "-x").is_err());
        assert!(name("name", "a b").is_err());
        assert!(name("name", "a/b").is_err());
        assert!(name("name", &"x".repeat(65)).is_err());
    }

    #[test]
    fn paths() {
        assert!(abs_path("path", "/var/aegir/platforms/d10").is_ok());
        assert!(abs_path("path", "/").is_ok());
        for bad in ["", "relative", "/a/../b", "/a/./b", "/a//b", "/a/", "/a\0b"] {
            assert!(abs_path("path", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn git() {
        assert!(git_url("git", "https://git.example.org/site.git").is_ok());
        assert!(git_url("git", "git@example.org:site.git").is_ok());
        assert!(git_url("git", "--upload-pack=x").is_err());
        assert!(git_url("git", "not a url").is_err());
        assert!(git_ref("ref", "v1.2.3").is_ok());
        assert!(git_ref("ref", "feature/x").is_ok());
        for bad in ["", "-x", "a..b", "a b", "a~1", "x.lock", "a/"] {
            assert!(git_ref("ref", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ssh_targets() {
        assert_eq!(
            ssh_target("ssh", "aegir@web1.example.org:2222").unwrap(),
            ("aegir".into(), "web1.example.org".into(), 2222)
        );
        assert_eq!(ssh_target("ssh", "root@10.0.0.2").unwrap().2, 22);
        for bad in ["web1", "@h", "u@", "u@h:0", "u@h:99999", "-o@h", "u@h:x"] {
            assert!(ssh_target("ssh", bad).is_err(), "{bad:?}");
        }
    }
}
