//! Maps dotted key paths (`worker_config.gen.max_batch_size`, `metadata.accuracy.datasets.0`) to the
//! line they are written on. serde's data model has no spans, so violations found on typed structs
//! look their line up here. Built only when a file has something to report.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Gives each violation without a line the line its key is written on in `text`; the index is
/// built only when one needs it.
pub fn fill_lines(violations: &mut [super::violation::Violation], text: &str) {
    let unplaced = |v: &super::violation::Violation| v.line.is_none() && !v.key.is_empty();
    if !violations.iter().any(unplaced) {
        return;
    }
    let index = LineIndex::build(text);
    for v in violations.iter_mut().filter(|v| unplaced(v)) {
        v.line = index.line_of(&v.key);
    }
}

#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    pub fn build(text: &str) -> LineIndex {
        let mut builder = Builder::default();
        // A syntax error stops the walk; the lines seen so far are still useful.
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        LineIndex {
            lines: builder.lines,
        }
    }

    /// The line of `path`, or of its nearest written ancestor (a missing key is reported where
    /// its section is).
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            path = &path[..path.rfind('.')?];
        }
    }
}

enum Frame {
    Map { key: Option<String> },
    Seq { next: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Builder {
    fn path_with(&self, last: &str) -> String {
        let mut parts: Vec<String> = Vec::with_capacity(self.stack.len());
        for frame in &self.stack[..self.stack.len().saturating_sub(1)] {
            match frame {
                Frame::Map { key: Some(k) } => parts.push(k.clone()),
                Frame::Seq { next } => parts.push(next.saturating_sub(1).to_string()),
                Frame::Map { key: None } => {}
            }
        }
        parts.push(last.to_owned());
        parts.join(".")
    }

    /// A node begins at `line`: either a map key, or a value (of a key or a sequence item).
    /// Returns true when the node is a map key.
    fn node(&mut self, scalar: Option<&str>, line: usize) -> bool {
        match self.stack.last_mut() {
            Some(Frame::Map { key }) if key.is_none() => {
                let name = scalar.unwrap_or("?").to_owned();
                *key = Some(name.clone());
                let path = self.path_with(&name);
                self.lines.entry(path).or_insert(line);
                true
            }
            Some(Frame::Seq { next }) => {
                let index = *next;
                *next += 1;
                let path = self.path_with(&index.to_string());
                self.lines.entry(path).or_insert(line);
                false
            }
            _ => false,
        }
    }

    /// A value finished: the enclosing map now expects its next key.
    fn value_done(&mut self) {
        if let Some(Frame::Map { key }) = self.stack.last_mut() {
            *key = None;
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(text, ..) if !self.node(Some(&text), line) => self.value_done(),
            Event::Scalar(..) => {}
            Event::Alias(_) => {
                self.node(None, line);
                self.value_done();
            }
            Event::MappingStart(..) => {
                self.node(None, line);
                self.stack.push(Frame::Map { key: None });
            }
            Event::SequenceStart(..) => {
                self.node(None, line);
                self.stack.push(Frame::Seq { next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
metadata:
  model_name: x
  accuracy:
    datasets:
    - dataset_name: gsm8k
      expected_value: 0.9
worker_config:
  gen: &g
    max_batch_size: 32
    nested: {a: 1, b: [1, 2]}
  ctx: *g
";

    #[test]
    fn finds_keys_sequence_items_and_aliases() {
        let idx = LineIndex::build(TEXT);
        assert_eq!(idx.line_of("metadata"), Some(1));
        assert_eq!(idx.line_of("metadata.model_name"), Some(2));
        assert_eq!(idx.line_of("metadata.accuracy.datasets.0"), Some(5));
        assert_eq!(
            idx.line_of("metadata.accuracy.datasets.0.expected_value"),
            Some(6)
        );
        assert_eq!(idx.line_of("worker_config.gen.max_batch_size"), Some(9));
        assert_eq!(idx.line_of("worker_config.gen.nested.b"), Some(10));
        assert_eq!(idx.line_of("worker_config.ctx"), Some(11));
    }

    #[test]
    fn missing_keys_fall_back_to_their_section() {
        let idx = LineIndex::build(TEXT);
        assert_eq!(idx.line_of("worker_config.ctx.max_seq_len"), Some(11));
        assert_eq!(idx.line_of("nope"), None);
    }
}
