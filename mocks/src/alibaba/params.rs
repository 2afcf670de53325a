//! Request parameters of an RPC-style call: the union of the query string and
//! an `application/x-www-form-urlencoded` body (Alibaba signs both), with the
//! accessors actions need for Alibaba's flattened list syntax
//! (`SecurityGroupIds.1`, `Tag.2.Key`, `RouteEntries.3.DstCidrBlock`).

use super::error::ApiError;
use percent_encoding::percent_decode_str;
use std::collections::BTreeMap;

/// Decoded request parameters, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn new(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }

    /// Parse the query string and, for a form body, the body. A name given
    /// twice (in query and body, or twice in one) is ambiguous to sign and is
    /// refused rather than guessed.
    pub fn parse(query: Option<&str>, form_body: Option<&str>) -> Result<Self, ApiError> {
        let mut map = BTreeMap::new();
        for source in [query, form_body].into_iter().flatten() {
            for pair in source.split('&').filter(|p| !p.is_empty()) {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let name = decode(name)?;
                let value = decode(value)?;
                if map.insert(name.clone(), value).is_some() {
                    return Err(ApiError::new(
                        400,
                        "InvalidParameter",
                        format!("The parameter \"{name}\" is given more than once."),
                    ));
                }
            }
        }
        Ok(Self(map))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// A parameter's value; an empty value counts as absent, as at Alibaba.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::missing(name))
    }

    /// An optional unsigned integer.
    pub fn u32(&self, name: &str) -> Result<Option<u32>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| ApiError::invalid(name, "expected a non-negative integer"))
            })
            .transpose()
    }

    /// `prefix.1`, `prefix.2`, ... in index order (indexes need not be dense).
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let mut items: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(name, value)| {
                let index = name.strip_prefix(prefix)?.strip_prefix('.')?;
                let index = index.parse::<u32>().ok()?;
                (!value.is_empty()).then(|| (index, value.clone()))
            })
            .collect();
        items.sort_by_key(|(i, _)| *i);
        items.into_iter().map(|(_, v)| v).collect()
    }

    /// `prefix.N.Field` groups, one map `Field -> value` per N, in N order.
    pub fn groups(&self, prefix: &str) -> Vec<BTreeMap<String, String>> {
        let mut groups: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
        for (name, value) in &self.0 {
            let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let Some((index, field)) = rest.split_once('.') else {
                continue;
            };
            let Ok(index) = index.parse::<u32>() else {
                continue;
            };
            groups
                .entry(index)
                .or_default()
                .insert(field.to_owned(), value.clone());
        }
        groups.into_values().collect()
    }

    /// `Tag.N.Key` / `Tag.N.Value` pairs; a key without a value filters on
    /// the key alone.
    pub fn tags(&self) -> Result<Vec<(String, Option<String>)>, ApiError> {
        self.groups("Tag")
            .into_iter()
            .map(|g| {
                let key = g
                    .get("Key")
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| ApiError::missing("Tag.N.Key"))?;
                let value = g.get("Value").cloned();
                Ok((key.clone(), value))
            })
            .collect()
    }

    /// The ids of a JSON-array parameter such as DescribeInstances'
    /// `InstanceIds=["i-1","i-2"]`; a bare id is taken as a one-element list.
    pub fn json_list(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        if raw.trim_start().starts_with('[') {
            serde_json::from_str::<Vec<String>>(raw)
                .map(Some)
                .map_err(|_| ApiError::invalid(name, "expected a JSON array of strings"))
        } else {
            Ok(Some(vec![raw.to_owned()]))
        }
    }
}

/// Form decoding: `+` is a space, `%XX` a byte; the result must be UTF-8.
fn decode(s: &str) -> Result<String, ApiError> {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::new(400, "InvalidParameter", "A parameter is not valid UTF-8."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_body_are_merged_and_decoded() {
        let p = Params::parse(
            Some("Action=DescribeVSwitches&Timestamp=2016-02-23T12%3A46%3A24Z"),
            Some("Description=a+b%20c&Tag.1.Key=k"),
        )
        .unwrap();
        assert_eq!(p.get("Action"), Some("DescribeVSwitches"));
        assert_eq!(p.get("Timestamp"), Some("2016-02-23T12:46:24Z"));
        assert_eq!(p.get("Description"), Some("a b c"));
        assert_eq!(p.get("Tag.1.Key"), Some("k"));
    }

    #[test]
    fn a_parameter_given_twice_is_refused() {
        let err = Params::parse(Some("A=1"), Some("A=2")).unwrap_err();
        assert_eq!(err.code, "InvalidParameter");
    }

    #[test]
    fn lists_come_back_in_index_order() {
        let p = Params::parse(
            Some("SecurityGroupIds.10=sg-c&SecurityGroupIds.2=sg-b&SecurityGroupIds.1=sg-a&SecurityGroupIdsX=no"),
            None,
        )
        .unwrap();
        assert_eq!(p.list("SecurityGroupIds"), vec!["sg-a", "sg-b", "sg-c"]);
    }

    #[test]
    fn grouped_fields_and_tags() {
        let p = Params::parse(
            Some("Tag.2.Key=b&Tag.1.Key=a&Tag.1.Value=1&RouteEntries.1.DstCidrBlock=10.0.0.0/24&RouteEntries.1.NextHop=i-1"),
            None,
        )
        .unwrap();
        assert_eq!(
            p.tags().unwrap(),
            vec![("a".into(), Some("1".into())), ("b".into(), None)]
        );
        let groups = p.groups("RouteEntries");
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0]["NextHop"], "i-1");
    }

    #[test]
    fn json_list_accepts_arrays_and_bare_ids() {
        let p = Params::parse(
            Some("InstanceIds=%5B%22i-1%22%2C%22i-2%22%5D&One=i-3"),
            None,
        )
        .unwrap();
        assert_eq!(
            p.json_list("InstanceIds").unwrap(),
            Some(vec!["i-1".into(), "i-2".into()])
        );
        assert_eq!(p.json_list("One").unwrap(), Some(vec!["i-3".into()]));
        assert_eq!(p.json_list("None").unwrap(), None);
    }

    #[test]
    fn missing_and_malformed_values_are_named() {
        let p = Params::parse(Some("Count=x&Empty="), None).unwrap();
        assert_eq!(p.required("Empty").unwrap_err().code, "MissingParameter");
        assert_eq!(p.u32("Count").unwrap_err().code, "InvalidParameter");
        assert_eq!(p.u32("Absent").unwrap(), None);
    }
}
