//! What a dataset reader reads from.

use std::io::{Read, Seek};

/// Something a dataset reader can read and seek (a local file, or a spooled remote object).
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}
