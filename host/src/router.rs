//! Path to component: the longest route prefix wins, matched on whole path
//! segments, so `/users` serves `/users` and `/users/7` but not `/usersx`.

use std::collections::BTreeMap;

/// A route table from prefixes to component names.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// Sorted longest first, so the first match is the most specific.
    routes: Vec<(String, String)>,
}

impl Router {
    /// Build from `(prefix, component)` pairs; the manifest has already
    /// checked that no prefix is claimed twice.
    pub fn new(routes: impl IntoIterator<Item = (String, String)>) -> Router {
        let mut routes: Vec<_> = routes
            .into_iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        routes.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Router { routes }
    }

    /// The component that serves `path`, if any.
    pub fn route(&self, path: &str) -> Option<&str> {
        self.route_prefix(path).map(|(_, component)| component)
    }

    /// The prefix that matched `path` and the component it routes to.
    pub fn route_prefix(&self, path: &str) -> Option<(&str, &str)> {
        self.routes
            .iter()
            .find(|(prefix, _)| covers(prefix, path))
            .map(|(prefix, component)| (prefix.as_str(), component.as_str()))
    }
}

/// Whether route `prefix` covers `path` on a segment boundary.
pub fn covers(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(routes: &[(&str, &str)], path: &str, expected: Option<&str>) {
        let router = Router::new(routes.iter().map(|(p, c)| (p.to_string(), c.to_string())));
        assert_eq!(
            router.route(path),
            expected,
            "routing {path} through {routes:?}"
        );
    }

    const TABLE: &[(&str, &str)] = &[
        ("/users", "users"),
        ("/orders", "orders"),
        ("/users/admin", "admin"),
    ];

    #[test]
    fn exact_prefix() {
        check(TABLE, "/users", Some("users"));
        check(TABLE, "/orders", Some("orders"));
    }

    #[test]
    fn below_prefix() {
        check(TABLE, "/users/7", Some("users"));
        check(TABLE, "/users/", Some("users"));
        check(TABLE, "/orders/1/items", Some("orders"));
    }

    #[test]
    fn longest_prefix_wins() {
        check(TABLE, "/users/admin", Some("admin"));
        check(TABLE, "/users/admin/x", Some("admin"));
        check(TABLE, "/users/administrator", Some("users"));
    }

    #[test]
    fn partial_segment_does_not_match() {
        check(TABLE, "/usersx", None);
        check(TABLE, "/order", None);
        check(TABLE, "/", None);
        check(TABLE, "", None);
    }

    #[test]
    fn root_route_catches_the_rest() {
        let table = &[("/", "site"), ("/users", "users")];
        check(table, "/anything", Some("site"));
        check(table, "/", Some("site"));
        check(table, "/users/1", Some("users"));
        check(table, "/usersx", Some("site"));
    }

    #[test]
    fn covers_is_segment_aware() {
        assert!(covers("/a", "/a"));
        assert!(covers("/a", "/a/b"));
        assert!(!covers("/a", "/ab"));
        assert!(!covers("/a/b", "/a"));
        assert!(covers("/", "/x"));
    }
}
