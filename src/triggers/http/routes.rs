//! The route table of the gateway: every route of every `http` trigger, matched as API
//! Gateway does (the most specific path wins: literal segments over `{param}` over
//! `{proxy+}`; a route's own method over `ANY`; `$default` when nothing matches).

use std::collections::HashMap;
use std::path::PathBuf;

use super::config::{HttpConfig, RouteConfig, RouteKey};
use crate::config::ConfigError;
use crate::triggers::{Target, TriggerDef};

/// One route with the settings that apply to it.
#[derive(Debug, Clone)]
pub struct Route {
    /// The trigger (file name) that declares it.
    pub trigger: String,
    pub file: PathBuf,
    /// The route key as written: `GET /users/{id}`, `$default`.
    pub key: String,
    /// The route's settings with the file's defaults applied.
    pub settings: RouteConfig,
    pub target: Target,
}

/// A matched route and the values of its path parameters (percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub route: usize,
    pub params: Vec<(String, String)>,
}

/// Every route of the listener.
#[derive(Debug)]
pub struct RouteTable {
    router: matchit::Router<usize>,
    /// Per distinct path: the routes by method (`None` = ANY).
    paths: Vec<Vec<(Option<String>, usize)>>,
    default: Option<usize>,
    pub routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table; two routes that would answer the same request are a config error
    /// naming both files.
    pub fn build(triggers: &[(&TriggerDef, &HttpConfig)]) -> Result<Self, ConfigError> {
        let mut table = Self { router: matchit::Router::new(), paths: Vec::new(), default: None, routes: Vec::new() };
        // Router path -> index into `paths`; path shape -> the router path that has it.
        let mut by_path: HashMap<String, usize> = HashMap::new();
        let mut by_shape: HashMap<String, String> = HashMap::new();
        for (def, config) in triggers {
            for (key, route) in &config.routes {
                let field = format!("routes.{key:?}");
                let parsed = RouteKey::parse(key).map_err(|m| ConfigError::new(&def.path, Some(&field), m))?;
                let index = table.routes.len();
                table.routes.push(Route {
                    trigger: def.name.clone(),
                    file: def.path.clone(),
                    key: key.clone(),
                    settings: config.route(route),
                    target: crate::triggers::target_of(&route.topic, &route.function),
                });
                let conflict = |other: usize| {
                    let other = &table.routes[other];
                    ConfigError::new(
                        &def.path,
                        Some(&field),
                        format!(
                            "route {key:?} conflicts with route {:?} in {}: both would answer the same requests; remove or change one",
                            other.key,
                            other.file.display()
                        ),
                    )
                };
                let (method, path) = match parsed {
                    RouteKey::Default => {
                        if let Some(other) = table.default {
                            return Err(conflict(other));
                        }
                        table.default = Some(index);
                        continue;
                    }
                    RouteKey::Route { method, path } => (method, path),
                };
                let router_path = RouteKey::router_path(&path);
                let shape = RouteKey::shape(&path);
                if let Some(existing) = by_shape.get(&shape) {
                    if *existing != router_path {
                        // Same shape, other parameter names: `/users/{id}` and `/users/{name}`.
                        let other = table.paths[by_path[existing]][0].1;
                        return Err(conflict(other));
                    }
                }
                let slot = match by_path.get(&router_path) {
                    Some(&slot) => slot,
                    None => {
                        let slot = table.paths.len();
                        if let Err(error) = table.router.insert(router_path.clone(), slot) {
                            let other = match &error {
                                matchit::InsertError::Conflict { with } => by_path.get(with).map(|&s| table.paths[s][0].1),
                                _ => None,
                            };
                            return Err(match other {
                                Some(other) => conflict(other),
                                None => ConfigError::new(&def.path, Some(&field), format!("route {key:?} cannot be added: {error}")),
                            });
                        }
                        table.paths.push(Vec::new());
                        by_path.insert(router_path.clone(), slot);
                        by_shape.insert(shape, router_path);
                        slot
                    }
                };
                if let Some(&(_, other)) = table.paths[slot].iter().find(|(m, _)| *m == method) {
                    return Err(conflict(other));
                }
                table.paths[slot].push((method, index));
            }
        }
        Ok(table)
    }

    /// The route that answers `method path`.
    pub fn find(&self, method: &str, path: &str) -> Option<Found> {
        self.find_with(path, |methods| {
            methods.iter().find(|(m, _)| m.as_deref() == Some(method)).or_else(|| methods.iter().find(|(m, _)| m.is_none())).map(|(_, i)| *i)
        })
        .or_else(|| self.default.map(|route| Found { route, params: Vec::new() }))
    }

