//! Readings of raw binlog events that only the source needs: rotate targets as the
//! source's errors, and the fake rotate's target, whose checksum bytes may or may not be
//! there. Everything else about events (codes, boundaries, GTIDs) is in
//! [`logferry_common::format::mysql`], shared with restore.

use logferry_common::format::mysql::{next_file_name, position::file_seq};

use crate::error::AgentError;

/// The `(position, file name)` of a ROTATE event body (checksum already removed).
pub fn rotate_target(body: &[u8]) -> Result<(u64, String), AgentError> {
    logferry_common::format::mysql::rotate_target(body)
        .map_err(|e| AgentError::Protocol(e.to_string()))
}

/// The `(position, file name)` of the fake ROTATE the dump thread sends, whose body may or
/// may not end with 4 checksum bytes: the dump checksums it as the replica asked, whatever
/// the server's own `binlog_checksum` (NONE included), and before the format description
/// nothing says which. The reading whose name is a binlog file the server has (`known`) or
/// the one after it wins; else the one whose name is a binlog file name at all (a
/// numeric extension), the plain reading first.
pub fn fake_rotate_target(body: &[u8], known: &[String]) -> Result<(u64, String), AgentError> {
    let plain = rotate_target(body);
    let stripped = (body.len() > 12).then(|| rotate_target(&body[..body.len() - 4]));
    let readings: Vec<(u64, String)> = [
        Some(plain.as_ref().ok().cloned()),
        stripped.as_ref().map(|r| r.as_ref().ok().cloned()),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .collect();
    let expected = |name: &str| {
        known.iter().any(|k| k == name)
            || known
                .last()
                .and_then(|l| next_file_name(l))
                .is_some_and(|next| next == name)
    };
    let binlog_name = |name: &str| file_seq(name).is_some();
    readings
        .iter()
        .find(|(_, name)| expected(name))
        .or_else(|| readings.iter().find(|(_, name)| binlog_name(name)))
        .cloned()
        .map_or(plain, Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_rotate_is_read_with_or_without_checksum_bytes() {
        let known = vec!["mysql-bin.000100".to_owned(), "mysql-bin.000101".to_owned()];
        let mut body = 4u64.to_le_bytes().to_vec();
        body.extend_from_slice(b"mysql-bin.000101");
        assert_eq!(
            fake_rotate_target(&body, &known).unwrap().1,
            "mysql-bin.000101"
        );
        // Checksum bytes that are printable, even digits, still leave the known name.
        for crc in [*b"(dni", *b"1234", [0xa1, 0x00, 0xff, 0x13]] {
            let mut with = body.clone();
            with.extend_from_slice(&crc);
            assert_eq!(
                fake_rotate_target(&with, &known).unwrap().1,
                "mysql-bin.000101"
            );
        }
        // The next file, which the server has not listed yet, counts as known too.
        let mut next = 4u64.to_le_bytes().to_vec();
        next.extend_from_slice(b"mysql-bin.000102(dni");
        assert_eq!(
            fake_rotate_target(&next, &known).unwrap().1,
            "mysql-bin.000102"
        );
        // Nothing known: a binlog file name (numeric extension) is preferred.
        assert_eq!(
            fake_rotate_target(&next, &[]).unwrap().1,
            "mysql-bin.000102"
        );
    }
}
