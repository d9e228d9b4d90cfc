//! Our BERT tokenizer (src/wordpiece.rs) against the `tokenizers` crate on the same
//! `tokenizer.json`: the ids and token types of every Unicode scalar value, of the review
//! corpus, and of random texts under random settings of the file must be the same.

use autoglm_runtime::{Encoded, TextEncoder};
use proptest::prelude::*;
use std::sync::OnceLock;

/// all-MiniLM-L6-v2's `tokenizer.json` (the assets), parsed.
fn minilm() -> Option<&'static serde_json::Value> {
    static JSON: OnceLock<Option<serde_json::Value>> = OnceLock::new();
    JSON.get_or_init(|| {
        let dir = autoglm_testkit::assets(&["minilm/tokenizer.json"])?;
        let bytes = std::fs::read(dir.join("minilm/tokenizer.json")).expect("tokenizer.json");
        Some(serde_json::from_slice(&bytes).expect("json"))
    })
    .as_ref()
}

/// Ours and the `tokenizers` crate's on the same file, at `max_length`.
fn pair(json: &serde_json::Value, max_length: usize) -> (TextEncoder, TextEncoder) {
    let bytes = serde_json::to_vec(json).expect("json");
    let ours = TextEncoder::from_bytes(&bytes, max_length).expect("ours");
    assert!(ours.is_ours(), "a BERT WordPiece file is read by ours");
    let theirs = TextEncoder::with_tokenizers_crate(&bytes, max_length).expect("tokenizers");
    (ours, theirs)
}

fn same(ours: &TextEncoder, theirs: &TextEncoder, text: &str) -> Result<(), String> {
    let (a, b): (Encoded, Encoded) = (
        ours.encode(text).map_err(|e| e.to_string())?,
        theirs.encode(text).map_err(|e| e.to_string())?,
    );
    if a == b {
        Ok(())
    } else {
        let at = a.ids.iter().zip(&b.ids).position(|(x, y)| x != y);
        Err(format!(
            "{text:?}: ours {} ids, tokenizers {}; first difference at {at:?}\nours   {:?}\ntheirs {:?}",
            a.len(),
            b.len(),
            &a.ids[..a.len().min(40)],
            &b.ids[..b.len().min(40)],
        ))
    }
}

/// Every Unicode scalar value, alone and between two letters (so that marks attach to a letter
/// and punctuation splits a word), in texts of 256 characters each. Under emulation (the
/// aarch64 stage), every 16th text: nothing here depends on the CPU, and the whole takes
/// minutes there.
#[test]
fn every_character_tokenizes_as_the_tokenizers_crate_does() {
    let Some(json) = minilm() else { return };
    let _budget = autoglm_testkit::budget("every character", 600);
    let (ours, theirs) = pair(json, 1 << 20);
    let chars: Vec<char> = (0..=char::MAX as u32).filter_map(char::from_u32).collect();
    let mut failures = Vec::new();
    let step = if autoglm_testkit::slow_runner() {
        16
    } else {
        1
    };
    for chunk in chars.chunks(256).step_by(step) {
        let mut text = String::new();
        for &c in chunk {
            text.push(c);
            text.push(' ');
            text.push('a');
            text.push(c);
            text.push('b');
            text.push(' ');
        }
        if let Err(e) = same(&ours, &theirs, &text) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} texts differ; the first:\n{}",
        failures.len(),
        chars.len().div_ceil(256),
        failures[0]
    );
}

