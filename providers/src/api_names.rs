//! How a backend declares the names of the cloud APIs it calls.
//!
//! Each backend has an `api` module made by one `declare_apis!` invocation:
//! a type `Api` whose values only that module can make, one `Api` constant
//! per API name, and `API_NAMES`, every name in the order declared. The
//! backend's call wrapper takes an `Api`, so a call cannot name an API that
//! `API_NAMES` leaves out, and `API_NAMES` is the list a config's per-API
//! rate limits are checked against.

/// Declares a backend's API names; see the module doc.
///
/// ```text
/// declare_apis! {
///     /// ECS: one instance.
///     DESCRIBE_INSTANCES = "DescribeInstances";
/// }
/// ```
macro_rules! declare_apis {
    ($($(#[$attr:meta])* $konst:ident = $name:literal;)+) => {
        /// The name of one API this backend calls, as its rate limit, its
        /// counters and its errors name it. Made only by this module's
        /// constants.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct Api(&'static str);

        impl Api {
            /// The name the cloud knows the API by, e.g. `DescribeInstances`.
            pub const fn name(self) -> &'static str {
                self.0
            }
        }

        impl ::std::fmt::Display for Api {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.0)
            }
        }

        impl From<Api> for String {
            fn from(api: Api) -> String {
                api.0.to_owned()
            }
        }

        $(
            $(#[$attr])*
            pub const $konst: Api = Api($name);
        )+

        /// Every API name this backend calls: the names whose per-API rate
        /// limits a config may set.
        pub const API_NAMES: &[&str] = &[$($name),+];

        /// `(constant, name)` of every declared API, for
        /// `api_names::check_declared`.
        #[cfg(test)]
        const DECLARED: &[(&str, &str)] = &[$((stringify!($konst), $name)),+];
    };
}

/// Checks a backend's declaration against the source of the files that call
/// the cloud (`sources`): names are distinct API names, and each constant is
/// used there as `api::NAME` unless `not_called` names it (and then it is
/// not used, so the exception cannot outlive its reason).
#[cfg(test)]
pub(crate) fn check_declared(declared: &[(&str, &str)], sources: &[&str], not_called: &[&str]) {
    let mut seen = std::collections::HashSet::new();
    for (konst, name) in declared {
        assert!(seen.insert(*name), "{name} is declared twice");
        assert!(
            name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "{name} is not an API name"
        );
        let used = sources.iter().any(|source| uses(source, konst));
        if not_called.contains(name) {
            assert!(!used, "{name} is called now: take it off not_called");
        } else {
            assert!(used, "{name} ({konst}) is declared but never called");
        }
    }
    for name in not_called {
        assert!(
            declared.iter().any(|(_, n)| n == name),
            "{name} is not declared"
        );
    }
}

/// Whether `source` names the constant `api::<konst>` (a whole identifier:
/// `api::CREATE_ROUTE` is not a use of `CREATE_ROUTE` in `CREATE_ROUTE_ENTRY`).
#[cfg(test)]
fn uses(source: &str, konst: &str) -> bool {
    let needle = format!("api::{konst}");
    source.match_indices(&needle).any(|(at, _)| {
        !source[at + needle.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_use_is_a_whole_constant() {
        let source = "self.call(api::CREATE_ROUTE_ENTRIES, params)";
        assert!(uses(source, "CREATE_ROUTE_ENTRIES"));
        assert!(!uses(source, "CREATE_ROUTE_ENTRY"));
        assert!(!uses(source, "CREATE_ROUTE"));
    }
}
