//! Facts about models by name: the encoding and the token limits, each a built-in table
//! that configuration can override.
//!
//! Patterns are a model name (`gpt-4`) or a prefix ending in `*` (`gpt-4o*`), matched
//! case-insensitively. Overrides are consulted before the built-in table; within either,
//! an exact name beats a prefix and a longer prefix beats a shorter one, so the order of
//! entries never matters (`gpt-4o*` wins over `gpt-4*` for `gpt-4o-mini`).

use std::str::FromStr;
use std::sync::OnceLock;

use crate::encoding::Encoding;
use crate::error::MapParseError;

/// The encoding of a model that neither the overrides nor the built-in table know: the
/// tokenizer of every current OpenAI model.
pub const FALLBACK_ENCODING: Encoding = Encoding::O200kBase;

/// Built-in encodings. Most specific match wins (see the module docs).
const DEFAULT_ENCODINGS: &[(&str, Encoding)] = &[
    ("gpt-4o*", Encoding::O200kBase),
    ("chatgpt-4o*", Encoding::O200kBase),
    ("gpt-4.1*", Encoding::O200kBase),
    ("gpt-4.5*", Encoding::O200kBase),
    ("gpt-5*", Encoding::O200kBase),
    ("gpt-oss*", Encoding::O200kBase),
    ("o1*", Encoding::O200kBase),
    ("o3*", Encoding::O200kBase),
    ("o4*", Encoding::O200kBase),
    ("gpt-4*", Encoding::Cl100kBase),
    ("gpt-35-turbo*", Encoding::Cl100kBase),
    ("gpt-3.5*", Encoding::Cl100kBase),
    ("text-embedding-3-*", Encoding::Cl100kBase),
    ("text-embedding-ada-002", Encoding::Cl100kBase),
    ("davinci-002", Encoding::Cl100kBase),
    ("babbage-002", Encoding::Cl100kBase),
];

/// What a model accepts: prompt and output together must fit in `context_window`, and the
/// output alone in `max_output` (0 for embedding models, which produce no tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLimits {
    /// Prompt plus output tokens.
    pub context_window: u32,
    /// The most output tokens one choice may produce.
    pub max_output: u32,
}

impl ModelLimits {
    /// Limits from a context window and an output ceiling.
    pub const fn new(context_window: u32, max_output: u32) -> Self {
        Self {
            context_window,
            max_output,
        }
    }
}

/// Limits of a model no table knows: those of the gpt-4o family, like
/// [`FALLBACK_ENCODING`].
pub const FALLBACK_LIMITS: ModelLimits = ModelLimits::new(128_000, 16_384);

/// Built-in limits (as published for the OpenAI models; Azure deploys the same).
const DEFAULT_LIMITS: &[(&str, ModelLimits)] = &[
    ("gpt-4o*", ModelLimits::new(128_000, 16_384)),
    ("gpt-4o-mini*", ModelLimits::new(128_000, 16_384)),
    ("chatgpt-4o*", ModelLimits::new(128_000, 16_384)),
    ("gpt-4.1*", ModelLimits::new(1_047_576, 32_768)),
    ("gpt-4.5*", ModelLimits::new(128_000, 16_384)),
    ("gpt-5*", ModelLimits::new(400_000, 128_000)),
    ("o1*", ModelLimits::new(200_000, 100_000)),
    ("o1-mini*", ModelLimits::new(128_000, 65_536)),
    ("o1-preview*", ModelLimits::new(128_000, 32_768)),
    ("o3*", ModelLimits::new(200_000, 100_000)),
    ("o4*", ModelLimits::new(200_000, 100_000)),
    ("gpt-4*", ModelLimits::new(8_192, 4_096)),
    ("gpt-4-32k*", ModelLimits::new(32_768, 4_096)),
    ("gpt-4-turbo*", ModelLimits::new(128_000, 4_096)),
    ("gpt-4-1106*", ModelLimits::new(128_000, 4_096)),
    ("gpt-4-0125*", ModelLimits::new(128_000, 4_096)),
    ("gpt-4-vision*", ModelLimits::new(128_000, 4_096)),
    ("gpt-35-turbo*", ModelLimits::new(16_385, 4_096)),
    ("gpt-3.5*", ModelLimits::new(16_385, 4_096)),
    ("gpt-35-turbo-instruct*", ModelLimits::new(4_097, 4_096)),
    ("gpt-3.5-turbo-instruct*", ModelLimits::new(4_097, 4_096)),
    ("text-embedding-3-*", ModelLimits::new(8_191, 0)),
    ("text-embedding-ada-002", ModelLimits::new(8_191, 0)),
    ("davinci-002", ModelLimits::new(16_384, 4_096)),
    ("babbage-002", ModelLimits::new(16_384, 4_096)),
];

