//! Contact items: `POST /stream/contacts`.
//!
//! Walking-skeleton rules: the item is an object with a valid `_user_id`; every other
//! key is kept as an attribute. The full attribute rules of the contract (reserved
//! attributes, custom attribute names and values, specs) arrive with the write-contract
//! issue and belong in this module.

use serde_json::Value;

use super::{as_object, user_id, FieldErrors, ValidItem};
use crate::envelope::Operation;

pub fn validate(item: &Value) -> Result<ValidItem, FieldErrors> {
    let object = as_object(item)?;
    let mut errors = FieldErrors::new();
    let user_id = user_id(object, &mut errors);
    match user_id {
        Some(user_id) if errors.is_empty() => {
            let mut attributes = object.clone();
            attributes.remove("_user_id");
            Ok(ValidItem {
                user_id,
                op: Operation::UpsertContact { attributes },
            })
        }
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{ITEM_KEY, MUST_BE_OBJECT, REQUIRED};
    use serde_json::json;

    #[test]
    fn keeps_attributes_without_user_id() {
        let item = validate(&json!({"_user_id": "U1", "_email": "a@b.co", "plan": null})).unwrap();
        assert_eq!(item.user_id, "U1");
        let Operation::UpsertContact { attributes } = item.op else {
            panic!("expected an upsert")
        };
        assert_eq!(
            Value::Object(attributes),
            json!({"_email": "a@b.co", "plan": null})
        );
    }

    #[test]
    fn rejects_non_objects_and_missing_user_id() {
        for item in [json!("x"), json!(1), json!([]), json!(null)] {
            assert_eq!(validate(&item).unwrap_err()[ITEM_KEY], vec![MUST_BE_OBJECT]);
        }
        assert_eq!(
            validate(&json!({"a": 1})).unwrap_err()["_user_id"],
            vec![REQUIRED]
        );
    }
}
