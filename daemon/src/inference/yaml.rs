//! The subset of YAML that model metadata files use (`pose_cfg.yaml`, DeepLabCut 3's `pytorch_config.yaml`,
//! sleap-nn's `training_config.yaml`): nested block mappings, block and flow lists of scalars, comments,
//! quoted scalars. Each scalar or list of scalars is kept under its dotted path (`model.heads.bodypart.
//! predictor.apply_sigmoid`) with its line, so errors can point at it. Lists of mappings (sleap-nn's
//! skeletons) are skipped: nothing reflex reads lives in them.

use std::collections::BTreeMap;

/// A value under a dotted key.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar, unquoted.
    Scalar(String),
    /// A list of scalars.
    List(Vec<String>),
}

/// A parsed metadata file: dotted key → (value, 1-based line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Doc {
    entries: BTreeMap<String, (Value, usize)>,
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('\'') && s.ends_with('\'')) || (s.starts_with('"') && s.ends_with('"')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// The line without its comment (a `#` at the start or after a space, outside quotes).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = c;
    }
    line
}

fn flow_list(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('[')?.strip_suffix(']')?;
    Some(
        inner
            .split(',')
            .map(unquote)
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

impl Doc {
    /// Parse `text`. Lines this subset does not understand are skipped, never an error: a key reflex needs and
    /// cannot find is reported by the caller, by name.
    pub fn parse(text: &str) -> Self {
        let mut doc = Doc::default();
        // (indent, key) of the open mappings.
        let mut stack: Vec<(usize, String)> = Vec::new();
        // The block list being filled: (its key's indent, its path, its items, line).
        let mut list: Option<(usize, String, Vec<String>, usize)> = None;
        // Lines more indented than this belong to a skipped list-of-mappings item.
        let mut skip_deeper: Option<usize> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = strip_comment(raw).trim_end();
            if line.trim().is_empty() || line.trim_start().starts_with("---") {
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            let content = line.trim_start();
            if let Some(d) = skip_deeper {
                if indent > d {
                    continue;
                }
                skip_deeper = None;
            }
            if let Some(item) =
                content
                    .strip_prefix("- ")
                    .or(if content == "-" { Some("") } else { None })
            {
                let in_list = list.as_ref().is_some_and(|(ind, ..)| indent >= *ind);
                if in_list {
                    let is_mapping = item.contains(": ") || item.ends_with(':');
                    if is_mapping || item.is_empty() || item.starts_with("- ") {
                        // A list of mappings or of lists: not something reflex reads.
                        if let Some((_, path, items, _)) = list.take()
                            && !items.is_empty()
                        {
                            doc.entries.remove(&path);
                        }
                        skip_deeper = Some(indent);
                    } else if let Some((_, _, items, _)) = list.as_mut() {
                        items.push(unquote(item));
                    }
                } else {
                    skip_deeper = Some(indent);
                }
                continue;
            }
            if let Some((_, path, items, at)) = list.take() {
                doc.entries.insert(path, (Value::List(items), at));
            }
            let Some((key, value)) = content.split_once(':') else {
                continue;
            };
            if !(value.is_empty() || value.starts_with(' ')) {
                continue; // `a:b` is a scalar, not a mapping entry
            }
            while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
                stack.pop();
            }
            let key = unquote(key);
            let path = stack
                .iter()
                .map(|(_, k)| k.as_str())
                .chain([key.as_str()])
                .collect::<Vec<_>>()
                .join(".");
            let value = value.trim();
            if value.is_empty() {
                // A nested mapping or a block list follows.
                stack.push((indent, key));
                list = Some((indent, path, Vec::new(), n + 1));
            } else if let Some(items) = flow_list(value) {
                doc.entries.insert(path, (Value::List(items), n + 1));
            } else if value != "null" && value != "~" {
                doc.entries
                    .insert(path, (Value::Scalar(unquote(value)), n + 1));
            }
        }
        if let Some((_, path, items, at)) = list.take() {
            doc.entries.insert(path, (Value::List(items), at));
        }
        // An empty list left by a key that opened a mapping is not a value.
        doc.entries
            .retain(|_, (v, _)| !matches!(v, Value::List(items) if items.is_empty()));
        doc
    }

    /// The value at `path` and its line.
    pub fn get(&self, path: &str) -> Option<&(Value, usize)> {
        self.entries.get(path)
    }

    /// The scalar at `path` and its line.
    pub fn scalar(&self, path: &str) -> Option<(&str, usize)> {
        match self.entries.get(path)? {
            (Value::Scalar(s), line) => Some((s.as_str(), *line)),
            _ => None,
        }
    }

    /// The list at `path` and its line.
    pub fn list(&self, path: &str) -> Option<(&[String], usize)> {
        match self.entries.get(path)? {
            (Value::List(items), line) => Some((items.as_slice(), *line)),
            _ => None,
        }
    }

    /// The first path among all paths that ends with `.suffix` (or is `suffix`), for keys whose parents vary
    /// (`model_config.backbone_config.<unet|convnext>.max_stride`).
    pub fn find_suffix(&self, suffix: &str) -> Option<(&str, &(Value, usize))> {
        self.entries
            .iter()
            .find(|(k, _)| *k == suffix || k.ends_with(&format!(".{suffix}")))
            .map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_mappings_lists_and_comments() {
        let text = "\
# comment
all_joints:
- - 0
- - 1
all_joints_names:
- head   # first
- 'thorax'
stride: 8.0
mean_pixel: [123.675, 116.28]
model:
  heads:
    bodypart:
      predictor:
        apply_sigmoid: true
        locref_std: 7.2801
  backbone_output_channels: 64
skeletons:
- nodes:
  - name: head
  edges: []
  name: null
data:
  colormode: RGB
  inference:
    normalize_images: true
url: http://x#y
";
        let d = Doc::parse(text);
        assert_eq!(
            d.list("all_joints_names"),
            Some((&["head".to_string(), "thorax".to_string()][..], 5))
        );
        assert_eq!(d.get("all_joints"), None);
        assert_eq!(d.scalar("stride"), Some(("8.0", 8)));
        assert_eq!(d.list("mean_pixel").unwrap().0.len(), 2);
        assert_eq!(
            d.scalar("model.heads.bodypart.predictor.apply_sigmoid"),
            Some(("true", 14))
        );
        assert_eq!(
            d.scalar("model.backbone_output_channels").map(|v| v.0),
            Some("64")
        );
        assert_eq!(d.scalar("data.colormode").map(|v| v.0), Some("RGB"));
        assert_eq!(
            d.scalar("data.inference.normalize_images").map(|v| v.0),
            Some("true")
        );
        assert_eq!(d.scalar("url").map(|v| v.0), Some("http://x#y"));
        assert!(d.get("skeletons").is_none() && d.get("name").is_none());
        assert_eq!(
            d.find_suffix("locref_std").map(|(k, _)| k),
            Some("model.heads.bodypart.predictor.locref_std")
        );
    }
}
