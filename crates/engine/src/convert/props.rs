//! Property tests of the mapping table parser: whatever text it is given, it answers a table
//! or an error, never a panic.

use proptest::prelude::*;

use super::Mapping;
use br_cti_domain::testing::{nasty_string, proptest_config};

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    fn mapping_tables_never_panic(lines in prop::collection::vec(
        prop::collection::vec(nasty_string(), 0..6).prop_map(|cells| cells.join(",")), 0..8)
    ) {
        let text = lines.join("\n");
        let _ = Mapping::parse(&text);
        let _ = Mapping::parse(&format!(
            "dataset_field,stix_object,object_property,transformation\n{text}"
        ));
    }
}
