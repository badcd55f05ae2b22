//! The claim matcher of `[[bindings]]` and `require_claims`.
//!
//! Input: a pattern and a value, split at the first NUL byte. Asserts,
//! besides "never panics", that `Pattern::matches` agrees with a reference
//! written the slow, obvious way (dynamic programming over characters, `*`
//! any run, everything else itself), and that a pattern without `*` matches
//! exactly its own text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nats_oidc_callout::policy::Pattern;

fn reference(pattern: &[char], value: &[char]) -> bool {
    // m[i][j]: pattern[..i] matches value[..j].
    let mut m = vec![vec![false; value.len() + 1]; pattern.len() + 1];
    m[0][0] = true;
    for i in 1..=pattern.len() {
        for j in 0..=value.len() {
            m[i][j] = if pattern[i - 1] == '*' {
                m[i - 1][j] || (j > 0 && m[i][j - 1])
            } else {
                j > 0 && m[i - 1][j - 1] && pattern[i - 1] == value[j - 1]
            };
        }
    }
    m[pattern.len()][value.len()]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, value) = text.split_once('\0').unwrap_or((text, ""));
    // The quadratic reference must stay quick.
    if pattern.len() > 256 || value.len() > 256 {
        return;
    }
    let p = Pattern::parse(pattern);
    let got = p.matches(value);
    let p_chars: Vec<char> = pattern.chars().collect();
    let v_chars: Vec<char> = value.chars().collect();
    assert_eq!(
        got,
        reference(&p_chars, &v_chars),
        "pattern {pattern:?} value {value:?}"
    );
    if !pattern.contains('*') {
        assert_eq!(got, pattern == value);
    }
});