    /// The route with CORS settings that a preflight (`OPTIONS` asking for `requested`)
    /// of `path` is about, if any.
    pub fn find_preflight(&self, requested: &str, path: &str) -> Option<Found> {
        let has_cors = |i: &usize| self.routes[*i].settings.cors.is_some();
        let found = self.find_with(path, |methods| {
            methods
                .iter()
                .find(|(m, i)| m.as_deref() == Some(requested) && has_cors(i))
                .or_else(|| methods.iter().find(|(m, i)| m.is_none() && has_cors(i)))
                .or_else(|| methods.iter().find(|(_, i)| has_cors(i)))
                .map(|(_, i)| *i)
        });
        found.or_else(|| self.default.filter(has_cors).map(|route| Found { route, params: Vec::new() }))
    }

    fn find_with(&self, path: &str, pick: impl Fn(&[(Option<String>, usize)]) -> Option<usize>) -> Option<Found> {
        let matched = self.router.at(path).ok()?;
        let route = pick(&self.paths[*matched.value])?;
        let params = matched
            .params
            .iter()
            .map(|(name, value)| (name.to_owned(), percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned()))
            .collect();
        Some(Found { route, params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triggers::TriggerConfig;

    fn def(name: &str, text: &str) -> TriggerDef {
        let path = PathBuf::from(format!("triggers/{name}.toml"));
        TriggerDef { name: name.to_owned(), config: TriggerConfig::parse(&path, text).unwrap(), path }
    }

    fn table(defs: &[TriggerDef]) -> Result<RouteTable, ConfigError> {
        let pairs: Vec<(&TriggerDef, &HttpConfig)> = defs.iter().map(|d| (d, d.config.get::<HttpConfig>().unwrap())).collect();
        RouteTable::build(&pairs)
    }

    fn key(table: &RouteTable, found: Option<Found>) -> Option<(String, Vec<(String, String)>)> {
        found.map(|f| (table.routes[f.route].key.clone(), f.params))
    }

    #[test]
    fn the_most_specific_route_wins() {
        let api = def(
            "api",
            r#"kind = "http"
[routes."GET /users/{id}"]
function = "get"
[routes."GET /users/me"]
function = "me"
[routes."ANY /users/{id}"]
function = "any"
[routes."ANY /files/{proxy+}"]
function = "files"
[routes."$default"]
function = "fallback"
"#,
        );
        let t = table(&[api]).unwrap();
        assert_eq!(key(&t, t.find("GET", "/users/me")), Some(("GET /users/me".into(), vec![])));
        assert_eq!(key(&t, t.find("GET", "/users/a%20b")), Some(("GET /users/{id}".into(), vec![("id".into(), "a b".into())])));
        assert_eq!(key(&t, t.find("DELETE", "/users/7")), Some(("ANY /users/{id}".into(), vec![("id".into(), "7".into())])));
        assert_eq!(key(&t, t.find("PUT", "/files/a/b.txt")), Some(("ANY /files/{proxy+}".into(), vec![("proxy".into(), "a/b.txt".into())])));
        assert_eq!(key(&t, t.find("GET", "/nothing")), Some(("$default".into(), vec![])));
    }

    #[test]
    fn no_match_without_default() {
        let t = table(&[def("a", "kind = \"http\"\n[routes.\"GET /a\"]\nfunction = \"f\"\n")]).unwrap();
        assert_eq!(t.find("POST", "/a"), None);
        assert_eq!(t.find("GET", "/b"), None);
        assert!(t.find("GET", "/a").is_some());
    }

    #[test]
    fn conflicts_name_both_files() {
        let a = def("a", "kind = \"http\"\n[routes.\"GET /users/{id}\"]\nfunction = \"f\"\n");
        for other in ["GET /users/{id}", "GET /users/{name}"] {
            let b = def("b", &format!("kind = \"http\"\n[routes.\"{other}\"]\nfunction = \"g\"\n"));
            let error = table(&[a.clone(), b]).unwrap_err().to_string();
            assert!(error.contains("triggers/a.toml") && error.contains("triggers/b.toml"), "{error}");
        }
        let b = def("b", "kind = \"http\"\n[routes.\"POST /users/{id}\"]\nfunction = \"g\"\n");
        assert!(table(&[a, b]).is_ok());
        let d1 = def("a", "kind = \"http\"\n[routes.\"$default\"]\nfunction = \"f\"\n");
        let d2 = def("b", "kind = \"http\"\n[routes.\"$default\"]\nfunction = \"g\"\n");
        assert!(table(&[d1, d2]).unwrap_err().to_string().contains("triggers/a.toml"));
    }

    #[test]
    fn preflight_finds_the_route_with_cors() {
        let t = table(&[def(
            "a",
            "kind = \"http\"\n[routes.\"POST /orders\"]\ntopic = \"o\"\ncors = { origins = [\"https://x.example\"] }\n[routes.\"GET /plain\"]\nfunction = \"f\"\n",
        )])
        .unwrap();
        assert!(t.find_preflight("POST", "/orders").is_some());
        assert!(t.find_preflight("GET", "/plain").is_none());
    }
}