/// A model name or a prefix, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(pattern: &str, entry: &str) -> Result<Self, MapParseError> {
        let pattern = pattern.trim().to_ascii_lowercase();
        if pattern.is_empty() {
            return Err(MapParseError::EmptyPattern {
                entry: entry.to_owned(),
            });
        }
        match pattern.find('*') {
            None => Ok(Pattern::Exact(pattern)),
            Some(at) if at == pattern.len() - 1 => Ok(Pattern::Prefix(pattern[..at].to_owned())),
            Some(_) => Err(MapParseError::MisplacedWildcard {
                entry: entry.to_owned(),
            }),
        }
    }

    /// How well `model` (lower-cased) matches: `None` if not at all; an exact match beats
    /// any prefix, a longer prefix a shorter one.
    fn rank(&self, model: &str) -> Option<usize> {
        match self {
            Pattern::Exact(name) => (name == model).then_some(usize::MAX),
            Pattern::Prefix(prefix) => model.starts_with(prefix.as_str()).then_some(prefix.len()),
        }
    }
}

/// Pattern-to-value rules, most specific match first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rules<T> {
    rules: Vec<(Pattern, T)>,
}

impl<T> Default for Rules<T> {
    fn default() -> Self {
        Self { rules: Vec::new() }
    }
}

impl<T: Copy> Rules<T> {
    fn lookup(&self, model: &str) -> Option<T> {
        best(self.rules.iter().map(|(p, v)| (p, *v)), model)
    }

    /// Parses `pattern=value,pattern=value` (blank entries ignored).
    fn parse(
        s: &str,
        value: impl Fn(&str, &str) -> Result<T, MapParseError>,
    ) -> Result<Self, MapParseError> {
        let mut rules: Vec<(Pattern, T)> = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((written, raw)) = entry.split_once('=') else {
                return Err(MapParseError::MissingEquals {
                    entry: entry.to_owned(),
                });
            };
            let pattern = Pattern::parse(written, entry)?;
            if rules.iter().any(|(p, _)| *p == pattern) {
                return Err(MapParseError::DuplicatePattern {
                    pattern: written.trim().to_owned(),
                });
            }
            rules.push((pattern, value(raw.trim(), entry)?));
        }
        Ok(Self { rules })
    }
}

/// The value of the most specific pattern matching `model`.
fn best<'a, T>(rules: impl Iterator<Item = (&'a Pattern, T)>, model: &str) -> Option<T> {
    let model = model.trim().to_ascii_lowercase();
    rules
        .filter_map(|(pattern, value)| pattern.rank(&model).map(|rank| (rank, value)))
        .max_by_key(|(rank, _)| *rank)
        .map(|(_, value)| value)
}

/// A built-in table as rules (its patterns are literals checked by a unit test).
fn builtin<T: Copy>(table: &[(&str, T)]) -> Rules<T> {
    let rules = table
        .iter()
        .filter_map(|(p, v)| Pattern::parse(p, p).ok().map(|p| (p, *v)))
        .collect();
    Rules { rules }
}

fn default_encodings() -> &'static Rules<Encoding> {
    static RULES: OnceLock<Rules<Encoding>> = OnceLock::new();
    RULES.get_or_init(|| builtin(DEFAULT_ENCODINGS))
}

fn default_limits() -> &'static Rules<ModelLimits> {
    static RULES: OnceLock<Rules<ModelLimits>> = OnceLock::new();
    RULES.get_or_init(|| builtin(DEFAULT_LIMITS))
}

/// The encoding of `model` under the built-in table alone.
pub(crate) fn default_encoding(model: &str) -> Encoding {
    default_encodings()
        .lookup(model)
        .unwrap_or(FALLBACK_ENCODING)
}

/// Which encoding each model uses: configured overrides, then the built-in table
/// (o200k_base for gpt-4o*, gpt-4.1*, gpt-4.5*, gpt-5*, o1*, o3*, o4*; cl100k_base for
/// gpt-4*, gpt-35-turbo*, gpt-3.5*, text-embedding-3-*, text-embedding-ada-002,
/// davinci-002, babbage-002), then [`FALLBACK_ENCODING`] (o200k_base) for anything else.
///
/// Parses from `"gpt-4o*=o200k_base,my-model=cl100k_base"`; the empty string means no
/// overrides. An override `*=cl100k_base` applies to every model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodingMap {
    overrides: Rules<Encoding>,
}

