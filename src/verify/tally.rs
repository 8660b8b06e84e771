//! What one destination holds of a run: per line, how often it was found whole and
//! cut, and when it first landed; the report's words for it.

use std::fmt;

use super::look::Stored;
use super::marks::{Marks, Sighting};

/// One destination's count of a run's lines.
#[derive(Debug, Clone)]
pub struct Tally {
    written_ms: Vec<i64>,
    whole: Vec<u32>,
    cut: Vec<u32>,
    /// When each line was first found stored (ms since the epoch).
    landed_ms: Vec<Option<i64>>,
    unreadable: u32,
    /// Where a cut line was found, for the report (a few).
    cut_at: Vec<String>,
    /// The last error looking, if the last look failed.
    error: Option<String>,
}

impl Tally {
    pub fn new(marks: &Marks, written_ms: &[i64]) -> Self {
        let n = marks.count() as usize;
        Self { written_ms: written_ms.to_vec(), whole: vec![0; n], cut: vec![0; n], landed_ms: vec![None; n], unreadable: 0, cut_at: Vec::new(), error: None }
    }

    pub fn add(&mut self, marks: &Marks, stored: &Stored) {
        self.error = None;
        let seq = match marks.recognize(&stored.message, stored.flagged) {
            Sighting::Whole(seq) => {
                self.whole[seq as usize] += 1;
                seq
            }
            Sighting::Cut(seq) => {
                self.cut[seq as usize] += 1;
                self.note_cut(format!("line {seq} ({} of {} bytes{}) in {}", stored.message.len(), Marks::length(seq), if stored.flagged { ", flagged partial or truncated" } else { "" }, stored.at));
                seq
            }
            Sighting::Unreadable => {
                self.unreadable += 1;
                self.note_cut(format!("a piece of {} bytes with the run's token but no whole header, in {}", stored.message.len(), stored.at));
                return;
            }
        };
        let first = &mut self.landed_ms[seq as usize];
        *first = Some(first.map_or(stored.landed_ms, |t| t.min(stored.landed_ms)));
    }

    fn note_cut(&mut self, what: String) {
        if self.cut_at.len() < 5 {
            self.cut_at.push(what);
        }
    }

    pub fn failed(&mut self, error: String) {
        self.error = Some(error);
    }

    /// Lines found in any form.
    pub fn seen(&self) -> usize {
        self.landed_ms.iter().filter(|t| t.is_some()).count()
    }

    pub fn all_seen(&self) -> bool {
        self.seen() == self.landed_ms.len()
    }

    pub fn missing(&self) -> Vec<u32> {
        (0..self.landed_ms.len() as u32).filter(|&s| self.landed_ms[s as usize].is_none()).collect()
    }

    /// Lines stored more than once (whole or cut).
    pub fn duplicated(&self) -> Vec<u32> {
        (0..self.whole.len() as u32).filter(|&s| self.whole[s as usize] + self.cut[s as usize] > 1).collect()
    }

    /// Lines found, but never whole.
    pub fn cut(&self) -> Vec<u32> {
        (0..self.cut.len() as u32).filter(|&s| self.cut[s as usize] > 0).collect()
    }

    /// Every line whole, once, nothing cut or unreadable.
    pub fn passed(&self) -> bool {
        self.whole.iter().all(|&n| n == 1) && self.cut.iter().all(|&n| n == 0) && self.unreadable == 0
    }

    /// Seconds from writing to landing, sorted.
    fn latencies(&self) -> Vec<f64> {
        let mut l: Vec<f64> = self.landed_ms.iter().zip(&self.written_ms).filter_map(|(l, w)| l.map(|l| (l - w).max(0) as f64 / 1000.0)).collect();
        l.sort_by(f64::total_cmp);
        l
    }
}

/// `0, 1, 2, …` for at most 10 line numbers, with how many more.
fn list(seqs: &[u32]) -> String {
    let mut text: Vec<String> = seqs.iter().take(10).map(u32::to_string).collect();
    if seqs.len() > 10 {
        text.push(format!("… ({} more)", seqs.len() - 10));
    }
    text.join(", ")
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.whole.len();
        let whole_once = self.whole.iter().zip(&self.cut).filter(|(&w, &c)| w == 1 && c == 0).count();
        write!(f, "{whole_once} of {n} whole and once")?;
        let l = self.latencies();
        if !l.is_empty() {
            let at = |q: f64| l[((l.len() - 1) as f64 * q).round() as usize];
            write!(f, "; landed after {:.1} s (median), {:.1} s (99th percentile), {:.1} s (slowest)", at(0.5), at(0.99), l[l.len() - 1])?;
        }
        let missing = self.missing();
        if !missing.is_empty() {
            write!(f, "\n    MISSING {} of {n}: lines {}", missing.len(), list(&missing))?;
        }
        let duplicated = self.duplicated();
        if !duplicated.is_empty() {
            write!(f, "\n    DUPLICATED {}: lines {}", duplicated.len(), list(&duplicated))?;
        }
        let cut = self.cut();
        if !cut.is_empty() || self.unreadable > 0 {
            write!(f, "\n    CUT {}: lines {}", cut.len() + self.unreadable as usize, list(&cut))?;
            if self.unreadable > 0 {
                write!(f, " and {} unreadable piece(s)", self.unreadable)?;
            }
            for at in &self.cut_at {
                write!(f, "\n      {at}")?;
            }
        }
        if let Some(e) = &self.error {
            write!(f, "\n    the last look failed: {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(message: String, flagged: bool, landed_ms: i64) -> Stored {
        Stored { message, flagged, landed_ms, at: "k".into() }
    }

    #[test]
    fn found_missing_duplicated_and_cut_are_told_apart() {
        let marks = Marks::with_token("logferry-verify-0000000000000002".into(), 4);
        let mut t = Tally::new(&marks, &[1_000, 1_000, 1_000, 1_000]);
        t.add(&marks, &stored(marks.line(0), false, 2_000));
        assert!(!t.all_seen() && !t.passed());
        t.add(&marks, &stored(marks.line(1), false, 3_000));
        t.add(&marks, &stored(marks.line(2), false, 4_000));
        t.add(&marks, &stored(marks.line(3), false, 4_000));
        assert!(t.all_seen() && t.passed(), "{t}");
        assert!(t.to_string().starts_with("4 of 4 whole and once; landed after 3.0 s (median)"), "{t}");
        t.add(&marks, &stored(marks.line(1), false, 9_000));
        assert!(!t.passed());
        assert_eq!(t.duplicated(), [1]);
        let mut t = Tally::new(&marks, &[0; 4]);
        let line = marks.line(3);
        t.add(&marks, &stored(line[..100].to_string(), true, 1));
        assert_eq!((t.cut(), t.missing()), (vec![3], vec![0, 1, 2]));
        let text = t.to_string();
        assert!(text.contains("MISSING 3 of 4: lines 0, 1, 2") && text.contains("CUT 1: lines 3") && text.contains("line 3 (100 of 1000 bytes, flagged"), "{text}");
    }
}