/// The review corpus (all of it; its test split under emulation), whole and truncated to 16 ids.
#[test]
fn the_review_corpus_tokenizes_as_the_tokenizers_crate_does() {
    let Some(json) = minilm() else { return };
    let Some(dir) = autoglm_testkit::assets(&["sentiment/train.jsonl", "sentiment/test.jsonl"])
    else {
        return;
    };
    let _budget = autoglm_testkit::budget("the review corpus", 600);
    let mut texts = Vec::new();
    let files: &[&str] = if autoglm_testkit::slow_runner() {
        &["sentiment/test.jsonl"]
    } else {
        &["sentiment/train.jsonl", "sentiment/test.jsonl"]
    };
    for file in files {
        let data = std::fs::read_to_string(dir.join(file)).expect("corpus");
        for line in data.lines() {
            let row: serde_json::Value = serde_json::from_str(line).expect("row");
            texts.push(row["text"].as_str().expect("text").to_string());
        }
    }
    assert!(texts.len() > 2_000, "{} texts", texts.len());
    // And the cases each step has: a final sigma (lowercased alone, not as a word's end), dotted
    // İ, ligatures, titlecase, marks on their own, added tokens touching text and each other.
    texts.extend(
        [
            "ΟΔΟΣ ΣΟΦΟΣ aΣ. Σ",
            "İstanbul İ",
            "ﬁne ﬂow",
            "ǅemal",
            "\u{301}e\u{301}",
            "x[MASK]y [CLS][SEP] [[SEP]] [SEP",
            "",
            " \t\n ",
            "\u{0}\u{fffd}",
        ]
        .map(str::to_string),
    );
    for max_length in [512, 16] {
        let (ours, theirs) = pair(json, max_length);
        for text in &texts {
            if let Err(e) = same(&ours, &theirs, text) {
                panic!("at max_length {max_length}: {e}");
            }
        }
    }
    // Long texts: the whole corpus as one, truncated.
    let (ours, theirs) = pair(json, 512);
    same(&ours, &theirs, &texts.join(" ")).unwrap();
}

/// Pieces random texts are made of: what each step of the pipeline treats specially.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z]{1,12}",
        "[0-9]{1,6}",
        Just(" ".to_string()),
        "[ \t\n\r\u{a0}\u{3000}\u{2028}\u{85}]{1,3}",
        "[!-/:-@\\[-`{-~¡¿«»“”—…]{1,3}",
        "[àáâãäåçèéêëìíîïñòóôõöùúûüýÿœæß]{1,4}",
        "[\u{300}-\u{36f}]{1,2}",
        "[ÀÉÎÕÜ İ ẞ Σ ς ǅ ﬁ]{1,3}",
        "[\u{4e00}-\u{9fff}\u{3400}-\u{4dbf}\u{f900}-\u{faff}]{1,4}",
        "[\u{3040}-\u{30ff}\u{ac00}-\u{d7af}]{1,4}",
        "[\u{0}-\u{1f}\u{7f}-\u{9f}\u{fffd}\u{200b}-\u{200f}\u{feff}\u{e000}]{1,2}",
        "[\u{1f600}-\u{1f64f}\u{1f1e6}-\u{1f1ff}]{1,2}",
        "[\u{600}-\u{6ff}\u{900}-\u{97f}\u{e00}-\u{e7f}]{1,4}",
        prop::sample::select(vec![
            "[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "[CL", "[SEP", "[[SEP]]", "##ing", "un##"
        ])
        .prop_map(str::to_string),
        "[a-z]{101,110}",
        "[a-zé]{95,101}",
        any::<String>(),
    ]
}

/// The settings of a `tokenizer.json` our reader handles: the normalizer's four, which
/// post-processor (MiniLM's template, `BertProcessing`, none, a template of two `[SEP]`s and
/// other types; with 3 no normalizer either), the longest word.
type Settings = ([bool; 3], Option<bool>, usize, usize);

fn settings() -> impl Strategy<Value = Settings> {
    (
        any::<[bool; 3]>(),
        prop::option::of(any::<bool>()),
        0usize..4,
        prop::sample::select(vec![100usize, 5, 1]),
    )
}

