//! The preset specs of `models/`, embedded in the binary so that `@name`
//! works anywhere (`mythos show @openmythos-1b`).

/// One embedded preset.
pub struct Preset {
    /// File name without `.mythos`: `openmythos-1b`.
    pub name: &'static str,
    pub source: &'static str,
}

macro_rules! presets {
    ($($name:literal,)*) => {
        /// Every file of `models/`, in a stable order.
        pub const PRESETS: &[Preset] = &[
            $(Preset { name: $name, source: include_str!(concat!("../../models/", $name, ".mythos")) },)*
        ];
    };
}

presets! {
    "openmythos-1b",
    "openmythos-3b",
    "openmythos-10b",
    "openmythos-50b",
    "openmythos-100b",
    "openmythos-500b",
    "openmythos-1t",
    "openmythos-1b-gqa",
    "tiny-gqa",
    "tiny-mla",
    "tiny-huginn",
    "huginn-0125",
    "ouro-style",
    "bench-small-gqa",
    "bench-small-mla",
}

/// The source of a preset by name (`openmythos-1b`).
pub fn source(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|p| p.name == name).map(|p| p.source)
}

/// The spec `make run` and a bare `mythos show` use.
pub const DEFAULT: &str = "@openmythos-1b";