impl EncodingMap {
    /// The encoding `model` uses.
    pub fn encoding(&self, model: &str) -> Encoding {
        self.overrides
            .lookup(model)
            .unwrap_or_else(|| default_encoding(model))
    }
}

impl FromStr for EncodingMap {
    type Err = MapParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self {
            overrides: Rules::parse(s, |value, _| value.parse())?,
        })
    }
}

/// The limits of each model: configured overrides, then the built-in table (gpt-4o and
/// gpt-4o-mini 128000/16384, gpt-4.1 1047576/32768, o1/o3/o4-mini 200000/100000, gpt-4
/// 8192/4096 with its -32k and turbo variants larger, gpt-35-turbo 16385/4096, embedding
/// models 8191 input and no output, ...), then [`FALLBACK_LIMITS`].
///
/// Parses from `"my-model=32000/4096,gpt-4o*=128000/4096"` (context window / max output).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsMap {
    overrides: Rules<ModelLimits>,
}

impl LimitsMap {
    /// The limits of `model`.
    pub fn limits(&self, model: &str) -> ModelLimits {
        self.overrides
            .lookup(model)
            .or_else(|| default_limits().lookup(model))
            .unwrap_or(FALLBACK_LIMITS)
    }
}

impl FromStr for LimitsMap {
    type Err = MapParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let limits = |value: &str, entry: &str| {
            let invalid = || MapParseError::InvalidLimits {
                entry: entry.to_owned(),
            };
            let (context, output) = value.split_once('/').ok_or_else(invalid)?;
            let context: u32 = context.trim().parse().map_err(|_| invalid())?;
            let output: u32 = output.trim().parse().map_err(|_| invalid())?;
            if context == 0 || output > context {
                return Err(MapParseError::InconsistentLimits {
                    entry: entry.to_owned(),
                });
            }
            Ok(ModelLimits::new(context, output))
        };
        Ok(Self {
            overrides: Rules::parse(s, limits)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_encodings_follow_the_model_families() {
        let cases = [
            ("gpt-4o", Encoding::O200kBase),
            ("gpt-4o-mini", Encoding::O200kBase),
            ("GPT-4o-2024-11-20", Encoding::O200kBase),
            ("gpt-4.1-nano", Encoding::O200kBase),
            ("gpt-5-mini", Encoding::O200kBase),
            ("o1", Encoding::O200kBase),
            ("o3-mini", Encoding::O200kBase),
            ("o4-mini", Encoding::O200kBase),
            ("gpt-4", Encoding::Cl100kBase),
            ("gpt-4-32k", Encoding::Cl100kBase),
            ("gpt-35-turbo", Encoding::Cl100kBase),
            ("gpt-35-turbo-instruct", Encoding::Cl100kBase),
            ("gpt-3.5-turbo", Encoding::Cl100kBase),
            ("text-embedding-3-small", Encoding::Cl100kBase),
            ("text-embedding-ada-002", Encoding::Cl100kBase),
            ("my-own-model", FALLBACK_ENCODING),
            ("text-embedding-ada-003", FALLBACK_ENCODING),
        ];
        let map = EncodingMap::default();
        for (model, expected) in cases {
            assert_eq!(map.encoding(model), expected, "{model}");
            assert_eq!(Encoding::for_model(model), expected, "{model}");
        }
    }

    #[test]
    fn encoding_overrides_take_precedence_over_the_defaults() {
        let map: EncodingMap = "gpt-4o*=cl100k_base, my-model=cl100k_base,gpt-35-turbo=o200k_base"
            .parse()
            .unwrap();
        assert_eq!(map.encoding("gpt-4o-mini"), Encoding::Cl100kBase);
        assert_eq!(map.encoding("my-model"), Encoding::Cl100kBase);
        assert_eq!(map.encoding("MY-MODEL"), Encoding::Cl100kBase);
        assert_eq!(map.encoding("my-model-2"), Encoding::O200kBase);
        assert_eq!(map.encoding("gpt-35-turbo"), Encoding::O200kBase);
        // Exact override only: the longer name falls through to the defaults.
        assert_eq!(map.encoding("gpt-35-turbo-16k"), Encoding::Cl100kBase);
        assert_eq!(map.encoding("gpt-4.1"), Encoding::O200kBase);
    }

    #[test]
    fn the_most_specific_override_wins_whatever_the_order() {
        for spec in [
            "acme*=cl100k_base,acme-4o*=o200k_base",
            "acme-4o*=o200k_base,acme*=cl100k_base",
        ] {
            let map: EncodingMap = spec.parse().unwrap();
            assert_eq!(map.encoding("acme-4o-large"), Encoding::O200kBase, "{spec}");
            assert_eq!(map.encoding("acme-3"), Encoding::Cl100kBase, "{spec}");
        }
        let everything: EncodingMap = "*=cl100k_base".parse().unwrap();
        assert_eq!(everything.encoding("gpt-4o"), Encoding::Cl100kBase);
    }

    #[test]
    fn bad_encoding_maps_are_refused_with_the_entry_named() {
        let cases = [
            ("gpt-4o", "`gpt-4o`: expected `model=value`"),
            ("=o200k_base", "`=o200k_base`: the model pattern is empty"),
            (
                "gpt*4=o200k_base",
                "`gpt*4=o200k_base`: only a single trailing `*`",
            ),
            ("gpt-4o=p50k_base", "unknown encoding `p50k_base`"),
            ("a=o200k_base,A=cl100k_base", "`A` is given more than once"),
        ];
        for (spec, message) in cases {
            let err = spec.parse::<EncodingMap>().unwrap_err().to_string();
            assert!(err.starts_with(message), "{spec}: {err}");
        }
        assert_eq!(
            " , ".parse::<EncodingMap>().unwrap(),
            EncodingMap::default()
        );
    }

    #[test]
    fn every_built_in_pattern_parses() {
        assert_eq!(default_encodings().rules.len(), DEFAULT_ENCODINGS.len());
        assert_eq!(default_limits().rules.len(), DEFAULT_LIMITS.len());
    }

    #[test]
    fn default_limits_follow_the_model_families() {
        let cases = [
            ("gpt-4o", 128_000, 16_384),
            ("gpt-4o-mini", 128_000, 16_384),
            ("gpt-4.1-mini", 1_047_576, 32_768),
            ("o1", 200_000, 100_000),
            ("o3-mini", 200_000, 100_000),
            ("o4-mini", 200_000, 100_000),
            ("o1-mini", 128_000, 65_536),
            ("gpt-4", 8_192, 4_096),
            ("gpt-4-0613", 8_192, 4_096),
            ("gpt-4-32k", 32_768, 4_096),
            ("gpt-4-turbo-2024-04-09", 128_000, 4_096),
            ("gpt-35-turbo", 16_385, 4_096),
            ("gpt-35-turbo-instruct", 4_097, 4_096),
            ("text-embedding-3-large", 8_191, 0),
            ("text-embedding-ada-002", 8_191, 0),
            ("something-else", 128_000, 16_384),
        ];
        let map = LimitsMap::default();
        for (model, context, output) in cases {
            assert_eq!(
                map.limits(model),
                ModelLimits::new(context, output),
                "{model}"
            );
        }
    }

    #[test]
    fn limit_overrides_parse_and_take_precedence() {
        let map: LimitsMap = "my-model=32000/4096, gpt-4o*=64000/2048".parse().unwrap();
        assert_eq!(map.limits("my-model"), ModelLimits::new(32_000, 4_096));
        assert_eq!(map.limits("gpt-4o-mini"), ModelLimits::new(64_000, 2_048));
        assert_eq!(map.limits("gpt-4"), ModelLimits::new(8_192, 4_096));
    }

    #[test]
    fn bad_limit_maps_are_refused_with_the_entry_named() {
        let cases = [
            (
                "my-model=32000",
                "`my-model=32000`: expected `model=context_window/max_output`",
            ),
            ("my-model=32k/4k", "`my-model=32k/4k`: expected"),
            ("my-model=-1/5", "`my-model=-1/5`: expected"),
            (
                "my-model=1000/2000",
                "`my-model=1000/2000`: the context window must be positive",
            ),
            (
                "my-model=0/0",
                "`my-model=0/0`: the context window must be positive",
            ),
            ("my-model", "`my-model`: expected `model=value`"),
        ];
        for (spec, message) in cases {
            let err = spec.parse::<LimitsMap>().unwrap_err().to_string();
            assert!(err.starts_with(message), "{spec}: {err}");
        }
    }
}