/// MiniLM's `tokenizer.json` with those settings.
fn variant(([clean, chinese, lower], strip, post, max_chars): Settings) -> serde_json::Value {
    let mut json = minilm().expect("assets").clone();
    json["normalizer"] = if post == 3 {
        serde_json::Value::Null
    } else {
        serde_json::json!({
            "type": "BertNormalizer", "clean_text": clean, "handle_chinese_chars": chinese,
            "strip_accents": strip, "lowercase": lower,
        })
    };
    json["post_processor"] = match post {
        0 => json["post_processor"].clone(),
        1 => {
            serde_json::json!({"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]})
        }
        2 => serde_json::Value::Null,
        _ => serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 1}}, {"Sequence": {"id": "A", "type_id": 2}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 3}}, {"SpecialToken": {"id": "[SEP]", "type_id": 4}}],
            "pair": [], "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [101], "tokens": ["[CLS]"]},
                                           "[SEP]": {"id": "[SEP]", "ids": [102], "tokens": ["[SEP]"]}},
        }),
    };
    json["model"]["max_input_chars_per_word"] = max_chars.into();
    json
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if autoglm_testkit::slow_runner() { 8 } else { 48 },
        ..ProptestConfig::default()
    })]

    /// Random texts of those pieces, under random settings and limits (eight texts a case:
    /// reading the file is most of a case's time).
    #[test]
    fn random_texts_tokenize_as_the_tokenizers_crate_does(
        texts in prop::collection::vec(prop::collection::vec(piece(), 0..40), 8),
        settings in settings(),
        max_length in prop::sample::select(vec![4usize, 7, 16, 64, 512]),
    ) {
        if minilm().is_none() {
            return Ok(());
        }
        let json = variant(settings);
        let (ours, theirs) = pair(&json, max_length);
        for pieces in texts {
            if let Err(e) = same(&ours, &theirs, &pieces.concat()) {
                prop_assert!(false, "{}\nfile: normalizer {} post-processor {}", e, json["normalizer"], json["post_processor"]);
            }
        }
    }
}

/// Files of another kind are not read by ours: natively the `tokenizers` crate reads them.
#[test]
fn other_kinds_of_file_go_to_the_tokenizers_crate() {
    let Some(json) = minilm() else { return };
    let edits: [(&str, fn(&mut serde_json::Value)); 4] = [
        ("normalizer", |j| {
            j["normalizer"] = serde_json::json!({"type": "Lowercase"})
        }),
        ("pre-tokenizer", |j| {
            j["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"})
        }),
        ("added token options", |j| {
            j["added_tokens"][2]["lstrip"] = true.into()
        }),
        ("a post-processor", |j| {
            j["post_processor"] = serde_json::json!({"type": "RobertaProcessing", "sep": ["[SEP]", 102],
                "cls": ["[CLS]", 101], "trim_offsets": true, "add_prefix_space": false})
        }),
    ];
    for (what, edit) in edits {
        let mut j = json.clone();
        edit(&mut j);
        let bytes = serde_json::to_vec(&j).unwrap();
        let encoder = TextEncoder::from_bytes(&bytes, 64).expect(what);
        assert!(!encoder.is_ours(), "{what}: not ours");
        let theirs = TextEncoder::with_tokenizers_crate(&bytes, 64).unwrap();
        assert_eq!(
            encoder.encode("Hello [CLS] world!").unwrap(),
            theirs.encode("Hello [CLS] world!").unwrap(),
            "{what}"
        );
    }
    // Not a tokenizer at all: an error from both.
    assert!(TextEncoder::from_bytes(b"{\"model\": 3}", 64).is_err());
}

/// A file may allow words of any length: WordPiece then costs a word's length times the longest
/// vocabulary entry, not its length cubed (the `tokenizers` crate's search). The same pieces as
/// the `tokenizers` crate's on a word it can still search, and a 200,000-character word in time.
#[test]
fn long_words_cost_their_length() {
    let Some(json) = minilm() else { return };
    let _budget = autoglm_testkit::budget("long words", 120);
    let mut json = json.clone();
    json["model"]["max_input_chars_per_word"] = 100_000_000.into();
    let word = "unbelievablyé".repeat(30);
    let (ours, theirs) = pair(&json, 4096);
    same(&ours, &theirs, &word).unwrap();
    let long = "unbelievablyé".repeat(200_000 / 13);
    let started = std::time::Instant::now();
    let encoded = ours.encode(&long).unwrap();
    assert_eq!(encoded.len(), 4096);
    assert_eq!(encoded.ids[..10], theirs.encode(&word).unwrap().ids[..10]);
    eprintln!(
        "a {}-character word: {:?}",
        long.chars().count(),
        started.elapsed()
    );
}
