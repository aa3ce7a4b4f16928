//! Property tests: whatever bytes a file holds, the readers answer a value or an error, never
//! a panic, and never more rows than the file could hold.

use std::io::Cursor;
use std::ops::ControlFlow;

use proptest::prelude::*;

use super::{DatasetLimits, count_rows, features, for_each_row};

/// Runs every reader over `bytes` with small limits.
fn read_everything(bytes: &[u8]) {
    let limits = DatasetLimits {
        max_record_bytes: 4096,
        max_columns: 64,
        xls_max_cells: 100_000,
        ..DatasetLimits::default()
    };
    let _ = features(Box::new(Cursor::new(bytes.to_vec())), &limits);
    let _ = count_rows(Box::new(Cursor::new(bytes.to_vec())), &limits);
    let mut rows = 0u64;
    let _ = for_each_row(
        Box::new(Cursor::new(bytes.to_vec())),
        &limits,
        &mut |_, row| {
            if let Ok(row) = row {
                let _ = row.with_row(|r| {
                    let mut cells = 0usize;
                    r.for_each_cell(&mut |_, _| cells += 1);
                    cells
                });
            }
            rows += 1;
            ControlFlow::Continue(())
        },
    );
    assert!(
        rows <= bytes.len() as u64 + 1,
        "{rows} rows from {} bytes",
        bytes.len()
    );
}

/// Text made of the characters datasets are made of, so that the sniffer takes it for CSV,
/// JSON or JSON Lines and the parsers get deep.
fn texty() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(vec![
            b'a', b'1', b',', b';', b'\t', b'|', b'"', b'\n', b'\r', b'{', b'}', b'[', b']', b':',
            b' ', b'\\', 0xE4, 0xB8, 0xAD, 0xFF, 0x81,
        ]),
        0..600,
    )
}

/// A valid file of each binary format with some bytes changed.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    prop::collection::vec((0..len, any::<u8>()), 1..8).prop_map(move |edits| {
        let mut b = base.clone();
        for (at, v) in edits {
            b[at] = v;
        }
        b
    })
}

fn xlsx_fixture() -> Vec<u8> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in ["src", "dst", "label"].iter().enumerate() {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    for r in 1..4u32 {
        sheet.write_string(r, 0, format!("10.0.0.{r}")).unwrap();
        sheet.write_number(r, 1, f64::from(r)).unwrap();
        sheet.write_string(r, 2, "攻击").unwrap();
    }
    book.save_to_buffer().unwrap()
}

fn xls_fixture() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/sdn_small.xls"
    ))
    .unwrap()
}

proptest! {
    #![proptest_config(br_cti_domain::testing::proptest_config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        read_everything(&bytes);
    }

    #[test]
    fn dataset_like_text_never_panics(bytes in texty()) {
        read_everything(&bytes);
    }

    #[test]
    fn damaged_xlsx_never_panics(bytes in mutated(xlsx_fixture())) {
        read_everything(&bytes);
    }

    #[test]
    fn damaged_xls_never_panics(bytes in mutated(xls_fixture())) {
        read_everything(&bytes);
    }
}
