//! Data readers: formats, and errors that name the file, line and column.

use recurrent::data::*;

fn tmp(name: &str, content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    (dir, p)
}

#[test]
fn ts_files_univariate_multivariate_unequal() {
    let text = "# comment\n@problemName X\n@univariate false\n@dimensions 2\n@equalLength false\n@classLabel true a b\n@data\n1,2,3:4,5,6:a\n7,8:9,10:b\n";
    let s = parse_ts(text, "x.ts").unwrap();
    assert_eq!(s.labels, vec!["a", "b"]);
    assert_eq!(s.sequences[0].shape(), &[3, 2]);
    assert_eq!(s.sequences[0][[2, 1]], 6.0);
    assert_eq!(s.sequences[1].shape(), &[2, 2]);
    let e = parse_ts("@data\n1,2:3:a\n", "y.ts")
        .unwrap_err()
        .to_string();
    assert!(e.contains("y.ts:2") && e.contains("dimension 1"), "{e}");
    let e = parse_ts("@data\n1,?,3:a\n", "z.ts")
        .unwrap_err()
        .to_string();
    assert!(e.contains("z.ts:2") && e.contains("missing"), "{e}");
}

#[test]
fn long_csv_groups_cases_and_reports_bad_rows() {
    let (_d, p) = tmp(
        "a.csv",
        b"case,label,t,x0,x1\n0,u,0,1,2\n0,u,1,3,4\n1,v,0,5,6\n",
    );
    let s = read_long_csv(&p).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s.sequences[0].shape(), &[2, 2]);
    assert_eq!(s.labels, vec!["u", "v"]);
    let (_d, p) = tmp("b.csv", b"case,label,t,x0\n0,u,0,1\n0,u,1,abc\n");
    let e = read_long_csv(&p).unwrap_err().to_string();
    assert!(e.contains("b.csv:3") && e.contains("abc"), "{e}");
    let (_d, p) = tmp("c.csv", b"case,label,t,x0\n0,u,0,1\n0,u,1\n");
    let e = read_long_csv(&p).unwrap_err().to_string();
    assert!(e.contains("c.csv:3"), "{e}");
    let (_d, p) = tmp("d.csv", b"id,label,t,x0\n0,u,0,1\n");
    assert!(read_long_csv(&p)
        .unwrap_err()
        .to_string()
        .contains("case,label,t"));
}

#[test]
fn series_csv_index_missing_values_and_columns() {
    let (_d, p) = tmp("s.csv", b"year,a,b\n2000,1,10\n2001,,20\n2002,3,30\n");
    let e = read_series_csv(&p, MissingValues::Error)
        .unwrap_err()
        .to_string();
    assert!(e.contains("s.csv:3") && e.contains("\"a\""), "{e}");
    let t = read_series_csv(&p, MissingValues::Interpolate).unwrap();
    assert_eq!(t.columns, vec!["a", "b"]);
    assert_eq!(t.index[1], "2001");
    assert_eq!(t.values[0], vec![1.0, 2.0, 3.0]);
    assert!(t.column("c").unwrap_err().to_string().contains("a, b"));
    let (_d, p) = tmp("n.csv", b"month,v\n1949-01,1\n1949-02,x\n");
    let e = read_series_csv(&p, MissingValues::Error)
        .unwrap_err()
        .to_string();
    assert!(e.contains("n.csv:3") && e.contains("\"x\""), "{e}");
}

#[test]
fn text_must_be_utf8() {
    let (_d, p) = tmp("t.txt", b"hello \xff world");
    let e = read_text(&p).unwrap_err().to_string();
    assert!(e.contains("not UTF-8") && e.contains("offset 6"), "{e}");
    let v = Vocabulary::from_text("banana");
    assert_eq!(v.chars(), &['a', 'b', 'n']);
    assert_eq!(v.encode("nab").unwrap(), vec![2, 0, 1]);
    assert!(v.encode("x").is_err());
}

#[test]
fn standardizer_uses_training_rows() {
    let rows = [[1.0f32, 5.0], [3.0, 5.0]];
    let s = Standardizer::fit(rows.iter().map(|r| &r[..]), 2);
    assert_eq!(s.mean, vec![2.0, 5.0]);
    assert_eq!(s.std, vec![1.0, 1.0], "constant feature gets std 1");
    let mut r = [3.0, 6.0];
    s.apply(&mut r);
    assert_eq!(r, [1.0, 1.0]);
}

#[test]
fn validation_pieces_sample_the_whole_text_and_training_reaches_its_end() {
    let text: Vec<usize> = (0..1000).collect();
    let (train, val) = split_validation(&text, 100, 10);
    assert_eq!((train.len(), val.len()), (900, 100));
    // Ten pieces of ten, one centred on each tenth of the text.
    for (k, piece) in val.chunks(10).enumerate() {
        assert_eq!(piece[0], 100 * k + 45, "piece {k}");
        assert!(
            piece.windows(2).all(|w| w[1] == w[0] + 1),
            "piece {k} contiguous"
        );
    }
    // Training text keeps its order, misses exactly the validation pieces, and ends where
    // the text ends.
    assert!(train.windows(2).all(|w| w[0] < w[1]));
    let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
    all.sort_unstable();
    assert_eq!(all, text);
    assert_eq!(train.last(), Some(&999));
}

#[test]
fn validation_split_degenerate_sizes() {
    let text: Vec<char> = "abcdefg".chars().collect();
    // Every item for validation: as many pieces as items.
    let (train, val) = split_validation(&text, 7, 20);
    assert!(train.is_empty());
    assert_eq!(val, text);
    // No validation.
    assert_eq!(split_validation(&text, 0, 5), (text.clone(), vec![]));
    // More validation than text is capped; pieces round the length down.
    let (train, val) = split_validation(&text, 100, 1);
    assert_eq!((train.len(), val.len()), (0, 7));
    let (train, val) = split_validation(&text, 5, 2);
    assert_eq!((train.len(), val.len()), (3, 4));
    assert_eq!(split_validation::<u8>(&[], 3, 3), (vec![], vec![]));
}
