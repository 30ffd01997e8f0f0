//! Tests of the payload, its walk and the exported files, together: they build events
//! and follow them through all three.

use super::event::*;
use super::export::*;
use super::payload::*;
use super::position::BinlogPos;
use crate::Result;

fn event(ty: u8, log_pos: u32, body: &[u8]) -> Vec<u8> {
    let size = (EVENT_HEADER_LEN + body.len()) as u32;
    let mut e = Vec::new();
    e.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    e.push(ty);
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&size.to_le_bytes());
    e.extend_from_slice(&log_pos.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.extend_from_slice(body);
    e
}

#[test]
fn drained_pieces_concatenate_to_the_whole_file() {
    let fde = event(code::FORMAT_DESCRIPTION, 0, b"format");
    let mut first = PayloadBuilder::default();
    first.push_format(&fde);
    first.push_event(&event(2, 300, b"query"));
    first.push_event(&event(16, 330, b"xid"));
    let first = first.take();
    let mut second = PayloadBuilder::default();
    second.push_format(&fde);
    second.push_event(&event(2, 360, b"query2"));
    second.push_event(&event(16, 391, b"xid"));
    let second = second.take();

    let mut whole = ExportFiles::default();
    whole
        .push_segment(&BinlogPos::new("b.000001", 4).unwrap(), &first)
        .unwrap();
    whole
        .push_segment(&BinlogPos::new("b.000001", 4).unwrap(), &second)
        .unwrap();
    let whole = whole.finish();

    let mut streamed = ExportFiles::default();
    streamed
        .push_segment(&BinlogPos::new("b.000001", 4).unwrap(), &first)
        .unwrap();
    let mut pieces = streamed.drain();
    assert!(
        streamed.drain().is_empty(),
        "nothing new since the last drain"
    );
    streamed
        .push_segment(&BinlogPos::new("b.000001", 4).unwrap(), &second)
        .unwrap();
    pieces.extend(streamed.drain());
    assert_eq!(pieces.len(), 2);
    assert!(pieces.iter().all(|(n, _)| n == "b.000001"));
    let joined: Vec<u8> = pieces.iter().flat_map(|(_, b)| b.clone()).collect();
    assert_eq!(joined, whole[0].1);
    assert!(pieces[0].1.starts_with(BINLOG_MAGIC));
}

#[test]
fn payload_round_trips_into_a_file() {
    let fde = event(code::FORMAT_DESCRIPTION, 0, b"format");
    let q = event(2, 300, b"query");
    let x = event(16, 330, b"xid");
    let mut b = PayloadBuilder::default();
    b.push_format(&fde);
    b.push_event(&q);
    b.push_event(&x);
    let payload = b.take();
    let recs: Vec<_> = records(&payload).collect::<Result<_>>().unwrap();
    assert_eq!(
        recs,
        vec![Record::Format(&fde), Record::Event(&q), Record::Event(&x)]
    );
    let mut files = ExportFiles::default();
    files
        .push_segment(&BinlogPos::new("b.000001", 4).unwrap(), &payload)
        .unwrap();
    let file = files.finish().remove(0).1;
    let evs: Vec<_> = file_events(&file).collect::<Result<_>>().unwrap();
    assert_eq!(evs, vec![&fde[..], &q[..], &x[..]]);
}

#[test]
fn a_segment_that_starts_a_file_keeps_one_format_event() {
    let fde = event(code::FORMAT_DESCRIPTION, 120, b"format");
    let mut b = PayloadBuilder::default();
    b.push_format(&fde);
    b.push_event(&fde);
    let mut files = ExportFiles::default();
    files
        .push_segment(&BinlogPos::new("b.000001", 4).unwrap(), &b.take())
        .unwrap();
    assert_eq!(file_events(&files.finish()[0].1).count(), 1);
}

/// The event type codes of a file image, in order.
fn event_types(file: &[u8]) -> Vec<u8> {
    file_events(file).map(|e| e.unwrap()[4]).collect()
}

#[test]
fn the_next_file_name_counts_up_its_extension() {
    assert_eq!(
        next_file_name("mysql-bin.000009").as_deref(),
        Some("mysql-bin.000010")
    );
    assert_eq!(next_file_name("b.999999").as_deref(), Some("b.1000000"));
    assert_eq!(
        next_file_name("my.host-bin.42").as_deref(),
        Some("my.host-bin.43")
    );
    for bad in ["nodot", "b.", "b.12a", "b.99999999999999999999"] {
        assert_eq!(next_file_name(bad), None, "{bad}");
    }
}

