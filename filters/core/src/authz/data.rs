//! The base document `data`, assembled from `data.json` files as OPA does: the file at
//! `a/b/data.json` is `data.a.b`, objects merge key by key, and a value written twice is a
//! conflict, refused rather than resolved by file order. Bundles and `svidgate test` (policy
//! directories) both read data through [`merge`], so a policy sees the same `data` in each.

use serde_json::{Map, Value as Json};

/// Two data files write the same path, which OPA refuses too.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("data conflict at /{0}")]
pub struct DataConflict(pub String);

/// Puts `value` at `dir` (the directory of its `data.json`) inside `data`, merging objects.
pub fn merge(data: &mut Json, dir: &[&str], value: Json) -> Result<(), DataConflict> {
    let conflict = |path: &[&str]| DataConflict(path.join("/"));
    let mut at = data;
    for key in dir {
        let object = at.as_object_mut().ok_or_else(|| conflict(dir))?;
        at = object.entry((*key).to_owned()).or_insert_with(|| Json::Object(Map::new()));
    }
    match (at, value) {
        (Json::Object(existing), Json::Object(new)) => {
            for (key, child) in new {
                let mut path = dir.to_vec();
                path.push(&key);
                let slot = existing.entry(key.clone()).or_insert_with(|| Json::Object(Map::new()));
                if slot.as_object().is_some_and(Map::is_empty) {
                    *slot = child;
                } else {
                    merge(slot, &[], child).map_err(|_| conflict(&path))?;
                }
            }
            Ok(())
        }
        (slot, value) if slot.as_object().is_some_and(Map::is_empty) => {
            *slot = value;
            Ok(())
        }
        _ => Err(conflict(dir)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merges_objects_at_their_directories() {
        let mut data = json!({});
        merge(&mut data, &[], json!({"a": {"x": 1}})).unwrap();
        merge(&mut data, &["a", "b"], json!({"y": 2})).unwrap();
        merge(&mut data, &["c"], json!([1, 2])).unwrap();
        assert_eq!(data, json!({"a": {"x": 1, "b": {"y": 2}}, "c": [1, 2]}));
    }

    #[test]
    fn refuses_a_value_written_twice() {
        let mut data = json!({});
        merge(&mut data, &[], json!({"a": {"x": 1}})).unwrap();
        assert_eq!(merge(&mut data, &["a"], json!({"x": 2})), Err(DataConflict("a/x".into())));
        assert_eq!(merge(&mut data, &["a", "x"], json!({"y": 1})), Err(DataConflict("a/x".into())));
        assert_eq!(data, json!({"a": {"x": 1}}), "a refused file changes nothing it conflicts with");
    }
}