#[test]
fn a_stop_event_continues_the_chain_at_the_start_of_the_next_file() {
    // b.000001 ends with a stop event (clean shutdown); b.000002 starts at 4.
    let fde = event(code::FORMAT_DESCRIPTION, 29, b"format");
    let mut b = PayloadBuilder::default();
    b.push_format(&fde);
    b.push_event(&event(2, 124, b"query"));
    b.push_event(&event(16, 146, b"xid"));
    b.push_event(&event(code::STOP, 165, b""));
    b.push_event(&fde);
    b.push_event(&event(2, 53, b"query"));
    let payload = b.take();
    let start = BinlogPos::new("b.000001", 100).unwrap();
    assert_eq!(
        check_chain(&payload, &start, &BinlogPos::new("b.000002", 53).unwrap()).unwrap(),
        5
    );
    assert!(check_chain(&payload, &start, &BinlogPos::new("b.000001", 53).unwrap()).is_err());
    let mut files = ExportFiles::default();
    files
        .push_segment(&BinlogPos::new("b.000001", 4).unwrap(), &payload)
        .unwrap();
    let files = files.finish();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["b.000001", "b.000002"]);
    assert_eq!(
        event_types(&files[0].1),
        [code::FORMAT_DESCRIPTION, 2, 16, code::STOP]
    );
    assert_eq!(event_types(&files[1].1), [code::FORMAT_DESCRIPTION, 2]);
}

/// A fake rotate as the dump thread sends it mid-stream: no position, artificial flag.
fn fake_rotate(to: &str) -> Vec<u8> {
    let mut body = 4u64.to_le_bytes().to_vec();
    body.extend_from_slice(to.as_bytes());
    let mut e = event(code::ROTATE, 0, &body);
    e[17..19].copy_from_slice(&LOG_EVENT_ARTIFICIAL_F.to_le_bytes());
    e
}

#[test]
fn a_fake_rotate_to_the_next_file_continues_the_chain_and_is_left_out_of_files() {
    // b.000001 ends with no marker (a crash); the server moved on to b.000002.
    let fde = event(code::FORMAT_DESCRIPTION, 29, b"format");
    let payload = |to: &str| {
        let mut b = PayloadBuilder::default();
        b.push_format(&fde);
        b.push_event(&event(2, 124, b"query"));
        b.push_event(&fake_rotate(to));
        b.push_event(&fde);
        b.push_event(&event(2, 53, b"query"));
        b.take()
    };
    let start = BinlogPos::new("b.000001", 100).unwrap();
    let end = |f: &str| BinlogPos::new(f, 53).unwrap();
    assert_eq!(
        check_chain(&payload("b.000002"), &start, &end("b.000002")).unwrap(),
        4
    );
    // Anything but the next file is a gap: a skipped file, a reset numbering.
    for other in ["b.000003", "b.000001", "c.000002"] {
        assert!(
            check_chain(&payload(other), &start, &end(other)).is_err(),
            "{other}"
        );
    }
    let mut files = ExportFiles::default();
    files
        .push_segment(
            &BinlogPos::new("b.000001", 4).unwrap(),
            &payload("b.000002"),
        )
        .unwrap();
    let files = files.finish();
    assert_eq!(files[0].0, "b.000001");
    assert_eq!(event_types(&files[0].1), [code::FORMAT_DESCRIPTION, 2]);
    assert_eq!(files[1].0, "b.000002");
    assert_eq!(event_types(&files[1].1), [code::FORMAT_DESCRIPTION, 2]);
}

#[test]
fn malformed_payloads_are_errors() {
    let q = event(2, 300, b"query");
    let mut b = PayloadBuilder::default();
    b.push_event(&q);
    let p = b.take();
    for n in 1..p.len() {
        assert!(records(&p[..n]).any(|r| r.is_err()), "cut at {n}");
    }
    let mut bad_tag = p.clone();
    bad_tag[0] = 9;
    assert!(records(&bad_tag).any(|r| r.is_err()));
    assert!(file_events(b"nope").any(|r| r.is_err()));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any payload bytes, and a valid payload with bytes changed: the walk and the
    /// exported files give an error or events, never a panic.
    #[test]
    fn random_and_mutated_payloads_never_panic_the_walk(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
        flips in proptest::collection::vec((0usize..10_000, proptest::prelude::any::<u8>()), 1..8),
    ) {
        let start = BinlogPos::new("mysql-bin.000001", 4).unwrap();
        let _ = walk(&start, &bytes, |_| Ok(true));
        let _ = records(&bytes).count();
        let mut b = PayloadBuilder::default();
        b.push_event(&event(2, 300, b"query one"));
        b.push_event(&event(16, 400, b"xid"));
        let mut p = b.take();
        for (at, v) in flips {
            let i = at % p.len();
            p[i] = v;
        }
        let _ = walk(&start, &p, |_| Ok(true));
        let _ = records(&p).count();
    }
}
